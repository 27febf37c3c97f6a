"""Pipeline runs on real worker processes and a real SQLite file: rendering, step options,
failure / skip / retry / cancel semantics, and the commands that show runs."""

from __future__ import annotations

import sqlite3
import time
from datetime import date

import pytest

from runner.message import Message
from runner.pipeline.runs import load_run

pytestmark = pytest.mark.transports("sqlite", "redis")


def _worker(pipelines, *args):
    return pipelines.worker("-c", "2", *args)


# -- rendering -----------------------------------------------------------------------------------


RENDERING = """\
name: rendering
app: pipeline_tasks
params:
  n: {type: int, default: 3}
  names: {type: list, default: [a, b]}
  day: {type: date, default: "2026-11-24"}
steps:
  show:
    task: pipeline_tasks.describe
    args:
      - "{{ params.n }}"
      - "{{ params.names }}"
      - "n={{ params.n }}"
      - " {{ params.n }} "
      - "{{ params.n }}{{ params.n }}"
      - "{{ params.day }}"
      - "{{ {'k': params.n} }}"
      - "{{ params.n > 2 }}"
      - "{{ none }}"
      - "{{ params.n | string }}"
      - "{{ params.names | join(',') }}"
      - "{% if params.n > 2 %}big{% else %}small{% endif %}"
      - plain text
      - 7
      - ["{{ params.n }}", {nested: "{{ params.names[1] }}"}]
    kwargs: {double: "{{ params.n * 2 }}"}
"""


def test_a_single_expression_renders_to_its_value_and_anything_else_to_text(pipelines):
    _worker(pipelines)
    run = pipelines.submit(pipelines.write(RENDERING))
    assert pipelines.wait(run).state == "success"
    shown = pipelines.result(run, "show")
    assert shown["args"] == [
        ["int", 3], ["list", ["a", "b"]], ["str", "n=3"], ["int", 3], ["str", "33"],
        ["date", date(2026, 11, 24)], ["dict", {"k": 3}], ["bool", True], ["NoneType", None],
        ["str", "3"], ["str", "a,b"], ["str", "big"], ["str", "plain text"], ["int", 7],
        ["list", [3, {"nested": "b"}]]]
    assert shown["kwargs"] == {"double": ["int", 6]}


CONTEXT = """\
name: context
app: pipeline_tasks
config: settings.yaml
params:
  day: {type: date, default: "{{ run.ds }}"}
  week: {type: str, default: "{{ run.logical_date.strftime('%G-W%V') }}"}
  label: {type: str, default: "{{ run.pipeline }} for {{ params.day }}"}
steps:
  show:
    task: pipeline_tasks.echo
    args:
      - id: "{{ run.id }}"
        name: "{{ run.name }}"
        ds: "{{ run.ds }}"
        at: "{{ run.logical_date.isoformat() }}"
        day: "{{ params.day }}"
        week: "{{ params.week }}"
        label: "{{ params.label }}"
"""


def test_run_context_and_defaults_rendered_from_the_logical_date_in_the_app_timezone(
        pipelines):
    pipelines.write("timezone: Europe/Oslo\n", "settings.yaml")
    path = pipelines.write(CONTEXT)
    _worker(pipelines)
    # 23:30 UTC on a Monday is already Tuesday in Oslo
    submitted = pipelines.cli("submit", path, "--logical-date", "2026-11-23T23:30:00+00:00",
                              "--wait")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    run = submitted.stdout.splitlines()[0]
    assert pipelines.result(run, "show") == {
        "id": run, "name": "context", "ds": "2026-11-24", "at": "2026-11-24T00:30:00+01:00",
        "day": date(2026, 11, 24), "week": "2026-W48", "label": "context for 2026-11-24"}
    record = load_run(pipelines.app.backend, run)
    assert record.params["day"] == date(2026, 11, 24)


def test_a_given_param_overrides_its_default(pipelines):
    pipelines.write("timezone: UTC\n", "settings.yaml")
    path = pipelines.write(CONTEXT)
    _worker(pipelines)
    submitted = pipelines.cli("submit", path, "-p", "day=2026-01-02", "-p", "week=W1", "--wait")
    assert submitted.returncode == 0, submitted.stderr
    shown = pipelines.result(submitted.stdout.splitlines()[0], "show")
    assert (shown["day"], shown["week"], shown["label"]) == (
        date(2026, 1, 2), "W1", "context for 2026-01-02")


def test_a_template_failing_at_run_time_fails_its_step_naming_step_and_expression(pipelines):
    path = pipelines.write("""\
name: runtime-error
app: pipeline_tasks
steps:
  numbers: {task: pipeline_tasks.echo, args: [[1, 2]]}
  broken:
    task: pipeline_tasks.echo
    needs: [numbers]
    args: ["{{ steps.numbers.result.total + 1 }}"]
  after: {task: pipeline_tasks.echo, needs: [broken], args: [after], kwargs: {label: after}}
  side: {task: pipeline_tasks.echo, args: [side], kwargs: {label: side}}
""")
    _worker(pipelines)
    run = pipelines.submit(path)
    record = pipelines.wait(run)
    assert record.state == "failed"
    states = {name: step.state for name, step in record.steps.items()}
    assert states == {"numbers": "success", "broken": "failed", "after": "skipped",
                      "side": "success"}
    assert record.steps["broken"].error == (
        "step 'broken': template '{{ steps.numbers.result.total + 1 }}' failed: "
        "UndefinedError: 'list object' has no attribute 'total'")
    assert record.steps["after"].reason == "needs broken, which failed"
    assert sorted(pipelines.marks()) == ["echo", "side"]  # `after` never ran
    status = pipelines.cli("status", run)
    assert status.returncode == 1
    assert "template '{{ steps.numbers.result.total + 1 }}' failed" in status.stdout


def test_a_map_that_is_not_a_list_fails_the_step(pipelines):
    path = pipelines.write("name: m\napp: pipeline_tasks\nparams: {n: 3}\nsteps:\n"
                           "  each: {task: pipeline_tasks.double, map: '{{ params.n }}', "
                           "args: ['{{ item }}']}\n")
    _worker(pipelines)
    record = pipelines.wait(pipelines.submit(path))
    assert record.state == "failed"
    assert record.steps["each"].error == "step 'each': map '{{ params.n }}' gave int, not a list"


def test_map_gives_item_and_index_and_results_in_item_order(pipelines):
    path = pipelines.write("""\
name: map
app: pipeline_tasks
steps:
  each:
    task: pipeline_tasks.echo
    map: [[x, 1], [y, 2], [z, 3]]
    args: ["{{ index }}:{{ item[0] }}", "{{ item[0] }}"]
  none:
    task: pipeline_tasks.echo
    map: []
    args: ["{{ item }}"]
  join:
    task: pipeline_tasks.collect
    needs: [each, none]
    args: [["{{ steps.each.result }}", "{{ steps.none.result }}"]]
""")
    _worker(pipelines)
    run = pipelines.submit(path)
    record = pipelines.wait(run)
    assert record.state == "success"
    assert (record.steps["each"].items, record.steps["none"].items) == (3, 0)
    assert pipelines.result(run, "join") == [["0:x", "1:y", "2:z"], []]
    assert sorted(pipelines.marks()) == ["fanin", "x", "y", "z"]


def test_a_step_with_two_parents_runs_once_with_both_results(pipelines):
    path = pipelines.write("""\
name: diamond
app: pipeline_tasks
steps:
  start: {task: pipeline_tasks.echo, args: [0]}
  left: {task: pipeline_tasks.double, needs: [start], args: [1], kwargs: {label: left}}
  right: {task: pipeline_tasks.double, needs: [start], args: [2], kwargs: {label: right}}
  join:
    task: pipeline_tasks.collect
    needs: [left, right]
    args: [["{{ steps.left.result }}", "{{ steps.right.result }}",
            "{{ steps.start.result }}"]]
""")
    _worker(pipelines)
    run = pipelines.submit(path)
    assert pipelines.wait(run).state == "success"
    assert pipelines.result(run, "join") == [2, 4, 0]  # ancestors' results are visible too
    assert pipelines.marks().count("fanin") == 1


# -- when ----------------------------------------------------------------------------------------


WHEN = """\
name: when
app: pipeline_tasks
params: {threshold: {type: int, default: 10}}
steps:
  measure: {task: pipeline_tasks.echo, args: [5], kwargs: {label: measure}}
  page:
    task: pipeline_tasks.echo
    needs: [measure]
    when: "{{ steps.measure.result >= params.threshold }}"
    args: [paged]
    kwargs: {label: page}
  after_page: {task: pipeline_tasks.echo, needs: [page], kwargs: {value: 1, label: after_page}}
  report: {task: pipeline_tasks.echo, needs: [measure], args: [r], kwargs: {label: report}}
  never: {task: pipeline_tasks.echo, when: false, args: [n], kwargs: {label: never}}
"""


def test_a_false_when_skips_the_step_and_what_needs_it_and_the_run_succeeds(pipelines):
    path = pipelines.write(WHEN)
    _worker(pipelines)
    record = pipelines.wait(pipelines.submit(path))
    assert record.state == "success"
    assert {n: s.state for n, s in record.steps.items()} == {
        "measure": "success", "page": "skipped", "after_page": "skipped", "report": "success",
        "never": "skipped"}
    assert record.steps["page"].reason == (
        "when '{{ steps.measure.result >= params.threshold }}' is false")
    assert record.steps["after_page"].reason == "needs page, which skipped"
    assert sorted(pipelines.marks()) == ["measure", "report"]


def test_a_true_when_runs_the_step(pipelines):
    path = pipelines.write(WHEN)
    _worker(pipelines)
    run = pipelines.submit(path, threshold=5)
    record = pipelines.wait(run)
    assert record.steps["page"].state == "success"
    assert record.steps["after_page"].state == "success"
    assert pipelines.result(run, "page") == "paged"


def test_item_in_when_is_refused_because_when_decides_the_whole_step():
    from runner.exceptions import PipelineError
    from runner.pipeline.validate import load_pipeline_text

    try:
        load_pipeline_text("name: x\nsteps:\n  a: {task: t, map: [1], when: '{{ item > 0 }}'}\n",
                           "p.yaml")
    except PipelineError as exc:
        assert exc.problems == [
            "p.yaml:3:26: '{{ item > 0 }}' reads 'item', which is not defined ('item' and "
            "'index' exist only in args and kwargs of a step with 'map'); templates can read: "
            "params, run, steps"]
    else:
        raise AssertionError("accepted")


# -- step options ----------------------------------------------------------------------------------


def test_defaults_and_step_options_reach_the_task(pipelines):
    path = pipelines.write("""\
name: options
app: pipeline_tasks
defaults: {queue: other, priority: 3, timeout: 30, soft_timeout: 20}
steps:
  from_defaults: {task: pipeline_tasks.request_info}
  overridden:
    task: pipeline_tasks.request_info
    queue: celery
    priority: 8
    timeout: 9
    soft_timeout: 7
""")
    _worker(pipelines, "-Q", "celery,other")
    run = pipelines.submit(path)
    assert pipelines.wait(run).state == "success"
    assert pipelines.result(run, "from_defaults") == {
        "queue": "other", "priority": 3, "time_limit": 30, "soft_time_limit": 20, "retries": 0}
    assert pipelines.result(run, "overridden") == {
        "queue": "celery", "priority": 8, "time_limit": 9, "soft_time_limit": 7, "retries": 0}


def test_app_and_config_keys_choose_the_app_and_its_settings(pipelines):
    pipelines.write("task_default_queue: reports\n", "settings.yaml")
    path = pipelines.write("name: cfg\napp: pipeline_tasks\nconfig: settings.yaml\n"
                           "steps:\n  a: {task: pipeline_tasks.request_info}\n")
    _worker(pipelines, "-Q", "reports")  # only a worker on `reports` can run it
    submitted = pipelines.cli("submit", path, "--wait", timeout=30)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert pipelines.result(submitted.stdout.splitlines()[0], "a")["queue"] == "reports"


def test_timeout_fails_the_step_and_soft_timeout_reaches_the_task(pipelines):
    path = pipelines.write("""\
name: limits
app: pipeline_tasks
steps:
  hard: {task: pipeline_tasks.sleep, args: [10], timeout: 0.5}
  soft: {task: pipeline_tasks.sleep_until_soft_limit, args: [10], soft_timeout: 0.3}
""")
    _worker(pipelines)
    run = pipelines.submit(path)
    record = pipelines.wait(run)
    assert record.steps["hard"].state == "failed"
    assert "TimeLimitExceeded" in record.steps["hard"].error
    assert record.steps["soft"].state == "success"
    assert pipelines.result(run, "soft") == "soft limit"


def test_retries_run_a_failing_task_again_and_count_in_the_step(pipelines):
    path = pipelines.write("""\
name: retries
app: pipeline_tasks
defaults: {retries: 2, retry_delay: 0.3}
steps:
  twice: {task: pipeline_tasks.fail_times, args: [twice, 2]}
  backoff: {task: pipeline_tasks.fail_times, args: [backoff, 1], retry_backoff: 0.1}
  gives_up: {task: pipeline_tasks.fail_times, args: [gives_up, 5], retries: 1}
  no_retries: {task: pipeline_tasks.fail_times, args: [no_retries, 1], retries: 0}
""")
    _worker(pipelines)
    run = pipelines.submit(path)
    record = pipelines.wait(run)
    steps = record.steps
    assert (steps["twice"].state, steps["twice"].retries) == ("success", 2)
    assert pipelines.result(run, "twice") == 3
    assert steps["twice"].ended_at - steps["twice"].started_at >= 0.6  # 2 x retry_delay
    assert (steps["backoff"].state, steps["backoff"].retries) == ("success", 1)
    assert (steps["gives_up"].state, steps["gives_up"].retries) == ("failed", 1)
    assert steps["gives_up"].error == "RuntimeError: gives_up attempt 2 fails"
    assert steps["no_retries"].state == "failed"
    marks = pipelines.marks()
    assert [marks.count(x) for x in ("twice", "backoff", "gives_up", "no_retries")] == [
        3, 2, 2, 1]
    assert record.state == "failed"


@pytest.mark.transports("sqlite")  # reads the message straight from the SQLite file
def test_serializer_option_encodes_the_step_arguments(pipelines, tmp_path):
    path = pipelines.write("""\
name: ser
app: pipeline_tasks
steps:
  as_yaml: {task: pipeline_tasks.describe, args: [[1, two]], serializer: yaml}
  as_json: {task: pipeline_tasks.describe, args: [[1, two]]}
""")
    run = pipelines.submit(path)  # no worker yet: the messages wait in the broker
    with sqlite3.connect(tmp_path / "runner.db") as db:
        bodies = [Message.decode(row[0]) for row in db.execute("SELECT body FROM "
                                                                "runner_messages")]
    assert {m.id.removeprefix(f"{run}-"): m.content_type for m in bodies} == {
        "as_yaml": "application/x-yaml", "as_json": "application/json"}
    pipelines._start_worker("-c", "2", app="pipeline_tasks",
                            env={"RUNNER_ACCEPT_CONTENT": "json,yaml"})
    assert pipelines.wait(run).state == "success"
    assert pipelines.result(run, "as_yaml") == {"args": [["list", [1, "two"]]], "kwargs": {}}


# -- failure, ignore_failure, retry, cancel ----------------------------------------------------


FAILURE = """\
name: failure
app: pipeline_tasks
steps:
  load: {task: pipeline_tasks.echo, args: [[1, 2, 3]], kwargs: {label: load}}
  flaky:
    task: pipeline_tasks.broken_while_flagged
    needs: [load]
    args: [flaky]
    retries: 1
  report:
    task: pipeline_tasks.collect
    needs: [flaky, load]
    args: [["{{ steps.load.result }}", "{{ steps.flaky.result }}", "{{ steps.flaky.state }}"]]
    kwargs: {label: report}
  publish: {task: pipeline_tasks.echo, needs: [report], args: [p], kwargs: {label: publish}}
  side: {task: pipeline_tasks.echo, args: [side], kwargs: {label: side}}
"""


def test_a_step_failing_after_its_retries_skips_its_dependents_and_fails_the_run(pipelines,
                                                                                 tmp_path):
    (tmp_path / "broken-flaky").touch()
    path = pipelines.write(FAILURE)
    _worker(pipelines)
    submitted = pipelines.cli("submit", path, "--wait")
    assert submitted.returncode == 1
    # the run's outcome, then what its final steps (publish, side) gave
    assert submitted.stdout.splitlines()[-3:] == [
        f"run {submitted.stdout.splitlines()[0]}: failed",
        "  publish: skipped: needs report, which skipped", '  side: "side"']
    record = load_run(pipelines.app.backend, submitted.stdout.splitlines()[0])
    assert {n: s.state for n, s in record.steps.items()} == {
        "load": "success", "flaky": "failed", "report": "skipped", "publish": "skipped",
        "side": "success"}
    assert record.steps["flaky"].error == "RuntimeError: flaky is broken"
    assert record.steps["flaky"].retries == 1
    assert record.steps["publish"].reason == "needs report, which skipped"
    assert sorted(pipelines.marks()) == ["flaky", "flaky", "load", "side"]
    assert "  flaky                failed: RuntimeError: flaky is broken" in submitted.stdout


def test_ignore_failure_lets_dependents_run_with_the_failed_result_as_none(pipelines, tmp_path):
    (tmp_path / "broken-flaky").touch()
    path = pipelines.write(FAILURE.replace("    retries: 1\n", "    ignore_failure: true\n"))
    _worker(pipelines)
    run = pipelines.submit(path)
    record = pipelines.wait(run)
    assert record.state == "success"
    assert record.steps["flaky"].state == "failed"
    assert record.steps["publish"].state == "success"
    assert pipelines.result(run, "report") == [[1, 2, 3], None, "failed"]


def test_retry_reruns_only_failed_and_skipped_steps_reusing_stored_results(pipelines, tmp_path):
    flag = tmp_path / "broken-flaky"
    flag.touch()
    path = pipelines.write(FAILURE)
    _worker(pipelines)
    run = pipelines.submit(path)
    assert pipelines.wait(run).state == "failed"
    flag.unlink()
    retried = pipelines.cli("retry", run, "--wait")
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert retried.stdout.splitlines()[0] == f"run {run}: retrying (attempt 2)"
    record = load_run(pipelines.app.backend, run)
    assert record.state == "success"
    assert all(step.state == "success" for step in record.steps.values())
    marks = pipelines.marks()
    assert (marks.count("load"), marks.count("side")) == (1, 1)  # not run again
    assert (marks.count("flaky"), marks.count("report"), marks.count("publish")) == (3, 1, 1)
    assert pipelines.result(run, "report") == [[1, 2, 3], "flaky", "success"]  # load's stored
    again = pipelines.cli("retry", run)
    assert again.returncode == 2
    assert f"run {run} succeeded; nothing to retry" in again.stderr


def test_a_mapped_step_fails_when_an_item_fails_and_retry_runs_only_that_item_again(pipelines, tmp_path):
    flag = tmp_path / "broken-item2"
    flag.touch()
    path = pipelines.write("""\
name: mapped-failure
app: pipeline_tasks
steps:
  each: {task: pipeline_tasks.broken_while_flagged, map: [1, 2, 3], args: ["item{{ item }}"]}
  join: {task: pipeline_tasks.collect, needs: [each], args: ["{{ steps.each.result }}"]}
""")
    _worker(pipelines)
    run = pipelines.submit(path)
    record = pipelines.wait(run)
    assert (record.state, record.steps["each"].state, record.steps["join"].state) == (
        "failed", "failed", "skipped")
    assert record.steps["each"].error == "1 of 3 items failed; first: RuntimeError: item2 is " \
                                         "broken"
    flag.unlink()
    assert pipelines.cli("retry", run, "--wait").returncode == 0
    assert pipelines.result(run, "join") == ["item1", "item2", "item3"]
    # only the item that failed ran again; the others' results were kept
    assert sorted(pipelines.marks()) == ["fanin", "item1", "item2", "item2", "item3"]


def test_retry_of_a_running_run_is_refused(pipelines):
    path = pipelines.write("name: r\napp: pipeline_tasks\nsteps:\n"
                           "  a: {task: pipeline_tasks.echo}\n")
    run = pipelines.submit(path)  # no worker: stays running
    result = pipelines.cli("retry", run)
    assert result.returncode == 2
    assert "is still running; wait for it or cancel it" in result.stderr


CANCEL = """\
name: cancel
app: pipeline_tasks
steps:
  first: {task: pipeline_tasks.sleep, args: [0.5, first]}
  many:
    task: pipeline_tasks.sleep
    needs: [first]
    map: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    args: [0.3, "many{{ item }}"]
  last: {task: pipeline_tasks.echo, needs: [many], args: [last], kwargs: {label: last}}
"""


def _wait_for_mark(pipelines, mark: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while mark not in pipelines.marks():
        assert time.monotonic() < deadline, f"{mark} never ran: {pipelines.marks()}"
        time.sleep(0.02)


def test_cancel_revokes_what_has_not_run(pipelines):
    path = pipelines.write(CANCEL)
    pipelines.worker("-c", "1")
    run = pipelines.submit(path)
    _wait_for_mark(pipelines, "start:many1")
    cancelled = pipelines.cli("cancel", run)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.strip() == f"run {run}: cancelled"
    started_by_then = [m for m in pipelines.marks() if m.startswith("start:many")]
    time.sleep(1.0)  # time for 3 more items to run, were they not revoked
    record = load_run(pipelines.app.backend, run)
    assert record.state == "cancelled"
    assert {n: s.state for n, s in record.steps.items()} == {
        "first": "success", "many": "cancelled", "last": "cancelled"}
    started = [m for m in pipelines.marks() if m.startswith("start:many")]
    # Once `runner cancel` has returned, at most the one item already claimed starts (how many
    # ran before that depends on how long the command took to start, on a loaded machine).
    assert 1 <= len(started_by_then) <= len(started) <= len(started_by_then) + 1, started
    assert "last" not in pipelines.marks()
    again = pipelines.cli("cancel", run)
    assert again.returncode == 2
    assert f"run {run} is already cancelled" in again.stderr


def test_a_cancelled_run_can_be_retried(pipelines):
    path = pipelines.write(CANCEL.replace("[0.5, first]", "[1, first]"))
    pipelines.worker("-c", "4")
    run = pipelines.submit(path)
    _wait_for_mark(pipelines, "start:first")
    assert pipelines.cli("cancel", run).returncode == 0
    retried = pipelines.cli("retry", run, "--wait", timeout=30)
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert pipelines.result(run, "last") == "last"


# -- looking at runs -------------------------------------------------------------------------------


def test_submit_wait_shows_progress_per_step_and_exits_with_the_outcome(pipelines):
    path = pipelines.write(WHEN)
    _worker(pipelines)
    submitted = pipelines.cli("submit", path, "--wait")
    assert submitted.returncode == 0
    lines = submitted.stdout.splitlines()
    run = lines[0]
    assert f"run {run}: success" in lines
    assert "  page                 skipped: when '{{ steps.measure.result >= " \
           "params.threshold }}' is false" in lines
    assert "  measure              success" in lines


def test_status_shows_a_table_of_steps_with_their_results_or_why_not(pipelines):
    path = pipelines.write(WHEN)
    _worker(pipelines)
    run = pipelines.submit(path)
    pipelines.wait(run)
    status = pipelines.cli("status", run)
    assert status.returncode == 0
    lines = status.stdout.splitlines()
    assert lines[0] == f"run {run}  pipeline when  state success"
    assert lines[2] == f"key {run}"  # a run submitted without --key is its own key
    assert lines[3] == "params {threshold: 10}"
    assert lines[4].split() == ["STEP", "STATE", "STARTED", "(UTC)", "TOOK", "RETRIES", "RESULT"]
    rows = {line.split()[0]: line.split() for line in lines[5:]}
    assert rows["measure"][1] == "success" and rows["measure"][-2:] == ["0", "5"]  # its result
    assert rows["page"][1] == "skipped" and "when '{{ steps.measure.result >= " \
        "params.threshold }}' is false" in lines[5 + 1]  # ... and why it skipped
    assert rows["after_page"][1:] == ["skipped", "-", "-", "0", "needs", "page,", "which",
                                      "skipped"]  # never started
    missing = pipelines.cli("status", "20990101T000000-000000")
    assert missing.returncode == 2
    assert "no run '20990101T000000-000000' in the result backend" in missing.stderr


def test_runs_lists_newest_first_filtered_by_pipeline_and_state(pipelines, tmp_path):
    ok = pipelines.write(WHEN, "when.yaml")
    failing = pipelines.write("name: failing\napp: pipeline_tasks\nsteps:\n"
                              "  a: {task: pipeline_tasks.fail}\n", "failing.yaml")
    _worker(pipelines)
    ids = []
    for path in (ok, failing, ok):
        ids.append(pipelines.submit(path))
        pipelines.wait(ids[-1])
        time.sleep(0.01)  # distinct creation times

    def listed(*args):
        result = pipelines.cli("runs", *args)
        assert result.returncode == 0, result.stderr
        return [line.split()[:3] for line in result.stdout.splitlines()[1:]]

    assert listed() == [[ids[2], "when", "success"], [ids[1], "failing", "failed"],
                        [ids[0], "when", "success"]]
    assert listed("--pipeline", "when") == [[ids[2], "when", "success"],
                                            [ids[0], "when", "success"]]
    assert listed("--state", "failed") == [[ids[1], "failing", "failed"]]
    assert listed("--limit", "1") == [[ids[2], "when", "success"]]
    assert listed("--pipeline", "nope") == []
    assert pipelines.cli("runs", "--state", "bogus").returncode == 2

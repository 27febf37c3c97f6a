"""Trigger rules (Airflow's names) on real workers, and the bad input `runner validate`
catches before anything runs (unknown rule, concurrency: 0, max_active_runs: 0)."""

from __future__ import annotations

import pytest

from runner.pipeline.rules import decide

RULES = """\
name: rules
app: pipeline_tasks
steps:
  ok: {task: pipeline_tasks.echo, args: [ok], kwargs: {label: ok}}
  bad: {task: pipeline_tasks.fail, args: [bad]}
  after_bad: {task: pipeline_tasks.echo, needs: [bad], args: [x], kwargs: {label: after_bad}}
  all_success: {task: pipeline_tasks.echo, needs: [ok, bad], args: [1],
                kwargs: {label: all_success}}
  all_done: {task: pipeline_tasks.echo, needs: [ok, bad], args: [1], trigger_rule: all_done,
             kwargs: {label: all_done}}
  all_failed: {task: pipeline_tasks.echo, needs: [bad, after_bad], args: [1],
               trigger_rule: all_failed, kwargs: {label: all_failed}}
  all_failed_no: {task: pipeline_tasks.echo, needs: [ok, bad], args: [1],
                  trigger_rule: all_failed, kwargs: {label: all_failed_no}}
  one_failed: {task: pipeline_tasks.echo, needs: [ok, bad], args: [1], trigger_rule: one_failed,
               kwargs: {label: one_failed}}
  one_failed_no: {task: pipeline_tasks.echo, needs: [ok], args: [1], trigger_rule: one_failed,
                  kwargs: {label: one_failed_no}}
  one_success: {task: pipeline_tasks.echo, needs: [ok, bad], args: [1],
                trigger_rule: one_success, kwargs: {label: one_success}}
  none_failed: {task: pipeline_tasks.echo, needs: [ok, bad], args: [1],
                trigger_rule: none_failed, kwargs: {label: none_failed}}
  never: {task: pipeline_tasks.echo, when: false, args: [1], kwargs: {label: never}}
  none_failed_skip: {task: pipeline_tasks.echo, needs: [ok, never], args: [1],
                     trigger_rule: none_failed, kwargs: {label: none_failed_skip}}
  none_skipped: {task: pipeline_tasks.echo, needs: [ok, never], args: [1],
                 trigger_rule: none_skipped, kwargs: {label: none_skipped}}
  none_skipped_ok: {task: pipeline_tasks.echo, needs: [ok, bad], args: [1],
                    trigger_rule: none_skipped, kwargs: {label: none_skipped_ok}}
  cleanup: {task: pipeline_tasks.echo, needs: [all_success], args: [1], trigger_rule: all_done,
            kwargs: {label: cleanup}}
"""


@pytest.mark.transports("sqlite", "redis")
def test_each_trigger_rule_decides_from_the_states_of_the_needs(pipelines):
    pipelines.worker("-c", "2")
    run = pipelines.submit(pipelines.write(RULES))
    record = pipelines.wait(run)
    states = {name: step.state for name, step in record.steps.items()}
    assert states == {
        "ok": "success", "bad": "failed", "after_bad": "skipped",
        "all_success": "skipped", "all_done": "success", "all_failed": "success",
        "all_failed_no": "skipped", "one_failed": "success", "one_failed_no": "skipped",
        "one_success": "success", "none_failed": "skipped", "never": "skipped",
        "none_failed_skip": "success", "none_skipped": "skipped",
        "none_skipped_ok": "success", "cleanup": "success"}
    assert record.steps["all_success"].reason == "needs bad, which failed"
    assert record.steps["one_failed_no"].reason == "trigger rule one_failed: ok success"
    ran = set(pipelines.marks())
    assert {"all_done", "all_failed", "one_failed", "one_success", "none_failed_skip",
            "none_skipped_ok", "cleanup"} <= ran
    assert not ran & {"all_success", "all_failed_no", "one_failed_no", "none_failed",
                      "none_skipped", "after_bad", "never"}
    # as Airflow: the run failed, since final steps were skipped because `bad` failed
    assert record.state == "failed"


@pytest.mark.transports("sqlite", "redis")
def test_a_failure_handled_by_an_all_done_final_step_leaves_the_run_a_success(pipelines):
    path = pipelines.write("""\
name: handled
app: pipeline_tasks
steps:
  bad: {task: pipeline_tasks.fail}
  report: {task: pipeline_tasks.echo, needs: [bad], args: ["{{ steps.bad.state }}"],
           trigger_rule: all_done}
""")
    pipelines.worker("-c", "1")
    run = pipelines.submit(path)
    record = pipelines.wait(run)
    assert (record.state, record.steps["report"].state) == ("success", "success")
    assert pipelines.result(run, "report") == "failed"


@pytest.mark.transports("sqlite", "redis")
def test_ignore_failure_stays_a_shorthand_for_running_dependents(pipelines):
    path = pipelines.write("""\
name: shorthand
app: pipeline_tasks
steps:
  bad: {task: pipeline_tasks.fail, ignore_failure: true}
  next: {task: pipeline_tasks.echo, needs: [bad], args: [1]}
  alarm: {task: pipeline_tasks.echo, needs: [bad], args: [2], trigger_rule: one_failed}
""")
    pipelines.worker("-c", "1")
    record = pipelines.wait(pipelines.submit(path))
    assert {n: s.state for n, s in record.steps.items()} == {
        "bad": "failed", "next": "success", "alarm": "success"}
    assert record.state == "success"


def test_rules_wait_until_they_can_decide():
    assert decide("one_success", ["success", "waiting"]) == "run"  # does not wait for all
    assert decide("one_failed", ["failed", "waiting"]) == "run"
    assert decide("all_done", ["failed", "waiting"]) == "wait"
    assert decide("all_success", ["failed", "waiting"]) == "upstream_failed"
    assert decide("one_success", ["failed", "upstream_failed"]) == "upstream_failed"
    assert decide(None, []) == "run"


def test_validate_names_the_line_of_an_unknown_rule_and_of_bad_limits(pipelines):
    path = pipelines.write("""\
name: bad-limits
app: pipeline_tasks
max_active_runs: 0
steps:
  a: {task: pipeline_tasks.echo}
  b:
    task: pipeline_tasks.echo
    needs: [a]
    trigger_rule: all_succes
  c:
    task: pipeline_tasks.double
    map: [1, 2]
    args: ["{{ item }}"]
    concurrency: 0
""")
    checked = pipelines.cli("validate", path)
    assert checked.returncode == 1
    errors = checked.stderr.splitlines()
    assert any(e.startswith(f"{path}:3:") and "max_active_runs" in e for e in errors), errors
    assert any(e.startswith(f"{path}:9:") and "steps.b.trigger_rule" in e
               and "'all_success'" in e for e in errors), errors
    assert any(e.startswith(f"{path}:14:") and "steps.c.concurrency" in e
               and "greater than or equal to 1" in e for e in errors), errors
    refused = pipelines.cli("submit", path)
    assert refused.returncode == 2 and "trigger_rule" in refused.stderr


def test_a_key_template_may_read_only_run_and_params():
    from runner.exceptions import PipelineError
    from runner.pipeline.validate import load_pipeline_text

    with pytest.raises(PipelineError) as caught:
        load_pipeline_text('name: x\nkey: "{{ steps.a.result }}-{{ params.nope }}"\nsteps:\n'
                           '  a: {task: t}\n', "k.yaml")
    assert caught.value.problems == [
        "k.yaml:2:1: '{{ steps.a.result }}-{{ params.nope }}' reads 'steps', which is not "
        "defined; templates can read: params, run",
        "k.yaml:2:1: '{{ steps.a.result }}-{{ params.nope }}' reads params.nope, which is not "
        "a param"]


WHEN_WORDS = """
name: when_words
params:
  flag: {default: "yes"}
steps:
  quoted_false: {task: pipeline_tasks.echo, when: "false", args: [1], kwargs: {label: a}}
  quoted_no: {task: pipeline_tasks.echo, when: " No ", args: [1], kwargs: {label: b}}
  param_flag: {task: pipeline_tasks.echo, when: "{{ params.flag }}", args: [1],
               kwargs: {label: c}}
  text_zero: {task: pipeline_tasks.echo, when: "{{ 0 }}", args: [1], kwargs: {label: d}}
  quoted_true: {task: pipeline_tasks.echo, when: "true", args: [1], kwargs: {label: e}}
"""


@pytest.mark.transports("sqlite")
def test_a_condition_that_reads_false_as_a_string_skips_its_step(pipelines):
    pipelines.worker("-c", "2")
    path = pipelines.write(WHEN_WORDS)
    states = {name: step.state for name, step in pipelines.wait(
        pipelines.submit(path, flag="false")).steps.items()}
    assert states == {"quoted_false": "skipped", "quoted_no": "skipped",
                      "param_flag": "skipped", "text_zero": "skipped", "quoted_true": "success"}
    record = pipelines.wait(pipelines.submit(path))  # flag: "yes"
    assert record.steps["param_flag"].state == "success"
    assert record.steps["quoted_false"].reason == "when 'false' is false"

"""What a user sees of a run: step results in `runner status` (and `--json`), `runner result
RUN STEP`, `submit --wait` ending with the final results, `queued` until a worker starts a
step, a warning naming broker and queue when nothing consumes it, `--timeout`, and no run
left hanging (every queue consumed by `runner run`, a step a crash left unsent sent again by
`runner retry`). Real workers, SQLite and Redis."""

from __future__ import annotations

import json
import time

import pytest

from runner.pipeline.runs import load_run, run_key

pytestmark = pytest.mark.transports("sqlite", "redis")

MAPPED = """\
name: mapped
app: pipeline_tasks
steps:
  each: {task: pipeline_tasks.double, map: [1, 2, 3], args: ["{{ item }}"]}
  total: {task: pipeline_tasks.collect, needs: [each], args: ["{{ steps.each.result | sum }}"]}
  note: {task: pipeline_tasks.echo, args: ["{{ 'x' * 200 }}"], kwargs: {label: note}}
"""


def test_status_shows_each_steps_result_and_json_prints_the_record_with_results(pipelines):
    pipelines.worker("-c", "2")
    run = pipelines.submit(pipelines.write(MAPPED))
    assert pipelines.wait(run).state == "success"
    status = pipelines.cli("status", run)
    assert status.returncode == 0, status.stderr
    rows = {line.split()[0]: line for line in status.stdout.splitlines()[5:]}
    assert rows["each"].split()[1:3] == ["success", "(3/3)"]
    assert rows["each"].endswith("  [2, 4, 6]")
    assert rows["total"].endswith("  12")
    # a long result is shortened in the table, in the middle
    assert '"xxxx' in rows["note"] and " ... " in rows["note"] and len(rows["note"]) < 160
    shown = pipelines.cli("status", run, "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert (data["id"], data["state"], data["pipeline"]) == (run, "success", "mapped")
    assert data["steps"]["each"]["result"] == [2, 4, 6]  # a mapped step: the list
    assert data["steps"]["each"]["items"] == 3
    assert data["steps"]["total"]["result"] == 12
    assert data["steps"]["note"]["result"] == "x" * 200  # whole, not shortened


def test_result_run_step_prints_a_steps_whole_result_or_its_error(pipelines):
    pipelines.worker("-c", "2")
    path = pipelines.write(MAPPED + "  broken: {task: pipeline_tasks.fail, args: [nope]}\n")
    run = pipelines.submit(path)
    assert pipelines.wait(run).state == "failed"
    each = pipelines.cli("result", run, "each")
    assert (each.returncode, each.stdout) == (0, "[2, 4, 6]\n")
    broken = pipelines.cli("result", run, "broken")
    assert broken.returncode == 1
    assert broken.stderr == "failed: ValueError: nope\n"
    pending = pipelines.submit(pipelines.write("name: later\napp: pipeline_tasks\nsteps:\n"
                                               "  nap: {task: pipeline_tasks.sleep, args: [1]}\n",
                                               "later.yaml"))
    waited = pipelines.cli("result", pending, "nap", "--wait", "--timeout", "20")
    assert (waited.returncode, waited.stdout) == (0, '"sleep"\n')
    missing = pipelines.cli("result", run, "nosuch")

    assert missing.returncode == 2
    assert "has no step 'nosuch'; its steps: each, total, note, broken" in missing.stderr


def test_submit_wait_ends_with_the_final_steps_results(pipelines):
    pipelines.worker("-c", "2")
    done = pipelines.cli("submit", pipelines.write(MAPPED), "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    run = lines[0]
    at = lines.index(f"run {run}: success")
    assert lines[at + 1:] == ["  total: 12", f'  note: "{"x" * 200}"']  # not `each`: it is needed


def test_without_a_worker_a_step_is_queued_and_submit_wait_says_where_it_waits(pipelines):
    path = pipelines.write("name: lonely\napp: pipeline_tasks\ndefaults: {queue: reports}\n"
                           "steps:\n  a: {task: pipeline_tasks.echo, args: [1]}\n")
    waited = pipelines.cli("submit", path, "--wait", "--timeout", "3", "--stall-after", "1")
    assert waited.returncode == 124, waited.stdout + waited.stderr
    run = waited.stdout.splitlines()[0]
    assert "  a                    queued" in waited.stdout
    broker = pipelines.app.broker_url.split("?")[0]
    assert (f"warning: step 'a' has waited 1s in queue 'reports' on broker {broker}"
            in waited.stderr) or (f"in queue 'reports' on broker {broker}" in waited.stderr)
    assert "is a worker consuming that queue? (runner worker -A pipeline_tasks -Q reports)" \
        in waited.stderr
    assert f"run {run}: still running after 3s (--timeout); it goes on" in waited.stderr
    step = load_run(pipelines.app.backend, run).steps["a"]
    assert (step.state, step.started_at, step.queue) == ("queued", None, "reports")
    assert step.enqueued_at is not None  # in the broker: a worker takes it from there
    pipelines.worker("-c", "1", "-Q", "reports")
    record = pipelines.wait(run)
    assert record.state == "success"
    assert record.steps["a"].started_at >= record.steps["a"].enqueued_at


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_a_step_is_running_once_a_worker_starts_it(pipelines, pool):
    path = pipelines.write("name: slow\napp: pipeline_tasks\nsteps:\n"
                           "  nap: {task: pipeline_tasks.sleep, args: [3]}\n")
    pipelines.worker("-c", "1", "-P", pool)
    run = pipelines.submit(path)
    deadline = time.monotonic() + 20
    while load_run(pipelines.app.backend, run).steps["nap"].state != "running":
        assert time.monotonic() < deadline, "the step never showed as running"
        time.sleep(0.05)
    assert "end:sleep" not in pipelines.marks()  # running, not done
    assert pipelines.wait(run).steps["nap"].state == "success"


def test_run_starts_its_worker_on_every_queue_the_steps_use(pipelines):
    path = pipelines.write("""\
name: queues
app: pipeline_tasks
steps:
  here: {task: pipeline_tasks.echo, args: [1]}
  there: {task: pipeline_tasks.echo, args: [2], queue: reports, needs: [here]}
  elsewhere: {task: pipeline_tasks.request_info, queue: bulk, needs: [there]}
""")
    done = pipelines.cli("run", path, "--timeout", "60")
    assert done.returncode == 0, done.stdout + done.stderr
    run = done.stdout.splitlines()[0].split()[1]
    assert pipelines.result(run, "elsewhere")["queue"] == "bulk"


def test_a_step_a_crash_left_unsent_is_sent_again_by_retry(pipelines):
    """The step was marked ready (`queued`) but the process died before enqueueing it: the
    record says so (no enqueued_at), and retry sends it instead of refusing a running run."""
    path = pipelines.write("name: crash\napp: pipeline_tasks\nsteps:\n"
                           "  a: {task: pipeline_tasks.echo, args: [1]}\n"
                           "  b: {task: pipeline_tasks.echo, needs: [a], args: [2]}\n")
    run = pipelines.submit(path)
    pipelines.app.broker.purge(["celery"])  # as if `a` was never sent ...
    backend = pipelines.app.backend

    def unsent(raw):
        from runner.pipeline.runs import RunRecord

        record = RunRecord.decode(raw)
        record.steps["a"].enqueued_at = None  # ... and never recorded as sent
        return record.encode()

    backend.update_data(run_key(run), unsent)
    pipelines.worker("-c", "1")
    retried = pipelines.cli("retry", run, "--wait", "--timeout", "30")
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert pipelines.result(run, "b") == 2
    assert pipelines.cli("retry", run).returncode == 2  # succeeded: nothing to retry


def test_the_record_of_a_10000_item_map_stays_small(pipelines):
    path = pipelines.write("name: big\napp: pipeline_tasks\nsteps:\n"
                           "  each: {task: pipeline_tasks.double, map: '{{ range(10000) | list }}',"
                           " args: ['{{ item }}'], concurrency: 50}\n"
                           "  join: {task: pipeline_tasks.collect, needs: [each], "
                           "args: ['{{ steps.each.result | length }}']}\n")
    run = pipelines.submit(path)
    raw = pipelines.app.backend.get_data(run_key(run))
    assert load_run(pipelines.app.backend, run).steps["each"].items == 10000
    assert len(raw) < 100_000
    assert pipelines.app.broker.qsize("celery") == 50  # concurrency: the first 50 only


def test_submit_wait_on_a_terminal_shows_a_live_table(pipelines):
    import os
    import pty
    import subprocess
    import sys

    pipelines.worker("-c", "2")
    path = pipelines.write(MAPPED)
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "runner", "submit", str(path), "--wait"],
                            cwd=pipelines.dir, env={**pipelines.env, "COLUMNS": "120"},
                            stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    assert proc.wait(60) == 0
    os.close(leader)
    text = out.decode(errors="replace")
    assert "STEP" in text and "ELAPSED" in text and "ITEMS" in text  # rich's table
    assert "3/3" in text and "success" in text
    assert "  total: 12" in text


def test_a_run_a_crash_left_stored_but_not_begun_is_begun_by_retry(pipelines):
    """The submitting process died after storing the run (state queued) and before starting
    it: retry starts it (a run waiting its turn for max_active_runs is left in line)."""
    from runner.pipeline.runs import RunRecord

    path = pipelines.write("name: half\napp: pipeline_tasks\nsteps:\n"
                           "  a: {task: pipeline_tasks.echo, args: [1]}\n")
    run = pipelines.submit(path)
    pipelines.app.broker.purge(["celery"])

    def never_begun(raw):
        record = RunRecord.decode(raw)
        record.state = "queued"
        record.steps["a"].state, record.steps["a"].enqueued_at = "pending", None
        return record.encode()

    pipelines.app.backend.update_data(run_key(run), never_begun)
    pipelines.worker("-c", "1")
    retried = pipelines.cli("retry", run, "--wait", "--timeout", "30")
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert pipelines.result(run, "a") == 1

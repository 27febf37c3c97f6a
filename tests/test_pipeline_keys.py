"""Idempotent runs and tasks, and limits that hold across workers: one run per key (also
when submits race), `apply_async(..., idempotency_key=K)`, `max_active_runs` (further runs
wait, queued, in order), `concurrency: N` per mapped step. Real workers, SQLite and Redis."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from runner.pipeline.runs import list_runs, load_run

pytestmark = pytest.mark.transports("sqlite", "redis")

ONE = "name: once\napp: pipeline_tasks\nsteps:\n  a: {task: pipeline_tasks.echo, args: [1]}\n"


def in_flight(marks: list[str]) -> int:
    """The most tasks running at once, from the start:/end: lines tasks wrote in order."""
    running = most = 0
    for line in marks:
        if line.startswith("start:"):
            running += 1
            most = max(most, running)
        elif line.startswith("end:"):
            running -= 1
    return most


def test_submits_of_one_key_at_the_same_moment_make_one_run(pipelines):
    path = pipelines.write(ONE)
    command = [sys.executable, "-m", "runner", "submit", str(path), "--key", "once:2026-11-24"]
    procs = [subprocess.Popen(command, cwd=pipelines.dir, env=pipelines.env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(6)]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    ids = {out.strip() for out, _err in outputs}
    assert len(ids) == 1, outputs
    (run,) = ids
    assert sum("no other run started" in err for _out, err in outputs) == 5
    assert [r.id for r in list_runs(pipelines.app.backend)] == [run]
    assert load_run(pipelines.app.backend, run).key == "once:2026-11-24"
    pipelines.worker("-c", "1")
    assert pipelines.wait(run).state == "success"
    assert pipelines.marks() == ["echo"]  # its step ran once
    again = pipelines.cli("submit", path, "--key", "once:2026-11-24", "--wait")
    assert again.returncode == 0  # the finished run, not a new one
    assert again.stdout.splitlines()[0] == run
    assert pipelines.marks() == ["echo"]


def test_apply_async_with_an_idempotency_key_enqueues_once(pipelines):
    import pipeline_tasks

    app = pipelines.app
    ids: list[str] = []

    def call(value: int) -> None:
        ids.append(pipeline_tasks.echo.apply_async((value,), idempotency_key="report:42").id)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(ids)) == 1
    assert app.broker.qsize("celery") == 1  # one message, whoever won
    other = pipeline_tasks.echo.apply_async((9,), idempotency_key="report:43")
    assert other.id != ids[0]
    pipelines.worker("-c", "1")
    assert other.get(timeout=20) == 9
    first = app.AsyncResult(ids[0]).get(timeout=20)
    assert first in range(6)
    assert pipeline_tasks.echo.apply_async((7,), idempotency_key="report:42").get(
        timeout=20) == first  # the same task's result, within the window
    app.conf.task_idempotency_window = 0.2
    time.sleep(0.3)
    assert pipeline_tasks.echo.apply_async((7,), idempotency_key="report:42").get(
        timeout=20) == 7  # the window passed: sent again


LIMITED = """\
name: limited
app: pipeline_tasks
max_active_runs: 2
params: {n: 0}
steps:
  nap: {task: pipeline_tasks.sleep, args: [0.4, "{{ params.n }}"]}
"""


def test_max_active_runs_holds_further_runs_queued_and_starts_them_in_order(pipelines):
    path = pipelines.write(LIMITED)
    runs = [pipelines.submit(path, n=i) for i in range(6)]
    states = [load_run(pipelines.app.backend, r).state for r in runs]
    assert states == ["running", "running", "queued", "queued", "queued", "queued"]
    assert load_run(pipelines.app.backend, runs[3]).steps["nap"].state == "pending"
    pipelines.worker("-c", "4")
    for run in runs:
        assert pipelines.wait(run, timeout=60).state == "success"
    marks = pipelines.marks()
    assert in_flight(marks) == 2  # never more than 2 runs at once, with 4 processes free
    started = [line.split(":")[1] for line in marks if line.startswith("start:")]
    assert set(started[:2]) == {"0", "1"} and sorted(started) == list("012345")


def test_queued_runs_start_in_order_and_a_cancelled_one_leaves_the_line(pipelines):
    path = pipelines.write(LIMITED.replace("max_active_runs: 2", "max_active_runs: 1"))
    runs = [pipelines.submit(path, n=i) for i in range(5)]
    assert pipelines.cli("cancel", runs[1]).returncode == 0
    pipelines.worker("-c", "2")
    for run in runs[2:]:
        assert pipelines.wait(run, timeout=60).state == "success"
    assert load_run(pipelines.app.backend, runs[1]).state == "cancelled"
    assert [m for m in pipelines.marks() if m.startswith("start:")] == [
        "start:0", "start:2", "start:3", "start:4"]  # one at a time, in the order submitted


def test_step_concurrency_keeps_at_most_n_items_of_a_map_in_flight(pipelines):
    path = pipelines.write("""\
name: gentle
app: pipeline_tasks
steps:
  each:
    task: pipeline_tasks.sleep
    map: [a, b, c, d, e, f, g]
    args: [0.3, "{{ item }}"]
    concurrency: 2
  join: {task: pipeline_tasks.collect, needs: [each], args: ["{{ steps.each.result }}"]}
""")
    pipelines.worker("-c", "4")
    run = pipelines.submit(path)
    assert pipelines.wait(run, timeout=60).state == "success"
    assert pipelines.result(run, "join") == list("abcdefg")
    assert in_flight(pipelines.marks()) == 2  # 4 processes free, 2 items at a time


def test_retry_of_a_limited_map_runs_only_the_failed_items(pipelines, tmp_path):
    (tmp_path / "broken-item3").touch()
    (tmp_path / "broken-item5").touch()
    path = pipelines.write("""\
name: limited-map
app: pipeline_tasks
steps:
  each: {task: pipeline_tasks.broken_while_flagged, map: [1, 2, 3, 4, 5, 6],
         args: ["item{{ item }}"], concurrency: 2}
""")
    pipelines.worker("-c", "2")
    run = pipelines.submit(path)
    record = pipelines.wait(run, timeout=60)
    assert record.steps["each"].error.startswith("2 of 6 items failed")
    (tmp_path / "broken-item3").unlink()
    (tmp_path / "broken-item5").unlink()
    assert pipelines.cli("retry", run, "--wait", "--timeout", "60").returncode == 0
    assert pipelines.result(run, "each") == [f"item{i}" for i in range(1, 7)]
    assert sorted(pipelines.marks()) == sorted(
        [f"item{i}" for i in range(1, 7)] + ["item3", "item5"])
    assert load_run(pipelines.app.backend, run).steps["each"].reused == 4


def test_200_runs_submitted_at_once_all_finish_never_more_than_10_active(pipelines):
    from runner.pipeline import engine
    from runner.pipeline.validate import load_pipeline

    loaded = load_pipeline(pipelines.write(LIMITED.replace("max_active_runs: 2",
                                                           "max_active_runs: 10")
                                           .replace("[0.4,", "[0.01,")))
    pipelines.worker("-c", "4")
    pipelines.worker("-c", "4")
    runs: list[str] = []

    def submit_some(first: int) -> None:
        for n in range(first, first + 25):
            runs.append(engine.submit(pipelines.app, loaded, {"n": n}).id)

    threads = [threading.Thread(target=submit_some, args=(i * 25,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(runs) == 200
    most = 0
    deadline = time.monotonic() + 120
    while True:  # what `runner runs --state running` would show, looked at again and again
        states = [r.state for r in list_runs(pipelines.app.backend)]
        most = max(most, states.count("running"))
        if all(state == "success" for state in states):
            break
        assert time.monotonic() < deadline, {s: states.count(s) for s in set(states)}
        time.sleep(0.05)
    assert 1 < most <= 10
    assert len([m for m in pipelines.marks() if m.startswith("end:")]) == 200


def test_submit_wait_says_when_a_run_waits_for_a_slot(pipelines):
    path = pipelines.write(LIMITED.replace("max_active_runs: 2", "max_active_runs: 1"))
    first = pipelines.submit(path, n=0)  # no worker: it holds the only slot
    waited = pipelines.cli("submit", path, "--wait", "--timeout", "2", "--stall-after", "0.5")
    assert waited.returncode == 124
    run = waited.stdout.splitlines()[0]
    assert f"warning: run {run} has waited " in waited.stderr
    assert ("for one of pipeline 'limited''s max_active_runs slots (1 runs active, 0 waiting "
            "before it)") in waited.stderr
    assert load_run(pipelines.app.backend, run).state == "queued"
    assert load_run(pipelines.app.backend, first).state == "running"


def test_a_retried_run_takes_a_max_active_runs_slot_again(pipelines, tmp_path):
    path = pipelines.write("""\
name: one-at-a-time
app: pipeline_tasks
max_active_runs: 1
params: {label: x, secs: 0}
steps:
  nap: {task: pipeline_tasks.sleep, args: ["{{ params.secs }}", "{{ params.label }}"]}
  check: {task: pipeline_tasks.broken_while_flagged, needs: [nap], args: ["{{ params.label }}"]}
""")
    (tmp_path / "broken-first").touch()
    pipelines.worker("-c", "2")
    first = pipelines.submit(path, label="first")
    assert pipelines.wait(first).state == "failed"
    (tmp_path / "broken-first").unlink()
    second = pipelines.submit(path, label="second", secs=1.5)  # holds the slot meanwhile
    retried = pipelines.cli("retry", first, "--wait", "--timeout", "30")
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert pipelines.wait(second).state == "success"
    # the retry waited for the slot: its step ran after the second run had ended
    assert pipelines.marks()[-3:] == ["end:second", "second", "first"]

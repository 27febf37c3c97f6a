"""Global rate limits: `rate_limit: N/s` on a step holds across runs and workers (slots
booked atomically in the result backend, held by the broker as an eta); bad rates are refused
by `runner validate` at their line. Real workers, SQLite and Redis."""

from __future__ import annotations

import time

import pytest

LIMITED = """\
name: polite
app: pipeline_tasks
params: {tag: a}
steps:
  call:
    task: pipeline_tasks.stamp
    map: [1, 2, 3]
    args: ["{{ params.tag }}{{ item }}"]
    rate_limit: 5/s
"""


@pytest.mark.transports("sqlite", "redis")
def test_a_steps_rate_limit_holds_across_runs_and_workers(pipelines):
    path = pipelines.write(LIMITED)
    pipelines.worker("-c", "2")
    pipelines.worker("-c", "2")  # two workers, as on two hosts
    sent = time.time()
    first = pipelines.submit(path, tag="a")  # two runs at once share the step's limit
    second = pipelines.submit(path, tag="b")
    starts = []
    for run in (first, second):
        assert pipelines.wait(run, timeout=30).state == "success"
        starts += pipelines.result(run, "call")
    starts.sort()
    # 6 tasks at 5/s, whichever run and worker: the k-th starts no sooner than k/5 s after
    # they were sent (without the limit, 4 processes start them all at once)
    late = [round(start - sent, 3) for start in starts]
    assert all(offset >= 0.2 * k - 0.01 for k, offset in enumerate(late)), late
    assert sorted(pipelines.marks()) == ["a1", "a2", "a3", "b1", "b2", "b3"]


def test_validate_refuses_a_bad_rate_at_its_line(pipelines):
    path = pipelines.write(LIMITED.replace("5/s", "5/week") + "defaults: {rate_limit: 0/m}\n")
    checked = pipelines.cli("validate", path)
    assert checked.returncode == 1
    assert f"{path}:9:5: steps.call.rate_limit: Value error, rate limit '5/week' is not N/s, " \
           f"N/m or N/h with N > 0" in checked.stderr
    assert f"{path}:10:" in checked.stderr and "rate limit '0/m'" in checked.stderr


@pytest.mark.transports("sqlite", "redis")
def test_a_tasks_global_rate_limit_holds_across_callers_and_workers(pipelines):
    import threading

    import pipeline_tasks

    pipelines.worker("-c", "2")
    pipelines.worker("-c", "2")
    sent = time.time()
    results = []

    def call(label: str) -> None:
        results.extend(pipeline_tasks.stamp_limited.delay(f"{label}{i}") for i in range(3))

    callers = [threading.Thread(target=call, args=(label,)) for label in "ab"]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    starts = sorted(result.get(timeout=30) for result in results)
    late = [round(start - sent, 3) for start in starts]
    assert all(offset >= 0.2 * k - 0.01 for k, offset in enumerate(late)), late


def test_a_bad_global_rate_or_scope_is_refused_where_the_task_is_made():
    from runner import Celery

    app = Celery("bad-rates", set_as_current=False)
    with pytest.raises(ValueError, match="rate limit '5/week' is not N/s, N/m or N/h"):
        app.task(rate_limit="5/week", rate_limit_scope="global")(lambda: None)
    with pytest.raises(ValueError, match="rate_limit_scope='cluster': 'global'"):
        app.task(rate_limit="5/s", rate_limit_scope="cluster")(lambda: None)

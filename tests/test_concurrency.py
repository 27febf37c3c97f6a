"""Several workers, processes and producers on one SQLite file: each task runs exactly once."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter

import pytest

PRODUCER = """
import sys
import tasks

first, count, marker = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
for i in range(first, first + count):
    tasks.record.apply_async((i, marker), task_id=f"task-{i}")
"""


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_concurrency_runs_that_many_tasks_at_once(app, start_worker, pool):
    from tasks import sleep

    start_worker("-P", pool, "-c", "3")
    started = time.monotonic()
    results = [sleep.delay(1, i) for i in range(3)]
    assert [r.get(timeout=10) for r in results] == [0, 1, 2]
    assert time.monotonic() - started < 2.5  # three 1 s tasks side by side, not one after another


def test_concurrency_one_runs_tasks_one_after_another(app, start_worker):
    from tasks import sleep

    start_worker("-c", "1")
    started = time.monotonic()
    results = [sleep.delay(0.4, i) for i in range(3)]
    assert [r.get(timeout=10) for r in results] == [0, 1, 2]
    assert time.monotonic() - started >= 1.2


def test_four_producers_two_workers_5000_tasks_each_run_exactly_once(
        app, start_worker, worker_env, tmp_path):
    total, producers = 5000, 4
    marker = tmp_path / "runs"
    workers = [start_worker("-c", "2", "--quiet") for _ in range(2)]
    share = total // producers
    procs = [subprocess.Popen([sys.executable, "-c", PRODUCER, str(n * share), str(share),
                               str(marker)], env=worker_env, cwd=tmp_path)
             for n in range(producers)]
    try:
        assert [p.wait(60) for p in procs] == [0] * producers
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if marker.exists() and len(marker.read_text().split()) >= total:
            break
        time.sleep(0.1)
    time.sleep(0.3)  # a second run, if there were one, would show up now
    runs = Counter(int(line) for line in marker.read_text().split())
    never_ran = sorted(set(range(total)) - set(runs))
    assert never_ran == []
    assert [i for i, n in runs.items() if n != 1] == []
    results = {i: app.AsyncResult(f"task-{i}") for i in range(total)}
    wrong = [i for i, r in results.items() if r.get(timeout=10) != 2 * i]
    assert wrong == []
    assert app.broker.qsize("celery") == 0
    for worker in workers:  # both took part
        assert worker.log().count("succeeded in") > 0

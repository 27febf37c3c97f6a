"""``-P asyncio --processes N -c M`` (#22): N processes, each running M ``async def`` tasks at
once on its event loop; a task that does not stop when cancelled (past its hard time limit, or
terminated) gets its process replaced; acks_late, claim renewal and warm shutdown hold with
several processes."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.transports("sqlite", "redis", "amqp")

APP = "async_tasks"
SHORT_VISIBILITY = {"RUNNER_BROKER_TRANSPORT_OPTIONS": json.dumps({"visibility_timeout": 1})}


@pytest.fixture
def atasks(app):
    import async_tasks

    return async_tasks


def _wait_for_text(path: Path, text: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never said {text!r}")


def test_several_processes_each_run_many_at_once(atasks, start_worker):
    worker = start_worker("-P", "asyncio", "--processes", "2", "-c", "5", app=APP)
    assert "5 in flight x 2 processes (asyncio)" in worker.log()
    results = [atasks.apid.delay(0.5) for _ in range(20)]
    got = [r.get(timeout=20) for r in results]
    pids = {pid for pid, _ in got}
    assert len(pids) == 2 and worker.proc.pid not in pids  # two processes of the worker's
    assert 1 < max(most for _, most in got) <= 5  # each runs several at once, at most -c


def test_hard_limit_replaces_a_process_whose_coroutine_will_not_stop(atasks, start_worker,
                                                                      tmp_path):
    from runner.exceptions import TimeLimitExceeded, WorkerLostError

    worker = start_worker("-P", "asyncio", "--processes", "1", "-c", "4", app=APP)
    before = atasks.apid.delay().get(timeout=10)[0]
    marker = tmp_path / "swallow"
    innocent = atasks.aadd.delay(1, 1, 5)  # in flight in the same process
    stuck = atasks.aswallow_limited.delay(str(marker), 30)
    with pytest.raises(TimeLimitExceeded):
        stuck.get(timeout=15)
    assert marker.read_text() == "cancel swallowed"
    with pytest.raises(WorkerLostError):  # lost with the process, as in a prefork child
        innocent.get(timeout=15)
    assert atasks.apid.delay().get(timeout=10)[0] != before  # a new process runs tasks
    assert "aswallow_limited" in worker.log() and "did not stop" in worker.log()


def test_hard_limit_replaces_a_process_whose_loop_is_blocked(atasks, start_worker):
    from runner.exceptions import TimeLimitExceeded

    start_worker("-P", "asyncio", "-c", "4", app=APP)
    began = time.monotonic()
    blocked = atasks.ablocking_limited.delay(30)  # time.sleep(30): cancelling cannot reach it
    with pytest.raises(TimeLimitExceeded):
        blocked.get(timeout=15)
    assert time.monotonic() - began < 10
    assert atasks.aadd.delay(2, 2).get(timeout=10) == 4


def test_terminate_replaces_a_process_whose_coroutine_will_not_stop(atasks, start_worker,
                                                                    tmp_path):
    start_worker("-P", "asyncio", "-c", "4", app=APP)
    marker = tmp_path / "swallow"
    stuck = atasks.aswallow.delay(str(marker), 60)
    _wait_for_text(marker, "started")
    stuck.revoke(terminate=True)
    deadline = time.monotonic() + 15
    while stuck.state != "REVOKED" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stuck.state == "REVOKED"
    assert marker.read_text() == "cancel swallowed"
    assert atasks.aadd.delay(1, 2).get(timeout=10) == 3


def test_a_task_lost_with_its_process_is_delivered_again_when_it_asks(atasks, start_worker,
                                                                      tmp_path):
    from runner.exceptions import TimeLimitExceeded

    start_worker("-P", "asyncio", "--processes", "1", "-c", "4", app=APP)
    attempts = tmp_path / "attempts"
    again = atasks.aredeliver.delay(str(attempts), 3)  # acks_late, reject_on_worker_lost
    _wait_for_text(attempts, "attempt")
    stuck = atasks.aswallow_limited.delay(str(tmp_path / "swallow"), 30)
    with pytest.raises(TimeLimitExceeded):
        stuck.get(timeout=15)
    assert again.get(timeout=20) == "done"
    assert attempts.read_text().splitlines() == ["attempt", "attempt"]


def test_warm_shutdown_waits_for_tasks_in_flight_in_every_process(atasks, start_worker,
                                                                  tmp_path):
    worker = start_worker("-P", "asyncio", "--processes", "2", "-c", "2", app=APP)
    markers = [tmp_path / f"long-{i}" for i in range(4)]
    longs = [atasks.along.delay(str(marker), 1.5) for marker in markers]
    for marker in markers:
        _wait_for_text(marker, "started")
    worker.signal(signal.SIGTERM)
    assert worker.proc.wait(20) == 0
    assert [r.get(timeout=5) for r in longs] == ["done"] * 4


def test_acks_late_and_claim_renewal_with_several_processes(atasks, app, start_worker,
                                                            tmp_path):
    first = start_worker("-P", "asyncio", "--processes", "2", "-c", "2", app=APP,
                         env=SHORT_VISIBILITY)
    runs = tmp_path / "runs"
    late = [atasks.alate.delay(str(runs), 3) for _ in range(3)]  # 3x the visibility timeout
    deadline = time.monotonic() + 15
    while (not runs.exists() or len(runs.read_text().split()) < 3) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    second = start_worker("-P", "asyncio", "--processes", "2", "-c", "2", app=APP,
                          env=SHORT_VISIBILITY)  # would take any claim left to expire
    assert [r.get(timeout=20) for r in late] == ["done"] * 3
    assert len(runs.read_text().split()) == 3  # each ran once: the claims were renewed
    assert len(set(runs.read_text().split())) == 2  # in both processes of the first worker
    first.stop()
    second.stop()
    assert app.broker.qsize("celery") == 0  # acked once stored: nothing comes back
    assert "async_tasks.alate[" not in second.log()

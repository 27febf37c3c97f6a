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

from tests.helpers import eventually, wait_for_state

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


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_several_processes_each_run_many_at_once(atasks, start_worker, loop):
    worker = start_worker("-P", "asyncio", "--processes", "2", "-c", "5", "--loop", loop,
                          app=APP)
    assert f"5 in flight x 2 processes (asyncio, {loop} loop)" in worker.log()
    results = [atasks.apid.delay(0.5) for _ in range(20)]
    got = [r.get(timeout=20) for r in results]
    pids = {pid for pid, _ in got}
    assert len(pids) == 2 and worker.proc.pid not in pids  # two processes of the worker's
    assert 1 < max(most for _, most in got) <= 5  # each runs several at once, at most -c


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_hard_limit_replaces_a_process_whose_coroutine_will_not_stop(atasks, start_worker,
                                                                      tmp_path, loop):
    from runner.exceptions import TimeLimitExceeded, WorkerLostError

    worker = start_worker("-P", "asyncio", "--processes", "1", "-c", "4", "--loop", loop,
                          app=APP)
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
    wait_for_state(stuck, "REVOKED", timeout=15)
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
    [stats] = app.control.inspect(timeout=1.5).stats().values()
    assert stats["pool"]["max-concurrency"] == 4  # (-c in each of its 2 processes, as a total)
    assert len(stats["pool"]["processes"]) == 2
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


# -- jobs handed over beyond -c wait in their process -------------------------------------


def _child_pids(worker) -> list[int]:
    import psutil

    return [c.pid for c in psutil.Process(worker.pid).children()]


def test_tasks_beyond_c_wait_in_their_process_and_start_as_running_ones_end(atasks, app,
                                                                           start_worker):
    start_worker("-n", "wait@%h", "-P", "asyncio", "--processes", "1", "-c", "2", app=APP)
    me = next(iter(app.control.ping(timeout=2)[0]))
    results = [atasks.apid.delay(1.0) for _ in range(4)]
    inspect = app.control.inspect([me])
    deadline = time.monotonic() + 10
    while len((inspect.active() or {}).get(me, [])) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    active, reserved = inspect.active()[me], inspect.reserved()[me]
    assert len(active) == 2 and len(reserved) == 2  # the waiting ones are reserved, not active
    assert {r["id"] for r in active + reserved} == {r.id for r in results}
    got = [r.get(timeout=15) for r in results]
    assert max(most for _, most in got) == 2  # never more than -c at once


def test_a_waiting_task_goes_back_unstarted_when_its_process_dies(atasks, start_worker,
                                                                 tmp_path):
    from runner.exceptions import WorkerLostError

    worker = start_worker("-P", "asyncio", "--processes", "1", "-c", "1", app=APP)
    marker = tmp_path / "running"
    running = atasks.along.delay(str(marker), 30)
    _wait_for_text(marker, "started")
    waiting = atasks.aadd.delay(2, 3)  # early ack (the default): acked only once it starts
    time.sleep(1.0)  # (handed to the process, waiting behind the running one)
    assert waiting.state == "PENDING"
    [child] = _child_pids(worker)
    import os

    os.kill(child, signal.SIGKILL)
    with pytest.raises(WorkerLostError):  # it ran: lost with the process, as in prefork
        running.get(timeout=15)
    assert waiting.get(timeout=15) == 5  # it never started: delivered again, and ran


def test_warm_shutdown_gives_back_the_waiting_tasks_unstarted(atasks, app, start_worker,
                                                             tmp_path):
    worker = start_worker("-P", "asyncio", "--processes", "1", "-c", "1", app=APP)
    first, second = tmp_path / "first", tmp_path / "second"
    running = atasks.along.delay(str(first), 1.5)
    _wait_for_text(first, "started")
    waiting = atasks.along.delay(str(second), 0.1)
    time.sleep(0.5)
    worker.signal(signal.SIGTERM)
    assert worker.proc.wait(20) == 0
    assert "finishing 1 running task(s); 1 not started go back to the broker" in worker.log()
    assert running.get(timeout=5) == "done"
    assert not second.exists() and waiting.state == "PENDING"  # never started...
    assert app.broker.qsize("celery") == 1  # ...and back in the queue
    start_worker("-P", "asyncio", "-c", "2", app=APP)
    assert waiting.get(timeout=15) == "done"


@pytest.mark.parametrize("terminate", [False, True])
def test_a_task_revoked_while_it_waits_never_runs(atasks, app, start_worker, tmp_path,
                                                  terminate):
    start_worker("-P", "asyncio", "--processes", "1", "-c", "1", app=APP)
    first, second = tmp_path / "first", tmp_path / "second"
    running = atasks.along.delay(str(first), 2)
    _wait_for_text(first, "started")
    waiting = atasks.along.delay(str(second), 0.1)
    time.sleep(0.5)  # (handed to the process, waiting)
    waiting.revoke(terminate=terminate)
    wait_for_state(waiting, "REVOKED", timeout=10)
    assert running.state == "PENDING"  # dropped while the running one still runs
    assert running.get(timeout=10) == "done"
    time.sleep(0.3)
    assert not second.exists()


def test_a_waiting_task_is_not_acked_so_a_killed_worker_loses_none(atasks, start_worker,
                                                                  tmp_path):
    worker = start_worker("-P", "asyncio", "--processes", "1", "-c", "1", app=APP,
                          env=SHORT_VISIBILITY)
    marker = tmp_path / "running"
    atasks.along.delay(str(marker), 30)
    _wait_for_text(marker, "started")
    waiting = atasks.aadd.delay(2, 3)  # early ack (the default), but it has not started
    time.sleep(1.0)  # (handed to the process, waiting behind the running one)
    worker.kill_all()  # the whole worker, at once
    start_worker("-P", "asyncio", "-c", "2", app=APP, env=SHORT_VISIBILITY)
    assert waiting.get(timeout=20) == 5  # delivered again once its claim expired


# -- replacing a process after max_tasks_per_child / max_memory_per_child ---------------


def test_max_tasks_per_child_replaces_a_process_once_its_tasks_are_done(atasks, start_worker):
    worker = start_worker("-P", "asyncio", "--processes", "1", "-c", "4",
                          "--max-tasks-per-child", "3", "-l", "info", app=APP)
    pids = []
    for _ in range(3):
        batch = [atasks.apid.delay(0.3) for _ in range(3)]  # one process's 3 at once
        pids.append({pid for pid, _ in (r.get(timeout=15) for r in batch)})
    assert all(len(each) == 1 for each in pids)  # each batch ran in one process...
    assert len(set().union(*pids)) == 3  # ...a new one each time
    assert "replaced after 3 tasks (max_tasks_per_child)" in worker.log()


def test_max_memory_per_child_replaces_a_process_past_it(atasks, start_worker):
    worker = start_worker("-P", "asyncio", "--processes", "1", "-c", "4",
                          "--max-memory-per-child", "1", "-l", "info", app=APP)  # 1 KiB
    pids = []
    for done in range(1, 4):
        pids.append(atasks.apid.delay().get(timeout=15)[0])
        # the memory comes back with the result, so the main process may hand one more job
        # to the old process meanwhile; the next goes once it has read it
        assert eventually(lambda n=done: worker.log().count("over max_memory_per_child (1)") >= n,
                          10)
    assert len(set(pids)) == 3


def test_max_tasks_per_child_without_a_pool_process_says_it_has_no_effect(start_worker):
    worker = start_worker("-P", "asyncio", "--processes", "0", "--max-tasks-per-child", "3",
                          app=APP)
    assert "has no process of its own to replace" in worker.log()


def test_the_default_loop_is_uvloop_where_installed_and_asking_for_it_without_says_so(
        monkeypatch):
    import sys

    from runner.exceptions import ConfigError
    from runner.utils.aio import loop_kind, new_event_loop

    loop = new_event_loop("auto")
    assert type(loop).__module__.startswith("uvloop")  # (installed with the test extra)
    loop.close()
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if it were not installed
    assert loop_kind("auto") == "asyncio"
    with pytest.raises(ConfigError, match=r"pip install 'runner\[uvloop\]'"):
        loop_kind("uvloop")

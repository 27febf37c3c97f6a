"""What a user sees when tasks retry, overrun their time limits, or kill the process running
them: a result is always recorded (or the task runs again), never PENDING forever."""

from __future__ import annotations

import os
import signal
import time

import pytest

from runner import AsyncResult
from runner.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded, WorkerLostError
from tests.helpers import wait_for_state

# On AMQP the worker's children consume and ack for themselves, and RabbitMQ gives back what a
# dead child held unacked: the same outcomes must hold there.
ON_AMQP_TOO = pytest.mark.transports("sqlite", "amqp")

# -- retries ------------------------------------------------------------------------------------


@ON_AMQP_TOO
def test_retry_with_countdown_runs_again_until_it_succeeds(app, start_worker):
    from tasks import flaky

    worker = start_worker("-c", "1")
    result = flaky.delay(2)
    assert result.get(timeout=10) == 2
    log = worker.log()
    assert log.count(f"Task tasks.flaky[{result.id}] retry: RuntimeError('attempt") == 2
    assert f"Task tasks.flaky[{result.id}] succeeded in" in log


def test_task_in_retry_shows_the_retry_state(app, start_worker):
    from tasks import flaky

    start_worker("-c", "1")
    result = flaky.apply_async((1,), countdown=0)
    deadline = time.monotonic() + 10
    seen = set()
    while not result.ready() and time.monotonic() < deadline:
        seen.add(result.state)
        time.sleep(0.01)
    assert result.get(timeout=1) == 1
    assert "RETRY" in seen  # 0.1 s default_retry_delay between the two attempts


def test_max_retries_reached_fails_with_the_original_exception(app, start_worker):
    from tasks import flaky

    start_worker("-c", "1")
    result = flaky.delay(10)  # max_retries=3: attempts 0, 1, 2, 3
    with pytest.raises(RuntimeError, match="attempt 3"):
        result.get(timeout=10)
    assert result.state == "FAILURE"
    assert "RuntimeError: attempt 3" in result.traceback


def test_autoretry_backs_off_exponentially_then_fails_with_the_original_error(
        app, start_worker, tmp_path):
    from tasks import backoff_fail

    start_worker("-c", "1")
    marker = tmp_path / "attempts"
    result = backoff_fail.delay(str(marker))
    with pytest.raises(ZeroDivisionError):
        result.get(timeout=15)
    times = [float(t) for t in marker.read_text().split()]
    assert len(times) == 4  # the first run and max_retries=3 retries
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    for gap, countdown in zip(gaps, (0.2, 0.4, 0.8), strict=True):  # retry_backoff=0.2 * 2**retries
        assert countdown - 0.02 <= gap < countdown + 1.0, gaps


def test_autoretry_with_jitter_waits_at_most_the_backoff(app, start_worker, tmp_path):
    from tasks import jitter_fail

    start_worker("-c", "1")
    marker = tmp_path / "attempts"
    result = jitter_fail.delay(str(marker))
    with pytest.raises(ZeroDivisionError):
        result.get(timeout=15)
    times = [float(t) for t in marker.read_text().split()]
    assert len(times) == 4
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    for gap, countdown in zip(gaps, (0.4, 0.8, 1.6), strict=True):  # random in [0, backoff]
        assert gap < countdown + 0.5, gaps


def test_backoff_jitter_is_random_below_a_fractional_backoff():
    from runner.execute import backoff_countdown

    waits = [backoff_countdown(0.4, 2, 600, jitter=True) for _ in range(200)]
    assert all(0 <= w <= 1.6 for w in waits)
    assert len(set(waits)) > 10  # not always 0 (int(1.6) = 1 would allow only 0 and 1)
    assert backoff_countdown(0.4, 2, 600, jitter=False) == pytest.approx(1.6)
    assert backoff_countdown(1, 10, 5, jitter=False) == 5  # retry_backoff_max caps it


# -- time limits --------------------------------------------------------------------------------


@pytest.mark.parametrize("pool", ["prefork", "solo"])
def test_soft_time_limit_interrupts_a_sleeping_task_in_a_process(app, start_worker, pool):
    from tasks import soft_limited

    start_worker("-P", pool, "-c", "1")
    started = time.monotonic()
    assert soft_limited.delay(5).get(timeout=10) == "cleaned up"
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("pool", ["prefork", "threads", "solo", "asyncio"])
def test_soft_time_limit_raises_inside_a_busy_task(app, start_worker, pool):
    """In a pool thread the exception arrives at the task's next Python instruction: a busy
    task sees it at once, a blocking call (time.sleep) only when the call returns."""
    from tasks import spin

    start_worker("-P", pool, "-c", "2")
    started = time.monotonic()
    assert spin.delay(5).get(timeout=10) == "cleaned up"
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("pool", ["prefork", "threads", "asyncio"])
def test_soft_time_limit_not_caught_fails_the_task(app, start_worker, pool):
    from tasks import nap

    start_worker("-P", pool, "-c", "1")
    result = nap.apply_async((5,), soft_time_limit=0.3)
    with pytest.raises(SoftTimeLimitExceeded):
        result.get(timeout=10)


@ON_AMQP_TOO
def test_hard_time_limit_kills_the_child_records_failure_and_next_task_runs(
        app, start_worker):
    from tasks import add, hard_limited, pid

    worker = start_worker("-c", "1")
    before = pid.delay().get(timeout=10)
    started = time.monotonic()
    result = hard_limited.delay(30)
    with pytest.raises(TimeLimitExceeded, match=r"^TimeLimitExceeded\(0\.5,\)$"):
        result.get(timeout=10)
    assert time.monotonic() - started < 5
    assert result.state == "FAILURE"
    worker.wait_for_log(f"Hard time limit (0.5s) exceeded for tasks.hard_limited[{result.id}]")
    assert add.delay(1, 2).get(timeout=10) == 3
    assert pid.delay().get(timeout=10) != before  # the child was replaced


@pytest.mark.parametrize("task", ["hard_limited", "async_hard_limited"])
def test_hard_time_limit_on_the_solo_pool_fails_the_task_and_the_worker_goes_on(
        app, start_worker, task):
    """No process to kill: the limit is raised in the task (a sleep is interrupted)."""
    import tasks

    start_worker("-P", "solo")
    started = time.monotonic()
    with pytest.raises(TimeLimitExceeded, match=r"^TimeLimitExceeded\(0\.5,\)$"):  # (prefork's)
        getattr(tasks, task).delay(30).get(timeout=10)
    assert time.monotonic() - started < 5
    assert tasks.add.delay(1, 2).get(timeout=10) == 3


def test_time_limit_given_when_calling(app, start_worker):
    from tasks import sleep

    start_worker("-c", "1")
    result = sleep.apply_async((30,), time_limit=0.3)
    with pytest.raises(TimeLimitExceeded):
        result.get(timeout=10)


# -- children that die --------------------------------------------------------------------------


@ON_AMQP_TOO
def test_child_that_exits_is_replaced_and_its_task_fails_with_worker_lost(app, start_worker):
    from tasks import add, die

    worker = start_worker("-c", "1")
    result = die.delay(3)
    with pytest.raises(WorkerLostError, match="exit code 3"):
        result.get(timeout=10)
    worker.wait_for_log(f"Task tasks.die[{result.id}] raised unexpected: WorkerLostError")
    assert add.delay(2, 2).get(timeout=10) == 4


@pytest.mark.transports("sqlite", "redis", "amqp")
def test_task_too_large_for_the_claims_board_is_still_known_when_its_child_dies(
        app, start_worker):
    """A consuming child posts what it claimed in shared memory for the main process (64 KiB);
    a larger message goes by pipe, and its loss is recorded all the same."""
    from tasks import add, die

    start_worker("-c", "1")
    assert add.delay(1, 1).get(timeout=10) == 2  # a batch on the board first
    result = die.delay(5, "x" * 200_000)
    with pytest.raises(WorkerLostError, match="exit code 5"):
        result.get(timeout=10)
    assert add.delay(2, 2).get(timeout=10) == 4


@ON_AMQP_TOO
def test_child_killed_with_sigkill_is_replaced_and_its_task_fails(
        app, start_worker, tmp_path, wait_for_lines):
    from tasks import add, sleep_marked

    start_worker("-c", "1")
    marker = tmp_path / "pid"
    result = sleep_marked.delay(30, str(marker))
    child = int(wait_for_lines(marker, 1)[0])
    os.kill(child, signal.SIGKILL)
    with pytest.raises(WorkerLostError, match="SIGKILL"):
        result.get(timeout=10)
    assert add.delay(2, 2).get(timeout=10) == 4


@pytest.mark.transports("sqlite", "redis", "amqp")
def test_child_killed_after_storing_the_result_keeps_it_and_does_not_run_again(
        app, start_worker, tmp_path):
    """The child dies after the store, before it tells its worker or acks: the stored result
    stands (no WorkerLostError over it) and the task does not run again; its middleware hooks
    run again (at least once)."""
    from tasks import add, stored_then_killed

    worker = start_worker("-c", "1")
    marker = tmp_path / "runs"
    result = stored_then_killed.delay(str(marker))
    assert result.get(timeout=10) == "done"
    worker.wait_for_log(f"The process of task tasks.stored_then_killed[{result.id}] exited "
                        "with signal 9 (SIGKILL) after storing its result (SUCCESS)")
    assert add.delay(2, 2).get(timeout=10) == 4  # the next child runs tasks
    time.sleep(0.5)
    assert AsyncResult(result.id, app=app).state == "SUCCESS"
    lines = marker.read_text().split()
    assert lines.count("ran") == 1, lines
    assert lines.count("hook") >= 2, lines  # the kill's, and the settling one's
    assert "WorkerLostError" not in worker.log()


@pytest.mark.transports("sqlite", "redis", "amqp")
def test_child_killed_after_storing_a_batch_of_results_runs_none_of_them_again(
        app, start_worker, tmp_path):
    """Tasks waiting in a queue are claimed and stored by the batch: the child dies after
    storing a batch of several (the ones before the last are reported as ran, not lost). None
    runs again, early-acked or not."""
    from tasks import stored_then_killed

    marker = tmp_path / "runs"
    results = [stored_then_killed.delay(str(marker), 2) for _ in range(8)]
    worker = start_worker("-c", "1")
    assert [r.get(timeout=10) for r in results] == ["done"] * 8
    worker.wait_for_log("after storing its result (SUCCESS); settling it")
    time.sleep(1.0)
    assert marker.read_text().split().count("ran") == 8
    assert all(AsyncResult(r.id, app=app).state == "SUCCESS" for r in results)
    assert "delivering it again" not in worker.log()


def test_segfault_in_a_task_is_recorded_as_worker_lost(app, start_worker):
    from tasks import add, segfault

    start_worker("-c", "1")
    result = segfault.delay()
    with pytest.raises(WorkerLostError, match="SIGSEGV"):
        result.get(timeout=10)
    assert add.delay(2, 2).get(timeout=10) == 4


@ON_AMQP_TOO
def test_acks_late_task_of_a_dead_child_is_delivered_again_when_reject_on_worker_lost(
        app, start_worker, tmp_path):
    from tasks import die_late

    worker = start_worker("-c", "1")
    result = die_late.delay(str(tmp_path / "died-once"))
    assert result.get(timeout=10) == "second run"
    # (on RabbitMQ the message comes back by itself, and a new child may run it before the
    # main process has logged what it made of the dead one)
    worker.wait_for_log("delivering it again", timeout=10)


@ON_AMQP_TOO
def test_acks_late_task_of_a_dead_child_fails_without_reject_on_worker_lost(
        app, start_worker, tmp_path, wait_for_lines):
    from tasks import slow_late

    start_worker("-c", "1")
    marker = tmp_path / "pid"
    result = slow_late.delay(30, str(marker))
    os.kill(int(wait_for_lines(marker, 1)[0]), signal.SIGKILL)
    with pytest.raises(WorkerLostError):
        result.get(timeout=10)
    time.sleep(0.5)
    assert len(marker.read_text().split()) == 1  # not run again


# -- revoke -------------------------------------------------------------------------------------


@ON_AMQP_TOO
def test_revoke_with_terminate_kills_the_running_task(
        app, start_worker, tmp_path, wait_for_lines):
    from tasks import add, sleep_marked

    worker = start_worker("-c", "1")
    marker = tmp_path / "pid"
    result = sleep_marked.delay(30, str(marker))
    wait_for_lines(marker, 1)
    started = time.monotonic()
    result.revoke(terminate=True)
    wait_for_state(result, "REVOKED", timeout=10.0)
    assert time.monotonic() - started < 5
    worker.wait_for_log(f"Terminating task {result.id}")
    assert add.delay(2, 2).get(timeout=10) == 4


def test_revoked_task_that_did_not_start_never_runs(app, start_worker, tmp_path):
    from tasks import sleep_marked

    marker = tmp_path / "pid"
    result = sleep_marked.delay(0, str(marker))
    result.revoke()
    worker = start_worker("-c", "1")
    worker.wait_for_log(f"Discarding revoked task tasks.sleep_marked[{result.id}]")
    wait_for_state(result, "REVOKED", timeout=10.0)
    assert not marker.exists()


def test_thread_pool_time_limits_fail_only_their_own_task_and_keep_every_thread(
        app, start_worker):
    from tasks import add, nap, sleep

    worker = start_worker("-P", "threads", "-c", "4")
    started = time.monotonic()
    hard = [nap.apply_async((5,), time_limit=0.1) for _ in range(20)]
    soft = [nap.apply_async((5,), soft_time_limit=0.1) for _ in range(20)]
    fine = [add.delay(i, i) for i in range(20)]
    for result in hard:
        with pytest.raises(TimeLimitExceeded):
            result.get(timeout=10)
    for result in soft:
        with pytest.raises(SoftTimeLimitExceeded):
            result.get(timeout=10)
    assert [r.get(timeout=10) for r in fine] == [2 * i for i in range(20)]
    assert time.monotonic() - started < 5
    started = time.monotonic()  # all four threads still run tasks side by side
    assert [r.get(timeout=10) for r in [sleep.delay(0.5, i) for i in range(4)]] == [0, 1, 2, 3]
    assert time.monotonic() - started < 1.2
    assert "Exception in thread" not in worker.log()


def test_task_revoked_while_prefetched_does_not_run(app, start_worker, tmp_path, wait_for_lines):
    from tasks import add, sleep_marked

    first_marker, second_marker = tmp_path / "first", tmp_path / "second"
    add.delay(0, 0)  # short: the child then claims the next two in one batch
    first = sleep_marked.delay(1, str(first_marker))
    second = sleep_marked.delay(0, str(second_marker))
    worker = start_worker("-c", "1")  # started after the sends: it claims both at once
    worker.wait_for_log(f"Task tasks.sleep_marked[{second.id}] received")  # waits behind first
    wait_for_lines(first_marker, 1)
    second.revoke()
    assert first.get(timeout=10) == "done"
    wait_for_state(second, "REVOKED", timeout=10.0)
    assert not second_marker.exists()

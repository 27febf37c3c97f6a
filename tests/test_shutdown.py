"""Stopping a worker, gently or not: no task is lost, and none runs twice while its worker lives."""

from __future__ import annotations

import json
import signal
import time

import pytest

pytestmark = pytest.mark.transports("sqlite", "redis")

SHORT_VISIBILITY = {"RUNNER_BROKER_TRANSPORT_OPTIONS": json.dumps({"visibility_timeout": 1})}


@pytest.mark.transports("sqlite", "redis", "amqp")
@pytest.mark.parametrize("signum, pool", [(signal.SIGTERM, "prefork"), (signal.SIGINT, "prefork"),
                                          (signal.SIGTERM, "threads"), (signal.SIGINT, "solo")])
def test_warm_shutdown_finishes_running_tasks_and_gives_back_prefetched_ones(
        app, start_worker, tmp_path, signum, pool, wait_for_lines, transport):
    from tasks import add, sleep_marked

    marker = tmp_path / "started"
    if pool == "prefork":  # its children claim one at a time, then batches while tasks are short
        add.delay(0, 0)
    running = sleep_marked.delay(1, str(marker))
    waiting = [add.delay(i, i) for i in range(3)]
    # Started after the sends, the worker claims all four at once: a solo pool (which runs the
    # first inline) has then received the others before it runs it, whatever the transport.
    worker = start_worker("-c", "1", "-P", pool)
    if transport != "amqp":  # (RabbitMQ pushes them: held unacked, or still in the queue)
        worker.wait_for_log(f"Task tasks.add[{waiting[-1].id}] received")
    wait_for_lines(marker, 1)
    worker.signal(signum)
    assert worker.proc.wait(10) == 0
    log = worker.log()
    assert f"Warm shutdown ({signal.Signals(signum).name})" in log
    assert "stopped." in log
    assert running.state == "SUCCESS" and running.result == "done"
    assert [r.state for r in waiting] == ["PENDING"] * 3
    assert app.broker.qsize("celery") == 3  # back in the queue, not lost

    start_worker("-c", "1")
    assert [r.get(timeout=10) for r in waiting] == [0, 2, 4]


@pytest.mark.transports("sqlite", "redis", "amqp")
@pytest.mark.parametrize("acks_late, pool", [(True, "prefork"), (False, "prefork"),
                                             (True, "threads"), (True, "solo")])
def test_second_signal_is_a_cold_shutdown_and_the_interrupted_task_runs_again(
        app, start_worker, tmp_path, acks_late, pool, wait_for_lines):
    from tasks import slow_once

    worker = start_worker("-c", "1", "-P", pool)
    marker = tmp_path / "runs"
    result = slow_once.apply_async((str(marker),), acks_late=acks_late)
    wait_for_lines(marker, 1)
    worker.signal(signal.SIGTERM)
    worker.wait_for_log("Warm shutdown")
    started = time.monotonic()
    worker.signal(signal.SIGTERM)
    worker.proc.wait(10)
    assert time.monotonic() - started < 5  # did not wait for the 30 s task
    assert "Cold shutdown (SIGTERM)" in worker.log()
    assert result.state == "PENDING"

    start_worker("-c", "1")
    assert result.get(timeout=10) == "second run"
    assert len(marker.read_text().split()) == 2


def test_acks_late_task_of_a_worker_killed_with_sigkill_runs_on_another_worker(
        app, start_worker, tmp_path, wait_for_lines):
    from tasks import slow_once

    first = start_worker("-c", "1", env=SHORT_VISIBILITY)
    marker = tmp_path / "runs"
    result = slow_once.delay(str(marker))
    wait_for_lines(marker, 1)
    first.kill_all()  # the worker and its children: nothing is acked, nothing is given back
    assert result.state == "PENDING"

    second = start_worker("-c", "1", env=SHORT_VISIBILITY)
    assert result.get(timeout=15) == "second run"
    assert len(marker.read_text().split()) == 2
    assert f"Task tasks.slow_once[{result.id}] succeeded" in second.log()


def test_early_ack_task_starting_after_an_idle_spell_is_acked_at_once(
        app, start_worker, tmp_path, wait_for_lines):
    """The main process acks an early-ack task it sees running; after an idle spell it sleeps
    for up to a second, and the child wakes it: the ack is made within milliseconds, so a
    worker killed right after the start never runs the task twice."""
    from tasks import sleep_marked

    first = start_worker("-c", "1", env=SHORT_VISIBILITY)
    time.sleep(1.5)  # idle: the main process sleeps long
    marker = tmp_path / "started"
    result = sleep_marked.delay(30, str(marker))
    wait_for_lines(marker, 1)
    time.sleep(0.1)
    first.kill_all()

    start_worker("-c", "1", env=SHORT_VISIBILITY)
    time.sleep(2.5)  # past the visibility timeout: an unacked message would run again
    assert len(marker.read_text().split()) == 1
    assert result.state == "PENDING"  # at most once, as Celery


@pytest.mark.transports("sqlite")  # on Redis: tests/test_redis_delivery.py, renewals included
def test_long_acks_late_task_is_not_run_twice_while_its_worker_lives(
        app, start_worker, tmp_path):
    from tasks import slow_late

    busy = start_worker("-c", "1", env=SHORT_VISIBILITY)
    idle = start_worker("-c", "1", env=SHORT_VISIBILITY)
    marker = tmp_path / "runs"
    result = slow_late.delay(3, str(marker))  # three times the visibility timeout
    assert result.get(timeout=15) == "done"
    assert len(marker.read_text().split()) == 1
    received = f"Task tasks.slow_late[{result.id}] received"
    assert (received in busy.log()) != (received in idle.log())


def test_prefetched_task_is_not_given_to_another_worker_while_it_waits(
        app, start_worker, tmp_path):
    from tasks import slow_late

    first_marker, second_marker = tmp_path / "first", tmp_path / "second"
    first = slow_late.delay(2.5, str(first_marker))
    second = slow_late.delay(0, str(second_marker))
    holder = start_worker("-c", "1", env=SHORT_VISIBILITY)
    holder.wait_for_log(f"Task tasks.slow_late[{second.id}] received")  # buffered behind first
    other = start_worker("-c", "1", env=SHORT_VISIBILITY)
    assert first.get(timeout=15) == "done" and second.get(timeout=15) == "done"
    assert len(first_marker.read_text().split()) == 1
    assert len(second_marker.read_text().split()) == 1
    assert "tasks.slow_late" not in other.log().split("ready.")[-1]


def test_acks_late_task_runs_again_when_only_the_main_worker_process_is_killed(
        app, start_worker, tmp_path, wait_for_lines):
    from tasks import slow_once

    first = start_worker("-c", "1", env=SHORT_VISIBILITY)
    marker = tmp_path / "runs"
    result = slow_once.delay(str(marker))
    wait_for_lines(marker, 1)
    first.signal(signal.SIGKILL)  # `kill -9 PID`: the child running the task is orphaned
    first.proc.wait(10)

    start_worker("-c", "1", env=SHORT_VISIBILITY)
    assert result.get(timeout=15) == "second run"

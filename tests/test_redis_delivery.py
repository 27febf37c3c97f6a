"""Delivery guarantees of the Redis broker, as users see them with real worker processes: a
killed worker loses nothing, a long task runs once, delayed tasks wait in Redis, priorities,
queues and purge."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time

import pytest
import redis

from tests.helpers import eventually

pytestmark = pytest.mark.transports("redis")

SHORT_VISIBILITY = {"RUNNER_BROKER_TRANSPORT_OPTIONS": json.dumps({"visibility_timeout": 1})}


@pytest.fixture
def store(db_url):
    """redis-py on the test's database, to look at what the broker keeps."""
    client = redis.Redis.from_url(db_url)
    yield client
    client.close()


def received(worker, result) -> bool:
    return f"[{result.id}] received" in worker.log()


# -- a killed worker -----------------------------------------------------------------------------


def test_acks_late_task_of_a_sigkilled_worker_runs_on_another_after_the_visibility_timeout(
        app, start_worker, tmp_path, wait_for_lines, store):
    from tasks import slow_once

    first = start_worker("-c", "1", "-n", "first@test", env=SHORT_VISIBILITY)
    marker = tmp_path / "runs"
    result = slow_once.delay(str(marker))  # acks_late=True; 30 s on its first run
    wait_for_lines(marker, 1)
    other = start_worker("-c", "1", "-n", "other@test", env=SHORT_VISIBILITY)
    assert not received(other, result)  # claimed by the first worker
    first.kill_all()  # SIGKILL to the whole process group: no ack, no give-back
    killed = time.monotonic()
    assert store.zcard("runner:unacked") == 1

    assert result.get(timeout=15) == "second run"
    took = time.monotonic() - killed
    assert 0.3 < took < 4, f"redelivered after {took:.2f}s with a 1 s visibility timeout"
    assert len(marker.read_text().split()) == 2
    assert f"Task tasks.slow_once[{result.id}] succeeded" in other.log()
    assert result.state == "SUCCESS" and result.date_done is not None
    assert eventually(lambda: store.hlen("runner:body") == 0)  # acked for good


def test_early_ack_prefetched_tasks_of_a_sigkilled_worker_are_not_lost(
        app, start_worker, tmp_path, wait_for_lines):
    from tasks import record, sleep_marked

    started = tmp_path / "started"
    runs = tmp_path / "runs"
    running = sleep_marked.delay(30, str(started))  # acked when it starts (Celery's default)
    waiting = [record.delay(i, str(runs)) for i in range(5)]
    first = start_worker("-c", "1", env=SHORT_VISIBILITY)  # claims 4: 1 running, 3 prefetched
    wait_for_lines(started, 1)
    first.wait_for_log("tasks.record")
    time.sleep(0.1)  # the early ack is written within milliseconds of the start
    first.kill_all()
    assert not runs.exists()

    start_worker("-c", "2", env=SHORT_VISIBILITY)
    assert [r.get(timeout=15) for r in waiting] == [0, 2, 4, 6, 8]
    assert sorted(map(int, runs.read_text().split())) == [0, 1, 2, 3, 4]  # each ran once
    time.sleep(0.3)
    assert len(started.read_text().split()) == 1  # acked when it started: never run again
    assert running.state == "PENDING"  # at most once, as Celery


# -- a long task ---------------------------------------------------------------------------------


def test_task_running_past_the_visibility_timeout_is_never_given_to_a_second_worker(
        app, start_worker, tmp_path, store):
    from tasks import slow_late

    workers = [start_worker("-c", "1", "-n", f"w{i}@test", env=SHORT_VISIBILITY)
               for i in range(2)]
    marker = tmp_path / "runs"
    result = slow_late.delay(3, str(marker))  # acks_late, three visibility timeouts long
    deadlines = []
    while not result.ready():
        deadlines += [score for _, score in store.zrange("runner:unacked", 0, -1,
                                                         withscores=True)]
        time.sleep(0.1)
    assert result.get(timeout=10) == "done"
    assert len(marker.read_text().split()) == 1  # ran exactly once
    assert [received(w, result) for w in workers].count(True) == 1
    assert max(deadlines) - min(deadlines) > 1.5  # the live worker kept renewing its claim


# -- countdown and eta ---------------------------------------------------------------------------


def test_countdown_and_eta_tasks_wait_in_redis_and_each_runs_once_on_time(
        app, start_worker, tmp_path, store):
    from datetime import UTC, datetime, timedelta

    from tasks import record

    workers = [start_worker("-c", "2") for _ in range(2)]
    runs = tmp_path / "runs"
    sent = time.time()
    results = [record.apply_async((i, str(runs)), countdown=1.0 + i * 0.05) for i in range(10)]
    results += [record.apply_async((i, str(runs)), eta=datetime.now(UTC)
                                   + timedelta(seconds=1.0 + (i - 10) * 0.05))
                for i in range(10, 20)]
    time.sleep(0.5)
    assert store.zcard("runner:delayed") == 20  # held by Redis...
    assert not any(received(w, r) for w in workers for r in results)  # ...not by a worker
    assert app.broker.qsize("celery") == 20

    assert [r.get(timeout=10) for r in results] == [2 * i for i in range(20)]
    assert sorted(map(int, runs.read_text().split())) == list(range(20))  # each once
    for i, r in enumerate(results):
        due = sent + 1.0 + (i % 10) * 0.05
        assert r.date_done.timestamp() >= due - 0.05, f"task {i} ran before its time"
    assert store.zcard("runner:delayed") == 0


# -- priorities, queues, purge --------------------------------------------------------------------


def test_priorities_0_to_9_in_one_queue_run_highest_first(app, start_worker, tmp_path):
    from tasks import log_label, sleep

    start_worker("-c", "1", "--prefetch-multiplier", "1")
    busy = sleep.delay(0.6)
    time.sleep(0.2)  # the worker is busy and holds nothing else
    marker = tmp_path / "order"
    levels = list(range(10)) * 2
    random.Random(5).shuffle(levels)
    results = [log_label.apply_async((str(marker), f"p{p}"), priority=p) for p in levels]
    busy.get(timeout=10)
    for r in results:
        r.get(timeout=10)
    assert marker.read_text().split() == [f"p{p}" for p in sorted(levels, reverse=True)]


def test_each_worker_runs_only_the_queues_it_consumes(app, start_worker):
    from tasks import request_info

    app.conf.task_routes = {"tasks.request_info": {"queue": "reports"}}
    start_worker("-Q", "reports,mail", "-n", "reports@test", "-c", "1")
    start_worker("-Q", "celery", "-n", "default@test", "-c", "1")
    routed = [request_info.delay() for _ in range(3)]
    mail = request_info.apply_async(queue="mail")
    nobody = request_info.apply_async(queue="nobody")
    for r in routed:
        assert r.get(timeout=10)["hostname"] == "reports@test"
        assert r.get()["delivery_info"]["queue"] == "reports"
    assert mail.get(timeout=10)["delivery_info"]["queue"] == "mail"
    time.sleep(0.3)
    assert nobody.state == "PENDING" and app.broker.qsize("nobody") == 1


def test_runner_purge_empties_the_queues_in_redis(app, worker_env, tmp_path, start_worker,
                                                  store):
    from tasks import add

    waiting = [add.delay(i, i) for i in range(5)]
    delayed = add.apply_async((1, 1), countdown=30)
    other = add.apply_async((2, 2), queue="other")
    out = subprocess.run([sys.executable, "-m", "runner", "purge", "-A", "tasks", "-f"],
                         cwd=tmp_path, env=worker_env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Purged 6 messages from 1 known task queue."
    assert app.broker.qsize("celery") == 0 and store.zcard("runner:delayed") == 0
    assert app.broker.qsize("other") == 1  # not named: kept

    start_worker("-c", "1", "-Q", "celery,other")
    assert other.get(timeout=10) == 4
    time.sleep(0.3)
    assert [r.state for r in [*waiting, delayed]] == ["PENDING"] * 6
    assert eventually(lambda: store.hlen("runner:body") == 0)


def test_streamed_enqueue_returns_before_its_reply_and_flush_reads_it(app, store):
    """delay() writes its script and returns; the reply is read later (flush, the next
    command, close, exit). Until then the enqueue is kept, to write again after an outage."""
    import tasks

    tasks.add.delay(0, 0)  # (the first enqueue of a connection waits for its reply)
    app.broker.flush()
    store.execute_command("CLIENT", "PAUSE", 1000)  # no reply can come for a second
    started = time.monotonic()
    results = [tasks.add.delay(i, i) for i in range(200)]
    assert time.monotonic() - started < 1.0  # delay() did not wait for a reply
    assert app.broker._own.pending() > 0
    app.broker.flush()  # waits for Redis to run them, after the pause
    assert app.broker._own.pending() == 0
    assert app.broker.qsize("celery") == len(results) + 1


def test_streamed_enqueues_are_sent_again_after_a_lost_connection_and_run_once(
        app, store, caplog):
    import tasks

    first = [tasks.add.delay(i, i) for i in range(50)]
    store.client_kill_filter(_type="normal", skipme=True)  # every connection but store's
    with caplog.at_level("WARNING", logger="runner.redis"):
        second = [tasks.add.delay(i, i) for i in range(50, 60)]
        app.broker.flush()
    assert app.broker.qsize("celery") == len(first) + len(second)  # none twice, none lost
    assert "cannot reach Redis" in caplog.text


def test_streamed_enqueue_after_redis_forgot_its_scripts_is_sent_again(app, store):
    """A Redis restarted without its scripts answers NOSCRIPT, after delay() returned: the
    scripts are loaded and the enqueue sent again."""
    import tasks

    tasks.add.delay(0, 0)
    app.broker.flush()
    store.script_flush()
    result = tasks.add.delay(1, 1)
    app.broker.flush()
    assert app.broker.qsize("celery") == 2
    assert result.id in {m.split(b"#")[0].decode() for m in store.hkeys("runner:body")}


def test_streamed_enqueue_refused_by_redis_is_sent_again_until_taken(app, store, caplog):
    """An error reply after delay() returned (here the script's INCR fails, as a Redis out of
    memory would refuse it) keeps the task and sends it again with backoff: once Redis takes
    it, it is there; nothing lost."""
    import tasks

    tasks.add.delay(0, 0)
    app.broker.flush()
    store.set("runner:seq", "not a number")  # the enqueue script's INCR fails
    with caplog.at_level("WARNING", logger="runner.redis"):
        result = tasks.add.delay(1, 1)
        time.sleep(0.05)
        tasks.add.delay(2, 2)  # reads the refusal
    assert f"Redis refused the enqueue of 1 task(s) ({result.id})" in caplog.text
    store.set("runner:seq", 100)
    app.broker.flush()
    assert app.broker.qsize("celery") == 3


def test_streamed_enqueue_refused_every_time_is_an_error_naming_the_tasks(app, store):
    import tasks

    from runner.exceptions import BrokerError

    app.close()
    app.conf.update(broker_transport_options={"max_retries": 2})
    tasks.add.delay(0, 0)
    app.broker.flush()
    store.set("runner:seq", "not a number")
    result = tasks.add.delay(1, 1)
    with pytest.raises(BrokerError, match=rf"refused the enqueue of 1 task\(s\) \({result.id}"
                                          rf"\) .* 2 times in a row; they are not sent"):
        app.broker.flush()

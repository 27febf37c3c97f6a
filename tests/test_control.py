"""Remote control (``app.control``, ``runner inspect`` / ``control`` / ``status``) with real
worker processes, on SQLite, Redis and RabbitMQ."""

from __future__ import annotations

import socket
import time

import pytest

from tests.helpers import wait_for_state

pytestmark = pytest.mark.transports("sqlite", "redis", "amqp")

HOST = socket.gethostname()


def node(name: str) -> str:
    return f"{name}@{HOST}"


def wait_until(check, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout}s (last: {value!r})")
        time.sleep(0.1)


def test_two_workers_answer_one_inspect_ping(app, start_worker):
    start_worker("-n", "w1@%h", "-c", "1")
    start_worker("-n", "w2@%h", "-c", "1", "-P", "threads")
    replies = app.control.inspect(timeout=1.5).ping()
    assert replies == {node("w1"): {"ok": "pong"}, node("w2"): {"ok": "pong"}}
    assert sorted(app.control.ping(timeout=1.5), key=str) == [
        {node("w1"): {"ok": "pong"}}, {node("w2"): {"ok": "pong"}}]
    first = app.control.inspect([node("w1")], timeout=1.5).clock()[node("w1")]["clock"]
    again = app.control.inspect([node("w1")], timeout=1.5).clock()[node("w1")]["clock"]
    assert isinstance(first, int) and 0 < first < again  # a logical clock, as Celery's


def test_a_busy_worker_answers_active_with_the_running_task(app, start_worker):
    from tasks import sleep

    start_worker("-n", "busy@%h", "-c", "1")
    result = sleep.delay(30)
    queued = sleep.delay(30)

    def running():
        active = app.control.inspect(timeout=1.0).active() or {}
        return active.get(node("busy"))
    active = wait_until(running, what="the task shown active")
    assert [r["id"] for r in active] == [result.id]
    assert active[0]["name"] == "tasks.sleep" and active[0]["args"] == [30]
    assert active[0]["hostname"] == node("busy") and active[0]["worker_pid"]
    # every slot busy: it still answers within a second
    started = time.monotonic()
    assert app.control.inspect(timeout=1.0).ping() == {node("busy"): {"ok": "pong"}}
    assert time.monotonic() - started < 1.5
    found = app.control.inspect().query_task(result.id)
    assert found[node("busy")][result.id][0] == "active"
    app.control.revoke([result.id, queued.id], terminate=True)
    wait_for_state(result, "REVOKED", timeout=10)


def test_pool_grow_then_stats_show_the_new_size(app, start_worker):
    start_worker("-n", "grow@%h", "-c", "1")
    before = app.control.inspect().stats()[node("grow")]
    assert before["pool"]["max-concurrency"] == 1 and len(before["pool"]["processes"]) == 1
    assert app.control.pool_grow(2, reply=True) == [{node("grow"): {"ok": "pool will grow"}}]
    after = app.control.inspect().stats()[node("grow")]
    assert after["pool"]["max-concurrency"] == 3
    assert len(after["pool"]["processes"]) == 3
    assert app.control.pool_shrink(1, reply=True) == [
        {node("grow"): {"ok": "pool will shrink"}}]
    assert app.control.inspect().stats()[node("grow")]["pool"]["max-concurrency"] == 2
    # below 1: a clear error in the reply, the pool unchanged
    [reply] = app.control.pool_shrink(5, reply=True)
    assert "at least 1 must stay" in reply[node("grow")]["error"]


def test_add_consumer_makes_a_worker_take_a_queue_it_did_not(app, start_worker):
    from tasks import add

    start_worker("-n", "q@%h", "-c", "1")
    result = add.apply_async((2, 3), queue="extra")
    time.sleep(0.5)
    assert result.state == "PENDING"
    assert app.control.add_consumer("extra", reply=True) == [
        {node("q"): {"ok": "add consumer extra"}}]
    assert result.get(timeout=10) == 5
    queues = app.control.inspect().active_queues()[node("q")]
    assert sorted(q["name"] for q in queues) == ["celery", "extra"]
    assert app.control.cancel_consumer("extra", reply=True) == [
        {node("q"): {"ok": "no longer consuming from 'extra'"}}]
    later = add.apply_async((1, 1), queue="extra")
    time.sleep(0.8)
    assert later.state == "PENDING"


@pytest.mark.transports("amqp")
def test_add_consumer_of_a_queue_the_broker_refuses_is_an_error_reply(app, start_worker,
                                                                       broker_url):
    """RabbitMQ refuses to declare a queue that exists with other arguments: the reply names
    the queue and the broker's reason, and the worker keeps consuming what it did."""
    import pika
    from tasks import add

    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    connection.channel().queue_declare("taken", durable=True,
                                       arguments={"x-max-priority": 3})
    connection.close()
    start_worker("-n", "refused@%h", "-c", "1")
    [reply] = app.control.add_consumer("taken", reply=True)
    error = reply[node("refused")]["error"]
    assert error.startswith("the broker refused: queue 'taken'")
    assert "exists with other settings" in error
    queues = app.control.inspect().active_queues()[node("refused")]
    assert [q["name"] for q in queues] == ["celery"]
    assert add.delay(2, 2).get(timeout=10) == 4


def test_shutdown_of_one_named_worker(app, start_worker):
    one = start_worker("-n", "one@%h", "-c", "1")
    two = start_worker("-n", "two@%h", "-c", "1")
    assert app.control.shutdown(destination=[node("one")], reply=True) == [
        {node("one"): {"ok": "shutting down"}}]
    one.proc.wait(15)
    assert one.proc.returncode == 0
    assert two.proc.poll() is None
    assert app.control.inspect().ping() == {node("two"): {"ok": "pong"}}


def test_bad_commands_get_error_replies_not_crashes(app, start_worker):
    worker = start_worker("-n", "bad@%h", "-c", "1")
    me = node("bad")
    assert app.control.broadcast("no_such_command", reply=True) == [
        {me: {"error": "No such command: 'no_such_command'"}}]
    [reply] = app.control.rate_limit("tasks.add", "ten per minute", reply=True)
    assert "Invalid rate limit string" in reply[me]["error"]
    [reply] = app.control.rate_limit("tasks.nope", "10/m", reply=True)
    assert "unknown task 'tasks.nope'" in reply[me]["error"]
    [reply] = app.control.rate_limit("tasks.add", "10/m", reply=True)
    assert reply[me]["ok"].startswith("new rate limit set successfully")
    assert "tasks.add [rate_limit=10/m]" in app.control.inspect().registered("rate_limit")[me]
    [reply] = app.control.time_limit("tasks.add", soft=-1)
    assert "soft must be a number of seconds > 0" in reply[me]["error"]
    # a malformed message is logged and dropped; the worker goes on answering
    app.control.fanout().publish("pidbox", b"{not json")
    app.control.fanout().publish("pidbox", b'{"method": 42}')
    worker.wait_for_log("dropped a malformed control message")
    assert app.control.inspect().ping() == {me: {"ok": "pong"}}


def test_inspect_with_no_worker_is_empty_within_the_timeout(app):
    started = time.monotonic()
    assert app.control.inspect(timeout=0.5).ping() is None
    assert time.monotonic() - started < 2.0
    assert app.control.ping(timeout=0.3) == []


def test_reserved_revoked_registered_conf_report_and_limits(app, start_worker):
    from tasks import sleep

    first, second, third = (sleep.delay(8, i) for i in range(3))
    # (a prefork child claims a long task alone; the threads pool's consumer prefetches)
    start_worker("-n", "r@%h", "-c", "1", "-P", "threads")
    me = node("r")
    inspect = app.control.inspect([me])  # (a destination: no waiting past its reply)
    active = wait_until(lambda: (inspect.active() or {}).get(me), what="one task active")
    assert [r["id"] for r in active] == [first.id]
    reserved = inspect.reserved()[me]
    assert [r["id"] for r in reserved] == [second.id, third.id]
    assert inspect.query_task(second.id)[me] == {second.id: ["reserved", reserved[0]]}
    assert inspect.scheduled() == {me: []}
    app.control.revoke(third.id)
    assert third.id in inspect.revoked()[me]
    assert "tasks.add" in inspect.registered()[me]
    conf = inspect.conf()[me]
    assert conf["broker_url"].startswith(app.conf.broker_url.split("://")[0])
    assert "t-pw" not in conf["broker_url"]  # (the test user's password is masked)
    assert "runner:" in inspect.report()[me]["ok"]
    [reply] = app.control.autoscale(3, 1, reply=True)
    assert "only the prefork pool" in reply[me]["error"]
    app.control.revoke(second.id)  # prefetched, not started: it never runs
    wait_for_state(second, "REVOKED", timeout=10)
    assert first.get(timeout=15) == 0


def test_time_limit_set_remotely_applies_to_the_next_tasks(app, start_worker):
    from tasks import sleep

    start_worker("-n", "tl@%h", "-c", "1")
    [reply] = app.control.autoscale(3, 1, reply=True)
    assert reply == {node("tl"): {"ok": "autoscale now max=3 min=1"}}
    assert app.control.inspect().stats()[node("tl")]["pool"]["autoscaler"] == {
        "max": 3, "min": 1}
    [reply] = app.control.autoscale(1, 2, reply=True)
    assert "min (2) is above max (1)" in reply[node("tl")]["error"]
    assert app.control.time_limit("tasks.sleep", soft=None, hard=1) == [
        {node("tl"): {"ok": "time limits set successfully"}}]
    result = sleep.delay(10)
    with pytest.raises(Exception, match="TimeLimitExceeded"):
        result.get(timeout=20)
    [reply] = app.control.time_limit("tasks.nope", hard=1)
    assert "unknown task 'tasks.nope'" in reply[node("tl")]["error"]


def test_stats_total_counts_every_task_received(app, start_worker):
    """Prefork children claim their own batches; the main process sees only the latest claims
    of each, so a short batch can end unseen: the counts (also the heartbeats' processed) come
    from the children."""
    from tasks import add

    start_worker("-n", "count@%h", "-c", "2", env={"RUNNER_TASK_ACKS_LATE": "true"})  # (no early acks to watch: it looks
    # at the boards once a second)
    for _round in range(5):
        results = [add.delay(i, i) for i in range(60)]
        assert [r.get(timeout=20) for r in results] == [2 * i for i in range(60)]

    def total():
        stats = app.control.inspect([node("count")], timeout=1.5).stats() or {}
        return (stats.get(node("count")) or {}).get("total", {}).get("tasks.add")

    assert wait_until(lambda: total() == 300, what="a total of 300", timeout=10)

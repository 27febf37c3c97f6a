"""The broker and result-backend contracts, checked against every implementation.

Each test runs on ``sqlite://`` (a fresh file), ``memory://`` (a fresh name) and ``redis://`` (an
emptied database of the session's redis-server), so a new transport is one more parameter here.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from runner import states
from runner.backends.base import ResultBackend, ResultRecord
from runner.backends.registry import open_backend
from runner.brokers.base import Broker
from runner.brokers.registry import open_broker
from runner.message import Message

VISIBILITY = 0.3  # seconds a claim lasts in these tests


@pytest.fixture(params=["sqlite", "memory", "redis"])
def url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/broker.db"
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        server.flush()
        return server.url
    return f"memory://test-{uuid.uuid4().hex}"


@pytest.fixture
def connect(url):
    """``connect()`` opens one more connection to the same broker (another producer/worker)."""
    opened: list[Broker] = []

    def connect(**options) -> Broker:
        broker = open_broker(url, {"visibility_timeout": VISIBILITY, **options})
        opened.append(broker)
        return broker

    yield connect
    for broker in opened:
        broker.close()


@pytest.fixture
def broker(connect) -> Broker:
    return connect()


def message(task_id: str | None = None, queue: str = "celery", priority: int | None = None,
            eta: float | None = None, retries: int = 0) -> Message:
    task_id = task_id or Message.new_id()
    return Message(id=task_id, task="tasks.add", content_type="application/json",
                   payload=b"[[1,2],{}]", queue=queue, priority=priority, eta=eta,
                   retries=retries)


def ids(deliveries) -> list[str]:
    return [Message.decode(d.body).id for d in deliveries]


# -- broker ------------------------------------------------------------------------------------


def test_enqueued_message_is_fetched_intact_and_gone_after_ack(broker):
    sent = message("m1")
    broker.enqueue([sent])
    assert broker.qsize("celery") == 1
    [delivery] = broker.fetch(["celery"], 10, "w1")
    received = Message.decode(delivery.body)
    assert (received.id, received.task, received.payload) == ("m1", "tasks.add", b"[[1,2],{}]")
    assert delivery.queue == "celery" and delivery.redelivered is False
    assert broker.qsize("celery") == 0  # claimed messages are not waiting
    broker.ack([delivery])
    time.sleep(VISIBILITY + 0.1)
    assert broker.fetch(["celery"], 10, "w1") == []


def test_fetch_honours_the_limit_and_an_empty_queue_gives_nothing(broker):
    assert broker.fetch(["celery"], 5, "w1") == []
    broker.enqueue([message(f"m{i}") for i in range(5)])
    assert ids(broker.fetch(["celery"], 2, "w1")) == ["m0", "m1"]
    assert ids(broker.fetch(["celery"], 10, "w1")) == ["m2", "m3", "m4"]


def test_claimed_message_is_not_given_to_a_second_consumer(connect):
    first, second = connect(), connect()
    first.enqueue([message("m1")])
    assert len(first.fetch(["celery"], 1, "w1")) == 1
    assert second.fetch(["celery"], 1, "w2") == []


def test_unacked_message_is_redelivered_after_the_visibility_timeout(connect):
    first, second = connect(), connect()
    first.enqueue([message("m1")])
    assert ids(first.fetch(["celery"], 1, "w1")) == ["m1"]  # ... and the worker dies
    assert second.fetch(["celery"], 1, "w2") == []
    time.sleep(VISIBILITY + 0.1)
    [again] = second.fetch(["celery"], 1, "w2")
    assert Message.decode(again.body).id == "m1"
    assert again.redelivered is True


def test_extend_keeps_a_long_running_message_from_being_redelivered(connect):
    first, second = connect(), connect()
    first.enqueue([message("m1")])
    deliveries = first.fetch(["celery"], 1, "w1")
    for _ in range(3):  # the task runs for 3 visibility timeouts, renewing its claim
        time.sleep(VISIBILITY / 2)
        first.extend(deliveries)
    assert second.fetch(["celery"], 1, "w2") == []


def test_requeued_message_is_delivered_again_at_once(connect):
    first, second = connect(), connect()
    first.enqueue([message("m1")])
    deliveries = first.fetch(["celery"], 1, "w1")
    first.requeue(deliveries)
    assert second.qsize("celery") == 1
    assert ids(second.fetch(["celery"], 1, "w2")) == ["m1"]


def test_higher_priority_first_then_oldest_first(broker):
    broker.enqueue([message("low-1", priority=0), message("none-1"), message("high-1", priority=9),
                    message("mid-1", priority=5), message("high-2", priority=9),
                    message("low-2", priority=0)])
    assert ids(broker.fetch(["celery"], 10, "w1")) == [
        "high-1", "high-2", "mid-1", "low-1", "none-1", "low-2"]


def test_delayed_message_is_held_until_its_eta(broker):
    broker.enqueue([message("later", eta=time.time() + 0.4), message("now")])
    assert broker.qsize("celery") == 2  # the delayed one counts as waiting
    now = broker.fetch(["celery"], 10, "w1")
    assert ids(now) == ["now"]
    broker.ack(now)
    time.sleep(0.5)
    assert ids(broker.fetch(["celery"], 10, "w1")) == ["later"]


def test_message_with_an_eta_in_the_past_is_due_at_once(broker):
    broker.enqueue([message("late", eta=time.time() - 60)])
    assert ids(broker.fetch(["celery"], 10, "w1")) == ["late"]


def test_queues_are_separate_and_a_consumer_reads_only_its_own(broker):
    broker.enqueue([message("a1", queue="a"), message("b1", queue="b"), message("c1")])
    assert ids(broker.fetch(["a"], 10, "w1")) == ["a1"]
    assert (broker.qsize("a"), broker.qsize("b"), broker.qsize("celery")) == (0, 1, 1)
    assert sorted(ids(broker.fetch(["b", "celery"], 10, "w2"))) == ["b1", "c1"]


def test_purge_deletes_waiting_and_delayed_messages_of_the_queue_only(broker):
    broker.enqueue([message("w1"), message("w2"), message("d1", eta=time.time() + 60),
                    message("other", queue="other")])
    claimed = broker.fetch(["celery"], 1, "w1")
    assert broker.purge(["celery"]) == 2  # w2 and d1; the claimed w1 is being worked on
    assert broker.qsize("celery") == 0
    assert broker.qsize("other") == 1
    broker.ack(claimed)
    time.sleep(VISIBILITY + 0.1)
    assert broker.fetch(["celery"], 10, "w1") == []


def test_retry_replaces_the_delivered_message_with_its_next_attempt(connect):
    first, second = connect(), connect()
    first.enqueue([message("m1")])
    [delivery] = first.fetch(["celery"], 1, "w1")
    next_try = message("m1", retries=1, eta=time.time() + 0.3)
    first.retry(delivery, next_try)
    assert second.fetch(["celery"], 10, "w2") == []  # not yet due, and the old one is gone
    assert second.qsize("celery") == 1
    time.sleep(VISIBILITY + 0.2)  # past both the eta and the old claim's visibility timeout
    [again] = second.fetch(["celery"], 10, "w2")
    assert Message.decode(again.body).retries == 1
    assert second.fetch(["celery"], 10, "w2") == []


def test_wait_wakes_when_another_connection_enqueues(connect):
    consumer, producer = connect(), connect()
    consumer.wait(0)  # forget changes made so far
    assert consumer.wait(0.05) is False
    timer = threading.Timer(0.1, producer.enqueue, [[message("m1")]])
    timer.start()
    started = time.monotonic()
    assert consumer.wait(5) is True
    assert time.monotonic() - started < 2
    timer.join()
    assert ids(consumer.fetch(["celery"], 1, "w1")) == ["m1"]


# -- result backend ----------------------------------------------------------------------------


@pytest.fixture
def open_results(url):
    opened: list[ResultBackend] = []

    def open_results(expires: float | None = None) -> ResultBackend:
        backend = open_backend(url, expires)
        opened.append(backend)
        return backend

    yield open_results
    for backend in opened:
        backend.close()


def record(task_id: str, state: str = states.SUCCESS, payload: bytes = b"42") -> ResultRecord:
    return ResultRecord(task_id, state, "application/json", payload, None, time.time(),
                        {"name": "tasks.add", "retries": 0})


def test_stored_result_is_read_back_by_another_connection(open_results):
    writer, reader = open_results(), open_results()
    assert reader.get("t1") is None  # PENDING: nothing known
    writer.store([record("t1"), record("t2", states.FAILURE, b'{"exc_type":"ValueError"}')])
    got = reader.get("t1")
    assert (got.state, got.payload, got.meta["name"]) == (states.SUCCESS, b"42", "tasks.add")
    assert got.ready and reader.get("t2").state == states.FAILURE
    assert set(reader.get_many(["t1", "t2", "t3"])) == {"t1", "t2"}


def test_a_later_state_replaces_the_earlier_one(open_results):
    backend = open_results()
    backend.store([record("t1", states.STARTED, b"null")])
    assert backend.get("t1").ready is False
    backend.store([record("t1", states.SUCCESS, b"8")])
    assert backend.get("t1").state == states.SUCCESS


def test_wait_returns_as_soon_as_the_result_is_stored(open_results):
    writer, reader = open_results(), open_results()
    writer.store([record("t1", states.STARTED, b"null")])
    timer = threading.Timer(0.15, writer.store, [[record("t1")]])
    timer.start()
    started = time.monotonic()
    got = reader.wait("t1", timeout=5)
    assert got.state == states.SUCCESS
    assert time.monotonic() - started < 2
    timer.join()


def test_wait_gives_up_after_the_timeout_with_the_latest_state(open_results):
    backend = open_results()
    started = time.monotonic()
    assert backend.wait("nobody", timeout=0.2) is None
    assert 0.15 < time.monotonic() - started < 2
    backend.store([record("t1", states.RETRY, b"null")])
    assert backend.wait("t1", timeout=0.1).state == states.RETRY


def test_forget_makes_a_result_unknown_again(open_results):
    backend = open_results()
    backend.store([record("t1")])
    backend.forget("t1")
    assert backend.get("t1") is None
    backend.forget("never-stored")  # not an error


def test_result_reads_as_unknown_after_it_expires(open_results):
    short, forever = open_results(expires=0.2), open_results(expires=None)
    short.store([record("short")])
    forever.store([record("kept")])
    assert short.get("short") is not None
    time.sleep(0.3)
    assert short.get("short") is None
    assert forever.get("kept") is not None


def test_revoked_ids_are_shared_with_every_connection(open_results):
    producer, worker = open_results(), open_results()
    assert worker.revoked(["t1", "t2"]) == {}
    producer.revoke(["t1"])
    producer.revoke(["t2"], terminate=True, signal="SIGKILL")
    assert worker.revoked(["t1", "t2", "t3"]) == {"t1": (False, "SIGTERM"),
                                                 "t2": (True, "SIGKILL")}


def test_concurrent_consumers_each_get_a_message_exactly_once(connect):
    producer = connect(visibility_timeout=60)
    producer.enqueue([message(f"m{i}") for i in range(600)])
    producer.flush()  # (Redis streams enqueues: another connection sees them once run)
    consumers = [connect(visibility_timeout=60) for _ in range(4)]
    got: list[list[str]] = [[] for _ in consumers]

    def drain(index: int) -> None:
        broker = consumers[index]
        while deliveries := broker.fetch(["celery"], 7, f"w{index}"):
            got[index] += ids(deliveries)
            broker.ack(deliveries)

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(len(consumers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    everything = [task_id for part in got for task_id in part]
    assert sorted(everything) == sorted(f"m{i}" for i in range(600))
    assert producer.qsize("celery") == 0

"""The thread contract of ``runner.brokers.base.Broker``, on every transport: one instance
shared by a producing thread, a consuming thread and an acking thread, as a worker shares it
(consumer thread, writer thread, beat or a task publishing), loses and doubles nothing."""

from __future__ import annotations

import queue
import threading
import time

import pytest

from runner.message import Message

pytestmark = pytest.mark.transports("sqlite", "redis", "amqp")

COUNT = 200


def test_one_broker_shared_by_producer_consumer_and_acker_threads(app):
    broker = app.broker
    broker.check(["threads"])
    fetched: queue.Queue = queue.Queue()
    done = threading.Event()
    errors: list[BaseException] = []
    seen: list[str] = []

    def guarded(target):
        def run():
            try:
                target()
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)
        return threading.Thread(target=run, daemon=True)

    def produce():
        for i in range(COUNT):
            broker.enqueue([Message(id=f"m{i}", task="t", content_type="application/json",
                                    payload=b"[[], {}]", queue="threads")])
        broker.flush()

    def consume():
        while not done.is_set():
            for delivery in broker.fetch_waiting(["threads"], 10, "c1", 0.1):
                fetched.put(delivery)

    def ack():
        acked = 0
        while acked < COUNT:
            delivery = fetched.get(timeout=30)
            seen.append(Message.decode(delivery.body).id)
            broker.ack([delivery])
            acked += 1

    threads = [guarded(produce), guarded(consume), guarded(ack)]
    for thread in threads:
        thread.start()
    threads[2].join(60)
    time.sleep(0.3)  # (RabbitMQ: the consuming thread sends the handed-over acks meanwhile)
    done.set()
    threads[1].join(10)
    threads[0].join(10)
    assert errors == []
    assert sorted(seen) == sorted(f"m{i}" for i in range(COUNT))  # each once
    broker.close()
    app.close()
    other = app.broker  # a new connection: nothing is left, nothing comes back
    assert other.qsize("threads") == 0
    assert other.fetch_waiting(["threads"], 10, "c2", 1.0) == []

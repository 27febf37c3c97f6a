"""``amqp://`` fan-out: RabbitMQ's own fanout exchanges and private queues, as Celery's pidbox.

- an exchange ``runner.<name>`` (type fanout, not durable); each subscriber binds an exclusive,
  auto-deleted queue of its own with ``x-message-ttl`` (``ttl``), ``x-expires`` and
  ``x-max-length`` (:data:`~runner.brokers.fanout.MAX_PENDING`, oldest dropped first): RabbitMQ
  never holds more than that for a reader that is slow or gone, and a publisher never waits.
- a reply box is an exclusive, auto-deleted queue; its name is the address, and replies are
  published to it through the default exchange (dropped if it is gone).
"""

from __future__ import annotations

import time

import pika

from runner.brokers.fanout import DEFAULT_TTL, MAX_PENDING, Fanout, ReplyBox, Subscription
from runner.config.urls import URL
from runner.stores.amqp import OUTAGE_ERRORS, Link

EXCHANGE_PREFIX = "runner."


class _Queue(Subscription, ReplyBox):
    """A private queue on a connection of its own, read by the thread that opened it."""

    def __init__(self, fanout: AMQPFanout, exchange: str | None, ttl: float,
                 expires: float | None):
        self.fanout, self.exchange = fanout, exchange
        self.ttl, self.expires = ttl, expires
        self.link = Link(fanout.url, fanout.transport_options)
        self.received: list[bytes] = []
        self.address = ""
        self.link.run("subscribe", self._declare)

    def _declare(self, channel) -> None:
        arguments: dict = {"x-max-length": MAX_PENDING}
        if self.exchange is not None:
            arguments["x-message-ttl"] = int(self.ttl * 1000)
            if self.expires:
                arguments["x-expires"] = int(self.expires * 1000)
        frame = channel.queue_declare("", exclusive=True, auto_delete=True, arguments=arguments)
        self.address = frame.method.queue
        if self.exchange is not None:
            channel.exchange_declare(self.exchange, "fanout", durable=False)
            channel.queue_bind(self.address, self.exchange)
        channel.basic_consume(self.address, self._on_message, auto_ack=True)

    def _on_message(self, _channel, _method, _properties, body: bytes) -> None:
        self.received.append(body)

    def get(self, timeout: float) -> list[bytes]:
        deadline = time.monotonic() + max(0.0, timeout)
        while not self.received:
            left = deadline - time.monotonic()
            try:
                if self.link.connection is None:
                    self.link.run("subscribe", self._declare)  # (reopened after an outage)
                self.link.connection.process_data_events(time_limit=max(0.0, min(left, 1.0)))
            except OUTAGE_ERRORS:
                self.link.drop()
                time.sleep(min(0.5, max(0.0, left)))
            if time.monotonic() >= deadline:
                break
        got, self.received = self.received, []
        return got

    def close(self) -> None:
        self.link.drop()


class AMQPFanout(Fanout):
    def __init__(self, url: URL, transport_options: dict | None = None):
        super().__init__(url, transport_options)
        self.link = Link(url, self.transport_options, heartbeats=False)
        self._declared: set[tuple[int, str]] = set()

    def publish(self, exchange: str, body: bytes, ttl: float = DEFAULT_TTL) -> None:
        name = EXCHANGE_PREFIX + exchange
        def publish(channel) -> None:
            if (self.link.generation, name) not in self._declared:
                channel.exchange_declare(name, "fanout", durable=False)
                self._declared.add((self.link.generation, name))
            channel.basic_publish(name, "", body, pika.BasicProperties(
                expiration=str(int(ttl * 1000)), content_type="application/json"))
        self.link.run("publish", publish)

    def subscribe(self, exchange: str, ttl: float = DEFAULT_TTL,
                  expires: float | None = None) -> Subscription:
        return _Queue(self, EXCHANGE_PREFIX + exchange, ttl, expires)

    def reply_box(self) -> ReplyBox:
        return _Queue(self, None, DEFAULT_TTL, None)

    def reply(self, address: str, body: bytes, ttl: float = DEFAULT_TTL) -> None:
        self.link.run("reply", lambda channel: channel.basic_publish(
            "", address, body, pika.BasicProperties(expiration=str(int(ttl * 1000)))))

    def close(self) -> None:
        self.link.drop()

"""``rpc://``: results sent back to the caller as messages, as Celery's RPC backend does.

The caller (each thread of each process: one backend per thread) declares a reply queue
``runner.reply.<uuid>`` and names it in every message it sends (``Message.reply_to``). The
worker publishes each state of the task (STARTED, RETRY, SUCCESS, FAILURE...) to that queue,
with the task id as ``correlation_id``; the caller reads the queue and keeps what it read in
memory. Everything travels over the broker's RabbitMQ (``broker_url`` must be amqp://).

Limits, as in Celery:
- only the caller can read a result: another process, thread or a later run sees PENDING;
- nothing is kept after it is read: the result lives in the caller's memory (the last
  ``CACHE_SIZE`` ready results) and is gone when it exits; ``forget`` drops it;
- the reply queue is exclusive to the caller's connection and deleted with it (nothing is left
  behind per client process): results sent while that connection is down (RabbitMQ restarts,
  the network drops) are lost;
- no keyed data and no revoked set: chords, pipelines and ``revoke`` need a backend that keeps
  state (redis:// or sqlite://).
"""

from __future__ import annotations

import collections
import time
import uuid
from collections.abc import Callable, Sequence

import pika

from runner.backends.base import ResultBackend, ResultRecord
from runner.config.urls import URL, parse_url
from runner.exceptions import BackendError
from runner.stores.amqp import Link

AMQP_SCHEMES = ("amqp", "pyamqp", "amqps")
REPLY_QUEUE_EXPIRES_MS = 60_000  # a reply queue nobody uses for a minute is deleted
CACHE_SIZE = 10_000
NO_STATE = ("the rpc:// result backend keeps no state (results go straight back to the caller); "
            "{what} needs a result backend that keeps state: set result_backend to redis:// "
            "or sqlite:///...")


class RPCBackend(ResultBackend):
    scheme = "rpc"
    keeps_state = False
    sends_replies = True

    def __init__(self, url: URL, expires: float | None = None,
                 transport_options: dict | None = None, broker_url: str | None = None):
        super().__init__(url, expires, transport_options)
        broker = parse_url(broker_url) if broker_url else None
        if broker is None or broker.scheme not in AMQP_SCHEMES:
            shown = broker.masked if broker else broker_url
            raise BackendError(f"result_backend rpc:// sends results through the broker and "
                               f"needs an AMQP broker (amqp:// or pyamqp://); broker_url is "
                               f"{shown!r}")
        self.link = Link(broker, self.transport_options)
        self.results: collections.OrderedDict[str, ResultRecord] = collections.OrderedDict()
        self._queue: str | None = None
        self._subscribed = 0  # the link generation whose channel consumes the reply queue
        self.link.run("connect", lambda channel: None)  # a wrong password: an error now

    @classmethod
    def from_url(cls, url: URL, expires: float | None = None,
                 transport_options: dict | None = None, broker_url: str | None = None
                 ) -> ResultBackend:
        return cls(url, expires, transport_options, broker_url)

    # -- the reply queue ----------------------------------------------------------------------

    @property
    def reply_to(self) -> str:
        """This caller's reply queue, declared before any message names it."""
        if self._queue is None:
            self._queue = f"runner.reply.{uuid.uuid4().hex}"
            self.link.run("declare reply queue", self._subscribe)
        return self._queue

    def _subscribe(self, channel) -> None:
        """Declare the reply queue and consume it (again after a reconnection)."""
        if self._queue is None or self._subscribed == self.link.generation:
            return
        # exclusive: only this connection reads it, and RabbitMQ deletes it when the
        # connection ends (the caller exits or dies); x-expires is a second guard, for a
        # server that keeps an exclusive queue of a dead peer until its heartbeat times out
        channel.queue_declare(self._queue, durable=False, exclusive=True,
                              arguments={"x-expires": REPLY_QUEUE_EXPIRES_MS})
        channel.basic_consume(self._queue, self._on_reply, auto_ack=True)
        self._subscribed = self.link.generation

    def _on_reply(self, _channel, _method, properties, body: bytes) -> None:
        record = ResultRecord.decode(properties.correlation_id, body)
        known = self.results.get(record.task_id)
        if known is not None and known.ready and not record.ready:
            return  # a late STARTED never hides the result
        self.results[record.task_id] = record
        self.results.move_to_end(record.task_id)
        while len(self.results) > CACHE_SIZE:
            self.results.popitem(last=False)

    def _read(self, timeout: float) -> None:
        """Take what arrived on the reply queue, waiting up to ``timeout`` seconds for it."""
        def read(channel) -> None:
            self._subscribe(channel)
            self.link.connection.process_data_events(time_limit=timeout)
        self.link.run("read results", read)

    # -- records ------------------------------------------------------------------------------

    def store(self, records: Sequence[ResultRecord]) -> None:
        """Send each record to its caller's reply queue (records nobody asked for are dropped:
        a caller that is gone, or one that did not use rpc://)."""
        wanted = [r for r in records if r.reply_to]
        if not wanted:
            return

        def publish(channel) -> None:
            for r in wanted:
                channel.basic_publish("", r.reply_to, r.encode(), pika.BasicProperties(
                    correlation_id=r.task_id, content_type="application/x-runner-result"))
        self.link.run("send results", publish)

    def get(self, task_id: str) -> ResultRecord | None:
        if self._queue is not None:
            self._read(0)
        return self.results.get(task_id)

    def wait(self, task_id: str, timeout: float | None, interval: float | None = None
             ) -> ResultRecord | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            record = self.results.get(task_id)
            if record is not None and record.ready:
                return record
            left = 1.0 if deadline is None else deadline - time.monotonic()
            if left <= 0 or self._queue is None:
                return record
            self._read(min(1.0, left))

    def forget(self, task_id: str) -> None:
        self.results.pop(task_id, None)

    # -- what needs state ---------------------------------------------------------------------

    def revoke(self, task_ids: Sequence[str], terminate: bool = False,
               signal: str = "SIGTERM") -> None:
        raise BackendError(NO_STATE.format(what="revoke"))

    def revoked(self, task_ids: Sequence[str]) -> dict[str, tuple[bool, str]]:
        return {}  # nothing can be revoked through rpc://

    def get_data(self, key: str) -> bytes | None:
        raise BackendError(NO_STATE.format(what="this (chords, pipelines)"))

    def update_data(self, key: str, change: Callable[[bytes | None], bytes | None]
                    ) -> bytes | None:
        raise BackendError(NO_STATE.format(what="this (chords, pipelines)"))

    def scan_data(self, prefix: str) -> list[tuple[str, bytes]]:
        raise BackendError(NO_STATE.format(what="this (chords, pipelines)"))

    def close(self) -> None:
        self.link.close()

"""The consuming connection of an :class:`~runner.brokers.amqp.AMQPBroker`.

The thread that fetches first (a prefork child's main thread, or a worker's consumer thread)
owns it; acks and requeues from other threads are handed to it with
``add_callback_threadsafe`` and sent during its next ``process_data_events``.
:meth:`Consumer.heartbeat` lets another thread service the connection while its owner runs a
long task, so RabbitMQ never closes it for missed heartbeats (and delivers its unacked
messages again). Prefetch (basic.qos) is what ``prefetch`` asked, or the largest ``limit``
fetched, if larger. A lost connection is reopened with backoff on a later fetch; what it held
unacked, RabbitMQ delivers again.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pika.exceptions as amqp_errors

from runner.brokers.amqp_publisher import RESENT, Outgoing
from runner.brokers.base import Delivery
from runner.stores.amqp import OUTAGE_ERRORS, Link

if TYPE_CHECKING:  # pragma: no cover
    from runner.brokers.amqp import AMQPBroker

logger = logging.getLogger("runner.amqp")

EARLY = 0.002  # seconds: a message due this soon is delivered now


@dataclass
class _Consuming:
    """The connection's state; used only by its owner thread (or after it ended)."""

    link: Link
    queues: tuple[str, ...] = ()
    prefetch: int = 0
    inbox: collections.deque = field(default_factory=collections.deque)
    retry_at: float = 0.0
    failures: int = 0


class Consumer:
    """Fetching, waiting, acking and requeueing for one broker (see the module docstring)."""

    def __init__(self, broker: AMQPBroker):
        self.broker = broker
        self.state: _Consuming | None = None
        self.io = threading.RLock()  # the connection: its owner, or heartbeat()
        self.prefetch = 0  # QoS asked for by prefetch(); fetch() raises it to its limit

    def _open(self, queues: Sequence[str], limit: int) -> _Consuming | None:
        """The connection, opened (or reopened after an outage) on first use."""
        broker = self.broker
        state = self.state
        if state is None:
            state = self.state = _Consuming(Link(broker.url, broker.transport_options))
        limit = max(limit, self.prefetch)
        connected = state.link.connection is not None and state.link.connection.is_open
        if connected and state.queues == tuple(queues) and state.prefetch >= limit:
            return state
        if not connected and time.monotonic() < state.retry_at:
            return None
        try:
            channel = state.link.channel()
            if state.failures:
                logger.warning("consumer: reconnected to RabbitMQ at %s", broker.url.masked)
                state.failures = 0
            state.link.owner = threading.current_thread()
            if state.prefetch < limit or not connected:
                state.prefetch = max(state.prefetch, limit)
                # one limit for the channel, except that quorum queues know only a consumer's
                # own (then each queue's consumer has the limit)
                types = broker.queue_types
                quorum = any(types.get(q, types.get(None)) == "quorum" for q in queues)
                channel.basic_qos(prefetch_count=state.prefetch, global_qos=not quorum)
            if state.queues != tuple(queues) or not connected:
                self._subscribe(state, channel, queues)
        except OUTAGE_ERRORS as exc:
            self._lost(state, exc)
            return None
        return state

    def _subscribe(self, state: _Consuming, channel, queues: Sequence[str]) -> None:
        for tag in list(channel.consumer_tags):
            channel.basic_cancel(tag)
        generation = state.link.generation
        for queue in queues:
            self.broker._declare(channel, queue)

            def on_message(_channel, method, properties, body, queue=queue):
                headers = properties.headers or {}
                again = method.redelivered or bool(headers.get(RESENT))
                # quorum queues count deliveries; classic ones only flag a redelivery (0: the
                # worker counts it, see runner.worker.dead)
                count = headers.get("x-delivery-count")
                deliveries = count + 1 if type(count) is int else (0 if again else 1)
                state.inbox.append((Delivery((generation, method.delivery_tag), body, queue,
                                             again, deliveries), properties))
            channel.basic_consume(queue, on_message)
        state.queues = tuple(queues)

    def _lost(self, state: _Consuming, exc: BaseException) -> None:
        """The connection is gone: what it held unacked, RabbitMQ delivers again."""
        state.link.drop()
        state.inbox.clear()
        state.queues = ()
        state.failures += 1
        delay = Link.backoff(state.failures)
        state.retry_at = time.monotonic() + delay
        logger.warning("consumer: lost RabbitMQ at %s (%s: %s); reconnecting in %.2fs",
                       self.broker.url.masked, type(exc).__name__, exc, delay)

    def _service(self, state: _Consuming, time_limit: float = 0.0) -> bool:
        """Process what RabbitMQ sent (for up to ``time_limit`` seconds); False, and the
        connection forgotten, if it is gone. (A connection closed while another thread
        serviced it makes pika raise ValueError, not a connection error.)"""
        connection = state.link.connection
        try:
            if connection is None or not connection.is_open:
                raise amqp_errors.ConnectionWrongStateError("the connection was closed")
            connection.process_data_events(time_limit=time_limit)
        except OUTAGE_ERRORS as exc:
            self._lost(state, exc)
            return False
        return True

    def fetch(self, queues: Sequence[str], limit: int) -> list[Delivery]:
        with self.io:
            state = self._open(queues, limit)
            if state is None or not self._service(state):
                return []
        return self._take(state, limit)

    def _take(self, state: _Consuming, limit: int) -> list[Delivery]:
        """Up to ``limit`` deliveries from the inbox; a delayed message that came early (see
        :mod:`runner.brokers.amqp`) is sent round again instead."""
        out: list[Delivery] = []
        while state.inbox and len(out) < limit:
            delivery, properties = state.inbox.popleft()
            eta_ms = (properties.headers or {}).get("eta_ms")
            eta = eta_ms / 1000 if eta_ms else None
            if eta and eta - time.time() > EARLY:  # arrived through a delay queue, early
                self.broker._publisher().send([Outgoing(delivery.queue, delivery.body,
                                                        properties, eta)])
                self.settle([delivery], requeue=False)  # (after the confirm: see settle)
            else:
                out.append(delivery)
        return out

    def wait(self, timeout: float) -> bool:
        state = self.state
        if state is None or state.link.connection is None:
            left = state.retry_at - time.monotonic() if state else 0.0
            time.sleep(max(0.0, min(timeout, left)))
            return False
        if state.inbox:
            return True
        with self.io:
            if not self._service(state, max(0.0, timeout)):
                return False
        return bool(state.inbox)

    def fetch_waiting(self, queues: Sequence[str], limit: int,
                      timeout: float) -> list[Delivery]:
        """Wait for deliveries (RabbitMQ pushes them), then take them: no second poll."""
        state = self.state
        if state is None or state.link.connection is None or state.queues != tuple(queues):
            self.wait(timeout)
            return self.fetch(queues, limit)  # (subscribes)
        if not state.inbox:
            self.wait(timeout)
        return self._take(state, limit)

    def heartbeat(self) -> None:
        """Service the connection (heartbeats) while its owner runs a long task: RabbitMQ
        closes a connection that misses two heartbeats, and delivers what it held unacked
        again. A failure here is left for the owner to notice and reconnect."""
        state = self.state
        if state is None:
            return
        with self.io:
            connection = state.link.connection
            try:
                if connection is not None and connection.is_open:
                    connection.process_data_events(0)
            except OUTAGE_ERRORS:
                pass

    def settle(self, deliveries: Sequence[Delivery], requeue: bool) -> None:
        """Ack (or requeue) on the consuming channel, in its owner thread. Deliveries of a
        connection that is gone are skipped: RabbitMQ delivers those again anyway. What this
        thread published is confirmed first: a task's follow-ups (next attempt, callbacks,
        chord body) exist before the message that made them is gone."""
        state = self.state
        if state is None or not deliveries:
            return
        self.broker.flush()
        link = state.link
        generation = link.generation
        tags = [d.tag[1] for d in deliveries if d.tag[0] == generation]
        if not tags or link.connection is None:
            return

        def settle() -> None:
            channel = link.open_channel()
            if link.generation != generation or channel is None:
                return  # (lost with its connection: RabbitMQ delivers them again)
            # pika's blocking channel flushes after each ack; its underlying channel does not,
            # so a batch goes out in one send (at once, or by the owner's event loop)
            impl = getattr(channel, "_impl", channel)
            with link.corked():
                for tag in tags:
                    if requeue:
                        impl.basic_nack(tag, requeue=True)
                    else:
                        impl.basic_ack(tag)
        try:
            if threading.current_thread() is link.owner or not link.owner.is_alive():
                with self.io:
                    settle()
                    if not link.sent():
                        link.connection.process_data_events(0)  # send them now
            else:
                link.connection.add_callback_threadsafe(settle)  # sent by its event loop
        except OUTAGE_ERRORS as exc:
            logger.warning("%s of %d message(s) lost with the connection (%s): RabbitMQ will "
                           "deliver them again", "requeue" if requeue else "ack", len(tags),
                           type(exc).__name__)

    def close(self) -> None:
        """Send the acks handed over, then close (from another live thread: its owner's
        event loop closes it)."""
        state, self.state = self.state, None
        if state is None or state.link.connection is None:
            return
        try:
            if state.link.owner is threading.current_thread() \
                    or not state.link.owner.is_alive():
                state.link.connection.process_data_events(0)
                state.link.drop()
            else:
                state.link.connection.add_callback_threadsafe(state.link.drop)
        except OUTAGE_ERRORS:
            pass

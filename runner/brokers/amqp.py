"""``amqp://`` / ``pyamqp://`` / ``amqps://``: RabbitMQ, through pika.

Layout on the vhost: one durable queue per runner queue (with ``x-max-priority`` only where
``task_queues`` / ``task_queue_max_priority`` give one, as Celery: a priority queue costs
RabbitMQ throughput, and without it priorities are ignored), persistent
messages published with publisher confirms, so a message whose ``enqueue`` returned survives a
RabbitMQ restart. Delivery is **at least once**: a fetched message stays unacked on the
consumer's channel until the worker acks it; if the worker dies (even SIGKILL) or its connection
drops, RabbitMQ delivers it again. RabbitMQ has no visibility timeout, so :meth:`extend` is a
no-op: a claim lasts as long as the consumer's connection, however long the task runs.

Threads: the thread that calls :meth:`fetch` first (a prefork child's main thread, or a
worker's consumer thread) owns the consuming connection; acks and requeues from other threads
are handed to it with ``add_callback_threadsafe`` and sent during its next
``process_data_events``. :meth:`heartbeat` lets another thread service the connection while its
owner runs a long task, so RabbitMQ never closes it for missed heartbeats (and delivers its
unacked messages again). Each thread that publishes has its own connection. Prefetch
(basic.qos, per channel) is what :meth:`prefetch` asked (a prefork child: the prefetch
multiplier, as Celery's per-process prefetch) or the largest ``limit`` fetched, if larger.

Countdown/eta: a delayed message goes to a shared delay queue ``runner.delay.<ms>`` with that
queue's ``x-message-ttl``, which dead-letters it into its own queue when the TTL runs out (it
keeps its routing key). The TTLs are the delays rounded *down* to one significant digit (1, 2 ..
9 x 10^k ms), so a long delay arrives early, and the consumer sends it through the next, smaller
delay queue: each hop removes one digit of the remaining delay. Delayed messages live in
RabbitMQ, so they survive worker and broker restarts. Limits: a delayed message is not counted by
:meth:`qsize` and not removed by :meth:`purge` until it reaches its queue; a delayed message
reaching its queue needs a running consumer of that queue for each further hop (a few ms each).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import pika
import pika.exceptions as amqp_errors

from runner.amqp_store import OUTAGE_ERRORS, Link, declare_error
from runner.brokers.base import Broker, Delivery
from runner.config.urls import URL
from runner.message import Message

logger = logging.getLogger("runner.amqp")

MAX_PRIORITY = 10
EARLY = 0.002  # seconds: a message due this soon is delivered now
DELAY_PREFIX = "runner.delay."
DECLARE_AGAIN = 60.0  # seconds: delay queues expire when unused, so declare them again now and then


def delay_bucket_ms(delay: float) -> int:
    """The delay queue TTL for ``delay`` seconds: rounded down to one significant digit."""
    ms = int(delay * 1000)
    if ms < 1:
        return 0
    unit = 10 ** (len(str(ms)) - 1)
    return ms // unit * unit


@dataclass
class _Consuming:
    """The consumer connection's state; used only by its owner thread (or after it ended)."""

    link: Link
    queues: tuple[str, ...] = ()
    prefetch: int = 0
    inbox: collections.deque = field(default_factory=collections.deque)
    retry_at: float = 0.0
    failures: int = 0


class AMQPBroker(Broker):
    """``amqp://user:password@host:5672/vhost``; see the module docstring for the guarantees."""

    scheme = "amqp"
    acks_anywhere = False
    needs_heartbeat = True

    def __init__(self, url: URL, transport_options: dict | None = None):
        super().__init__(url, transport_options)
        retries = self.transport_options.get("max_retries")
        self.max_retries = 100 if retries is None else retries  # 0: retry forever
        self._local = threading.local()
        self._links: list[Link] = []
        self._lock = threading.Lock()
        self._consuming: _Consuming | None = None
        self._io = threading.RLock()  # the consuming connection: its owner, or heartbeat()
        self._prefetch = 0  # QoS asked for by prefetch(); fetch() raises it to its limit
        self._publisher().run("connect", lambda channel: None)  # a wrong password: an error now

    # -- publishing ---------------------------------------------------------------------------

    def _publisher(self) -> Link:
        link = getattr(self._local, "link", None)
        if link is None:
            link = self._local.link = Link(self.url, self.transport_options, confirm=True,
                                           max_retries=self.max_retries, heartbeats=False)
            self._local.declared = {}
            with self._lock:
                self._links.append(link)
        return link

    def _declare(self, channel, queue: str) -> int:
        """Declare ``queue`` (once per connection); returns its ready message count."""
        top = self.max_priorities.get(queue, self.max_priorities.get(None))
        try:
            frame = channel.queue_declare(queue, durable=True, arguments={
                "x-max-priority": top} if top else None)
        except amqp_errors.ChannelClosedByBroker as exc:
            raise declare_error(self.url, queue, exc, top) from None
        return frame.method.message_count

    def _ensure(self, link: Link, channel, queue: str, delay_ms: int = 0) -> str:
        """Declare what a publish to ``queue`` (after ``delay_ms``) needs; return the exchange."""
        declared = self._local.declared
        key = (link.generation, queue, delay_ms)
        now = time.monotonic()
        exchange = f"{DELAY_PREFIX}{delay_ms}" if delay_ms else ""
        if declared.get(key, 0.0) > now:
            return exchange
        self._declare(channel, queue)
        if delay_ms:
            channel.exchange_declare(exchange, "fanout", durable=True)
            channel.queue_declare(exchange, durable=True, arguments={
                "x-message-ttl": delay_ms, "x-dead-letter-exchange": "",
                "x-expires": delay_ms + 600_000})
            channel.queue_bind(exchange, exchange)
        declared[key] = now + DECLARE_AGAIN
        return exchange

    def _publish(self, queue: str, body: bytes, properties: pika.BasicProperties,
                 eta: float | None) -> None:
        link = self._publisher()

        def publish(channel) -> None:
            delay = (eta - time.time()) if eta else 0.0
            bucket = delay_bucket_ms(delay) if delay > EARLY else 0
            exchange = self._ensure(link, channel, queue, bucket)
            try:
                channel.basic_publish(exchange, queue, body, properties, mandatory=True)
            except amqp_errors.UnroutableError:  # a delay queue expired meanwhile: again
                self._local.declared.clear()
                exchange = self._ensure(link, channel, queue, bucket)
                channel.basic_publish(exchange, queue, body, properties, mandatory=True)
        link.run("enqueue", publish)

    def enqueue(self, messages: Sequence[Message]) -> None:
        for message in messages:  # one confirm each: a retry after an outage never doubles
            headers = {"eta_ms": int(message.eta * 1000)} if message.eta else None
            properties = pika.BasicProperties(
                delivery_mode=2, priority=min(MAX_PRIORITY, message.priority or 0),
                message_id=message.id, headers=headers)
            self._publish(message.queue, message.encode(), properties, message.eta)

    # -- consuming ----------------------------------------------------------------------------

    def _consumer(self, queues: Sequence[str], limit: int) -> _Consuming | None:
        """The consuming connection, opened (or reopened after an outage) on first use."""
        state = self._consuming
        if state is None:
            state = self._consuming = _Consuming(Link(self.url, self.transport_options))
        limit = max(limit, self._prefetch)
        connected = state.link.connection is not None and state.link.connection.is_open
        if connected and state.queues == tuple(queues) and state.prefetch >= limit:
            return state
        if not connected and time.monotonic() < state.retry_at:
            return None
        try:
            channel = state.link.channel()
            if state.failures:
                logger.warning("consumer: reconnected to RabbitMQ at %s", self.url.masked)
                state.failures = 0
            state.link.owner = threading.current_thread()
            if state.prefetch < limit or not connected:
                state.prefetch = max(state.prefetch, limit)
                channel.basic_qos(prefetch_count=state.prefetch, global_qos=True)
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
            self._declare(channel, queue)

            def on_message(_channel, method, properties, body, queue=queue):
                state.inbox.append((Delivery((generation, method.delivery_tag), body, queue,
                                             method.redelivered), properties))
            channel.basic_consume(queue, on_message)
        state.queues = tuple(queues)

    def _lost(self, state: _Consuming, exc: BaseException) -> None:
        """The consuming connection is gone: what it held unacked, RabbitMQ delivers again."""
        state.link.drop()
        state.inbox.clear()
        state.queues = ()
        state.failures += 1
        delay = Link.backoff(state.failures)
        state.retry_at = time.monotonic() + delay
        logger.warning("consumer: lost RabbitMQ at %s (%s: %s); reconnecting in %.2fs",
                       self.url.masked, type(exc).__name__, exc, delay)

    def fetch(self, queues: Sequence[str], limit: int, consumer: str) -> list[Delivery]:
        with self._io:
            state = self._consumer(queues, limit)
            if state is None:
                return []
            try:
                state.link.connection.process_data_events(0)
            except OUTAGE_ERRORS as exc:
                self._lost(state, exc)
                return []
        return self._take(state, limit)

    def _take(self, state: _Consuming, limit: int) -> list[Delivery]:
        """Up to ``limit`` deliveries from the inbox; a delayed message that came early (see
        the module docstring) is sent round again instead."""
        out: list[Delivery] = []
        while state.inbox and len(out) < limit:
            delivery, properties = state.inbox.popleft()
            eta_ms = (properties.headers or {}).get("eta_ms")
            eta = eta_ms / 1000 if eta_ms else None
            if eta and eta - time.time() > EARLY:  # arrived through a delay queue, early
                self._publish(delivery.queue, delivery.body, properties, eta)
                self.ack([delivery])
            else:
                out.append(delivery)
        return out

    def wait(self, timeout: float) -> bool:
        state = self._consuming
        if state is None or state.link.connection is None:
            left = state.retry_at - time.monotonic() if state else 0.0
            time.sleep(max(0.0, min(timeout, left)))
            return False
        if state.inbox:
            return True
        with self._io:
            try:
                state.link.connection.process_data_events(time_limit=max(0.0, timeout))
            except OUTAGE_ERRORS as exc:
                self._lost(state, exc)
                return False
        return bool(state.inbox)

    def check(self, queues: Sequence[str] = ()) -> None:
        """Declare ``queues`` now: one that exists with other arguments is an error before
        the worker starts, not a loop of failing fetches."""
        self._publisher().run("declare", lambda channel: [self._declare(channel, queue)
                                                          for queue in queues])

    def prefetch(self, count: int) -> None:
        self._prefetch = count

    def fetch_waiting(self, queues: Sequence[str], limit: int, consumer: str,
                      timeout: float) -> list[Delivery]:
        """Wait for deliveries (RabbitMQ pushes them), then take them: no second poll."""
        state = self._consuming
        if state is None or state.link.connection is None or state.queues != tuple(queues):
            return super().fetch_waiting(queues, limit, consumer, timeout)  # (subscribes)
        if not state.inbox:
            self.wait(timeout)
        return self._take(state, limit)

    def heartbeat(self) -> None:
        """Service the consuming connection (heartbeats) while its owner runs a long task:
        RabbitMQ closes a connection that misses two heartbeats, and delivers what it held
        unacked again. A failure here is left for the owner to notice and reconnect."""
        state = self._consuming
        if state is None:
            return
        with self._io:
            try:
                if state.link.connection is not None:
                    state.link.connection.process_data_events(0)
            except OUTAGE_ERRORS:
                pass

    def _settle(self, deliveries: Sequence[Delivery], requeue: bool) -> None:
        """Ack (or requeue) on the consuming channel, in its owner thread. Deliveries of a
        connection that is gone are skipped: RabbitMQ delivers those again anyway."""
        state = self._consuming
        if state is None or not deliveries:
            return
        link = state.link
        generation = link.generation
        tags = [d.tag[1] for d in deliveries if d.tag[0] == generation]
        if not tags or link.connection is None:
            return

        def settle() -> None:
            if link.generation != generation or link.connection is None:
                return
            channel = link.channel()
            # pika's blocking channel flushes after each ack; its underlying channel does not,
            # so a batch goes out in one write (flushed below, or by the owner's event loop)
            impl = getattr(channel, "_impl", channel)
            for tag in tags:
                if requeue:
                    impl.basic_nack(tag, requeue=True)
                else:
                    impl.basic_ack(tag)
        try:
            if threading.current_thread() is link.owner or not link.owner.is_alive():
                with self._io:
                    settle()
                    link.connection.process_data_events(0)  # send them now
            else:
                link.connection.add_callback_threadsafe(settle)  # sent by its event loop
        except OUTAGE_ERRORS as exc:
            logger.warning("%s of %d message(s) lost with the connection (%s): RabbitMQ will "
                           "deliver them again", "requeue" if requeue else "ack", len(tags),
                           type(exc).__name__)

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        self._settle(deliveries, requeue=False)

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        self._settle(deliveries, requeue=True)

    def retry(self, delivery: Delivery, message: Message) -> None:
        """Publish the next attempt (confirmed), then ack this one: a crash in between
        delivers this one again (at least once)."""
        self.enqueue([message])
        self.ack([delivery])

    def extend(self, deliveries: Sequence[Delivery]) -> None:
        """Nothing to do: RabbitMQ keeps a message unacked for as long as the consumer's
        connection lives (there is no visibility timeout to renew)."""

    # -- admin --------------------------------------------------------------------------------

    def purge(self, queues: Sequence[str]) -> int:
        """Delete the ready messages of ``queues`` (delayed ones are still in delay queues)."""
        def purge(channel) -> int:
            count = 0
            for queue in queues:
                self._declare(channel, queue)
                count += channel.queue_purge(queue).method.message_count
            return count
        return self._publisher().run("purge", purge)

    def qsize(self, queue: str) -> int:
        """Ready messages of ``queue`` (not the unacked ones, nor delayed ones)."""
        return self._publisher().run("qsize", lambda channel: self._declare(channel, queue))

    def close(self) -> None:
        state, self._consuming = self._consuming, None
        if state is not None and state.link.connection is not None:
            try:
                if state.link.owner is threading.current_thread() \
                        or not state.link.owner.is_alive():
                    state.link.connection.process_data_events(0)  # acks handed over, then close
                    state.link.drop()
                else:
                    state.link.connection.add_callback_threadsafe(state.link.drop)
            except OUTAGE_ERRORS:
                pass
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.drop()

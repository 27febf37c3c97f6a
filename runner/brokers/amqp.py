"""``amqp://`` / ``pyamqp://`` / ``amqps://``: RabbitMQ, through pika.

Layout on the vhost: one durable queue per runner queue (with ``x-max-priority`` only where
``task_queues`` / ``task_queue_max_priority`` give one, as Celery: a priority queue costs
RabbitMQ throughput, and without it priorities are ignored), persistent
messages published with streamed publisher confirms (:mod:`runner.brokers.amqp_publisher`): a
message is kept, and sent again after an outage, until RabbitMQ has confirmed writing it, which
is waited for before the publishing thread acks anything, at ``close()`` and at exit.
Delivery is **at least once**: a fetched message stays unacked on the consumer's channel until
the worker acks it; if the worker dies (even SIGKILL) or its connection drops, RabbitMQ
delivers it again. RabbitMQ has no visibility timeout, so :meth:`extend` is a
no-op: a claim lasts as long as the consumer's connection, however long the task runs.

Threads: the consuming connection belongs to the thread that fetches first (see
:mod:`runner.brokers.amqp_consumer`: other threads' acks are handed to it, and
:meth:`heartbeat` services it while its owner runs a long task). Each thread that publishes
has its own connection.

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

import atexit
import logging
import threading
import time
import weakref
from collections.abc import Callable, Sequence

import pika
import pika.exceptions as amqp_errors

from runner.brokers.amqp_consumer import EARLY, Consumer
from runner.brokers.amqp_publisher import Outgoing, Publisher
from runner.brokers.base import DEAD_LETTER_SCAN, Broker, Delivery, QueueCounts
from runner.config.urls import URL
from runner.dead_letters import DeadLetter
from runner.exceptions import BrokerError, ConfigError
from runner.message import Message
from runner.stores.amqp import OUTAGE_ERRORS, Link, declare_error

logger = logging.getLogger("runner.amqp")

MAX_PRIORITY = 10
DELAY_PREFIX = "runner.delay."
CLOSE_WAIT = 10.0  # seconds close() and exit wait for RabbitMQ's confirms of what was sent
DECLARE_AGAIN = 60.0  # seconds: delay queues expire when unused, so declare them again now and then
DEAD_LETTER_QUEUE = "runner.dead_letters"  # a durable queue of DeadLetter records


def delay_bucket_ms(delay: float) -> int:
    """The delay queue TTL for ``delay`` seconds: rounded down to one significant digit."""
    ms = int(delay * 1000)
    if ms < 1:
        return 0
    unit = 10 ** (len(str(ms)) - 1)
    return ms // unit * unit


class AMQPBroker(Broker):
    """``amqp://user:password@host:5672/vhost``; see the module docstring for the guarantees."""

    scheme = "amqp"
    fanout_class = "runner.brokers.amqp_fanout:AMQPFanout"
    acks_anywhere = False
    needs_heartbeat = True
    pushes = True

    def __init__(self, url: URL, transport_options: dict | None = None):
        super().__init__(url, transport_options)
        self._local = threading.local()
        #: confirm_publish (kombu's name): each publish waits for its own confirm
        self.confirm_each = bool(self.transport_options.get("confirm_publish", False))
        self._publishers: list[Publisher] = []
        self._lock = threading.Lock()
        self._consumer = Consumer(self)  # the consuming connection (see amqp_consumer)
        self._publisher().link.run("connect", lambda channel: None)  # a wrong password: now
        atexit.register(_flush_at_exit, weakref.ref(self))

    # -- publishing ---------------------------------------------------------------------------

    def _publisher(self) -> Publisher:
        publisher = getattr(self._local, "publisher", None)
        if publisher is None:
            link = Link(self.url, self.transport_options, heartbeats=False)
            publisher = self._local.publisher = Publisher(link, self._route, self.confirm_each)
            self._local.declared = {}
            with self._lock:
                self._publishers.append(publisher)
        return publisher

    def _declare(self, channel, queue: str) -> int:
        """Declare ``queue`` (once per connection); returns its ready message count."""
        top = self.max_priorities.get(queue, self.max_priorities.get(None))
        kind = self.queue_types.get(queue, self.queue_types.get(None, "classic"))
        arguments: dict = {"x-max-priority": top} if top else {}
        if kind == "quorum":  # replicated on a cluster's nodes: kept when one node goes
            if top:
                raise ConfigError(f"queue {queue!r}: a quorum queue has no priorities; drop "
                                  f"max_priority (task_queues / task_queue_max_priority) or "
                                  f"make it a classic queue")
            arguments = {"x-queue-type": "quorum"}
        try:
            frame = channel.queue_declare(queue, durable=True, arguments=arguments or None)
        except amqp_errors.ChannelClosedByBroker as exc:
            raise declare_error(self.url, queue, exc, top) from None
        return frame.method.message_count

    def _route(self, channel, message: Outgoing, fresh: bool) -> str:
        """Declare what a publish of ``message`` needs (once per connection and minute, or
        again if ``fresh``: a delay queue expired meanwhile); return the exchange."""
        delay = (message.eta - time.time()) if message.eta else 0.0
        delay_ms = delay_bucket_ms(delay) if delay > EARLY else 0
        declared = self._local.declared
        if fresh:
            declared.clear()
        key = (self._local.publisher.link.generation, message.queue, delay_ms)
        now = time.monotonic()
        exchange = f"{DELAY_PREFIX}{delay_ms}" if delay_ms else ""
        if declared.get(key, 0.0) > now:
            return exchange
        self._declare(channel, message.queue)
        if delay_ms:
            channel.exchange_declare(exchange, "fanout", durable=True)
            channel.queue_declare(exchange, durable=True, arguments={
                "x-message-ttl": delay_ms, "x-dead-letter-exchange": "",
                "x-expires": delay_ms + 600_000})
            channel.queue_bind(exchange, exchange)
        declared[key] = now + DECLARE_AGAIN
        return exchange

    def enqueue(self, messages: Sequence[Message]) -> None:
        """Publish ``messages``; RabbitMQ's confirms are read as they come and waited for
        before this thread acks anything, at close and at exit (see amqp_publisher)."""
        outgoing = []
        for message in messages:
            headers = {"eta_ms": int(message.eta * 1000)} if message.eta else None
            properties = pika.BasicProperties(
                delivery_mode=2, priority=min(MAX_PRIORITY, message.priority or 0),
                message_id=message.id, headers=headers)
            outgoing.append(Outgoing(message.queue, self.wire(message), properties, message.eta))
        self._publisher().send(outgoing)

    def flush(self) -> None:
        """Wait until RabbitMQ has confirmed what this thread published."""
        publisher = getattr(self._local, "publisher", None)
        if publisher is not None:
            publisher.flush()

    def check(self, queues: Sequence[str] = ()) -> None:
        """Declare ``queues`` now: one that exists with other arguments is an error before
        the worker starts, not a loop of failing fetches."""
        self._publisher().link.run("declare", lambda channel: [self._declare(channel, queue)
                                                          for queue in queues])

    def prefetch(self, count: int) -> None:
        self._consumer.prefetch = count

    def fetch(self, queues: Sequence[str], limit: int, consumer: str) -> list[Delivery]:
        return self._consumer.fetch(queues, limit)

    def wait(self, timeout: float) -> bool:
        return self._consumer.wait(timeout)

    def fetch_waiting(self, queues: Sequence[str], limit: int, consumer: str,
                      timeout: float) -> list[Delivery]:
        """Wait for deliveries (RabbitMQ pushes them), then take them: no second poll."""
        return self._consumer.fetch_waiting(queues, limit, timeout)

    def heartbeat(self) -> None:
        self._consumer.heartbeat()

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        self._consumer.settle(deliveries, requeue=False)

    def requeue(self, deliveries: Sequence[Delivery], started: bool = False) -> None:
        self._consumer.settle(deliveries, requeue=True)

    def retry(self, delivery: Delivery, message: Message) -> None:
        """Publish the next attempt, then ack this one (once the attempt is confirmed): a
        crash in between delivers this one again (at least once)."""
        self.enqueue([message])
        self.ack([delivery])

    def extend(self, deliveries: Sequence[Delivery]) -> None:
        """Nothing to do: RabbitMQ keeps a message unacked for as long as the consumer's
        connection lives (there is no visibility timeout to renew)."""

    # -- admin --------------------------------------------------------------------------------

    def purge(self, queues: Sequence[str]) -> int:
        """Delete the ready messages of ``queues`` (delayed ones are still in delay queues),
        this thread's unconfirmed ones included (they are confirmed first)."""
        self.flush()
        def purge(channel) -> int:
            count = 0
            for queue in queues:
                self._declare(channel, queue)
                count += channel.queue_purge(queue).method.message_count
            return count
        return self._publisher().link.run("purge", purge)

    def qsize(self, queue: str) -> int:
        """Ready messages of ``queue`` (not the unacked ones, nor delayed ones), this thread's
        last ones included (they are confirmed first: RabbitMQ counts a message when it is
        in the queue, which can be after the reply to a count asked right after publishing)."""
        self.flush()
        return self._publisher().link.run("qsize", lambda channel: self._declare(channel, queue))

    def queue_counts(self, queues: Sequence[str]) -> dict[str, QueueCounts]:
        """Ready messages per queue; RabbitMQ tells neither the unacked ones (without its
        management plugin) nor the delayed ones per queue (see :meth:`delayed_count`)."""
        return {queue: QueueCounts(self.qsize(queue)) for queue in queues}

    def delayed_count(self) -> int:
        """Delayed messages of all queues: those in the ``runner.delay.<ms>`` queues (each
        possible one looked up; a missing one costs a channel)."""
        buckets = [digit * 10 ** power for power in range(10) for digit in range(1, 10)]

        def count(channel) -> int:
            total, connection = 0, channel.connection
            for ms in buckets:
                probe = connection.channel()
                try:
                    total += probe.queue_declare(f"{DELAY_PREFIX}{ms}",
                                                 passive=True).method.message_count
                    probe.close()
                except amqp_errors.ChannelClosedByBroker:  # (no such delay queue)
                    pass
            return total
        return self._publisher().link.run("delayed count", count)

    # -- dead letters: records in one durable queue --------------------------------------------

    def bury(self, letters: Sequence[DeadLetter]) -> None:
        """Publish the records to the dead-letter queue and wait for RabbitMQ's confirm, so
        they are safe before the caller acks the messages."""
        if not letters:
            return
        self._publisher().send([Outgoing(DEAD_LETTER_QUEUE, letter.encode(),
                                         pika.BasicProperties(delivery_mode=2,
                                                              message_id=letter.key), None)
                                for letter in letters])
        self.flush()

    def _scan_dead(self, keep: Callable[[DeadLetter], bool] | None) -> list[DeadLetter]:
        """Every dead letter, read on a channel of its own without acking, so closing it gives
        them back; with ``keep``, those it refuses are acked (removed) first."""
        def scan(channel) -> list[DeadLetter]:
            self._declare(channel, DEAD_LETTER_QUEUE)
            reader = channel.connection.channel()
            letters: list[DeadLetter] = []
            try:
                while len(letters) < DEAD_LETTER_SCAN:
                    method, _properties, body = reader.basic_get(DEAD_LETTER_QUEUE)
                    if method is None:
                        break
                    letter = DeadLetter.decode(body)
                    if keep is not None and not keep(letter):
                        reader.basic_ack(method.delivery_tag)
                    letters.append(letter)
            finally:
                reader.close()
            return letters
        return self._publisher().link.run("dead letters", scan)

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        newest = {}
        for letter in self._scan_dead(None):  # a key buried twice (see bury): the last one
            newest[letter.key] = letter
        return sorted(newest.values(), key=lambda d: (-d.died_at, d.key))[:limit]

    def dead_letter_count(self) -> int:
        return self._publisher().link.run(
            "dead letters", lambda channel: self._declare(channel, DEAD_LETTER_QUEUE))

    def remove_dead(self, keys: Sequence[str] | None = None) -> int:
        if keys is None:
            return self.purge([DEAD_LETTER_QUEUE])
        wanted = set(keys)
        removed = {d.key for d in self._scan_dead(lambda d: d.key not in wanted)} & wanted
        return len(removed)

    def _flush_ended(self) -> None:
        """Wait for the confirms of what this thread and the threads that ended published
        (another live thread's connection is its own to use)."""
        with self._lock:
            publishers = list(self._publishers)
        for publisher in publishers:
            if publisher.link.owner is threading.current_thread() \
                    or not publisher.link.owner.is_alive():
                _flush_quietly(publisher)

    def close(self) -> None:
        self._consumer.close()
        self._flush_ended()
        with self._lock:
            publishers, self._publishers = self._publishers, []
        for publisher in publishers:
            publisher.link.drop()


def _flush_quietly(publisher: Publisher) -> None:
    """Wait (CLOSE_WAIT s at most, one connection attempt) for the confirms of ``publisher``;
    if that fails, say what may be lost (sent, but RabbitMQ never confirmed writing it)."""
    if not publisher.pending:
        return
    try:
        publisher.flush(reconnect=False, timeout=CLOSE_WAIT)
    except (*OUTAGE_ERRORS, BrokerError) as exc:
        logger.error("%d message(s) sent to RabbitMQ at %s were not confirmed (%s: %s): "
                     "they may be lost", publisher.pending, publisher.link.url.masked,
                     type(exc).__name__, exc)


def _flush_at_exit(ref: weakref.ref) -> None:
    """At interpreter exit: a script that calls ``delay()`` and ends leaves nothing
    unconfirmed."""
    broker = ref()
    if broker is not None:
        broker._flush_ended()

"""The broker interface: a handful of primitives every transport implements.

Delivery is **at least once**. A fetched message is *claimed*, not removed: it stays in the broker
until it is acked. A claim lasts ``visibility_timeout`` seconds and the worker renews it with
:meth:`Broker.extend` while the task runs, so a task that runs long is never handed to a second
worker, while the claim of a worker that died expires and the message is delivered again.
Everything above this interface (tasks, results, the worker) is written once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from runner.config.urls import URL
from runner.dead_letters import DeadLetter
from runner.message import Message


class Signer(Protocol):
    """What signs a message's bytes (runner.security.Security): brokers know no keys."""

    def sign(self, wire: bytes) -> bytes: ...


DEAD_LETTER_SCAN = 100_000  # most dead letters read at once (to list, show or requeue them)


@dataclass(slots=True)
class Delivery:
    """A claimed message: its raw bytes and the handle the broker needs to ack or requeue it."""

    tag: object
    body: bytes
    queue: str
    redelivered: bool = False
    #: how many times it was handed to a worker, this time included, where the broker counts
    #: (SQLite, Redis, memory; RabbitMQ's quorum queues); else 1, or 2 when redelivered
    deliveries: int = 1


@dataclass(slots=True)
class QueueCounts:
    """What ``runner queues`` shows of one queue; None where the transport cannot tell."""

    waiting: int  # ready to be fetched now
    delayed: int | None = None  # countdown/eta, not due yet
    unacked: int | None = None  # claimed by a worker, not acked yet


class Broker(ABC):
    """A transport for task messages.

    Threads. One instance belongs to one process (a forked child opens its own: ``app.broker``
    is per process and thread), and within it is shared by the threads of a worker, as follows
    (``tests/test_broker_threads.py`` holds every transport to it):

    - :meth:`enqueue` / :meth:`flush`, :meth:`qsize`, :meth:`purge` and the dead-letter
      methods may be called from any thread at any time; where the transport needs it, each
      thread gets a connection of its own (Redis, RabbitMQ) or the calls take turns on one
      (SQLite).
    - :meth:`fetch`, :meth:`fetch_waiting` and :meth:`wait` are called by one consuming thread
      at a time (the worker's consumer thread, or a prefork child's only thread).
    - :meth:`ack`, :meth:`requeue`, :meth:`extend` and :meth:`retry` may be called from any
      thread while another consumes: on RabbitMQ, whose deliveries only the channel that got
      them can settle, they are handed to the consuming thread and sent at its next
      fetch or wait (or :meth:`heartbeat`); elsewhere they are sent at once.
    - :meth:`heartbeat` is called from another thread while the consuming thread runs a long
      task (where :attr:`needs_heartbeat`).
    - :meth:`close` once, when no other thread uses the instance any more.
    """

    #: the URL scheme(s) this class serves, for messages and banners
    scheme: str = ""
    #: a claim may be acked by another connection (a worker's child process) than the one that
    #: fetched it: false where deliveries belong to the fetching channel (AMQP) or process
    acks_anywhere: bool = True
    #: its messages live in this process only (memory://): worker processes cannot share it
    process_local: bool = False
    #: the connection must be serviced now and then even while its owner is busy (AMQP
    #: heartbeats): see :meth:`heartbeat`
    needs_heartbeat: bool = False
    #: the broker pushes messages to the consumer (AMQP): a waiting fetch returns as soon as
    #: one is there, so a consumer waits at once instead of first trying a fetch that does
    #: not wait (one poll of the connection less per message)
    pushes: bool = False
    #: ``module:Class`` of this transport's :class:`~runner.brokers.fanout.Fanout` (remote
    #: control and events), imported only when used
    fanout_class: str = ""

    def __init__(self, url: URL, transport_options: dict | None = None):
        self.url = url
        self.transport_options = dict(transport_options or {})
        #: queue name -> its highest priority, where the broker needs queues declared with it
        #: (AMQP's x-max-priority); ``None`` for the queues not named. Set by the app from
        #: ``task_queues`` and ``task_queue_max_priority``.
        self.max_priorities: dict[str | None, int | None] = {}
        #: queue name -> "classic" or "quorum" (RabbitMQ), ``None`` for the others; set by
        #: the app from ``task_queues``' x-queue-type and ``task_default_queue_type``
        self.queue_types: dict[str | None, str] = {}
        self.visibility_timeout = float(self.transport_options.get("visibility_timeout", 30.0))
        #: signs every message this broker sends (runner.security; set by the app where
        #: task_serializer = 'auth'), else None
        self.signer: Signer | None = None

    def wire(self, message: Message) -> bytes:
        """``message`` as it goes to the broker: encoded, and signed where the app signs."""
        if self.signer is None:
            return message.encode()
        return self.signer.sign(message.encode())

    @abstractmethod
    def enqueue(self, messages: Sequence[Message]) -> None:
        """Store messages in one round trip. A message with an ``eta`` in the future is held by
        the broker (not by any worker) until it is due."""

    def flush(self) -> None:
        """Return once what this thread enqueued is safe in the broker. Only brokers that
        confirm in the background (AMQP) have anything to wait for: elsewhere ``enqueue``
        returns once the broker has the messages."""

    @abstractmethod
    def fetch(self, queues: Sequence[str], limit: int, consumer: str) -> list[Delivery]:
        """Claim up to ``limit`` due messages from ``queues`` without blocking: highest priority
        first, then oldest first."""

    @abstractmethod
    def wait(self, timeout: float) -> bool:
        """Block until new messages may be there (True), or ``timeout`` seconds have passed
        (False). ``wait(0)`` only asks whether something changed since the last call."""

    def fetch_waiting(self, queues: Sequence[str], limit: int, consumer: str,
                      timeout: float) -> list[Delivery]:
        """:meth:`wait` up to ``timeout``, then :meth:`fetch`: what an idle consumer does.
        Brokers that can do both in one round trip (Redis) override it."""
        self.wait(timeout)
        return self.fetch(queues, limit, consumer)

    def check(self, queues: Sequence[str] = ()) -> None:
        """Reach the broker once (riding out an outage as any call does), so that refused
        credentials, or ``queues`` that cannot be consumed as configured, are reported before
        a worker says it is ready. Brokers that connect when opened need nothing more."""

    def prefetch(self, count: int) -> None:
        """Let this consumer hold up to ``count`` messages unacked, where the broker pushes
        messages (AMQP's QoS). Brokers that are fetched from claim what :meth:`fetch` asks."""

    def heartbeat(self) -> None:
        """Keep the consuming connection alive; called from another thread of the process
        while the thread that consumes runs a long task (where :attr:`needs_heartbeat`)."""

    @abstractmethod
    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Remove messages for good: the task ran (or was refused for good)."""

    @abstractmethod
    def requeue(self, deliveries: Sequence[Delivery], started: bool = False) -> None:
        """Give claimed messages back, to be delivered again at once (warm shutdown, a process
        that died). Unless ``started`` (their task may have run), the claim is not counted
        as a delivery towards ``task_delivery_limit``, where the broker counts them."""

    @abstractmethod
    def extend(self, deliveries: Sequence[Delivery]) -> None:
        """Renew the claims of messages whose tasks are still running."""

    def retry(self, delivery: Delivery, message: Message) -> None:
        """Replace a delivered message by its next attempt. Brokers that can should do this in
        one atomic step so that a crash in between neither loses nor doubles the task."""
        self.enqueue([message])
        self.ack([delivery])

    def ack_and_store(self, deliveries: Sequence[Delivery], records: Sequence, backend) -> bool:
        """Store ``records`` in ``backend`` and ack ``deliveries`` in one atomic step, where
        broker and backend share a store (SQLite: one file, one transaction). Returns False
        when they cannot, and the caller stores, then acks."""
        return False

    def ack_store_fetch(self, deliveries: Sequence[Delivery], records: Sequence, backend,
                        queues: Sequence[str], limit: int, consumer: str
                        ) -> list[Delivery] | None:
        """:meth:`ack_and_store`, then :meth:`fetch`, in one step where the broker can (one
        SQLite transaction, one Redis round trip): a busy worker process claims its next batch
        with the write that settles the last one. None where it cannot: the caller does both.
        """
        return None

    @abstractmethod
    def purge(self, queues: Sequence[str]) -> int:
        """Delete every waiting message of ``queues``; return how many."""

    @abstractmethod
    def qsize(self, queue: str) -> int:
        """Messages waiting (or delayed) in ``queue``, claimed ones excluded."""

    def queue_counts(self, queues: Sequence[str]) -> dict[str, QueueCounts]:
        """Messages waiting, delayed and claimed in each of ``queues`` (one consistent look
        where the broker can). Brokers that count only what waits leave the rest None."""
        return {queue: QueueCounts(self.qsize(queue)) for queue in queues}

    def queue_names(self) -> list[str]:
        """Queues that hold messages now, where the broker can list them (else none)."""
        return []

    # -- dead letters (see runner.dead_letters) ----------------------------------------------

    @abstractmethod
    def bury(self, letters: Sequence[DeadLetter]) -> None:
        """Keep ``letters`` beside the queues. A key already buried is replaced, so the caller
        buries before it acks: a crash in between buries a message twice, never loses it."""

    @abstractmethod
    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Up to ``limit`` dead letters, newest first."""

    @abstractmethod
    def dead_letter_count(self) -> int:
        """How many dead letters there are."""

    @abstractmethod
    def remove_dead(self, keys: Sequence[str] | None = None) -> int:
        """Delete the dead letters of ``keys`` (None: all of them); return how many."""

    def close(self) -> None:
        """Release connections; the broker may not be used afterwards."""

"""Fan-out and replies beside the task queues: what remote control and events travel on.

Two primitives, on every transport (each broker class names its implementation in
:attr:`~runner.brokers.base.Broker.fanout_class`, imported only when used):

- an *exchange*: :meth:`Fanout.publish` hands a body to every :class:`Subscription` open on it
  at that moment (later subscribers never see it). Used for control commands
  (``runner.pidbox``) and events (``runner.events``).
- a *reply box*: :meth:`Fanout.reply_box` opens a private box whose :attr:`ReplyBox.address`
  travels with a command; any process may :meth:`Fanout.reply` to it.

Both are **best effort and bounded**: a body is kept at most ``ttl`` seconds, a subscriber that
reads too slowly loses the oldest bodies (Redis: the server drops a pub/sub client past its
output buffer; RabbitMQ: ``x-max-length`` and ``x-message-ttl`` on each subscriber's queue;
SQLite: rows older than ``ttl`` or past the newest ``MAX_ROWS`` are deleted), and publishing
never waits for a subscriber. Nothing here is a task message: losing one never loses a task.

Thread contract: one instance per thread (as brokers); a :class:`Subscription` or
:class:`ReplyBox` belongs to the thread that opened it.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod

from runner.config.urls import URL

#: bodies a subscriber may have waiting before the oldest are dropped
MAX_PENDING = 10_000
DEFAULT_TTL = 5.0  # seconds a body waits for its reader (Celery's event_queue_ttl)
MAX_ROWS = 20_000  # SQLite: newest rows kept per table


class Subscription(ABC):
    """Bodies published on one exchange since this subscription opened."""

    @abstractmethod
    def get(self, timeout: float) -> list[bytes]:
        """What arrived, waiting up to ``timeout`` seconds for the first (empty: nothing)."""

    def close(self) -> None:
        """Stop receiving."""


class ReplyBox(ABC):
    """A private box replies are sent to; :attr:`address` names it to the repliers."""

    address: str

    @abstractmethod
    def get(self, timeout: float) -> list[bytes]:
        """Replies that arrived, waiting up to ``timeout`` seconds for the first."""

    def close(self) -> None:
        """Delete the box; late replies are dropped."""


class Fanout(ABC):
    """Publish to exchanges and reply to boxes on the transport of ``url``."""

    def __init__(self, url: URL, transport_options: dict | None = None):
        self.url = url
        self.transport_options = dict(transport_options or {})

    @abstractmethod
    def publish(self, exchange: str, body: bytes, ttl: float = DEFAULT_TTL) -> None:
        """Hand ``body`` to every current subscriber of ``exchange``; never waits for them."""

    @abstractmethod
    def subscribe(self, exchange: str, ttl: float = DEFAULT_TTL,
                  expires: float | None = None) -> Subscription:
        """Start receiving what is published on ``exchange`` from now on. ``ttl``: a body
        not read within it may be dropped; ``expires``: where the transport keeps a queue per
        subscriber (RabbitMQ), it is deleted after this long without a reader."""

    @abstractmethod
    def reply_box(self) -> ReplyBox:
        """A new private box for replies."""

    @abstractmethod
    def reply(self, address: str, body: bytes, ttl: float = DEFAULT_TTL) -> None:
        """Send ``body`` to the box at ``address`` (dropped if it is gone)."""

    def close(self) -> None:
        """Release connections."""


def open_fanout(broker_class: type, url: URL, transport_options: dict | None = None) -> Fanout:
    """The fan-out of the transport ``broker_class`` serves (named by its ``fanout_class``)."""
    module, _, name = broker_class.fanout_class.partition(":")
    return getattr(importlib.import_module(module), name)(url, transport_options)

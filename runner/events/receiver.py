"""Receiving events: ``app.events.Receiver(handlers={...}).capture()``, as Celery's.

A receiver subscribes to the ``events`` exchange when it starts capturing: it sees what is
published from then on. What it does not read within ``event_queue_ttl`` seconds may be
dropped (and on RabbitMQ its queue is deleted ``event_queue_expires`` seconds after it stops
reading): a slow receiver loses events, it never slows a worker.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from runner.events.dispatcher import EXCHANGE, open_events_fanout

if TYPE_CHECKING:  # pragma: no cover
    from runner.app import Runner

logger = logging.getLogger("runner.events")

POLL = 0.25  # seconds: longest wait on the channel (how soon should_stop is noticed)


def decode(body: bytes) -> list[dict]:
    """The events in one published body, as Celery's event dicts: a packed batch (see
    :func:`runner.events.dispatcher.pack`), or a JSON list of event dicts, or one event dict;
    nothing for a malformed body."""
    try:
        events = json.loads(body)
        if isinstance(events, dict) and events.get("v") == 2:
            events = unpack(events)
    except (ValueError, UnicodeDecodeError, TypeError, IndexError, KeyError) as exc:
        logger.warning("events: dropped a malformed body (%s): %r", exc, body[:200])
        return []
    if isinstance(events, dict):
        events = [events]
    if not isinstance(events, list):  # (null, a number, a string: no events)
        logger.warning("events: dropped a body that holds no events: %r", body[:200])
        return []
    return [e for e in events if isinstance(e, dict) and isinstance(e.get("type"), str)]


def unpack(packed: dict) -> list[dict]:
    """The event dicts of a packed batch: base fields, then the row's own, then ``type``,
    ``timestamp`` and ``clock`` (the order Celery's dispatcher gives them)."""
    base, shapes = dict(packed["base"]), packed["shapes"]
    events = []
    for row in packed["rows"]:
        type_, timestamp, clock, shape, *values = row
        keys = shapes[shape]
        if len(keys) != len(values):
            raise ValueError(f"a row of {len(values)} values for {len(keys)} fields")
        events.append({**base, **dict(zip(keys, values, strict=True)), "type": type_,
                       "timestamp": timestamp, "clock": clock})
    return events


class EventReceiver:
    def __init__(self, app: Runner, connection: Any = None,
                 handlers: dict[str, Callable[[dict], Any]] | None = None,
                 routing_key: str = "#", node_id: str | None = None,
                 queue_ttl: float | None = None, queue_expires: float | None = None,
                 **kwargs: Any):
        self.app = app
        self.handlers = dict(handlers or {})
        conf = app.conf
        self.queue_ttl = float(queue_ttl or conf.event_queue_ttl or 5.0)
        self.queue_expires = float(queue_expires or conf.event_queue_expires or 60.0)
        self.should_stop = False
        self.listening = threading.Event()  # subscribed: events sent from now on arrive

    def process(self, type: str, event: dict) -> None:  # noqa: A002 - Celery's name
        handler = self.handlers.get(type) or self.handlers.get("*")
        if handler is not None:
            handler(event)

    def itercapture(self, limit: int | None = None, timeout: float | None = None,
                    wakeup: bool = True) -> Iterator[dict]:
        """Each event as it comes (after its handler ran), until ``limit`` events, or
        ``timeout`` seconds, or :attr:`should_stop`."""
        fanout = open_events_fanout(self.app)
        subscription = fanout.subscribe(EXCHANGE, ttl=self.queue_ttl,
                                        expires=self.queue_expires)
        self.listening.set()
        try:
            if wakeup:  # workers send a heartbeat at once: they show up now
                self.app.control.broadcast("heartbeat")
            deadline = None if timeout is None else time.monotonic() + timeout
            count = 0
            while not self.should_stop:
                wait = POLL if deadline is None else min(POLL, deadline - time.monotonic())
                if wait < 0:
                    return
                for body in subscription.get(wait):
                    for event in decode(body):
                        event["local_received"] = time.time()
                        self.process(event["type"], event)
                        yield event
                        count += 1
                        if limit is not None and count >= limit:
                            return
        finally:
            subscription.close()
            fanout.close()

    def capture(self, limit: int | None = None, timeout: float | None = None,
                wakeup: bool = True) -> None:
        for _ in self.itercapture(limit, timeout, wakeup):
            pass

"""Celery's events: ``task-*`` and ``worker-*`` (and runner's pipeline and beat events),
sent best effort and bounded (:mod:`runner.events.dispatcher`), received with
``app.events.Receiver`` (:mod:`runner.events.receiver`) into ``app.events.State``
(:mod:`runner.events.state`)."""

from __future__ import annotations

import contextlib
import os
import threading
from typing import TYPE_CHECKING, Any

from runner.events.dispatcher import EventDispatcher
from runner.events.receiver import EventReceiver
from runner.events.state import State

if TYPE_CHECKING:  # pragma: no cover
    from runner.app import Runner

__all__ = ["Events", "EventDispatcher", "EventReceiver", "State", "send_event"]


class Events:
    """``app.events``."""

    def __init__(self, app: Runner):
        self.app = app
        #: the node name :meth:`default` sends as (a worker sets its own: the events of its
        #: pipelines and embedded beat name it); None: ``celery@<host>``
        self.hostname: str | None = None
        self._default: tuple[tuple[int, str, str | None], EventDispatcher] | None = None
        self._lock = threading.Lock()

    def Dispatcher(self, connection: Any = None, hostname: str | None = None,  # noqa: N802
                   enabled: bool = True, **kwargs: Any) -> EventDispatcher:
        return EventDispatcher(self.app, hostname, enabled, **kwargs)

    def Receiver(self, connection: Any = None, handlers: dict | None = None,  # noqa: N802
                 **kwargs: Any) -> EventReceiver:
        return EventReceiver(self.app, connection, handlers, **kwargs)

    def State(self, **kwargs: Any) -> State:  # noqa: N802 - Celery's name
        return State(**kwargs)

    def default(self) -> EventDispatcher:
        """This process's dispatcher for events not sent by a worker (task-sent, beat,
        pipelines)."""
        key = (os.getpid(), self.app.broker_url, self.hostname)
        with self._lock:
            if self._default is None or self._default[0] != key:
                if self._default is not None and self._default[0][0] == key[0]:
                    self._default[1].close()  # (the broker changed: what it holds goes out)
                self._default = (key, EventDispatcher(self.app, self.hostname))
            return self._default[1]

    @contextlib.contextmanager
    def default_dispatcher(self, hostname: str | None = None, enabled: bool = True):
        dispatcher = EventDispatcher(self.app, hostname, enabled)
        try:
            yield dispatcher
        finally:
            dispatcher.close()


def send_event(app: Runner, type: str, **fields: Any) -> None:  # noqa: A002
    """Send an event from the process's default dispatcher, now (these are rare: pipeline
    runs, beat), best effort: it never raises."""
    try:
        dispatcher = app.events.default()
        dispatcher.send(type, **fields)
        dispatcher.flush(wait=False)
    except Exception:  # noqa: BLE001 - events must never fail their sender
        pass

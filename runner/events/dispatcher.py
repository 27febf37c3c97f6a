"""Sending events: Celery's event dicts, buffered per process and published in batches.

:meth:`EventDispatcher.send` appends the event to a bounded buffer (oldest dropped first,
counted in :attr:`EventDispatcher.dropped`). What is buffered goes out as one body (a packed
batch, see :func:`pack`) on the ``events`` exchange of the broker's transport (see
:mod:`runner.brokers.fanout`) once ``flush_interval`` seconds old: published by the next
``send`` of a busy sender (one socket write of its own thread: a separate thread encoding
would take the GIL from it at each of its socket calls, which cost AMQP workers a fifth of
their speed), or after a lull by a thread of the process. After a failed publish, senders
leave publishing to that thread for ``RETRY_AFTER`` seconds: a broker that is down never holds
a sender up for more than one attempt. An absent consumer costs nothing (the fan-out keeps
nothing for it); memory stays bounded; events are best effort (a process killed with SIGKILL
loses at most its last ``flush_interval``).
A dispatcher made before a fork starts afresh in the child (its own buffer, thread and
connection).
"""

from __future__ import annotations

import collections
import json
import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from runner.brokers.fanout import Fanout, open_fanout
from runner.brokers.registry import broker_class
from runner.config.urls import parse_url
from runner.events.clock import clock_tick

if TYPE_CHECKING:  # pragma: no cover
    from runner.app import Runner

logger = logging.getLogger("runner.events")

EXCHANGE = "events"
BUFFER_SIZE = 10_000  # events a process keeps unsent at most (then the oldest are dropped)
FLUSH_INTERVAL = 0.2  # seconds between two publishes of a busy process's events
RETRY_AFTER = 5.0  # seconds after a failed publish during which senders never publish
SAFE_REPR_LIMIT = 1024  # characters of args, kwargs and results an event carries


def safe_repr(value: Any, limit: int = SAFE_REPR_LIMIT) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # noqa: BLE001 - a repr that fails must not stop an event
        text = f"<unrepresentable {type(value).__name__}: {exc}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def pack(base: dict[str, Any], batch: list[tuple[str, float, int, dict[str, Any]]]) -> bytes:
    """One body for a batch of events: JSON ``{"v": 2, "base": {...}, "shapes": [[key, ...],
    ...], "rows": [[type, timestamp, clock, shape, value, ...], ...]}``. The fields every event
    of the process shares are written once, and each distinct set of field names once: JSON
    writes a dict's keys for every event, which made encoding most of a task's event cost
    (:func:`runner.events.receiver.decode` rebuilds Celery's event dicts)."""
    shapes: dict[tuple[str, ...], int] = {}
    rows = []
    for type_, timestamp, clock, fields in batch:
        keys = tuple(fields)
        shape = shapes.get(keys)
        if shape is None:
            shape = shapes[keys] = len(shapes)
        rows.append([type_, timestamp, clock, shape, *fields.values()])
    return json.dumps({"v": 2, "base": base, "shapes": list(shapes), "rows": rows},
                      default=safe_repr).encode()


def utcoffset() -> int:
    """Hours west of UTC, as Celery's events carry it."""
    return (time.altzone if time.daylight and time.localtime().tm_isdst else time.timezone) // 3600


def open_events_fanout(app: Runner) -> Fanout:
    url = parse_url(app.broker_url)
    return open_fanout(broker_class(url.scheme), url, app._transport_options())


#: how many times this process's line forked (a child's count differs from its parent's):
#: one int compare per event instead of a getpid() system call
_forks = [0]
os.register_at_fork(after_in_child=lambda: _forks.__setitem__(0, _forks[0] + 1))


class EventDispatcher:
    """``app.events.Dispatcher()``: ``send(type, **fields)``, as Celery's ``EventDispatcher``."""

    def __init__(self, app: Runner, hostname: str | None = None, enabled: bool = True,
                 buffer_size: int = BUFFER_SIZE, flush_interval: float = FLUSH_INTERVAL,
                 ttl: float | None = None):
        self.app = app
        self.hostname = hostname or f"celery@{socket.gethostname()}"
        self.enabled = enabled
        self.buffer_size, self.flush_interval = buffer_size, flush_interval
        self.ttl = ttl if ttl is not None else float(app.conf.event_queue_ttl or 5.0)
        self.dropped = 0
        self.sent = 0  # events handed to send() while enabled, in this process
        self._pid = -1
        self._forks = -1  # the fork count this process's buffer was made at

    def _start(self) -> None:
        """This process's buffer and publishing thread (again after a fork)."""
        self._pid, self._forks = os.getpid(), _forks[0]
        #: (type, timestamp, clock, fields), appended to without a lock (a deque is
        #: thread-safe); full, it drops the oldest
        self._buffer: collections.deque[tuple] = collections.deque(maxlen=self.buffer_size)
        self._base = {"hostname": self.hostname, "utcoffset": utcoffset(), "pid": self._pid}
        self._wake = threading.Event()  # set by the first event after a publish
        self._due = 0.0  # when what is buffered should go out (monotonic; 0: nothing)
        self._failed_until = 0.0  # a publish failed: senders leave it to the thread till then
        self._closed = False
        self._fanout: Fanout | None = None
        self._sending = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="runner-events", daemon=True)
        self._thread.start()

    def send(self, type: str, blind: bool = False, **fields: Any) -> None:  # noqa: A002
        """Buffer one event (never blocks; the oldest is dropped when the buffer is full)."""
        self.put(type, fields)

    def put(self, type: str, fields: dict[str, Any]) -> None:  # noqa: A002
        """:meth:`send` with the fields as a dict the dispatcher may keep (the worker's task
        events: no keyword arguments packed and unpacked on the way)."""
        if not self.enabled:
            return
        if self._forks != _forks[0]:  # (a forked child starts its own buffer and thread)
            self._start()
        buffer = self._buffer
        if len(buffer) >= self.buffer_size:
            self.dropped += 1
        buffer.append((type, time.time(), clock_tick(), fields))
        self.sent += 1
        if not self._due:
            self._due = time.monotonic() + self.flush_interval
            self._wake.set()
        elif (now := time.monotonic()) >= self._due:
            if now >= self._failed_until:
                self.flush(wait=False)  # (here: a thread of its own would fight this one
                # for the GIL on each of its socket calls while it encodes)
            elif not self._wake.is_set():  # the broker failed lately: the thread tries
                self._wake.set()

    def _run(self) -> None:
        """Publish what a sender left buffered when it went quiet. A busy sender publishes
        its own batches (in :meth:`send`): this thread wakes only after a lull."""
        while True:
            self._wake.wait()
            if self._closed:
                return
            self._wake.clear()
            time.sleep(self.flush_interval * 2)
            if self._due and time.monotonic() >= self._due:
                self.flush()

    def flush(self, wait: bool = True) -> None:
        """Publish what is buffered now, in this thread (best effort: failures are logged and
        the events dropped); without ``wait``, not if another thread publishes now."""
        if self._pid != os.getpid():
            return
        if not self._sending.acquire(blocking=wait):
            return
        try:
            self._due = 0.0
            buffer, batch = self._buffer, []
            while buffer:
                batch.append(buffer.popleft())
            if not batch:
                return
            try:
                if self._fanout is None:
                    self._fanout = open_events_fanout(self.app)
                self._fanout.publish(EXCHANGE, pack(self._base, batch), ttl=self.ttl)
            except Exception as exc:  # noqa: BLE001 - events are best effort
                self.dropped += len(batch)
                self._fanout = None
                self._failed_until = time.monotonic() + RETRY_AFTER
                logger.warning("events: publishing %d event(s) failed: %s", len(batch), exc)
        finally:
            self._sending.release()

    def close(self) -> None:
        """Publish what is left and stop the thread."""
        if self._pid != os.getpid():
            return
        self.flush()
        self._closed = True
        self._wake.set()
        if self._fanout is not None:
            self._fanout.close()
            self._fanout = None

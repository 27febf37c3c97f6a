"""What events do not say, asked for in the background every few seconds: queue lengths
(waiting, delayed, claimed, as ``runner queues``), which worker consumes which queue, and each
worker's pool (``inspect stats``). Pages read the last answer, so a page never waits on a
broadcast; a queue's waiting count is kept once a minute for an hour (its chart).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("runner.dashboard")

HISTORY_EVERY = 60.0  # seconds between two points of a queue's chart
HISTORY_POINTS = 60  # an hour of them


@dataclass
class Snapshot:
    taken: float = 0.0
    queues: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> counts
    consumers: dict[str, list[str]] = field(default_factory=dict)  # worker -> its queues
    stats: dict[str, dict] = field(default_factory=dict)  # worker -> inspect stats
    error: str | None = None


def known_queues(conf: Any) -> list[str]:
    """The queues the app declares (``task_queues``), else its default queue."""
    if conf.task_queues:
        return [q.name for q in conf.task_queues]
    return [conf.task_default_queue]


class Poller:
    def __init__(self, app: Any, interval: float = 2.0, reply_timeout: float = 1.0):
        self.app = app
        self.interval = interval
        self.reply_timeout = reply_timeout
        self.snapshot = Snapshot()
        self.history: collections.deque[tuple[float, dict[str, int]]] = collections.deque(
            maxlen=HISTORY_POINTS)
        self.lock = threading.Lock()
        self.polled = threading.Event()  # set after the first poll (tests wait for it)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._kick = threading.Event()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="dashboard-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._kick.set()
        if self._thread is not None:
            self._thread.join(5)

    def kick(self) -> None:
        """Poll now (after an action changed the workers)."""
        self._kick.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                snapshot = self.poll()
            except Exception as exc:  # noqa: BLE001 - shown on the pages, tried again
                logger.warning("dashboard: polling failed: %s: %s", type(exc).__name__, exc)
                snapshot = Snapshot(time.time(), self.snapshot.queues, self.snapshot.consumers,
                                    self.snapshot.stats, f"{type(exc).__name__}: {exc}")
            with self.lock:
                self.snapshot = snapshot
                if not self.history or snapshot.taken - self.history[-1][0] >= HISTORY_EVERY:
                    self.history.append((snapshot.taken, {name: q["waiting"] for name, q in
                                                          snapshot.queues.items()}))
            self.polled.set()
            self._kick.wait(self.interval)
            self._kick.clear()

    def poll(self) -> Snapshot:
        app = self.app
        inspect = app.control.inspect(timeout=self.reply_timeout)
        replies = inspect.active_queues() or {}
        consumers = {node: sorted(q["name"] for q in queues) for node, queues in
                     replies.items() if isinstance(queues, list)}
        stats = {node: s for node, s in (inspect.stats() or {}).items() if isinstance(s, dict)}
        broker = app.broker
        names = sorted({*known_queues(app.conf), *broker.queue_names(),
                        *(q for qs in consumers.values() for q in qs)})
        counts = broker.queue_counts(names)
        queues = {name: {"waiting": c.waiting, "delayed": c.delayed, "claimed": c.unacked,
                         "consumers": sorted(n for n, qs in consumers.items() if name in qs)}
                  for name, c in counts.items()}
        return Snapshot(time.time(), queues, consumers, stats)

    def current(self) -> tuple[Snapshot, list[tuple[float, dict[str, int]]]]:
        with self.lock:
            return self.snapshot, list(self.history)

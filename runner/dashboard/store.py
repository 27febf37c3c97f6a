"""The dashboard's picture of the cluster, kept from events: ``app.events.State`` (workers and
the last ``max_tasks`` tasks, like Flower's ``--max_tasks``) behind one lock, plus what the
pages need that State does not keep: each task's queue, failures per worker, per-queue rates
in and out, the last pipeline and beat events.

The receiver runs in a thread; a lost broker connection is retried every second, so the
dashboard outlives a broker restart. Reads copy what they return while holding the lock: a
page never sees a task half updated, and the receiver never waits long (a query over 100,000
tasks takes a few tens of milliseconds).
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from runner.events.state import State, Task, Worker

logger = logging.getLogger("runner.dashboard")

RATE_WINDOW = 60  # seconds over which a queue's rates in and out are counted
RECENT_EVENTS = 200  # pipeline and beat events kept (the triggers page's "last fires")
MAX_NAMES = 5000  # task names offered in the tasks page's filter


@dataclass(frozen=True)
class TaskQuery:
    """Which tasks a list shows (validated by :mod:`runner.dashboard.filters`)."""

    name: str | None = None
    state: str | None = None
    worker: str | None = None
    queue: str | None = None
    since: float | None = None  # epoch seconds: last change at or after
    until: float | None = None
    search: str | None = None  # a part of the id
    limit: int = 50
    offset: int = 0

    @property
    def filtered(self) -> bool:
        return any((self.name, self.state, self.worker, self.queue, self.since is not None,
                    self.until is not None, self.search))

    def matches(self, task: Task) -> bool:
        if self.name and task.name != self.name:
            return False
        if self.state and task.state != self.state:
            return False
        if self.worker and task.worker != self.worker:
            return False
        if self.queue and getattr(task, "queue", None) != self.queue:
            return False
        when = task.timestamp or 0.0
        if self.since is not None and when < self.since:
            return False
        if self.until is not None and when > self.until:
            return False
        return not self.search or self.search in task.uuid


def copy_task(task: Task) -> Task:
    copy = replace(task)
    copy.queue = getattr(task, "queue", None)
    return copy


class Rates:
    """Messages in (sent) and out (received by a worker) per queue and second, over the
    last :data:`RATE_WINDOW` seconds: a fixed number of buckets per queue."""

    def __init__(self) -> None:
        self.buckets: dict[str, collections.deque] = {}

    def add(self, queue: str, direction: int, now: float) -> None:
        second = int(now)
        buckets = self.buckets.setdefault(queue, collections.deque(maxlen=RATE_WINDOW))
        if not buckets or buckets[-1][0] != second:
            buckets.append([second, 0, 0])
        buckets[-1][1 + direction] += 1

    def per_second(self, queue: str, now: float) -> tuple[float, float]:
        start = int(now) - RATE_WINDOW
        seen = [b for b in self.buckets.get(queue, ()) if b[0] > start]
        return (sum(b[1] for b in seen) / RATE_WINDOW, sum(b[2] for b in seen) / RATE_WINDOW)


class EventStore:
    """Events in, snapshots out. ``observers`` are called with each event and the task it
    changed (the metrics), under the lock."""

    def __init__(self, app: Any, max_tasks: int = 10000,
                 observers: list[Callable[[dict, Any], None]] | None = None):
        self.app = app
        self.state = State(max_tasks_in_memory=max_tasks)
        self.lock = threading.Lock()
        self.failed: collections.Counter[str] = collections.Counter()
        self.names: set[str] = set()
        self.children: dict[str, list[str]] = {}  # parent id -> its children's ids
        self.rates = Rates()
        self.pipeline_events: collections.deque[dict] = collections.deque(maxlen=RECENT_EVENTS)
        self.beat_events: collections.deque[dict] = collections.deque(maxlen=RECENT_EVENTS)
        self.observers = list(observers or [])
        self.connected = threading.Event()
        self._receiver: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- events in ------------------------------------------------------------------------------

    def event(self, event: dict) -> None:
        kind = event.get("type", "")
        now = time.time()
        with self.lock:
            changed, _created = self.state.event(event)
            if isinstance(changed, Task):
                if changed.name and len(self.names) < MAX_NAMES:
                    self.names.add(changed.name)
                if changed.parent_id and not getattr(changed, "indexed", False):
                    changed.indexed = True
                    self._add_child(changed.parent_id, changed.uuid)
                queue = event.get("queue") or event.get("routing_key")
                if queue:
                    changed.queue = queue  # (kept with the task: bounded with it)
                    if kind in ("task-sent", "task-received"):
                        self.rates.add(queue, kind == "task-received", now)
                if kind == "task-failed" and changed.worker:
                    self.failed[changed.worker] += 1
            elif kind in ("run-started", "step-changed", "run-finished"):
                self.pipeline_events.append(event)
            elif kind == "beat-fired":
                self.beat_events.append(event)
            for observe in self.observers:
                observe(event, changed)

    def _add_child(self, parent: str, child: str) -> None:
        self.children.setdefault(parent, []).append(child)
        if len(self.children) > 2 * self.state.max_tasks_in_memory:  # forget the forgotten
            tasks = self.state.tasks
            self.children = {p: kept for p, ids in self.children.items()
                             if (kept := [c for c in ids if c in tasks])}

    def start(self) -> None:
        self._thread = threading.Thread(target=self._receive, name="dashboard-events",
                                        daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            receiver = self.app.events.Receiver(handlers={"*": self.event})
            self._receiver = receiver
            threading.Thread(target=self._note_listening, args=(receiver,), daemon=True).start()
            try:
                receiver.capture()
            except Exception as exc:  # noqa: BLE001 - the broker may be back soon
                self.connected.clear()
                logger.warning("dashboard: events: %s: %s; retrying", type(exc).__name__, exc)
                self._stop.wait(1.0)

    def _note_listening(self, receiver: Any) -> None:
        if receiver.listening.wait(30):
            self.connected.set()

    def stop(self) -> None:
        self._stop.set()
        if self._receiver is not None:
            self._receiver.should_stop = True
        if self._thread is not None:
            self._thread.join(5)

    # -- snapshots out --------------------------------------------------------------------------

    def tasks(self, query: TaskQuery) -> tuple[int, list[Task]]:
        """(how many match, the page asked for), newest first."""
        page: list[Task] = []
        total = 0
        end = query.offset + query.limit
        with self.lock:
            if not query.filtered:  # (the usual page: no scan of every task)
                newest = itertools.islice(self._newest_first(), query.offset, end)
                return len(self.state.tasks), [copy_task(t) for t in newest]
            for task in self._newest_first():
                if query.matches(task):
                    if query.offset <= total < end:
                        page.append(copy_task(task))
                    total += 1
        return total, page

    def _newest_first(self) -> Iterator[Task]:
        return reversed(self.state.tasks.values())

    def task(self, uuid: str) -> tuple[Task | None, list[Task]]:
        """The task and the tasks whose parent it is."""
        with self.lock:
            task = self.state.tasks.get(uuid)
            if task is None:
                return None, []
            tasks = self.state.tasks
            children = [copy_task(tasks[c]) for c in self.children.get(uuid, ()) if c in tasks]
            return copy_task(task), children

    def task_names(self) -> list[str]:
        with self.lock:
            return sorted(self.names)

    def workers(self) -> list[tuple[Worker, int]]:
        """Each worker and the failures seen of it."""
        with self.lock:
            return [(replace(w, heartbeats=list(w.heartbeats)), self.failed[name])
                    for name, w in sorted(self.state.workers.items())]

    def counts(self) -> dict[str, int]:
        with self.lock:
            return {"tasks": len(self.state.tasks), "events": self.state.event_count,
                    "tasks_seen": self.state.task_count}

    def queue_rates(self, queue: str) -> tuple[float, float]:
        with self.lock:
            return self.rates.per_second(queue, time.time())

    def recent_beat(self) -> list[dict]:
        with self.lock:
            return list(self.beat_events)

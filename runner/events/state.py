"""``app.events.State``: the cluster's current picture, kept from events, as Celery's.

``state.event(event)`` (or ``state.event`` as a receiver's ``*`` handler) updates
:attr:`State.workers` (``name@host`` -> :class:`Worker`: alive, active, processed, loadavg,
heartbeats) and :attr:`State.tasks` (id -> :class:`Task`: state, name, args, result, runtime,
exception, worker...). A worker is alive until ``HEARTBEAT_EXPIRE`` times its heartbeat
interval passes without a heartbeat (Celery's window: 2 heartbeats), or it says it went
offline. Bounded: at most ``max_tasks_in_memory`` tasks (the oldest forgotten first).
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Any

HEARTBEAT_EXPIRE = 2.0  # heartbeat intervals without one after which a worker is offline

#: event type (after "task-") -> the task state it means, as Celery's
TASK_STATES = {"sent": "PENDING", "received": "RECEIVED", "started": "STARTED",
               "succeeded": "SUCCESS", "failed": "FAILURE", "retried": "RETRY",
               "revoked": "REVOKED", "rejected": "REJECTED"}
#: a later event never moves a task back to an earlier state (events may arrive out of order)
PRECEDENCE = ["PENDING", "RECEIVED", "STARTED", "RETRY", "REJECTED", "REVOKED", "FAILURE",
              "SUCCESS"]


@dataclass
class Worker:
    hostname: str
    pid: int | None = None
    freq: float = 2.0
    heartbeats: list[float] = field(default_factory=list)  # (kept: the last few)
    active: int | None = None
    processed: int | None = None
    loadavg: list[float] | None = None
    sw_ident: str | None = None
    sw_ver: str | None = None
    offline: bool = False

    @property
    def alive(self) -> bool:
        return (not self.offline and bool(self.heartbeats)
                and time.time() < self.heartbeats[-1] + self.freq * HEARTBEAT_EXPIRE)

    @property
    def status_string(self) -> str:
        return "ONLINE" if self.alive else "OFFLINE"

    def update(self, event: dict) -> None:
        kind = event["type"]
        self.pid = event.get("pid", self.pid)
        self.freq = float(event.get("freq") or self.freq)
        for key in ("active", "processed", "loadavg", "sw_ident", "sw_ver"):
            if key in event:
                setattr(self, key, event[key])
        if kind == "worker-offline":
            self.offline = True
            return
        self.offline = False
        self.heartbeats = [*self.heartbeats[-9:], float(event.get("timestamp") or time.time())]


@dataclass
class Task:
    uuid: str
    state: str = "PENDING"
    name: str | None = None
    args: str | None = None
    kwargs: str | None = None
    retries: int | None = None
    eta: Any = None
    expires: Any = None
    root_id: str | None = None
    parent_id: str | None = None
    worker: str | None = None  # the hostname of the worker that has it
    result: str | None = None
    runtime: float | None = None
    exception: str | None = None
    traceback: str | None = None
    sent: float | None = None
    received: float | None = None
    started: float | None = None
    succeeded: float | None = None
    failed: float | None = None
    retried: float | None = None
    revoked: float | None = None
    rejected: float | None = None
    timestamp: float | None = None

    FIELDS = ("name", "args", "kwargs", "retries", "eta", "expires", "root_id", "parent_id",
              "result", "runtime", "exception", "traceback")

    def update(self, event: dict) -> None:
        kind = event["type"][len("task-"):]
        when = float(event.get("timestamp") or time.time())
        if kind in TASK_STATES and hasattr(self, kind):
            setattr(self, kind, when)
        for key in self.FIELDS:
            if event.get(key) is not None:
                setattr(self, key, event[key])
        if kind != "sent" and event.get("hostname"):
            self.worker = event["hostname"]
        new = TASK_STATES.get(kind)
        if new is not None and (new == "RETRY" or new == "RECEIVED" and self.state == "RETRY"
                                or PRECEDENCE.index(new) >= PRECEDENCE.index(self.state)):
            self.state = new
            self.timestamp = when

    def info(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


class State:
    def __init__(self, max_workers_in_memory: int = 5000, max_tasks_in_memory: int = 10000,
                 **kwargs: Any):
        self.workers: dict[str, Worker] = {}
        self.tasks: collections.OrderedDict[str, Task] = collections.OrderedDict()
        self.max_workers_in_memory = max_workers_in_memory
        self.max_tasks_in_memory = max_tasks_in_memory
        self.event_count = 0
        self.task_count = 0

    def event(self, event: dict) -> tuple[Any, bool]:
        """Take ``event`` into the picture; returns (the worker or task it changed, created)."""
        self.event_count += 1
        kind = str(event.get("type", ""))
        if kind.startswith("worker-"):
            hostname = str(event.get("hostname"))
            created = hostname not in self.workers
            worker = self.workers.setdefault(hostname, Worker(hostname))
            worker.update(event)
            if created and len(self.workers) > self.max_workers_in_memory:
                del self.workers[next(iter(self.workers))]
            return worker, created
        if kind.startswith("task-") and event.get("uuid"):
            uuid = str(event["uuid"])
            created = uuid not in self.tasks
            task = self.tasks.get(uuid)
            if task is None:
                task = self.tasks[uuid] = Task(uuid)
                self.task_count += 1
                if len(self.tasks) > self.max_tasks_in_memory:
                    self.tasks.popitem(last=False)
            task.update(event)
            hostname = event.get("hostname")
            if kind != "task-sent" and hostname and hostname not in self.workers:
                self.workers[hostname] = Worker(hostname)
            return task, created
        return None, False

    def alive_workers(self) -> list[Worker]:
        return [w for w in self.workers.values() if w.alive]

    def tasks_by_time(self, limit: int | None = None) -> list[tuple[str, Task]]:
        ordered = sorted(self.tasks.items(), key=lambda item: -(item[1].timestamp or 0))
        return ordered[:limit] if limit is not None else ordered

    def clear(self) -> None:
        self.workers.clear()
        self.tasks.clear()
        self.event_count = self.task_count = 0

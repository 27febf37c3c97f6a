"""Execution pools: where jobs run. One interface (here), one module per kind:

- ``prefork`` (:mod:`runner.worker.prefork`): child processes, one job at a time each;
- ``threads`` (:mod:`runner.worker.threads`): a thread per slot;
- ``solo`` (:mod:`runner.worker.solo`): each job inline in the worker's own thread.

:data:`runner.worker.pools.POOLS` maps the names to the classes.

A pool reports what happened as events: :class:`Finished`, :class:`Lost` or :class:`TimedOut`.
"""

from __future__ import annotations

import itertools
import logging
import queue
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import TYPE_CHECKING, Any

from runner.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from runner.worker.consumer import Fetched
from runner.worker.trace import (
    Job,
    JobResult,
    discarded,
    handle,
    refused,
)

if TYPE_CHECKING:  # pragma: no cover
    from runner.app import Runner

logger = logging.getLogger("runner.worker")


@dataclass(slots=True)
class Finished:
    result: JobResult


@dataclass(slots=True)
class Lost:
    """The process running ``job_id`` died."""

    job_id: int
    exitcode: int | None


@dataclass(slots=True)
class Received:
    """A consuming child claimed these messages (``fetched``) and runs them as ``job_ids``."""

    job_ids: list[int]
    fetched: list[Fetched]


@dataclass(slots=True)
class Began:
    """Jobs that waited in the pool (handed over beyond what it runs at once) started now."""

    job_ids: list[int]


@dataclass(slots=True)
class Settled:
    """Jobs a child settled (stored, acked where it can) before it died: they are done."""

    job_ids: list[int]


@dataclass(slots=True)
class Returned:
    """Jobs of a batch whose child died: never started (``ran`` False), or finished but not
    written (``ran`` True). Either way they must run again."""

    job_ids: list[int]
    ran: bool


@dataclass(slots=True)
class TimedOut:
    job_id: int
    limit: float


Event = Finished | Lost | TimedOut | Settled | Returned | Received | Began


class ColdShutdown(BaseException):
    """Raised through a task running in the worker's thread when a cold shutdown is asked."""


class Pool:
    """What the worker needs from a pool."""

    def __init__(self, app: Runner, size: int, hostname: str, accept: frozenset[str],
                 max_tasks_per_child: int | None = None,
                 max_memory_per_child: int | None = None, *, waker: Any = None,
                 job_ids: Iterator[int] | None = None, batch_size: int = 1):
        """Everything the pool runs with is given here (nothing is patched in later):
        ``waker`` is woken when a job ends in a pool thread; ``job_ids`` numbers the jobs of
        batches a pool's processes claim themselves (shared with the worker); ``batch_size``
        is the most jobs one submit to a process carries."""
        self.app = app
        self.size = size
        self.hostname = hostname
        self.accept = accept
        self.max_tasks_per_child = max_tasks_per_child
        self.max_memory_per_child = max_memory_per_child
        self.waker = waker
        self.job_ids = job_ids if job_ids is not None else itertools.count(1)
        self.batch_size = batch_size

    #: True when a submitted job may wait before it starts (in a batch): the worker then acks
    #: early-ack messages when :meth:`current_jobs` shows them running, not when submitted
    defers_acks = False
    #: True when the pool's processes store the STARTED state of ``track_started`` tasks
    tracks_started = False
    #: True when a submitted job may wait in the pool before it starts (prefork batches, the
    #: asyncio pool's processes): :meth:`current_jobs` tells which run
    holds_jobs = False

    def start(self) -> None: ...

    def in_flight(self) -> int:
        """Jobs the pool runs at once, all its processes together (``inspect stats``'
        ``max-concurrency``)."""
        return self.size

    def free_slots(self) -> int:
        raise NotImplementedError

    def free_batches(self) -> list[int]:
        """For each slot free now, how many jobs one :meth:`submit` to it may carry."""
        return [1] * self.free_slots()

    def submit(self, jobs: list[Job]) -> None:
        """Run ``jobs`` in order on one free slot."""
        for job in jobs:
            self._submit(job)

    def _submit(self, job: Job) -> None:
        raise NotImplementedError

    def received_totals(self) -> dict[str, int] | None:
        """Messages received by task name, where this pool's processes claim them themselves
        (None, or empty: the worker counts those it is handed)."""
        return None

    def starts_now(self) -> int:
        """How many of the next jobs submitted start at once (the others wait in the pool, and
        are reported as :class:`Began` when they start)."""
        return 1 << 30

    def drop_waiting(self, job_id: int) -> bool:
        """Drop ``job_id``, revoked while it waits in the pool to start (it is then reported
        REVOKED); False if it started, or the pool holds none waiting."""
        return False

    def current_jobs(self) -> list[int]:
        """Jobs running now, where :attr:`holds_jobs` (the others handed over wait); with
        :attr:`defers_acks` the worker acks them (if they ack early) once it sees them run."""
        return []

    def settled_jobs(self) -> list[int]:
        """Jobs of running batches that are already settled by the process that ran them."""
        return []

    def started_jobs(self) -> list[int]:
        """Jobs of running batches that started (running, or ran)."""
        return []

    def renew(self) -> None:
        """Settings the pool's processes were started with changed: replace them (prefork);
        threads read the settings as each job starts."""

    def pids(self) -> list[int]:
        """The pool's processes: none of its own (threads, solo)."""
        return []

    def job_pids(self) -> dict[int, int]:
        """Job id -> pid of the process it runs in, where it is not this one."""
        return {}

    def finish_current(self) -> None:
        """Warm shutdown: a running batch ends after its current job (the rest come back)."""

    def collect(self, timeout: float, waitables: Sequence[Any] = ()) -> list[Event]:
        """Events that happened, waiting up to ``timeout`` seconds for the first, or until one
        of ``waitables`` (objects with ``fileno()``) is ready."""
        raise NotImplementedError

    @staticmethod
    def _take_outbox(outbox: queue.SimpleQueue, timeout: float,
                     waitables: Sequence[Any] = ()) -> list[Event]:
        """For a pool whose threads put their events in ``outbox``: what is there, waiting up
        to ``timeout`` for the first one (or until one of ``waitables`` is ready: a finished
        job wakes the worker's waker, which is one of them)."""
        events: list[Event] = []
        if outbox.empty():
            if waitables:
                wait(list(waitables), timeout)
            else:
                try:
                    events.append(outbox.get(timeout=timeout))
                except queue.Empty:
                    pass
        try:
            while True:
                events.append(outbox.get_nowait())
        except queue.Empty:
            pass
        return events

    def terminate_job(self, job_id: int, signum: int = signal.SIGTERM) -> bool:
        """Kill what runs ``job_id`` (revoke with terminate); False if the pool cannot."""
        return False

    def interrupt(self) -> None:
        """Cold shutdown asked (called from the worker's signal handler): stop jobs that run in
        the worker's own thread now. Other pools are stopped by ``stop(kill=True)``."""

    def stop(self, kill: bool = False) -> list[Event]:
        """Let workers exit after their job (or kill them at once with ``kill``); return what
        happened meanwhile that :meth:`collect` did not report."""
        return []

    def _run(self, job: Job) -> JobResult:
        if job.discard:
            return discarded(self.app, job, self.hostname)
        try:
            return handle(self.app, job.id, job.message, self.hostname, self.accept,
                          job.delivery_info, job.arguments)
        except (TimeLimitExceeded, SoftTimeLimitExceeded):
            raise  # (raised outside the task's code: the pool records them)
        except Exception as exc:  # noqa: BLE001 - a bug must cost one job, never the process
            logger.exception("Task %s[%s]: handling it failed", job.message.task,
                             job.message.id)
            result = refused(self.app, job.id, job.message, exc, self.hostname)
            result.refused = True  # (a dead letter too)
            return result

"""Execution pools: where jobs run. One interface, three kinds.

- ``prefork``: child processes, one job at a time each. The parent enforces hard time limits by
  killing the child, notices a child that died (signal, ``os._exit``, OOM killer) and replaces it,
  and recycles children after ``max_tasks_per_child`` jobs or past ``max_memory_per_child``.
- ``threads``: a thread per slot; hard time limits are best effort (an exception injected into
  the thread), since a thread cannot be killed.
- ``solo``: runs each job inline in the worker's own thread.

A pool reports what happened as events: :class:`Finished`, :class:`Lost` or :class:`TimedOut`.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any

from runner.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from runner.worker.child import SETTLED, STARTED, STOP, child_main
from runner.worker.trace import Job, JobResult, _inject, handle, pool_thread

if TYPE_CHECKING:  # pragma: no cover
    from runner.app import Runner

_fork = multiprocessing.get_context("fork")


@dataclass(slots=True)
class Finished:
    result: JobResult


@dataclass(slots=True)
class Lost:
    """The process running ``job_id`` died."""

    job_id: int
    exitcode: int | None


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


Event = Finished | Lost | TimedOut | Settled | Returned


class ColdShutdown(BaseException):
    """Raised through a task running in the worker's thread when a cold shutdown is asked."""


class Pool:
    """What the worker needs from a pool."""

    def __init__(self, app: Runner, size: int, hostname: str, accept: frozenset[str],
                 max_tasks_per_child: int | None = None,
                 max_memory_per_child: int | None = None):
        self.app = app
        self.size = size
        self.hostname = hostname
        self.accept = accept
        self.max_tasks_per_child = max_tasks_per_child
        self.max_memory_per_child = max_memory_per_child
        #: woken when a job ends in a pool thread (set by the worker before start)
        self.waker: Any = None

    #: True when a submitted job may wait before it starts (in a batch): the worker then acks
    #: early-ack messages when :meth:`current_jobs` shows them running, not when submitted
    defers_acks = False

    def start(self) -> None: ...

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

    def current_jobs(self) -> list[int]:
        """Jobs running now, where :attr:`defers_acks`: the worker acks them (if they ack
        early) once it sees them run."""
        return []

    def settled_jobs(self) -> list[int]:
        """Jobs of running batches that are already settled by the process that ran them."""
        return []

    def finish_current(self) -> None:
        """Warm shutdown: a running batch ends after its current job (the rest come back)."""

    def collect(self, timeout: float, waitables: Sequence[Any] = ()) -> list[Event]:
        """Events that happened, waiting up to ``timeout`` seconds for the first, or until one
        of ``waitables`` (objects with ``fileno()``) is ready."""
        raise NotImplementedError

    def terminate_job(self, job_id: int, signum: int = signal.SIGTERM) -> bool:
        """Kill what runs ``job_id`` (revoke with terminate); False if the pool cannot."""
        return False

    def interrupt(self) -> None:
        """Cold shutdown asked (called from the worker's signal handler): stop jobs that run in
        the worker's own thread now. Other pools are stopped by ``stop(kill=True)``."""

    def stop(self, kill: bool = False) -> None:
        """Let workers exit after their job (or kill them at once with ``kill``)."""

    def _run(self, job: Job) -> JobResult:
        return handle(self.app, job.id, job.message, self.hostname, self.accept,
                      job.delivery_info)


# -- prefork -----------------------------------------------------------------------------------


class _Child:
    __slots__ = ("process", "conn", "progress", "jobs", "deadline", "limit", "done")

    def __init__(self, process, conn: Connection, progress):
        self.process = process
        self.conn = conn
        self.progress = progress  # [index of the job running, jobs settled] (see child.py)
        self.jobs: list[int] = []  # the batch it runs; empty: free
        self.deadline: float | None = None
        self.limit: float | None = None
        self.done = 0

    def running(self) -> int | None:
        """The job that runs now (None: between jobs, or free)."""
        started, settled = self.progress[STARTED], self.progress[SETTLED]
        if not self.jobs or settled >= len(self.jobs) or started < settled:
            return None
        return self.jobs[min(started, len(self.jobs) - 1)]


class PreforkPool(Pool):
    """Children run batches (see :mod:`runner.worker.child`): up to ``batch_size`` jobs per pipe
    message. A job with a hard time limit is sent alone, so that its deadline is its own."""

    batch_size = 1  # set by the worker (from the prefetch multiplier)
    defers_acks = True

    def start(self) -> None:
        self.children: list[_Child] = [self._spawn() for _ in range(self.size)]

    def _spawn(self) -> _Child:
        parent_end, child_end = _fork.Pipe()
        progress = _fork.RawArray("q", 3)
        process = _fork.Process(
            target=child_main, daemon=True, name="runner-child",
            args=(self.app, self._run, child_end, progress, bool(self.max_memory_per_child),
                  os.getpid()))
        process.start()
        child_end.close()
        return _Child(process, parent_end, progress)

    def free_slots(self) -> int:
        return sum(1 for c in self.children if not c.jobs)

    def free_batches(self) -> list[int]:
        size = max(1, self.batch_size)
        if self.max_tasks_per_child:
            return [max(1, min(size, self.max_tasks_per_child - c.done))
                    for c in self.children if not c.jobs]
        return [size for c in self.children if not c.jobs]

    def submit(self, jobs: list[Job]) -> None:
        child = next(c for c in self.children if not c.jobs)
        limits = [job.time_limit for job in jobs if job.time_limit]
        child.jobs = [job.id for job in jobs]
        child.limit = limits[0] if limits else None
        child.deadline = time.monotonic() + child.limit if child.limit else None
        child.progress[STARTED] = child.progress[SETTLED] = child.progress[STOP] = 0
        child.conn.send(jobs)

    def finish_current(self) -> None:
        for child in self.children:
            child.progress[STOP] = 1

    def current_jobs(self) -> list[int]:
        return [job for c in self.children if (job := c.running()) is not None]

    def settled_jobs(self) -> list[int]:
        return [job for c in self.children for job in c.jobs[:c.progress[SETTLED]]]

    def collect(self, timeout: float, waitables: Sequence[Any] = ()) -> list[Event]:
        events: list[Event] = []
        busy = [c for c in self.children if c.jobs]
        deadlines = [c.deadline for c in busy if c.deadline is not None]
        if deadlines:
            timeout = max(0.0, min(timeout, min(deadlines) - time.monotonic()))
        ready = set(wait([*(c.conn for c in busy), *(c.process.sentinel for c in self.children),
                          *waitables], timeout))
        for index, child in enumerate(self.children):
            if child.conn in ready and child.jobs:
                try:
                    results: list[JobResult] | None = child.conn.recv()
                except (EOFError, OSError):
                    results = None
                if results is not None:
                    events += [Finished(result) for result in results]
                    if len(results) < len(child.jobs):  # stopped early (finish_current)
                        events.append(Returned(child.jobs[len(results):], ran=False))
                    child.jobs = []
                    child.done += len(results)
                    if self._should_recycle(child, results[-1]):
                        self._retire(child)
                        self.children[index] = self._spawn()
                    continue
            if child.process.sentinel in ready or not child.process.is_alive():
                if child.jobs:
                    child.process.join(0.1)
                    events += self._died(child, Lost(0, child.process.exitcode))
                self.children[index] = self._replace(child)
            elif (child.deadline is not None and time.monotonic() >= child.deadline
                  and child.progress[SETTLED] < len(child.jobs)):  # (else its reply is coming)
                child.process.kill()
                events += self._died(child, TimedOut(0, child.limit or 0.0))
                self.children[index] = self._replace(child)
        return events

    @staticmethod
    def _died(child: _Child, event: Lost | TimedOut) -> list[Event]:
        """What became of each job of the batch of a child that died (see child.py)."""
        jobs = child.jobs
        settled = min(child.progress[SETTLED], len(jobs))
        events: list[Event] = [Settled(jobs[:settled])] if settled else []
        if settled == len(jobs):  # it died after settling everything, before replying
            return events
        started = min(max(child.progress[STARTED], settled), len(jobs) - 1)
        if started > settled:
            events.append(Returned(jobs[settled:started], ran=True))
        event.job_id = jobs[started]
        events.append(event)
        if started + 1 < len(jobs):
            events.append(Returned(jobs[started + 1:], ran=False))
        return events

    def _should_recycle(self, child: _Child, result: JobResult) -> bool:
        if self.max_tasks_per_child and child.done >= self.max_tasks_per_child:
            return True
        return bool(self.max_memory_per_child and result.rss_kib > self.max_memory_per_child)

    def _retire(self, child: _Child) -> None:
        try:
            child.conn.send(None)
        except OSError:
            pass
        child.process.join(5)
        if child.process.is_alive():
            child.process.kill()
            child.process.join()
        child.conn.close()

    def _replace(self, child: _Child) -> _Child:
        child.process.join(1)
        child.conn.close()
        return self._spawn()

    def terminate_job(self, job_id: int, signum: int = signal.SIGTERM) -> bool:
        for child in self.children:
            if child.running() == job_id:
                # children ignore SIGTERM (see child.py): terminate means kill
                os.kill(child.process.pid, signal.SIGKILL if signum == signal.SIGTERM
                        else signum)
                return True
        return False

    def stop(self, kill: bool = False) -> None:
        for child in self.children:
            if kill:
                child.process.kill()
            else:
                try:
                    child.conn.send(None)
                except OSError:
                    pass
        for child in self.children:
            child.process.join(10)
            if child.process.is_alive():
                child.process.kill()
                child.process.join()


# -- threads -----------------------------------------------------------------------------------


class ThreadPool(Pool):
    """Time limits are kept by the worker's thread (``collect``), which injects the exception
    into the pool thread: at most once per limit and job, and never after the job ended, so it
    cannot reach the next job or end the thread. (A timer thread per job would be worse: on
    CPython 3.11 an exception injected while a thread starts another can land in the new one.)
    """

    def start(self) -> None:
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        # job id -> [thread running it (None until taken), hard deadline, soft deadline]
        self._jobs: dict[int, list] = {}
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._loop, daemon=True,
                                          name=f"runner-thread-{i}") for i in range(self.size)]
        for thread in self._threads:
            thread.start()

    def _loop(self) -> None:
        while True:
            job = self._inbox.get()
            if job is None:
                return
            self._outbox.put(Finished(self._work(job)))
            if self.waker is not None:
                self.waker.wake()

    def _work(self, job: Job) -> JobResult:
        thread_id = threading.get_ident()
        try:
            with self._lock:
                self._jobs[job.id][0] = thread_id
            pool_thread.arm_soft_limit = functools.partial(self._arm_soft_limit, job.id)
            return self._run(job)
        except (TimeLimitExceeded, SoftTimeLimitExceeded) as exc:  # outside the task's code
            from runner.worker.trace import refused

            return refused(self.app, job.id, job.message, exc, self.hostname)
        finally:
            self._finished(job.id, thread_id)

    def _arm_soft_limit(self, job_id: int, seconds: float) -> Callable[[], None]:
        def disarm() -> None:
            with self._lock:
                if job_id in self._jobs:
                    self._jobs[job_id][2] = None

        with self._lock:
            self._jobs[job_id][2] = time.monotonic() + seconds
        return disarm

    def _finished(self, job_id: int, thread_id: int) -> None:
        while True:
            try:
                pool_thread.arm_soft_limit = None
                with self._lock:
                    self._jobs.pop(job_id, None)  # no limit reaches this thread after this...
                _inject(thread_id, None)  # ...and one not raised yet is dropped
                return
            except (TimeLimitExceeded, SoftTimeLimitExceeded):
                continue  # raised just now, after the job ended: ignore it

    def free_slots(self) -> int:
        with self._lock:
            return self.size - len(self._jobs)

    def _submit(self, job: Job) -> None:
        deadline = time.monotonic() + job.time_limit if job.time_limit else None
        with self._lock:
            self._jobs[job.id] = [None, deadline, None]
        self._inbox.put(job)

    def collect(self, timeout: float, waitables: Sequence[Any] = ()) -> list[Event]:
        events: list[Event] = []
        with self._lock:
            deadlines = [d for entry in self._jobs.values() for d in entry[1:] if d is not None]
        if deadlines:  # wake at the first time limit, as the prefork pool does
            timeout = max(0.0, min(timeout, min(deadlines) - time.monotonic()))
        if self._outbox.empty():
            if waitables:  # a finished job wakes the waker, which is one of them
                wait(list(waitables), timeout)
            else:
                try:
                    events.append(self._outbox.get(timeout=timeout))
                except queue.Empty:
                    pass
        try:
            while True:
                events.append(self._outbox.get_nowait())
        except queue.Empty:
            pass
        self._enforce_limits()
        return events

    def _enforce_limits(self) -> None:
        now = time.monotonic()
        with self._lock:
            for entry in self._jobs.values():
                thread_id, hard, soft = entry
                if thread_id is None:
                    continue
                if hard is not None and now >= hard:
                    _inject(thread_id, TimeLimitExceeded)
                    entry[1] = entry[2] = None
                elif soft is not None and now >= soft:
                    _inject(thread_id, SoftTimeLimitExceeded)
                    entry[2] = None

    def stop(self, kill: bool = False) -> None:
        for _ in self._threads:
            self._inbox.put(None)
        if not kill:
            for thread in self._threads:
                thread.join(30)


# -- solo --------------------------------------------------------------------------------------


class SoloPool(Pool):
    def start(self) -> None:
        self._done: list[Event] = []

    def free_slots(self) -> int:
        return 1 if not self._done else 0

    def _submit(self, job: Job) -> None:
        self._busy = True
        try:
            self._done.append(Finished(self._run(job)))
        finally:
            self._busy = False

    def interrupt(self) -> None:
        if getattr(self, "_busy", False):
            raise ColdShutdown  # out of the task (no ``except Exception`` catches it)

    def collect(self, timeout: float, waitables: Sequence[Any] = ()) -> list[Event]:
        events, self._done = self._done, []
        if not events and timeout:
            if waitables:
                wait(list(waitables), timeout)
            else:
                time.sleep(min(timeout, 0.001))
        return events


POOLS: dict[str, type[Pool]] = {"prefork": PreforkPool, "threads": ThreadPool, "solo": SoloPool}

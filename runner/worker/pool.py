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
from runner.message import Message
from runner.worker.trace import JobResult, _inject, current_rss_kib, handle, pool_thread

if TYPE_CHECKING:  # pragma: no cover
    from runner.app import Runner

_fork = multiprocessing.get_context("fork")


@dataclass(slots=True)
class Job:
    id: int
    message: Message
    delivery_info: dict
    time_limit: float | None


@dataclass(slots=True)
class Finished:
    result: JobResult


@dataclass(slots=True)
class Lost:
    job_id: int
    exitcode: int | None


@dataclass(slots=True)
class TimedOut:
    job_id: int
    limit: float


Event = Finished | Lost | TimedOut


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

    def start(self) -> None: ...

    def free_slots(self) -> int:
        raise NotImplementedError

    def submit(self, job: Job) -> None:
        raise NotImplementedError

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
    __slots__ = ("process", "conn", "job", "deadline", "limit", "done")

    def __init__(self, process, conn: Connection):
        self.process = process
        self.conn = conn
        self.job: int | None = None
        self.deadline: float | None = None
        self.limit: float | None = None
        self.done = 0


def _child_main(pool: PreforkPool, conn: Connection) -> None:
    """The loop of a child process: receive a job, run it, send the result back."""
    # The parent decides when to stop: a terminal's Ctrl-C or a SIGTERM sent to the whole
    # process group must not kill a task half way.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    measure = bool(pool.max_memory_per_child)
    try:
        while True:
            job = conn.recv()
            if job is None:
                break
            result = pool._run(job)
            if measure:
                result.rss_kib = current_rss_kib()
            conn.send(result)
    except (EOFError, KeyboardInterrupt, BrokenPipeError):
        pass
    finally:
        conn.close()
        os._exit(0)  # skip finalizers of what was inherited from the parent (its connections)


class PreforkPool(Pool):
    def start(self) -> None:
        self.children: list[_Child] = [self._spawn() for _ in range(self.size)]

    def _spawn(self) -> _Child:
        parent_end, child_end = _fork.Pipe()
        process = _fork.Process(target=_child_main, args=(self, child_end), daemon=True,
                                name="runner-child")
        process.start()
        child_end.close()
        return _Child(process, parent_end)

    def free_slots(self) -> int:
        return sum(1 for c in self.children if c.job is None)

    def submit(self, job: Job) -> None:
        child = next(c for c in self.children if c.job is None)
        child.job = job.id
        child.limit = job.time_limit
        child.deadline = time.monotonic() + job.time_limit if job.time_limit else None
        child.conn.send(job)

    def collect(self, timeout: float, waitables: Sequence[Any] = ()) -> list[Event]:
        events: list[Event] = []
        busy = [c for c in self.children if c.job is not None]
        deadlines = [c.deadline for c in busy if c.deadline is not None]
        if deadlines:
            timeout = max(0.0, min(timeout, min(deadlines) - time.monotonic()))
        ready = set(wait([*(c.conn for c in busy), *(c.process.sentinel for c in self.children),
                          *waitables], timeout))
        for index, child in enumerate(self.children):
            if child.conn in ready and child.job is not None:
                try:
                    result: JobResult = child.conn.recv()
                except (EOFError, OSError):
                    result = None
                if result is not None:
                    events.append(Finished(result))
                    child.job = None
                    child.done += 1
                    if self._should_recycle(child, result):
                        self._retire(child)
                        self.children[index] = self._spawn()
                    continue
            if child.process.sentinel in ready or not child.process.is_alive():
                if child.job is not None:
                    child.process.join(0.1)
                    events.append(Lost(child.job, child.process.exitcode))
                self.children[index] = self._replace(child)
            elif child.deadline is not None and time.monotonic() >= child.deadline:
                child.process.kill()
                events.append(TimedOut(child.job, child.limit or 0.0))
                self.children[index] = self._replace(child)
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
            if child.job == job_id:
                # children ignore SIGTERM (see _child_main): terminate means kill
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

    def submit(self, job: Job) -> None:
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

    def submit(self, job: Job) -> None:
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

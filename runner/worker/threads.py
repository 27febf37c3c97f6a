"""The threads pool: a thread per slot; hard time limits are best effort (an exception
injected into the thread), since a thread cannot be killed."""

from __future__ import annotations

import functools
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from runner.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from runner.worker.pool import Event, Finished, Pool
from runner.worker.trace import (
    Job,
    JobResult,
    _inject,
    pool_thread,
    refused,
)


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
        with self._lock:
            deadlines = [d for entry in self._jobs.values() for d in entry[1:] if d is not None]
        if deadlines:  # wake at the first time limit, as the prefork pool does
            timeout = max(0.0, min(timeout, min(deadlines) - time.monotonic()))
        events = self._take_outbox(self._outbox, timeout, waitables)
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

    def stop(self, kill: bool = False) -> list[Event]:
        for _ in self._threads:
            self._inbox.put(None)
        if not kill:
            for thread in self._threads:
                thread.join(30)
        return []



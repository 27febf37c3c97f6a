"""The solo pool: each job runs inline in the worker's own thread.

A hard time limit cannot kill a process here (the job runs in the worker's): when it passes, a
timer thread signals the worker's thread (``SIGUSR2``), whose handler raises
``TimeLimitExceeded`` in the task, interrupting a blocking call as the soft limit's SIGALRM
does; the task fails with it and the worker goes on. Best effort, as on the threads pool: a
task that catches it, or a C call that does not return, is not stopped. (Celery's solo pool
enforces no hard limit at all.)
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import wait
from typing import Any

from runner.exceptions import TimeLimitExceeded
from runner.worker.pool import ColdShutdown, Event, Finished, Pool
from runner.worker.trace import Job, _inject, refused

HARD_LIMIT_SIGNAL = signal.SIGUSR2


class SoloPool(Pool):
    def start(self) -> None:
        self._done: list[Event] = []
        self._limited: tuple[int, float] | None = None  # (job, its hard limit) while it runs
        self._expired: int | None = None  # the job whose hard limit passed, set by its timer
        self._signals = threading.current_thread() is threading.main_thread()
        if self._signals:
            signal.signal(HARD_LIMIT_SIGNAL, self._on_hard_limit)

    def free_slots(self) -> int:
        return 1 if not self._done else 0

    def _submit(self, job: Job) -> None:
        self._busy = True
        timer = self._arm_hard_limit(job) if job.time_limit else None
        try:
            try:
                try:
                    result = self._run(job)
                finally:
                    self._limited = None  # (no hard limit is raised after this)
            except TimeLimitExceeded as exc:  # (passed outside the task's code)
                result = refused(self.app, job.id, job.message, exc, self.hostname)
            self._done.append(Finished(result))
        finally:
            self._limited = None
            if timer is not None:
                timer.cancel()
                if not self._signals:
                    _inject(threading.get_ident(), None)  # (one not raised yet is dropped)
            self._busy = False

    def _arm_hard_limit(self, job: Job) -> threading.Timer:
        assert job.time_limit is not None
        self._limited = (job.id, job.time_limit)
        thread_id = threading.get_ident()

        def expire() -> None:  # (in the timer's thread)
            self._expired = job.id
            if self._signals:
                signal.pthread_kill(thread_id, HARD_LIMIT_SIGNAL)
            elif self._limited is not None and self._limited[0] == job.id:
                _inject(thread_id, TimeLimitExceeded)  # (not the main thread: no signal)

        timer = threading.Timer(job.time_limit, expire)
        timer.daemon = True
        timer.start()
        return timer

    def _on_hard_limit(self, signum: int, frame: Any) -> None:
        """Raise in the job whose limit passed, if it still runs (a late timer's signal,
        after its job ended, is ignored)."""
        limited = self._limited
        if limited is not None and limited[0] == self._expired:
            self._limited = None
            raise TimeLimitExceeded(f"TimeLimitExceeded({limited[1]},)")  # (prefork's text)

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

"""The asyncio pool's event loop: in a thread of each of its processes (see
:mod:`runner.worker.aio_procs`), or of the worker's own process with ``--processes 0``, it runs
up to ``-c`` (``--concurrency``) jobs at once: ``async def`` tasks are awaited on the loop, plain
``def`` tasks run in a bounded thread pool so they never block it.

Time limits: the soft one raises ``SoftTimeLimitExceeded`` inside the coroutine at its current
``await`` (the task may catch it and clean up); the hard one cancels the coroutine and fails the
task with ``TimeLimitExceeded``. ``revoke(..., terminate=True)`` cancels the coroutine. A plain
task's limits are kept as in the threads pool (an exception injected into its thread). Warm
shutdown waits for the jobs in flight. (A job that does not stop when cancelled is left to the
process pool, which replaces the process.)

Jobs handed over beyond ``-c`` wait in the pool, in order, and each starts the moment a running
one ends, on the loop, without a round trip to whoever hands them over (the process pool keeps
its processes one batch ahead this way). A waiting job whose start was asked to be reported
(``Job.report_start``) is reported as :class:`~runner.worker.pool.Began` when it starts.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import queue
import signal
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from runner import states
from runner.exceptions import SoftTimeLimitExceeded, TaskRevokedError, TimeLimitExceeded
from runner.execute import arun_task, is_async
from runner.task import fresh_stacks
from runner.utils.aio import Interruptible, new_event_loop
from runner.worker.pool import Began, Event, Finished, Pool, Returned
from runner.worker.trace import (
    Job,
    JobResult,
    _inject,
    announce_revoked,
    conclude,
    discarded,
    prepare,
    refused,
)

logger = logging.getLogger("runner.worker")

#: at most this many plain ``def`` tasks run at once in the pool's threads
SYNC_THREADS = 32


@dataclass(slots=True)
class _Entry:
    """A job in flight."""

    task: asyncio.Task | None = None
    wrapper: Interruptible | None = None
    thread: int | None = None  # a plain task's thread
    stopped_by: BaseException | None = None  # the hard limit, or a terminate
    timers: list | None = None


class AsyncioPool(Pool):
    def start(self) -> None:
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._woken = False  # the waker was woken for what is in the outbox
        self._jobs: dict[int, _Entry] = {}
        self._waiting: collections.deque[Job] = collections.deque()  # beyond -c, in order
        self._running = 0  # (read and changed on the loop's thread only)
        self._lock = threading.Lock()
        self._loop = new_event_loop(self.app.conf.worker_event_loop)
        self._executor = ThreadPoolExecutor(min(self.size, SYNC_THREADS),
                                            thread_name_prefix="runner-asyncio-sync")
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="runner-asyncio-loop")
        self._thread.start()
        self._closing = threading.Event()
        self._watcher: threading.Thread | None = None
        threshold = float(self.app.conf.worker_loop_block_threshold or 0)
        if threshold:
            self._last_beat = time.monotonic()
            self._loop.call_soon_threadsafe(self._beat, threshold / 4)
            self._watcher = threading.Thread(target=self._watch, args=(threshold,),
                                             daemon=True, name="runner-asyncio-watch")
            self._watcher.start()

    def free_slots(self) -> int:
        with self._lock:
            return self.size - len(self._jobs)

    def submit(self, jobs: list[Job]) -> None:
        """Start ``jobs`` on the loop (all at once: one wake-up of the loop's thread); those
        beyond ``-c`` wait for a running one to end."""
        with self._lock:
            for job in jobs:
                self._jobs[job.id] = _Entry(timers=[])
        self._loop.call_soon_threadsafe(self._begin_all, jobs)

    def collect(self, timeout: float, waitables: Sequence[Any] = ()) -> list[Event]:
        self._woken = False  # (before the outbox is read: a job ending after it wakes again)
        return self._take_outbox(self._outbox, timeout, waitables)

    def terminate_job(self, job_id: int, signum: int = signal.SIGTERM) -> bool:
        """Cancel an ``async def`` job (a plain one in a thread cannot be stopped); one still
        waiting to start is dropped (recorded REVOKED)."""
        with self._lock:
            entry = self._jobs.get(job_id)
            if entry is None or entry.thread is not None:
                return False
        self._loop.call_soon_threadsafe(self._terminate, job_id, entry,
                                        TaskRevokedError(f"terminated ({signum})"))
        return True

    def drop_if_waiting(self, job_id: int) -> None:
        """Drop ``job_id`` if it is still waiting to start (revoked meanwhile): recorded
        REVOKED, never run; a running one is left alone. (From the process pool's Drop: the
        loop's thread alone knows whether it started; :meth:`Pool.drop_waiting` is the main
        process's side.)"""
        self._loop.call_soon_threadsafe(self._drop, job_id)

    def return_waiting(self) -> None:
        """Warm shutdown: the jobs waiting to start never will; they are reported as
        :class:`Returned` (not run), for the broker to deliver again."""
        self._loop.call_soon_threadsafe(self._return_waiting)

    def stop(self, kill: bool = False) -> list[Event]:
        """Warm: wait for the jobs in flight; ``kill``: cancel them (and drop those waiting)."""
        if kill:
            self._loop.call_soon_threadsafe(self._return_waiting)
            for entry in list(self._jobs.values()):
                self._loop.call_soon_threadsafe(self._stop_job, entry, None)
        else:
            while True:
                with self._lock:
                    if not self._jobs:
                        break
                self._thread.join(0.05)
        self._closing.set()
        if self._watcher is not None:
            self._watcher.join(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._executor.shutdown(wait=not kill, cancel_futures=True)
        return []

    # -- the loop's watchdog: a task blocking the loop is named in the log ---------------------

    def _beat(self, every: float) -> None:
        self._last_beat = time.monotonic()
        self._loop.call_later(every, self._beat, every)

    def _watch(self, threshold: float) -> None:
        reported = None
        while not self._closing.wait(threshold / 4):
            stalled = time.monotonic() - self._last_beat
            if stalled < threshold:
                reported = None
                continue
            job = self._job_on_loop()
            if job is not None and job.id != reported:
                reported = job.id
                logger.warning(
                    "Task %s[%s] has blocked the event loop for %.1fs: every task of this "
                    "asyncio pool waits meanwhile. Await instead of the blocking call (time."
                    "sleep, a sync client), or make it a plain def task (run in a thread).",
                    job.message.task, job.message.id, stalled)

    def _job_on_loop(self) -> Job | None:
        """The job whose code runs on the loop's thread now (read from its stack)."""
        frame = sys._current_frames().get(self._thread.ident or 0)
        while frame is not None:
            if frame.f_code is _JOB_CODE:
                return frame.f_locals.get("job")
            frame = frame.f_back
        return None

    # -- in the loop's thread -----------------------------------------------------------------

    def _begin_all(self, jobs: list[Job]) -> None:
        for job in jobs:
            if self._running < self.size:
                self._begin(job)
            else:
                self._waiting.append(job)

    def _begin(self, job: Job) -> None:
        entry = self._jobs[job.id]
        self._running += 1
        if job.report_start:
            if job.ack_on_start:  # (the process that handed it over acks it, told by Began)
                job.acked = True
            self._put(Began([job.id]))
        entry.task = self._loop.create_task(self._job(job, entry))
        if job.time_limit:
            entry.timers.append(self._loop.call_later(
                job.time_limit, self._stop_job, entry, TimeLimitExceeded(
                    f"TimeLimitExceeded({job.time_limit},)")))  # (as prefork's: Celery's text)

    def _take_waiting(self, job_id: int) -> Job | None:
        for job in self._waiting:
            if job.id == job_id:
                self._waiting.remove(job)
                with self._lock:
                    self._jobs.pop(job_id, None)
                return job
        return None

    def _terminate(self, job_id: int, entry: _Entry, why: BaseException) -> None:
        if not self._drop(job_id):
            self._stop_job(entry, why)

    def _drop(self, job_id: int) -> bool:
        job = self._take_waiting(job_id)
        if job is None:
            return False
        job.discard = "revoked"
        self._put(Finished(discarded(self.app, job, self.hostname)))
        return True

    def _return_waiting(self) -> None:
        if self._waiting:
            returned = [job.id for job in self._waiting]
            self._waiting.clear()
            with self._lock:
                for job_id in returned:
                    self._jobs.pop(job_id, None)
            self._put(Returned(returned, False))

    def _put(self, event: Event) -> None:
        """Hand ``event`` to whoever collects (one wake-up for a burst of them)."""
        self._outbox.put(event)
        if self.waker is not None and not self._woken:
            self._woken = True
            self.waker.wake()

    def _stop_job(self, entry: _Entry, why: BaseException | None) -> None:
        if entry.task is None or entry.task.done():
            return
        entry.stopped_by = why
        if entry.thread is not None:  # a plain task: best effort, as the threads pool
            if isinstance(why, TimeLimitExceeded):
                _inject(entry.thread, TimeLimitExceeded)
            return
        entry.task.cancel()

    async def _job(self, job: Job, entry: _Entry) -> None:
        fresh_stacks()  # this job's own self.request and current_task
        try:
            result = await self._result(job, entry)
        except Exception as exc:  # noqa: BLE001 - a bug must cost one job, never the pool
            logger.exception("Task %s[%s]: handling it failed", job.message.task,
                             job.message.id)
            result = refused(self.app, job.id, job.message, exc, self.hostname)
            result.refused = True
        finally:
            for timer in entry.timers:
                timer.cancel()
            with self._lock:
                self._jobs.pop(job.id, None)
            self._running -= 1
            if self._waiting:  # the next one starts now, in this process
                self._begin(self._waiting.popleft())
        self._put(Finished(result))

    async def _result(self, job: Job, entry: _Entry) -> JobResult:
        try:
            return await self._handle(job, entry)
        except asyncio.CancelledError:
            return self._stopped(job, entry)
        except (TimeLimitExceeded, SoftTimeLimitExceeded) as exc:  # outside the task's code
            return refused(self.app, job.id, job.message, exc, self.hostname)

    async def _handle(self, job: Job, entry: _Entry) -> JobResult:
        if job.discard:
            return discarded(self.app, job, self.hostname)
        task = self.app.tasks.get(job.message.task)
        if task is None or not is_async(task):  # plain def (or unknown: refused there)
            return await self._loop.run_in_executor(self._executor, self._sync, job, entry)
        prepared = prepare(self.app, job.id, job.message, self.hostname, self.accept,
                           job.delivery_info)
        if isinstance(prepared, JobResult):
            return prepared
        task, request, args, kwargs = prepared
        soft = request.soft_time_limit

        def wrap(awaitable: Any) -> Any:
            if not inspect.iscoroutine(awaitable):
                return awaitable
            entry.wrapper = Interruptible(awaitable)
            if soft:
                entry.timers.append(self._loop.call_later(
                    soft, entry.wrapper.interrupt, entry.task,
                    SoftTimeLimitExceeded("SoftTimeLimitExceeded()")))
            return entry.wrapper

        outcome = await arun_task(task, request, args, kwargs, wrap)
        return conclude(self.app, job.id, job.message, task, request, outcome, self.hostname)

    def _stopped(self, job: Job, entry: _Entry) -> JobResult:
        why = entry.stopped_by
        if isinstance(why, TaskRevokedError):
            announce_revoked(self.app, job.message, self.hostname, "terminated",
                             job.delivery_info)
            result = refused(self.app, job.id, job.message, why, self.hostname)
            result.state = states.REVOKED
            if result.record is not None:
                result.record.state = states.REVOKED
            return result
        return refused(self.app, job.id, job.message,
                       why or TimeLimitExceeded("cancelled (cold shutdown)"), self.hostname)

    # -- in a thread of the pool (plain def tasks) --------------------------------------------

    def _sync(self, job: Job, entry: _Entry) -> JobResult:
        entry.thread = threading.get_ident()
        try:
            return self._run(job)
        except (TimeLimitExceeded, SoftTimeLimitExceeded) as exc:
            return refused(self.app, job.id, job.message, exc, self.hostname)
        finally:
            while True:
                try:
                    thread, entry.thread = entry.thread, None
                    _inject(thread, None)  # a limit not raised yet is dropped
                    break
                except (TimeLimitExceeded, SoftTimeLimitExceeded):
                    continue


_JOB_CODE = AsyncioPool._job.__code__

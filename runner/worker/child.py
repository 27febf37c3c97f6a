"""A prefork child process: runs batches of jobs and settles them itself.

The worker's main process sends a batch (a list of :class:`Job`); the child runs the jobs in
order and, as Celery's children do, stores each result and runs the middleware itself. Where the
broker lets any connection ack (SQLite, Redis), it also acks the message, or replaces it by its
next attempt, in the same write. The main process then handles a whole batch with two pipe
messages and no write of its own: this is what lets one worker keep its children busy.

Results are written when the batch ends, or before the next job starts once the oldest unwritten
one is ``FLUSH_AFTER`` old, so a slow job never holds back the results of the jobs before it.

Counters in shared memory tell the main process how far the child got, with no message:
``progress[STARTED]`` is the index of the job that runs, ``progress[SETTLED]`` how many jobs are
written. If the child dies, the main process knows which job killed it, which jobs are settled,
which ran but were not written (they run again: at least once), and which never started (they
go back to the broker). The main process sets ``progress[STOP]`` on a warm shutdown: the child
then ends its batch after the job that runs, and the jobs it did not start go back.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from runner import states
from runner.worker.trace import Job, JobResult, current_rss_kib, log_result
from runner.worker.writer import write

if TYPE_CHECKING:  # pragma: no cover
    from multiprocessing.connection import Connection

    from runner.app import Runner

STARTED, SETTLED, STOP = 0, 1, 2  # indexes into a child's progress counters
FLUSH_AFTER = 0.002  # seconds a finished job's result may wait for the rest of its batch
PR_SET_PDEATHSIG = 1


def child_main(app: Runner, run: Callable[[Job], JobResult], conn: Connection, progress,
               measure_memory: bool, parent: int) -> None:
    """The loop of a child process: receive a batch, run and settle it, send the results."""
    # The parent decides when to stop: a terminal's Ctrl-C or a SIGTERM sent to the whole
    # process group must not kill a task half way.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent(parent)
    settler = Settler(app)
    try:
        while True:
            jobs = conn.recv()
            if jobs is None:
                break
            results = run_batch(jobs, run, settler, progress)
            if measure_memory:
                results[-1].rss_kib = current_rss_kib()
            conn.send(results)
    except (EOFError, KeyboardInterrupt, BrokenPipeError):
        pass
    finally:
        conn.close()
        os._exit(0)  # skip finalizers of what was inherited from the parent (its connections)


def run_batch(jobs: list[Job], run: Callable[[Job], JobResult], settler: Settler,
              progress) -> list[JobResult]:
    results = []
    for index, job in enumerate(jobs):
        if index and progress[STOP]:  # a warm shutdown: what did not start goes back
            break
        if settler.due():
            settler.flush()
            progress[SETTLED] = index
        progress[STARTED] = index
        result = run(job)
        if settler.stores:
            log_result(job.message, result)  # (else the main process logs it, after storing)
        if settler.add(job, result):  # written at once (a retry)
            progress[SETTLED] = index + 1
        results.append(result)
    if settler.stores:  # (else the results travel back to the main process, which stores them)
        settler.flush()
        progress[SETTLED] = len(results)
    return results


class Settler:
    """The results of a batch not written yet, and how to write them from this process."""

    def __init__(self, app: Runner):
        self.app = app
        self.broker = app.broker
        self.backend = app.backend
        self.stores = not self.backend.process_local  # else the main process stores them
        self.acks = self.stores and self.broker.acks_anywhere
        self._results: list = []
        self._completed: list = []
        self._acks: list = []
        self._since: float | None = None

    def due(self) -> bool:
        return self.stores and self._since is not None and time.monotonic() - self._since >= FLUSH_AFTER

    def add(self, job: Job, result: JobResult) -> bool:
        """Take a finished job's result; True if it (and all before it) is written now."""
        if not self.stores:
            return False
        if result.record is not None:
            self._results.append(result.record)
        again = None  # the message to deliver instead of this one
        if result.state == states.RETRY and result.retry_message is not None:
            again = result.retry_message
        elif result.state == "REJECTED" and result.requeue:
            again = job.message
        else:
            self._completed.append((job.message, result.state, result.record))
            if self.acks and job.delivery is not None:
                self._acks.append(job.delivery)
        result.record, result.stored, result.acked = None, True, self.acks
        if again is not None:
            self.flush()  # its RETRY state is stored before the next attempt exists
            if self.acks and job.delivery is not None:
                self.broker.retry(job.delivery, again)  # one step: never lost nor doubled
            else:
                self.broker.enqueue([again])  # the main process acks the old one
            result.retry_message, result.requeue = None, False
            return True
        if self._since is None:
            self._since = time.monotonic()
        return False

    def flush(self) -> None:
        if self._results or self._completed or self._acks:
            write(self.app, self.broker, self.backend, self._results, self._completed,
                  self._acks)
            self._results, self._completed, self._acks = [], [], []
        self._since = None


def _die_with_parent(parent: int) -> None:
    """Be killed with the worker's main process (Linux): an orphan would run and settle tasks
    whose claims nobody renews any more, which another worker then runs again."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: orphans finish their batch and exit
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(0)

"""Settling a prefork child's batch from the child: the results not written yet, and how this
process writes them (stores, runs the middleware and acks in one write, or replaces a message
by its next attempt). Results are written when the batch ends, or before the next job starts
once the oldest unwritten one is ``FLUSH_AFTER`` old, so a slow job never holds back the
results of the jobs before it (see :mod:`runner.worker.child`)."""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING

from runner import states
from runner.backends.base import ResultRecord
from runner.middleware import Middleware
from runner.worker.dead import bury_refused
from runner.worker.ownership import Ownership
from runner.worker.trace import Job, JobResult, acks_late_of
from runner.worker.writer import write, write_until_done

if TYPE_CHECKING:  # pragma: no cover
    from runner.app import Runner

logger = logging.getLogger("runner.worker")

FLUSH_AFTER = 0.002  # seconds a finished job's result may wait for the rest of its batch


class Settler:
    """The results of a batch not written yet, and how to write them from this process."""

    def __init__(self, app: Runner, hostname: str, consuming: bool = False):
        self.app = app
        self.hostname = hostname
        self.broker = app.broker
        self.backend = app.backend
        # (the same decision as the main process's: see runner.worker.ownership)
        ownership = Ownership.decide(True, self.broker, self.backend, defers_acks=True)
        self.stores = ownership.children_store  # else the main process stores them
        self.acks = ownership.child_acks(consuming)
        self.early_acks = ownership.child_acks_early(consuming)
        self.start_hooks = [m for m in app.middleware if type(m).before_tasks_start
                            is not Middleware.before_tasks_start]
        self._results: list = []
        self._completed: list = []
        self._acks: list = []
        self._since: float | None = None

    def track_started(self, job: Job) -> None:
        """Store STARTED before the job runs, for a task with ``track_started``."""
        task = self.app.tasks.get(job.message.task)
        if task is None or not task.effective("track_started"):
            return
        self.flush()
        record = ResultRecord(job.message.id, states.STARTED, reply_to=job.message.reply_to,
                              meta={"name": job.message.task, "worker": self.hostname,
                                    "pid": os.getpid()})
        write_until_done(lambda: self.backend.store([record]), 1, 0)

    def starting(self, job: Job) -> None:
        """Ack ``job`` now (before it runs) if it acks early and only this process can."""
        if (self.early_acks and not job.discard and job.delivery is not None
                and not acks_late_of(self.app, job.message)):
            self.broker.ack([job.delivery])  # sent now: it must not die with this process
            job.acked = True

    def due(self) -> bool:
        return self.stores and self._since is not None and time.monotonic() - self._since >= FLUSH_AFTER

    def add(self, job: Job, result: JobResult) -> bool:
        """Take a finished job's result; True if it (and all before it) is written now."""
        if not self.stores:
            return False
        if result.refused and job.delivery is not None:  # kept before its ack, below
            bury_refused(self.app, self.broker, job, result, self.hostname)
        if result.record is not None:
            self._results.append(result.record)
        again = None  # the message to deliver instead of this one
        if result.state == states.RETRY and result.retry_message is not None:
            again = result.retry_message
        elif result.state == "REJECTED" and result.requeue:
            again = job.message
        else:
            self._completed.append((job.message, result.state, result.record))
            if self.acks and job.delivery is not None and not job.acked:
                self._acks.append(job.delivery)
        result.record, result.stored, result.acked = None, True, self.acks
        if again is not None:
            self.flush()  # its RETRY state is stored before the next attempt exists
            if self.acks and job.delivery is not None and not job.acked:
                self.broker.retry(job.delivery, again)  # one step where the broker can
            else:
                self.broker.enqueue([again])  # (acked already, or by the main process)
            result.retry_message, result.requeue = None, False
            return True
        if self._since is None:
            self._since = time.monotonic()
        return False

    def flush_and_fetch(self, queues: list[str], limit: int, consumer: str) -> list | None:
        """:meth:`flush`, claiming the next batch in the same write where the broker can
        (and no middleware runs in between); None if it did not claim."""
        results, completed, acks = self._results, self._completed, self._acks
        if any(m.wants(c[0]) for c in completed for m in self.app.middleware):
            self.flush()
            return None
        try:
            claimed = self.broker.ack_store_fetch(acks, results, self.backend, queues, limit,
                                                  consumer)
        except Exception:  # noqa: BLE001 - written or not, flush() writes it (idempotent)
            logger.exception("storing %d result(s) and fetching failed; storing again",
                             len(results))
            claimed = None
        if claimed is None:
            self.flush()
            return None
        self._results, self._completed, self._acks, self._since = [], [], [], None
        return claimed

    def flush(self) -> None:
        results, completed, acks = self._results, self._completed, self._acks
        if results or completed or acks:
            write_until_done(lambda: write(self.app, self.broker, self.backend, results,
                                           completed, acks), len(results), len(acks))
            self._results, self._completed, self._acks = [], [], []
        self._since = None

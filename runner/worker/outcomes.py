"""What happened to a job, as the worker's main loop settles it: received from a child,
finished, settled or given back by a child that died, lost with its process, timed out,
revoked. Each outcome says what is stored and who acks (see :mod:`runner.worker.ownership`):
a task never stays PENDING forever, and a message is never acked before its result is stored
(``acks_late``) nor run twice after an early ack.

A part of :class:`runner.worker.worker.Worker` (it reads and changes the worker's state:
``running``, ``results``, ``completed``, ``acks``), in a module of its own to keep each
readable top to bottom.
"""

from __future__ import annotations

import logging
import signal
import time
from typing import TYPE_CHECKING

from runner import states
from runner.exceptions import TaskRevokedError, TimeLimitExceeded, WorkerLostError
from runner.signals import task_failure, task_revoked
from runner.worker.consumer import Fetched
from runner.worker.dead import bury_refused
from runner.worker.trace import (
    JobResult,
    announce_failure,
    announce_revoked,
    delivery_info_of,
    job_for,
    log_result,
    refused,
)

if TYPE_CHECKING:  # pragma: no cover
    from runner.worker.held import Held

logger = logging.getLogger("runner.worker")


class JobOutcomes:
    """The worker's handling of job outcomes (mixed into the Worker)."""

    def received(self, job_ids: list[int], fetched: list[Fetched]) -> None:
        """A child of the pool claimed messages and runs them: they are this worker's now."""
        now = time.monotonic()
        for job, item in zip(job_ids, fetched, strict=True):
            held = self.receive(item, log=False)  # (the child logged it)
            if held is not None:
                held.job, held.started, held.checked = job, now, now
                self.running[job] = held

    def finished(self, result: JobResult) -> None:
        """A job ended. Where the process that ran it settled it (``result.stored``: stored,
        middleware run, and acked or replaced by its next attempt if ``result.acked``), only
        what it could not do is left: logging, and the ack where the broker wants it here."""
        held = self.running.pop(result.job_id)
        self.consumer.release()
        message = held.message
        self.terminated.pop(message.id, None)  # (it ended, cancelled or not: forgotten)
        previous = self.runtimes.get(message.task)
        self.runtimes[message.task] = (result.runtime if previous is None
                                       else 0.8 * previous + 0.2 * result.runtime)
        if not result.stored:  # (else the process that ran it logged it)
            log_result(message, result)
            if result.refused:  # kept before its ack, which goes with the result
                bury_refused(self.app, self.broker, job_for(self.app, 0, held.delivery, message),
                             result, self.hostname)
        if result.record is not None:
            self.results.append(result.record)
        if result.retry_message is not None:
            self.flush_and_wait()  # the RETRY state is stored before the next attempt exists
            if held.acked:
                self.broker.enqueue([result.retry_message])
            else:
                self.broker.retry(held.delivery, result.retry_message)
            return
        if result.state == "REJECTED" and result.requeue:
            self.give_back(held)
            return
        if not held.acked and not result.acked:
            self.acks.append(held.delivery)
        if not result.stored:
            self.completed.append((message, result.state, result.record))

    def settled(self, job_ids: list[int]) -> None:
        """Jobs a child settled before it died: done, but for the ack where it is ours."""
        for job in job_ids:
            held = self.running.pop(job)
            self.consumer.release()
            self.terminated.pop(held.message.id, None)
            if self.ownership.owes_ack_after_child(held):
                self.acks.append(held.delivery)

    def began(self, job_ids: list[int]) -> None:
        """Jobs that waited in the pool started: the early-ack ones are acked now."""
        for job in job_ids:
            held = self.running.get(job)
            if held is not None and not held.acked and not held.acks_late:
                self.acks.append(held.delivery)
                held.acked = True

    def started_by_child(self, held: Held) -> None:
        """``held`` started in a child that acks its own: an early-ack message is acked."""
        if self.ownership.acked_by_child_at_start(held):
            held.acked = True

    def returned(self, job_ids: list[int], ran: bool) -> None:
        """Jobs of a batch that must run again (its child died) or did not start (a warm
        shutdown): given back to the broker (put back in it where already acked)."""
        for job in job_ids:
            held = self.running.pop(job)
            self.consumer.release()
            message = held.message
            self.terminated.pop(message.id, None)
            if ran:
                self.started_by_child(held)
                if self.stored_by_child(held, "died"):
                    continue
                logger.warning("Task %s[%s] ran, but its process died before storing the "
                               "result; delivering it again.", message.task, message.id)
            self.give_back(held, started=ran)

    def give_back(self, held: Held, started: bool = True) -> None:
        """Put ``held``'s message back in the broker: sent again if it was acked, else
        requeued (where children ack their own, it comes back when their connection closes).
        A message that ``started`` counts as delivered (see ``task_delivery_limit``)."""
        if held.acked:
            self.broker.enqueue([held.message])
        elif self.ownership.main_settles:
            self.broker.requeue([held.delivery], started=started)

    def lost(self, job_id: int, exitcode: int | None) -> None:
        held = self.running.pop(job_id)
        self.consumer.release()
        self.started_by_child(held)
        message = held.message
        how = (f"signal {-exitcode} ({signal.Signals(-exitcode).name})"
               if exitcode is not None and exitcode < 0 else f"exit code {exitcode}")
        if self.stored_by_child(held, f"exited with {how}"):
            return
        if held.message.id in self.terminated:
            signum = self.terminated.pop(held.message.id)
            self.finish_revoked(held, "terminated", signum)
            return
        if held.acks_late and held.reject_on_worker_lost:
            logger.warning("Process running task %s[%s] exited with %s; delivering it again.",
                           message.task, message.id, how)
            self.give_back(held)
            return
        error = WorkerLostError(f"Worker exited prematurely: {how} Job: {job_id}.")
        logger.error("Task %s[%s] raised unexpected: %r", message.task, message.id, error)
        self.fail(held, error)

    def stored_by_child(self, held: Held, how: str) -> bool:
        """Whether the child that died had stored ``held``'s final result: it died after
        that (e.g. in a middleware hook), before it told this process. Such a job is settled
        here (middleware run, acked where ours), neither failed over its stored result nor
        sent again (an early-acked message would run twice)."""
        if not self.backend.keeps_state or self.backend.process_local:
            return False  # (the child stores nothing there)
        message = held.message
        try:
            record = self.backend.get_many([message.id]).get(message.id)
        except Exception as exc:  # noqa: BLE001 - the backend failed: record the loss
            logger.error("looking up the result of task %s[%s] failed: %s", message.task,
                         message.id, exc)
            return False
        if record is None or not record.ready:
            return False
        logger.warning("The process of task %s[%s] %s after storing its result (%s); "
                       "settling it, not running it again.", message.task, message.id, how,
                       record.state)
        self.completed.append((message, record.state, record))
        if self.ownership.owes_ack(held):  # (else it comes back: see ownership.py)
            self.acks.append(held.delivery)
        return True

    def timed_out(self, job_id: int, limit: float) -> None:
        held = self.running.pop(job_id)
        self.consumer.release()
        self.started_by_child(held)
        message = held.message
        self.terminated.pop(message.id, None)
        error = TimeLimitExceeded(f"TimeLimitExceeded({limit},)")
        logger.error("Hard time limit (%ss) exceeded for %s[%s]", limit, message.task,
                     message.id)
        self.fail(held, error)

    def finish_revoked(self, held: Held, why: str, signum: int | None = None) -> None:
        if why == "revoked" or why == "terminated":
            self.remember_revoked(held.message.id)
        logger.info("Discarding %s task %s[%s]", why, held.message.task, held.message.id)
        if task_revoked.receivers:
            announce_revoked(self.app, held.message, self.hostname, why,
                             delivery_info_of(held.delivery, held.message), signum)
        self.fail(held, TaskRevokedError(why), states.REVOKED)

    def fail(self, held: Held, error: BaseException, state: str = states.FAILURE) -> None:
        """Record a task that could not finish by itself (lost, timed out, revoked)."""
        if state == states.FAILURE and task_failure.receivers:
            announce_failure(self.app, held.message, error, self.hostname)
        record = refused(self.app, 0, held.message, error, self.hostname).record
        record.state = state
        self.results.append(record)
        self.completed.append((held.message, state, record))
        if self.ownership.owes_ack(held):  # (else it comes back: see ownership.py)
            self.acks.append(held.delivery)


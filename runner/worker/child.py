"""A prefork child process: runs batches of jobs and settles them itself.

A child gets its batches in one of two ways:

- it **fetches them itself** (:func:`consume_main`) on a broker and result backend that every
  process can open (SQLite, Redis, AMQP): it claims one message at a time, or its share of the
  prefetch limit while messages pile up and tasks are short (under ``BATCH_BELOW``), posts
  what it claimed (:class:`Claimed`) on its board in shared memory, runs the jobs, and stores,
  runs the middleware and acks (or replaces a message by its next attempt) in one write, and
  marks the batch ended on the board. The main process reads the boards when it wakes anyway
  (every LOOK_WITHIN while batches come where it makes the early acks, at least once a
  second otherwise, when a child dies, at shutdown), so it does no work per task and the
  children keep both cores busy, as Dramatiq's do. A pipe message wakes it only for claims
  larger than the board and (:class:`Look`) for a batch with a hard time limit (it must watch
  the clock) or with early acks to make while it sleeps longer than LOOK_WITHIN.
  On AMQP, whose deliveries only the channel that got them can ack, the child also acks
  early-ack messages (just before they start), keeps its connection's heartbeats going while
  a task runs (:class:`_KeepAlive`), and what it held unacked when it dies RabbitMQ delivers
  again by itself; a redelivered message whose result is stored is settled, not run again
  (:func:`_mark_finished`);
- or the main process sends them (:func:`child_main`), a list of :class:`Job` per pipe message,
  where the results go back to the caller's process (``rpc://``): the child runs the
  middleware, and the main process stores the results and acks.

Results are written when the batch ends, or before the next job starts once the oldest unwritten
one is ``FLUSH_AFTER`` old, so a slow job never holds back the results of the jobs before it.

The child tells the main process how far it got on its claims board in shared memory, with
no message: the batch it runs, the job that runs, how many are settled, the claims and the end
of a batch (see :mod:`runner.worker.board`, whose docstring states the protocol and what the
main process makes of a child that died). The main process asks a child to stop there: on a
warm shutdown the child ends its batch after the job that runs (the rest go back) and stops.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from runner.exceptions import ConfigError
from runner.signals import task_received, worker_process_init, worker_process_shutdown
from runner.worker.board import Board, Claimed
from runner.worker.consumer import Fetched, fetch, prepare
from runner.worker.dead import bury, sort_out
from runner.worker.settler import Settler
from runner.worker.trace import (
    Job,
    JobResult,
    WorkerRef,
    acks_late_of,
    announce_received,
    current_rss_kib,
    discard_reason,
    job_for,
    log_result,
    rejects_on_worker_lost,
)

if TYPE_CHECKING:  # pragma: no cover
    from multiprocessing.connection import Connection

    from runner.app import Runner

BATCH_BELOW = 0.002  # seconds: a child fetches one message at a time unless tasks are shorter
LOOK_WITHIN = 0.005  # seconds: the main process sees a batch whose early acks it makes this soon
RECHECK_AFTER = 0.1  # a message held longer before it starts is looked up in the revoked set again
REDELIVERY_GRACE = 0.2  # seconds a worker has to record the fate of a job whose process died
KEEPALIVE_EVERY = 1.0  # seconds between services of a child's broker connection (heartbeats)
PR_SET_PDEATHSIG = 1

logger = logging.getLogger("runner.worker")


@dataclass(slots=True)
class Look:
    """Read the board now: the batch just posted holds a hard time limit to watch, or jobs
    whose early acks the main process makes while it sleeps for longer than LOOK_WITHIN."""


@dataclass(slots=True)
class Fatal:
    """The broker refused the child for good (a wrong password): the worker must stop."""

    error: str


@dataclass(slots=True)
class ConsumeOptions:
    queues: list[str]
    hostname: str
    prefetch: int  # messages one child claims at most per fetch
    max_tasks: int | None = None
    max_memory_kib: int | None = None
    #: the main process acks early-ack jobs it sees running (where any connection can ack:
    #: SQLite, Redis); on AMQP the child acks them itself
    main_acks_early: bool = False


def child_main(app: Runner, run: Callable[[Job], JobResult], conn: Connection, board: Board,
               measure_memory: bool, parent: int, hostname: str) -> None:
    """The loop of a child process: receive a batch, run and settle it, send the results."""
    # The parent decides when to stop: a terminal's Ctrl-C or a SIGTERM sent to the whole
    # process group must not kill a task half way.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent(parent)
    _process_init()
    settler = Settler(app, hostname)
    try:
        while True:
            jobs = conn.recv()
            if jobs is None:
                break
            results = run_batch(jobs, run, settler, board)
            if measure_memory and results:  # (none: stopped before the first)
                results[-1].rss_kib = current_rss_kib()
            conn.send(results)
    except (EOFError, KeyboardInterrupt, BrokenPipeError):
        pass
    finally:
        _process_shutdown()
        conn.close()
        os._exit(0)  # skip finalizers of what was inherited from the parent (its connections)


def consume_main(app: Runner, run: Callable[[Job], JobResult], conn: Connection, board: Board,
                 main_wake, parent: int, options: ConsumeOptions) -> None:
    """The loop of a consuming child: claim, post the claims, run and settle, mark the end."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent(parent)
    _process_init()
    consumer = f"{options.hostname}:{os.getpid()}"
    runtime = 0.0  # moving average of run times
    backlog = False  # the last fetch got all it asked for: more is waiting
    claimed: list | None = None  # the next batch, claimed with the last write
    idle = False  # the last fetch found nothing: the next one blocks until work comes
    done = number = 0
    totals: dict[str, int] = {}  # task name -> messages received (posted with each batch)
    try:
        settler = Settler(app, options.hostname, consuming=True)
        settler.broker.prefetch(options.prefetch)
        if settler.broker.needs_heartbeat:
            _KeepAlive(settler.broker).start()
        while not board.stop_asked():
            want = _share(options, backlog, runtime, done)
            if claimed is not None:
                deliveries, claimed = claimed, None
            else:
                deliveries = fetch(settler.broker, options.queues, want, consumer,
                                   block=idle or settler.broker.pushes)
            backlog = len(deliveries) >= want
            idle = not deliveries
            if idle:
                continue
            if board.stop_asked():  # stopped while fetching: give it back untouched
                settler.broker.requeue(deliveries)
                break
            fetched, burials = sort_out(app, prepare(deliveries, app.backend.revoked),
                                        options.hostname)
            bury(app, settler.broker, burials)  # never posted: the main process need not know
            if not fetched:
                continue
            number += 1
            board.begin_batch(number)
            readable = [f for f in fetched if f.message is not None]
            for each in readable:
                totals[each.message.task] = totals.get(each.message.task, 0) + 1
            batch = Claimed(number, [(f.delivery.tag, f.delivery.queue, f.delivery.redelivered,
                                      f.delivery.body) for f in readable], dict(totals))
            posted = board.post_claims(batch)
            if not posted:
                conn.send(batch)
            jobs = _jobs(app, fetched, settler)
            if posted and (any(job.time_limit for job in jobs) or (
                    options.main_acks_early and _asleep(main_wake) and any(
                        not job.discard and not acks_late_of(app, job.message) for job in jobs))):
                conn.send(Look())
            results = run_batch(jobs, run, settler, board, _rechecker(app), flush=False)
            done += len(results)
            for result in results:
                runtime = 0.8 * runtime + 0.2 * result.runtime
            more = _share(options, backlog, runtime, done)
            if more > 0 and not board.stop_asked():
                claimed = settler.flush_and_fetch(options.queues, more, consumer)
            else:
                settler.flush()
            board.end_batch(number, len(results))
            if options.max_tasks and done >= options.max_tasks:
                break
            if options.max_memory_kib and current_rss_kib() > options.max_memory_kib:
                break
        if claimed:  # claimed with the last write, never posted: the main process knows nothing
            settler.broker.requeue(claimed)
    except ConfigError as exc:  # e.g. the broker refused the password
        conn.send(Fatal(str(exc)))
    except (EOFError, KeyboardInterrupt, BrokenPipeError):
        pass
    except BaseException:  # a bug: said, then the main process replaces this child
        logger.exception("worker child %s stopped on an unexpected error", os.getpid())
    finally:
        _process_shutdown()
        conn.close()
        os._exit(0)


def _process_init() -> None:
    """``worker_process_init``, in each child as it starts (before it opens connections)."""
    if worker_process_init.receivers:
        worker_process_init.send(sender=None)


def _process_shutdown() -> None:
    """``worker_process_shutdown``, in a child about to exit by itself (not when killed)."""
    if worker_process_shutdown.receivers:
        try:
            worker_process_shutdown.send(sender=None, pid=os.getpid(), exitcode=0)
        except BaseException:  # noqa: BLE001 - (e.g. Ctrl-C): the child exits all the same
            pass


def _asleep(main_wake) -> bool:
    """Whether the main process sleeps past LOOK_WITHIN from now (see PreforkPool.collect)."""
    return main_wake[0] > (time.monotonic() + LOOK_WITHIN) * 1000


def _share(options: ConsumeOptions, backlog: bool, runtime: float, done: int) -> int:
    """How many messages to claim next: a full share only while work piles up and tasks are
    short; otherwise a task waiting behind a long one in a batch could have run in an idle
    sibling."""
    want = options.prefetch if backlog and runtime < BATCH_BELOW else 1
    return min(want, options.max_tasks - done) if options.max_tasks else want


def _jobs(app: Runner, fetched: list[Fetched], settler: Settler) -> list[Job]:
    """The batch's jobs, in order (all readable: see :func:`sort_out`): revoked and expired
    ones are only recorded; a redelivered message whose result is already stored is only
    settled again."""
    now, jobs = time.time(), []
    for item in fetched:
        message = item.message
        assert message is not None
        logger.info("Task %s[%s] received", message.task, message.id)
        jobs.append(job_for(app, len(jobs), item.delivery, message,
                            discard_reason(message, item.revoked, now)))
    again = [job for job in jobs if job.delivery.redelivered and not job.discard]
    if again:
        _mark_finished(app, again, settler.broker.acks_anywhere)
    if task_received.receivers:  # (a revoked one is only task_revoked, as in Celery)
        sender = WorkerRef(app, settler.hostname)
        for job in jobs:
            if not job.discard:
                args, kwargs = announce_received(sender, job.message, settler.hostname,
                                                 job.delivery_info)
                if args or kwargs:  # (empty: not decodable here; the run says why)
                    job.arguments = args, kwargs
    return jobs


def _mark_finished(app: Runner, jobs: list[Job], acks_anywhere: bool) -> None:
    """Mark the redelivered ``jobs`` whose result is stored: they ran, but the process that
    ran them died before its ack (they are settled again, middleware included, not run).

    Where a dead process's unacked messages come back by themselves (AMQP), a message whose
    process died while running it comes back even when its worker records it failed
    (WorkerLostError, TimeLimitExceeded) instead (``acks_late`` without
    ``reject_on_worker_lost``). That worker may not have written the failure yet: such a job
    is looked up again after REDELIVERY_GRACE."""
    try:
        found = app.backend.get_many([job.message.id for job in jobs])
        if not acks_anywhere and any(
                job.message.id not in found and acks_late_of(app, job.message)
                and not rejects_on_worker_lost(app, job.message) for job in jobs):
            time.sleep(REDELIVERY_GRACE)
            found = app.backend.get_many([job.message.id for job in jobs])
    except Exception as exc:  # noqa: BLE001 - the backend failed: run them (at least once)
        logger.error("looking up results of redelivered tasks failed: %s", exc)
        return
    for job in jobs:
        record = found.get(job.message.id)
        if record is not None and record.ready:
            job.discard, job.finished = "finished", record


def _rechecker(app: Runner) -> Callable[[Job], None]:
    """Marks a job revoked since its batch was claimed, if it waited long enough for that to
    be worth a look (the main process does the same for the messages it hands out)."""
    claimed = time.monotonic()

    def recheck(job: Job) -> None:
        if job.discard or time.monotonic() - claimed < RECHECK_AFTER:
            return
        try:
            if app.backend.revoked([job.message.id]):
                job.discard = "revoked"
        except Exception as exc:  # noqa: BLE001 - the backend failed: run it, as checked
            logger.error("looking up revoked tasks failed: %s", exc)
    return recheck


def run_batch(jobs: list[Job], run: Callable[[Job], JobResult], settler: Settler,
              board: Board, recheck: Callable[[Job], None] | None = None,
              flush: bool = True) -> list[JobResult]:
    """Run ``jobs`` in order, settling them as they end; the last results are written here
    unless ``flush`` is False (the caller writes them with its next fetch)."""
    results = []
    for index, job in enumerate(jobs):
        if board.stop_asked():  # a warm shutdown: what did not start goes back
            break
        if index and recheck is not None:
            recheck(job)
        if settler.due():
            settler.flush()
            board.jobs_settled(index)
        limited = job.time_limit and not job.discard
        board.job_started(index, int((time.monotonic() + job.time_limit) * 1000)
                          if limited else 0)
        if settler.stores and not job.discard:
            settler.track_started(job)
            for hook in settler.start_hooks:  # e.g. a pipeline step is now `running`
                hook.before_tasks_start(settler.app, [job.message])
        settler.starting(job)
        result = run(job)
        if limited:
            board.job_ended()
        if settler.stores and job.finished is None:  # (a finished one was logged as such)
            log_result(job.message, result)  # (else the main process logs it, after storing)
        if settler.add(job, result):  # written at once (a retry)
            board.jobs_settled(index + 1)
        results.append(result)
    if flush and settler.stores:  # (else the results travel back to the main process)
        settler.flush()
        board.jobs_settled(len(results))
    return results


class _KeepAlive(threading.Thread):
    """Services the broker connection of a consuming child while a long task runs, for a
    broker that closes silent connections (AMQP heartbeats): RabbitMQ would otherwise drop
    the child's connection and deliver its unacked messages again, to run twice."""

    def __init__(self, broker):
        super().__init__(name="runner-keepalive", daemon=True)
        self.broker = broker

    def run(self) -> None:
        while True:
            time.sleep(KEEPALIVE_EVERY)
            self.broker.heartbeat()


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

"""A process of the asyncio pool (``-P asyncio --processes N``): one event loop running up to
``-c`` jobs at once (:class:`runner.worker.aio.AsyncioPool`, the same loop the worker runs in
its own process with ``--processes 0``), fed by the worker's main process.

The main process claims the messages and sends this process lists of :class:`Job` by pipe
(up to ``-c`` more than run at once: those wait, and start as running ones end, see
:mod:`runner.worker.aio`), a :class:`Terminate` to cancel one (``revoke(terminate=True)``), a
:class:`Drop` for one revoked while it waits, :data:`RETURN_WAITING` at a warm shutdown (the
waiting ones go back unstarted), and ``None`` to stop once nothing is in flight. A reader thread takes them off the pipe at once (the main process never
waits on a full pipe while this one sends results), and this process's main thread settles the
jobs that ended as a prefork child does (:class:`runner.worker.child.Settler`: stored, acked
where it can, in one write per round) and sends back, per round, their results, the waiting
jobs that started and those returned unstarted.

A coroutine that does not stop when cancelled (past its hard time limit, or terminated) is not
this process's to deal with: the main process kills and replaces it (see
:mod:`runner.worker.aio_procs`).
"""

from __future__ import annotations

import dataclasses
import logging
import marshal
import operator
import os
import pickle
import queue
import signal
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runner.brokers.base import Delivery
from runner.message import Message
from runner.worker.aio import AsyncioPool
from runner.worker.child import _die_with_parent, _process_init, _process_shutdown
from runner.worker.consumer import Waker
from runner.worker.pool import Began, Finished, Returned
from runner.worker.settler import Settler
from runner.worker.trace import Job, current_rss_kib, log_result

if TYPE_CHECKING:  # pragma: no cover
    from multiprocessing.connection import Connection

    from runner.app import Runner

logger = logging.getLogger("runner.worker")

IDLE_WAIT = 1.0  # seconds the process sleeps when nothing happens (the pipe wakes it sooner)


@dataclass(slots=True)
class Terminate:
    """Cancel job ``job_id`` (``revoke(terminate=True)``; ``signum`` as the revoke asked)."""

    job_id: int
    signum: int


@dataclass(slots=True)
class Drop:
    """Drop job ``job_id`` if it still waits to start (revoked meanwhile)."""

    job_id: int


#: warm shutdown: the jobs waiting to start go back unstarted
RETURN_WAITING = "return-waiting"


_MESSAGE = tuple(f.name for f in dataclasses.fields(Message))
_message_values = operator.attrgetter(*_MESSAGE)
_delivery_values = operator.attrgetter(*(f.name for f in dataclasses.fields(Delivery)))


def pack_jobs(jobs: list[Job]) -> bytes:
    """``jobs`` as bytes for the pipe: plain tuples, which marshal many times faster than the
    objects pickle (this is on the path of every task); pickled where they hold more than
    marshal writes (a signed message, a redelivery's stored result)."""
    try:
        if all(job.finished is None for job in jobs):
            return b"M" + marshal.dumps([
                (job.id, _message_values(job.message), job.delivery_info, job.time_limit,
                 None if job.delivery is None else _delivery_values(job.delivery),
                 job.discard, job.acked, job.report_start, job.ack_on_start) for job in jobs])
    except ValueError:
        pass
    return b"P" + pickle.dumps(jobs)


def unpack(data: bytes) -> Any:
    """What :func:`pack_jobs` wrote (a list of jobs), or another message (pickled)."""
    kind = data[:1]
    if kind == b"M":
        return [Job(id, Message(*message), info, limit,
                    None if delivery is None else Delivery(*delivery), discard, None, acked,
                    report_start=report, ack_on_start=ack)
                for id, message, info, limit, delivery, discard, acked, report, ack
                in marshal.loads(data[1:])]
    if kind == b"P":
        return pickle.loads(data[1:])
    return pickle.loads(data)


def aio_child_main(app: Runner, conn: Connection, parent: int, hostname: str,
                   accept: frozenset[str], size: int, report_rss: bool) -> None:
    """Run what the main process sends on one event loop; send back what ended."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides when to stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent(parent)
    _process_init()
    waker = Waker()
    inbox: queue.SimpleQueue = queue.SimpleQueue()
    threading.Thread(target=_read, args=(conn, inbox, waker), daemon=True,
                     name="runner-asyncio-inbox").start()
    pool = AsyncioPool(app, size, hostname, accept, waker=waker)
    pool.start()
    try:
        _serve(app, conn, pool, inbox, waker, hostname, report_rss)
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        pass
    except BaseException:  # a bug: said, then the main process replaces this process
        logger.exception("asyncio pool process %s stopped on an unexpected error", os.getpid())
    finally:
        _process_shutdown()
        conn.close()
        os._exit(0)  # skip finalizers of what was inherited from the parent (its connections)


def _read(conn: Connection, inbox: queue.SimpleQueue, waker: Waker) -> None:
    """The reader thread: everything the main process sends, in order (None at its end)."""
    try:
        while True:
            message = unpack(conn.recv_bytes())
            inbox.put(message)
            waker.wake()
            if message is None:
                return
    except (EOFError, OSError):
        inbox.put(None)
        waker.wake()


def _serve(app: Runner, conn: Connection, pool: AsyncioPool, inbox: queue.SimpleQueue,
           waker: Waker, hostname: str, report_rss: bool) -> None:
    settler = Settler(app, hostname)
    jobs: dict[int, Job] = {}
    stopping = False
    while not (stopping and not jobs):
        events = pool.collect(IDLE_WAIT, [waker])
        waker.drain()
        while True:
            try:
                message = inbox.get_nowait()
            except queue.Empty:
                break
            if message is None:
                stopping = True
            elif isinstance(message, Terminate):
                pool.terminate_job(message.job_id, message.signum)
            elif isinstance(message, Drop):
                pool.drop_if_waiting(message.job_id)
            elif message == RETURN_WAITING:
                pool.return_waiting()
            else:
                for job in message:
                    jobs[job.id] = job
                pool.submit(message)
        results, began, returned = [], [], []
        for event in events:
            if isinstance(event, Began):
                began += event.job_ids
                continue
            if isinstance(event, Returned):
                returned += event.job_ids
                for job_id in event.job_ids:
                    del jobs[job_id]
                continue
            if not isinstance(event, Finished):
                continue
            result = event.result
            job = jobs.pop(result.job_id)
            if settler.stores and job.finished is None:  # (else the main process logs it)
                log_result(job.message, result)
            settler.add(job, result)
            results.append(result)
        if results:
            settler.flush()
        if results or began or returned:
            conn.send((results, began, returned, current_rss_kib() if report_rss else 0))
    pool.stop()

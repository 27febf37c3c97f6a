"""Turning one message into a finished job, inside whichever process or thread runs it.

``handle`` decodes the payload (refusing content types the worker does not accept), runs the task
under its soft time limit, and returns a :class:`JobResult`: the record to store and what to do
with the message. It never raises for what the task or the message does.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from traceback import format_exception
from typing import TYPE_CHECKING

from runner import serialization, states
from runner.backends.base import ResultRecord
from runner.brokers.base import Delivery
from runner.canvas.stamping import revoked_by_stamp
from runner.einfo import ExceptionInfo
from runner.exceptions import (
    NotRegistered,
    SecurityError,
    SerializationError,
    SoftTimeLimitExceeded,
    TaskRevokedError,
)
from runner.execute import Outcome, build_record, run_task
from runner.message import Message, call_arguments
from runner.signals import task_failure, task_received, task_revoked, task_unknown
from runner.task import Request, Task
from runner.utils.aio import interrupt_coroutine

if TYPE_CHECKING:  # pragma: no cover
    from runner.app import Runner

logger = logging.getLogger("runner.worker")


@dataclass(slots=True)
class Job:
    """One message to run, as the worker hands it to its pool."""

    id: int
    message: Message
    delivery_info: dict
    time_limit: float | None
    delivery: Delivery | None = None  # to ack where the job runs (its body left out)
    discard: str | None = None  # "revoked" or "expired": recorded as REVOKED, never run
    finished: ResultRecord | None = None  # ran before (a redelivery): only settled again
    acked: bool = False  # the process that runs it acked it before it started
    #: (args, kwargs) decoded for task_received in the process that runs the job: not again
    arguments: tuple[list, dict] | None = None
    #: handed over to wait in the pool until a running job ends: its start is reported
    #: (:class:`~runner.worker.pool.Began`), and with ``ack_on_start`` it is an early-ack
    #: message the process that handed it over acks then (so a process that dies first holds
    #: no acked message that never ran)
    report_start: bool = False
    ack_on_start: bool = False


def discard_reason(message: Message, revoked: bool, now: float) -> str | None:
    """Why ``message`` must not run: "revoked", "expired" (``now`` is past its expiry), or None.
    """
    if revoked:
        return "revoked"
    if message.expires is not None and message.expires < now:
        return "expired"
    return None


def time_limit_of(app: Runner, message: Message) -> float | None:
    """The hard time limit of ``message``'s task: its own option, else the task's."""
    task = app.tasks.get(message.task)
    return message.options.get("time_limit") or (task.effective("time_limit") if task else None)


def acks_late_of(app: Runner, message: Message) -> bool:
    """Whether ``message`` is acked after its task ran: its own option, else the task's."""
    acks_late = message.options.get("acks_late")
    if acks_late is None:
        task = app.tasks.get(message.task)
        acks_late = task.effective("acks_late") if task else app.conf.task_acks_late
    return bool(acks_late)


def rejects_on_worker_lost(app: Runner, message: Message) -> bool:
    """Whether ``message`` goes back to the broker (rather than failing) if its process dies."""
    task = app.tasks.get(message.task)
    return bool(task.effective("reject_on_worker_lost") if task
                else app.conf.task_reject_on_worker_lost)


def job_for(app: Runner, job_id: int, delivery: Delivery, message: Message,
            discard: str | None = None) -> Job:
    """The job that runs ``message``, with the delivery info tasks read from their request."""
    return Job(job_id, message, delivery_info_of(delivery, message),
               time_limit_of(app, message), dataclasses.replace(delivery, body=b""), discard)


def delivery_info_of(delivery: Delivery, message: Message) -> dict:
    """``request.delivery_info``: runner's keys, and Celery's (``exchange``, ``routing_key``),
    which tasks read to learn their queue."""
    return {"queue": delivery.queue, "priority": message.priority,
            "redelivered": delivery.redelivered, "exchange": "", "routing_key": delivery.queue}


@dataclass(frozen=True, slots=True)
class WorkerRef:
    """The sender of the worker-side signals sent where the worker object is not at hand (a
    pool's child): like it, it has ``app`` and ``hostname``."""

    app: Runner
    hostname: str | None


@dataclass
class SignalRequest(Request):
    """The ``request`` of ``task_received`` / ``task_revoked``: the task's request, with the
    names Celery's worker request also has (``name``, ``task_name``: the task's name)."""

    @property
    def name(self) -> str | None:
        return self.task

    @property
    def task_name(self) -> str | None:
        return self.task


def decoded_arguments(message: Message, accept: frozenset[str]) -> tuple[list, dict]:
    """``message``'s (args, kwargs), decompressed and decoded (raises if it cannot be)."""
    payload = message.payload
    if message.options.get("compression"):
        payload = serialization.decompress(payload, message.options["compression"])
    return call_arguments(serialization.loads(payload, message.content_type, accept))


def signal_request(app: Runner, message: Message, hostname: str | None,
                   delivery_info: dict | None = None) -> SignalRequest:
    """The request of ``message`` for ``task_received`` / ``task_revoked`` receivers, with its
    arguments where this process can decode them (else empty)."""
    try:
        args, kwargs = decoded_arguments(message, app.task_accept)
    except Exception:  # noqa: BLE001 - refused or undecodable: the job's result will say why
        args, kwargs = [], {}
    return SignalRequest(id=message.id, task=message.task, args=args, kwargs=kwargs,
                         retries=message.retries, eta=message.eta, expires=message.expires,
                         hostname=hostname, delivery_info=delivery_info or {},
                         headers=message.headers, root_id=message.root_id,
                         parent_id=message.parent_id, group=message.group_id,
                         called_directly=False, options=message.options)


def announce_received(sender: object, message: Message, hostname: str | None,
                      delivery_info: dict | None = None) -> tuple[list, dict]:
    """``task_received``, where the worker first holds ``message`` (callers test receivers);
    returns the arguments decoded for it (empty where they could not be)."""
    request = signal_request(sender.app, message, hostname, delivery_info)
    task_received.send(sender=sender, request=request)
    return request.args, request.kwargs


def announce_revoked(app: Runner, message: Message, hostname: str | None, why: str,
                     delivery_info: dict | None = None, signum: int | None = None) -> None:
    """``task_revoked`` for a message not run: revoked, expired, or its process killed
    (``why`` "terminated"); the sender is the task, or its name where it is not known here."""
    task_revoked.send(sender=app.tasks.get(message.task) or message.task,
                      request=signal_request(app, message, hostname, delivery_info),
                      terminated=why == "terminated", signum=signum,
                      expired=why == "expired")


def announce_failure(app: Runner, message: Message, exc: BaseException,
                     hostname: str | None) -> None:
    """``task_failure`` for a task that could not end by itself (its process died, or was
    killed at its hard time limit): sent by the main process, as Celery's (no traceback)."""
    request = signal_request(app, message, hostname)
    task_failure.send(sender=app.tasks.get(message.task) or message.task, task_id=message.id,
                      exception=exc, args=request.args, kwargs=request.kwargs, traceback=None,
                      einfo=ExceptionInfo((type(exc), exc, None)))


@dataclass(slots=True)
class JobResult:
    """What a pool hands back to the worker for one job (it crosses a pipe: keep it small)."""

    job_id: int
    state: str  # SUCCESS, FAILURE, RETRY, IGNORED, REJECTED
    record: ResultRecord | None  # None: nothing to store (ignore_result, IGNORED, REJECTED)
    retry_message: Message | None = None
    requeue: bool = False
    runtime: float = 0.0
    summary: str = ""  # repr of the value or the exception, for the log line
    traceback: str | None = None
    rss_kib: int = 0
    refused: bool = False  # never ran: unknown task, content not accepted, undecodable
    stored: bool = False  # the process that ran it stored the record and ran the middleware
    acked: bool = False  # ...and acked the message


def handle(app: Runner, job_id: int, message: Message, hostname: str,
           accept: frozenset[str], delivery_info: dict,
           arguments: tuple[list, dict] | None = None) -> JobResult:
    """Run ``message``'s task and describe the result (``arguments``: see :func:`prepare`)."""
    prepared = prepare(app, job_id, message, hostname, accept, delivery_info, arguments)
    if isinstance(prepared, JobResult):
        return prepared
    task, request, args, kwargs = prepared
    disarm = arm_soft_limit(request.soft_time_limit)
    try:
        outcome = run_task(task, request, args, kwargs)
    finally:
        disarm()
    return conclude(app, job_id, message, task, request, outcome, hostname)


def prepare(app: Runner, job_id: int, message: Message, hostname: str,
            accept: frozenset[str], delivery_info: dict,
            arguments: tuple[list, dict] | None = None
            ) -> JobResult | tuple[Task, Request, list, dict]:
    """What running ``message`` takes (its task, request and arguments), or the result of a
    message that cannot run (unknown task, refused content, revoked by a stamp).
    ``arguments``: what this process decoded of the message already with ``accept`` (for
    ``task_received``), used unless messages are signed (decoded only once verified)."""
    try:
        verifier = app.verifier
        if verifier is not None:  # before anything of the message is looked at
            verifier.verify(message)
        task = app.get_task(message.task)
        if arguments is None or verifier is not None:
            args, kwargs = decoded_arguments(message, accept)
        else:
            args, kwargs = arguments
        if "result_serializer" in message.options:  # one the worker knows, before it runs
            serialization.content_type_of(message.options["result_serializer"])
        request = Request(
            id=message.id, task=message.task, args=args, kwargs=kwargs,
            retries=message.retries, eta=message.eta, expires=message.expires,
            hostname=hostname, delivery_info=delivery_info, headers=message.headers,
            root_id=message.root_id, parent_id=message.parent_id, group=message.group_id,
            called_directly=False,
            time_limit=message.options.get("time_limit") or task.effective("time_limit"),
            soft_time_limit=(message.options.get("soft_time_limit")
                             or task.effective("soft_time_limit")),
            options=message.options, reply_to=message.reply_to)
        if message.headers and message.headers.get("stamped_headers"):
            stamp = revoked_by_stamp(app, message.headers)
            if stamp is not None:  # app.control.revoke_by_stamped_headers
                raise TaskRevokedError(f"revoked by stamped header {stamp}")
    except TaskRevokedError as exc:
        result = refused(app, job_id, message, exc, hostname)
        result.state = states.REVOKED
        if result.record is not None:
            result.record.state = states.REVOKED
        return result
    except Exception as exc:  # noqa: BLE001 - unknown task, refused or undecodable content
        if task_unknown.receivers and isinstance(exc, NotRegistered):
            task_unknown.send(sender=WorkerRef(app, hostname), name=message.task,
                              id=message.id, message=message, exc=exc)
        result = refused(app, job_id, message, exc, hostname)
        result.refused = True
        return result
    return task, request, args, kwargs


def conclude(app: Runner, job_id: int, message: Message, task: Task, request: Request,
             outcome: Outcome, hostname: str) -> JobResult:
    """The :class:`JobResult` of a task that ran: the record to store, the next attempt."""
    serializer = message.options.get("result_serializer") or app.conf.result_serializer
    ignore = message.options.get("ignore_result")
    if ignore is None:
        ignore = task.effective("ignore_result")
    if ignore and any(message.options.get(k) for k in ("chain", "link", "chord")):
        ignore = False  # what comes next needs the value
    record = None
    if not ignore and outcome.state in (states.SUCCESS, states.FAILURE, states.RETRY):
        try:
            record = build_record(task.name, request, outcome, serializer,
                                  app.conf.result_extended, hostname)
        except SerializationError as exc:  # a value that cannot be stored fails the task
            outcome = Outcome(states.FAILURE, exc, "".join(format_exception(exc)),
                              outcome.runtime)
            record = build_record(task.name, request, outcome, serializer,
                                  app.conf.result_extended, hostname)
    if record is not None:
        record.reply_to = message.reply_to  # rpc://: where the result goes
    retry_message = next_attempt(app, message, outcome) if outcome.state == states.RETRY else None
    summary = repr(outcome.value) if outcome.state != states.IGNORED else ""
    return JobResult(job_id, outcome.state, record, retry_message, outcome.requeue,
                     outcome.runtime, summary[:200], outcome.traceback)


def log_result(message: Message, result: JobResult) -> None:
    """The worker's log line for a finished job, written where the job ran, before its result
    is stored: whoever sees the result can find the line."""
    if result.state == states.SUCCESS:
        logger.info("Task %s[%s] succeeded in %.6fs: %s", message.task, message.id,
                    result.runtime, result.summary)
    elif result.state == states.RETRY:
        logger.info("Task %s[%s] retry: %s", message.task, message.id, result.summary)
    elif result.refused:
        logger.error("Task %s[%s] refused, not run: %s", message.task, message.id,
                     result.summary)
    elif result.state == states.FAILURE:
        logger.error("Task %s[%s] raised unexpected: %s\n%s", message.task, message.id,
                     result.summary, result.traceback or "")


def discarded(app: Runner, job: Job, hostname: str | None = None) -> JobResult:
    """The REVOKED result of a job revoked or expired before it started; or for a job that
    already ran (a redelivery of a message whose result is stored), that result again."""
    if job.finished is not None:
        logger.warning("Task %s[%s] was delivered again, but its result (%s) is stored: "
                       "not running it again", job.message.task, job.message.id,
                       job.finished.state)
        return JobResult(job.id, job.finished.state, job.finished, summary="(ran before)")
    logger.info("Discarding %s task %s[%s]", job.discard, job.message.task, job.message.id)
    if task_revoked.receivers:
        announce_revoked(app, job.message, hostname, job.discard or "revoked", job.delivery_info)
    result = refused(app, job.id, job.message, TaskRevokedError(job.discard or "revoked"),
                     hostname)
    result.state = states.REVOKED
    if result.record is not None:
        result.record.state = states.REVOKED
    return result


def refused(app: Runner, job_id: int, message: Message, exc: BaseException,
            hostname: str | None = None) -> JobResult:
    """A FAILURE result for a message that cannot run at all (the reason is the exception)."""
    request = Request(id=message.id, task=message.task, retries=message.retries,
                      hostname=hostname)
    summary = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, SecurityError):  # a forger must not overwrite a real task's result
        return JobResult(job_id, states.FAILURE, None, summary=summary)
    outcome = Outcome(states.FAILURE, exc, None)
    record = build_record(message.task, request, outcome, app.conf.result_serializer)
    record.reply_to = message.reply_to
    return JobResult(job_id, states.FAILURE, record, summary=summary)


def next_attempt(app: Runner, message: Message, outcome: Outcome) -> Message:
    """The message for the next try of a task that asked to be retried."""
    retry = outcome.retry
    assert retry is not None
    now = time.time()
    eta = retry.eta if retry.eta is not None else now + float(retry.countdown or 0)
    changes: dict = {"retries": message.retries + 1, "eta": eta, "sent_at": 0.0, "signed": None}
    if retry.retry_args is not None or retry.retry_kwargs is not None:
        compression = message.options.get("compression")
        payload = serialization.decompress(message.payload, compression)
        args, kwargs = serialization.loads(payload, message.content_type)
        args = list(retry.retry_args) if retry.retry_args is not None else args
        kwargs = dict(retry.retry_kwargs) if retry.retry_kwargs is not None else kwargs
        content_type, payload = serialization.dumps([args, kwargs], message.content_type)
        changes["content_type"] = content_type
        changes["payload"] = serialization.compress(payload, compression)
    for key in ("queue", "priority"):
        if retry.options.get(key) is not None:
            changes[key] = retry.options[key]
    return dataclasses.replace(message, **changes)


# -- soft time limits ---------------------------------------------------------------------------


def arm_soft_limit(seconds: float | None) -> Callable[[], None]:
    """Raise SoftTimeLimitExceeded in the running task after ``seconds``; return a disarm.

    In a process's main thread this is SIGALRM (exact, and interrupts sleeps); in a pool thread
    the exception is injected asynchronously and is seen at the next Python bytecode."""
    if not seconds:
        return _noop
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGALRM, _raise_soft_limit)
        signal.setitimer(signal.ITIMER_REAL, float(seconds))

        def disarm() -> None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        return disarm
    arm_in_pool = getattr(pool_thread, "arm_soft_limit", None)
    if arm_in_pool is not None:  # a thread pool's thread: the pool keeps the time
        return arm_in_pool(float(seconds))
    thread_id = threading.get_ident()
    timer = threading.Timer(float(seconds), _inject, (thread_id, SoftTimeLimitExceeded))
    timer.daemon = True
    timer.start()
    return timer.cancel


#: ``pool_thread.arm_soft_limit(seconds) -> disarm``, set by a thread pool in its threads
pool_thread = threading.local()


def _raise_soft_limit(signum, frame):
    raise SoftTimeLimitExceeded("SoftTimeLimitExceeded()")


def _inject(thread_id: int, exc_type: type[BaseException] | None) -> None:
    """Raise ``exc_type`` in thread ``thread_id`` at its next bytecode (None: cancel that);
    in the coroutine it runs on its event loop, if it runs one, at once."""
    if exc_type is not None and interrupt_coroutine(thread_id, exc_type):
        return
    exc = ctypes.py_object(exc_type) if exc_type is not None else None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), exc)


def _noop() -> None:
    return None


def current_rss_kib() -> int:
    """Resident memory of this process in KiB (Linux /proc; 0 where unknown)."""
    try:
        with open(f"/proc/{os.getpid()}/statm", "rb") as f:
            pages = int(f.read().split()[1])
        return pages * (os.sysconf("SC_PAGE_SIZE") // 1024)
    except (OSError, ValueError, IndexError):
        return 0

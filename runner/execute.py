"""Running one task and describing what happened, shared by the worker and eager mode.

``run_task`` never raises for what the task does: success, failure, retry, reject and ignore all
come back as an :class:`Outcome`, which the caller turns into a stored result and a broker action.
"""

from __future__ import annotations

import functools
import inspect
import logging
import random
import time
import traceback as tb_module
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runner import serialization, states
from runner.backends.base import ResultRecord
from runner.einfo import ExceptionInfo
from runner.exceptions import Ignore, MaxRetriesExceededError, Reject, Retry
from runner.signals import task_failure, task_postrun, task_prerun, task_retry, task_success
from runner.task import Request, Task
from runner.utils.aio import run_coroutine

if TYPE_CHECKING:  # pragma: no cover
    from runner.result import EagerResult

logger = logging.getLogger("runner.worker")


@dataclass(slots=True)
class Outcome:
    state: str  # SUCCESS, FAILURE, RETRY, IGNORED or "REJECTED"
    value: Any = None  # the return value, or the exception
    traceback: str | None = None
    runtime: float = 0.0
    retry: Retry | None = None
    requeue: bool = False  # for REJECTED


def backoff_countdown(factor: float, retries: int, maximum: float, jitter: bool) -> float:
    """Exponential backoff as Celery computes it: ``factor * 2**retries``, capped, and with
    full jitter a random value between 0 and that."""
    countdown = min(maximum, factor * (2 ** retries))
    if jitter:
        countdown = random.uniform(0, countdown)  # not randrange: a 0.4 s backoff is not 0
    return max(0.0, float(countdown))


def run_task(task: Task, request: Request, args: list, kwargs: dict) -> Outcome:
    """Run ``task`` with ``request`` as its ``self.request``, here, in the process that runs
    it: the task_prerun signal, the task class's before_start, the task, its class's
    handlers (on_success / on_failure / on_retry, after_return), then the outcome's signals
    (success, failure or retry; postrun), as Celery's tracer. An ``async def`` task runs to
    its end on this thread's event loop (:func:`runner.utils.aio.run_coroutine`)."""
    handled = _has_handlers(type(task))
    task.push_request(request)
    try:
        _before(task, request, args, kwargs, handled)
        outcome = _call(task, request, args, kwargs)
        _finish(task, request, args, kwargs, outcome, handled)
        return outcome
    finally:
        task.pop_request()


async def arun_task(task: Task, request: Request, args: list, kwargs: dict,
                    wrap: Callable[[Any], Awaitable[Any]] | None = None) -> Outcome:
    """:func:`run_task` on a running event loop (the asyncio pool): an ``async def`` task is
    awaited (through ``wrap``, which may make it interruptible), never blocking the loop.
    Signals and handlers run as for a plain task, in the loop's thread."""
    handled = _has_handlers(type(task))
    task.push_request(request)
    try:
        _before(task, request, args, kwargs, handled)
        start = time.perf_counter()
        try:
            value = task.run(task, *args, **kwargs) if task.bind else task.run(*args, **kwargs)
            if inspect.isawaitable(value):
                value = await (wrap(value) if wrap is not None else value)
            outcome = Outcome(states.SUCCESS, value, runtime=time.perf_counter() - start)
        except Exception as exc:  # noqa: BLE001 - the task's failure is data, not our crash
            outcome = _outcome_of(task, request, exc, start)
        _finish(task, request, args, kwargs, outcome, handled)
        return outcome
    finally:
        task.pop_request()


def is_async(task: Task) -> bool:
    """Whether ``task``'s body is an ``async def`` (a coroutine function)."""
    run = task.__dict__.get("run") or type(task).run
    return inspect.iscoroutinefunction(run)


def _before(task: Task, request: Request, args: list, kwargs: dict, handled: bool) -> None:
    if task_prerun.receivers:
        task_prerun.send(sender=task, task_id=request.id, task=task, args=args, kwargs=kwargs)
    if handled:
        _call_handler(task, request.id, "before_start", request.id, args, kwargs)


def _finish(task: Task, request: Request, args: list, kwargs: dict, outcome: Outcome,
            handled: bool) -> None:
    if handled:
        _after(task, request, args, kwargs, outcome)
    if (task_postrun.receivers or task_success.receivers or task_failure.receivers
            or task_retry.receivers):
        _announce(task, request, args, kwargs, outcome)


def _announce(task: Task, request: Request, args: list, kwargs: dict, outcome: Outcome) -> None:
    """The outcome's signals, as Celery's tracer sends them."""
    state, value = outcome.state, outcome.value
    if state == states.SUCCESS:
        if task_success.receivers:
            task_success.send(sender=task, result=value)
    elif state == states.FAILURE:
        if task_failure.receivers:
            task_failure.send(sender=task, task_id=request.id, exception=value, args=args,
                              kwargs=kwargs, traceback=value.__traceback__,
                              einfo=ExceptionInfo.of(value, outcome.traceback))
    elif state == states.RETRY:
        reason = outcome.retry or value
        if task_retry.receivers:
            task_retry.send(sender=task, request=request, reason=reason,
                            einfo=ExceptionInfo.of(reason))
        value = reason  # (postrun's retval is the Retry, as in Celery)
    if task_postrun.receivers:
        task_postrun.send(sender=task, task_id=request.id, task=task, args=args, kwargs=kwargs,
                          retval=value, state=state)


def _call(task: Task, request: Request, args: list, kwargs: dict) -> Outcome:
    start = time.perf_counter()
    try:
        value = task.run(task, *args, **kwargs) if task.bind else task.run(*args, **kwargs)
        if inspect.iscoroutine(value):  # an async def task outside the asyncio pool
            value = run_coroutine(value)
        return Outcome(states.SUCCESS, value, runtime=time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001 - the task's failure is data, not our crash
        return _outcome_of(task, request, exc, start)


def _outcome_of(task: Task, request: Request, exc: Exception, start: float) -> Outcome:
    """The outcome of a task that raised ``exc``: a retry, ignored, rejected, or failed."""
    runtime = time.perf_counter() - start
    if isinstance(exc, Retry):
        return Outcome(states.RETRY, exc.exc or exc, _format_tb(exc.exc or exc), runtime,
                       retry=exc)
    if isinstance(exc, Ignore):
        return Outcome(states.IGNORED, runtime=runtime)
    if isinstance(exc, Reject):
        return Outcome("REJECTED", exc, runtime=runtime, requeue=exc.requeue)
    retry = _autoretry(task, request, exc)
    if retry is not None:
        return Outcome(states.RETRY, exc, _format_tb(exc), runtime, retry=retry)
    return Outcome(states.FAILURE, exc, _format_tb(exc), runtime)


_HANDLERS = ("before_start", "on_success", "on_failure", "on_retry", "after_return")


@functools.cache
def _has_handlers(cls: type) -> bool:
    """Whether a task class overrides any handler (the plain case costs one cached look-up)."""
    return any(getattr(cls, name) is not getattr(Task, name) for name in _HANDLERS)


def _after(task: Task, request: Request, args: list, kwargs: dict, outcome: Outcome) -> None:
    """The handlers for ``outcome``, in Celery's order: the state's own, then after_return."""
    einfo = None
    if outcome.state == states.SUCCESS:
        _call_handler(task, request.id, "on_success", outcome.value, request.id, args, kwargs)
    elif outcome.state in (states.FAILURE, states.RETRY):
        einfo = ExceptionInfo.of(outcome.value, outcome.traceback)
        name = "on_failure" if outcome.state == states.FAILURE else "on_retry"
        _call_handler(task, request.id, name, outcome.value, request.id, args, kwargs, einfo)
    if outcome.state != states.RETRY:
        _call_handler(task, request.id, "after_return", outcome.state, outcome.value,
                      request.id, args, kwargs, einfo)


def _call_handler(task: Task, task_id: str | None, name: str, *arguments: Any) -> None:
    """A handler that raises is logged with the task; it does not change the outcome."""
    try:
        getattr(task, name)(*arguments)
    except Exception:  # noqa: BLE001 - user code: said, not fatal
        logger.exception("Task %s[%s]: its %s handler raised", task.name, task_id, name)


def _autoretry(task: Task, request: Request, exc: Exception) -> Retry | None:
    step = request.options.get("step_retries")  # a pipeline step's `retries:`
    if step:
        if request.retries >= step["max_retries"]:
            return None
        backoff = step.get("backoff")
        if backoff:
            factor = 1 if backoff is True else float(backoff)
            countdown = backoff_countdown(factor, request.retries, task.retry_backoff_max,
                                          task.retry_jitter)
        else:
            countdown = float(step.get("delay") or 0)
        return Retry(exc=exc, when=countdown, countdown=countdown)
    if not task.autoretry_for or not isinstance(exc, task.autoretry_for):
        return None
    if task.dont_autoretry_for and isinstance(exc, tuple(task.dont_autoretry_for)):
        return None
    options = dict(task.retry_kwargs or {})
    if task.retry_backoff and "countdown" not in options:
        factor = 1 if task.retry_backoff is True else float(task.retry_backoff)
        options["countdown"] = backoff_countdown(factor, request.retries,
                                                 task.retry_backoff_max, task.retry_jitter)
    try:
        task.retry(exc=exc, **options)
    except Retry as retry:
        return retry
    except (MaxRetriesExceededError, Exception):  # max_retries reached: fail with exc
        return None
    return None  # pragma: no cover - retry() always raises with throw=True


def _format_tb(exc: BaseException | None) -> str | None:
    if exc is None:
        return None
    tb = exc.__traceback__
    if tb is not None and tb.tb_frame.f_code is _call.__code__:
        tb = tb.tb_next  # start at the task, not at runner's call of it
    return "".join(tb_module.format_exception(type(exc), exc, tb))


def build_record(task_name: str, request: Request, outcome: Outcome, serializer: str,
                 extended: bool = False, hostname: str | None = None) -> ResultRecord:
    """The result record for an outcome: the value (or the exception) in ``serializer``."""
    if outcome.state == states.SUCCESS:
        content_type, payload = serialization.dumps(outcome.value, serializer)
    else:
        content_type, payload = serialization.dumps(
            serialization.exception_to_dict(outcome.value), serializer)
    meta: dict[str, Any] = {"name": task_name, "retries": request.retries}
    if request.children:  # what it sent (AsyncResult.children): ids, groups as their members
        meta["children"] = [_stored_result(child) for child in request.children]
    stamped = request.headers.get("stamped_headers") if request.headers else None
    if stamped:  # canvas stamps, as Celery keeps them in the result's meta
        meta["stamped_headers"] = list(stamped)
        meta.update({name: request.headers.get(name) for name in stamped})
    if extended:
        meta.update(args=request.args, kwargs=request.kwargs, worker=hostname or request.hostname,
                    queue=request.delivery_info.get("queue"))
    return ResultRecord(request.id or "", outcome.state, content_type, payload,
                        outcome.traceback, time.time(), meta)


def _stored_result(result: Any) -> Any:
    members = getattr(result, "results", None)
    if members is not None:
        return ["group", result.id, [_stored_result(m) for m in members]]
    return result.id


def apply_eagerly(task: Task, args: list, kwargs: dict, options: dict[str, Any]) -> EagerResult:
    """Run ``task`` in this process now, retries included, as ``task_always_eager`` does."""
    from runner.message import Message
    from runner.result import EagerResult

    task_id = options.get("task_id") or Message.new_id()
    retries = 0
    while True:
        request = Request(id=task_id, task=task.name, args=args, kwargs=kwargs, retries=retries,
                          is_eager=True, called_directly=False, headers=options.get("headers")
                          or {}, delivery_info={"is_eager": True})
        outcome = run_task(task, request, args, kwargs)
        if outcome.state != states.RETRY or outcome.retry is None:
            break
        retries += 1  # eager retries run at once, as in Celery
        if outcome.retry.retry_args is not None:
            args = list(outcome.retry.retry_args)
        if outcome.retry.retry_kwargs is not None:
            kwargs = dict(outcome.retry.retry_kwargs)
    state = states.SUCCESS if outcome.state in (states.SUCCESS, states.IGNORED) else (
        states.FAILURE)
    result = EagerResult(task_id, outcome.value, state, outcome.traceback, app=task.app,
                         task_name=task.name)
    if state == states.FAILURE and task.app.conf.task_eager_propagates:
        result.maybe_throw()
    return result

"""Task: a registered function with Celery's calling API (``delay``, ``apply_async``, ``retry``).

A Task holds options only; sending goes through ``app.send_task`` and running through
``runner.execute``, so the same code path serves the worker and eager mode.
"""

from __future__ import annotations

import contextvars
import inspect
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from runner import serialization
from runner._state import Proxy, running
from runner.exceptions import MaxRetriesExceededError, Retry, RunnerError, SerializationError
from runner.ratelimit import parse_rate
from runner.utils.aio import in_client_thread

if TYPE_CHECKING:  # pragma: no cover
    from runner.app import Runner
    from runner.result import AsyncResult, EagerResult


@dataclass
class Request:
    """What a running task knows about its own call: ``self.request`` in a bound task."""

    id: str | None = None
    task: str | None = None
    args: list = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)
    retries: int = 0
    eta: float | None = None
    expires: float | None = None
    hostname: str | None = None
    delivery_info: dict = field(default_factory=dict)
    headers: dict = field(default_factory=dict)
    root_id: str | None = None
    parent_id: str | None = None
    group: str | None = None
    is_eager: bool = False
    called_directly: bool = True
    time_limit: float | None = None
    soft_time_limit: float | None = None
    options: dict = field(default_factory=dict)  # the message's options, for retry()
    reply_to: str | None = None  # the caller's reply queue (rpc://)
    children: list = field(default_factory=list)  # results this task sent (AsyncResult.children)

    @property
    def correlation_id(self) -> str | None:
        """Celery's name for the id a reply is matched with: the task id."""
        return self.id

    @property
    def chord(self) -> dict | None:
        """The chord this task is a header part of (its body and size), as Celery's."""
        return self.options.get("chord")

    @property
    def stamps(self) -> dict:
        """The stamps of this task (``sig.stamp(...)``), as Celery's ``request.stamps``."""
        headers = self.headers or {}
        return {name: headers.get(name) for name in headers.get("stamped_headers") or ()}

    @property
    def stamped_headers(self) -> list:
        return list((self.headers or {}).get("stamped_headers") or ())

    @property
    def group_index(self) -> int | None:
        return self.options.get("group_index")


_request_stack: contextvars.ContextVar[list[Request]] = contextvars.ContextVar("runner_requests")


class _RequestStack:
    """The requests of the running tasks, innermost last: per thread, and per asyncio task
    where an asyncio pool runs many jobs on one thread (:func:`fresh_stacks`)."""

    __slots__ = ()

    @property
    def stack(self) -> list[Request]:
        stack = _request_stack.get(None)
        if stack is None:
            stack = []
            _request_stack.set(stack)
        return stack


def fresh_stacks() -> None:
    """Give the current context (an asyncio task about to run a job) its own request and
    running-task stacks, so that concurrent jobs on one loop never see each other's."""
    _request_stack.set([])
    running.fresh()


_requests = _RequestStack()


def _running_task() -> Task | None:
    tasks = running.tasks
    return tasks[-1] if tasks else None


#: the task running in this thread (None outside a task), as Celery's ``current_task``
current_task = Proxy(_running_task, "current_task")

#: Options a task accepts in ``@app.task(...)``, with their defaults (None = from settings).
TASK_OPTIONS: dict[str, Any] = {
    "name": None, "bind": False, "max_retries": None, "default_retry_delay": None,
    "autoretry_for": (), "dont_autoretry_for": (), "retry_kwargs": None,
    "retry_backoff": False, "retry_backoff_max": 600, "retry_jitter": True,
    "acks_late": None, "reject_on_worker_lost": None, "time_limit": None,
    "soft_time_limit": None, "queue": None, "priority": None, "ignore_result": None,
    "serializer": None, "track_started": None, "rate_limit": None, "expires": None,
    "rate_limit_scope": None,
    "typing": True, "base": None, "throws": (),
    "hide_args": False,  # logs, events, inspect and dead letters show '***' for its arguments
}


class Task:
    """A task of an app: made by ``@app.task`` from a function, or written as a class with a
    ``run`` method (``class Mine(app.Task)``, then ``app.register_task(Mine())``). A subclass
    passed as ``base=`` (or ``task_cls=``) gives its tasks shared code and Celery's handlers
    (``before_start``, ``on_success``, ``on_failure``, ``on_retry``, ``after_return``).
    Options are class attributes; ``@app.task(...)`` options override them per task."""

    app: Runner | None = None  # set on ``app.Task`` subclasses: their instances belong to it

    def __init__(self, app: Runner | None = None, fun: Any = None, **options: Any):
        unknown = set(options) - set(TASK_OPTIONS)
        if unknown:
            raise TypeError(f"@app.task got unknown option(s) {sorted(unknown)}; "
                            f"allowed: {sorted(TASK_OPTIONS)}")
        if app is None:
            from runner._state import current_app

            app = type(self).app or current_app()
        self.app = app
        for key, value in options.items():
            setattr(self, key, value)
        if self.rate_limit and self.rate_limit_scope == "global":
            parse_rate(self.rate_limit)  # ValueError now, not at the first call
        elif self.rate_limit_scope not in (None, "worker"):
            raise ValueError(f"rate_limit_scope={self.rate_limit_scope!r}: 'global' (every "
                             f"worker and host together) is the scope runner enforces")
        elif self.rate_limit:
            warnings.warn(f"rate_limit={self.rate_limit!r}: runner does not enforce rate "
                          f"limits per worker; the task runs without one (rate_limit_scope="
                          f"'global' enforces it across every worker; see the README's "
                          f"'Coming from Celery')", stacklevel=3)
        if fun is None:  # a class-based task: its own run() method
            if type(self).run is Task.run:
                raise TypeError(f"{type(self).__name__}: a task class needs a run() method, "
                                f"or make the task with @app.task from a function")
            fun = type(self).run
            self.bind = False  # (run is a method: it gets self already)
            label, module = type(self).__name__, type(self).__module__
        else:
            self.run = fun
            label, module = fun.__name__, fun.__module__
            self.__doc__ = fun.__doc__
            self.__wrapped__ = fun
        self.name: str = self.name or app.gen_task_name(label, module)
        #: Celery's ``max_retries=None``: retry forever, whatever task_max_retries says
        self._retry_forever = "max_retries" in options and options["max_retries"] is None
        self.autoretry_for = tuple(self.autoretry_for or ())
        self.__name__ = label
        self.__module__ = module

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """The task's body (a class-based task defines it)."""
        raise NotImplementedError

    # -- handlers, as Celery's (no-ops here; a base class overrides what it needs) -----------

    def before_start(self, task_id: str, args: tuple, kwargs: dict) -> None:
        """Called in the worker just before the task runs."""

    def on_success(self, retval: Any, task_id: str, args: tuple, kwargs: dict) -> None:
        """Called in the worker when the task returned ``retval``."""

    def on_failure(self, exc: BaseException, task_id: str, args: tuple, kwargs: dict,
                   einfo: Any) -> None:
        """Called in the worker when the task failed (``einfo.traceback`` is the text)."""

    def on_retry(self, exc: BaseException, task_id: str, args: tuple, kwargs: dict,
                 einfo: Any) -> None:
        """Called in the worker when the task is to be retried."""

    def after_return(self, status: str, retval: Any, task_id: str, args: tuple, kwargs: dict,
                     einfo: Any) -> None:
        """Called in the worker after the task ended, whatever the outcome."""

    def __repr__(self) -> str:
        return f"<@task: {self.name} of {self.app.main or 'runner'}>"

    # -- running here -----------------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task in this process, as a plain function call (``add(2, 2)``)."""
        self.push_request(Request(args=list(args), kwargs=dict(kwargs), task=self.name))
        try:
            if self.bind:
                return self.run(self, *args, **kwargs)
            return self.run(*args, **kwargs)
        finally:
            self.pop_request()

    @property
    def request(self) -> Request:
        stack = _requests.stack
        return stack[-1] if stack else Request(task=self.name)

    def push_request(self, request: Request) -> None:
        _requests.stack.append(request)
        running.tasks.append(self)

    def pop_request(self) -> None:
        _requests.stack.pop()
        running.tasks.pop()

    # -- sending ----------------------------------------------------------------------------

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Shortcut for ``apply_async(args, kwargs)``."""
        return self.apply_async(args, kwargs)

    def apply_async(self, args: tuple | list | None = None, kwargs: dict | None = None,
                    **options: Any) -> AsyncResult:
        """Send the task to a worker. Options as Celery: countdown, eta, expires, queue,
        priority, task_id, serializer, headers, ignore_result, time_limit, soft_time_limit,
        link, link_error. With ``task_always_eager`` it runs here and returns an EagerResult."""
        if self.typing:
            self.check_arguments(args, kwargs)
        if self.app.conf.task_always_eager:
            return self.apply(args, kwargs, **options)
        result = self.app.send_task(self.name, args, kwargs, _task=self, **options)
        stack = _requests.stack
        if stack and not stack[-1].called_directly:  # sent by a running task: its child
            stack[-1].children.append(result)
        return result

    async def adelay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """``await add.adelay(2, 2)``: :meth:`delay` for async code."""
        return await self.aapply_async(args, kwargs)

    async def aapply_async(self, args: tuple | list | None = None, kwargs: dict | None = None,
                           **options: Any) -> AsyncResult:
        """:meth:`apply_async` for async code (Django's ``a`` prefix): sent from the async
        client's thread, so the caller's event loop never blocks; when the await returns the
        message is safe in the broker (``app.flush_broker``)."""
        return await in_client_thread(self._send_and_flush, args, kwargs, options)

    def _send_and_flush(self, args: Any, kwargs: Any, options: dict) -> AsyncResult:
        result = self.apply_async(args, kwargs, **options)
        self.app.flush_broker()
        return result

    def check_arguments(self, args: tuple | list | None, kwargs: dict | None) -> None:
        """Celery's ``typing``: a call the function cannot accept fails here, in the caller,
        with a TypeError, rather than later on a worker."""
        signature = self.__dict__.get("_signature")
        if signature is None:
            signature = self._signature = inspect.signature(self.run)
        bound = (self,) if self.bind else ()
        try:
            signature.bind(*bound, *(args or ()), **(kwargs or {}))
        except TypeError as exc:
            raise TypeError(f"{self.name}() {exc}") from None

    def apply(self, args: tuple | list | None = None, kwargs: dict | None = None,
              **options: Any) -> EagerResult:
        """Run the task here and now, through the worker's own execution path."""
        return self.app.apply_eagerly(self, list(args or ()), dict(kwargs or {}), options)

    # -- canvas -----------------------------------------------------------------------------

    def signature(self, args: Any = None, kwargs: dict | None = None, **options: Any) -> Any:
        """This task's call as data (``runner.canvas.Signature``)."""
        immutable = options.pop("immutable", False)
        return self.app.signature(self.name, args, kwargs, immutable=immutable, **options)

    def s(self, *args: Any, **kwargs: Any) -> Any:
        """``add.s(2, 2)``: a signature; chained, the previous result is prepended."""
        return self.signature(args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Any:
        """An immutable signature: chained, it ignores the previous result."""
        return self.signature(args, kwargs, immutable=True)

    def map(self, it: Any) -> Any:
        """``add.map([1, 2])``: one task calling this one for each item (``xmap``)."""
        return self.s()._kind("xmap", it)

    def starmap(self, it: Any) -> Any:
        """``add.starmap([(2, 2), (4, 4)])``: one task calling this one with each tuple."""
        return self.s()._kind("xstarmap", it)

    def chunks(self, it: Any, n: int) -> Any:
        """``add.chunks(zip(a, b), 10)``: the calls in tasks of ``n`` calls each."""
        return self.s()._kind("chunks", it, n)

    def replace(self, sig: Any) -> Any:
        """Replace this running task by ``sig`` (a task, chain, group or chord): the
        replacement's final result gets this task's id, and this task's place in its chain,
        chord, links and errbacks move to it; this task stores no result. As Celery's."""
        return self.app.signature(sig)._replace_task(self)

    def on_replace(self, sig: Any) -> Any:
        """Called by :meth:`replace` (a subclass may override it, as in Celery)."""
        return sig

    def AsyncResult(self, task_id: str) -> AsyncResult:  # noqa: N802 - Celery's name
        return self.app.AsyncResult(task_id, task_name=self.name)

    # -- retrying ---------------------------------------------------------------------------

    def retry(self, args: list | None = None, kwargs: dict | None = None,
              exc: BaseException | None = None, throw: bool = True, eta: datetime | None = None,
              countdown: float | None = None, max_retries: int | None = None,
              **options: Any) -> Retry:
        """Ask for this task to run again later; raises :class:`Retry` (catch nothing).

        Past ``max_retries`` the original exception is raised (or MaxRetriesExceededError)."""
        request = self.request
        limit = max_retries if max_retries is not None else self.effective("max_retries")
        if limit is not None and request.retries >= limit:
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(
                f"Can't retry {self.name}[{request.id}] args:{request.args} "
                f"kwargs:{request.kwargs}: max_retries={limit} reached")
        if countdown is None and eta is None:
            countdown = self.effective("default_retry_delay")
        when = self.app.to_timestamp(eta) if eta is not None else None
        signal = Retry(exc=exc, when=countdown if when is None else when, countdown=countdown,
                       eta=when, retry_args=args, retry_kwargs=kwargs, options=options)
        if throw:
            raise signal
        return signal

    _annotated = False

    def annotate(self) -> None:
        """Apply Celery's ``task_annotations`` to this task (once, when an option is first
        read): a dict of task name (or ``'*'``) -> attributes, a list of such dicts, or
        objects with an ``annotate(task)`` method returning such a dict."""
        self._annotated = True
        annotations = self.app.conf.task_annotations
        if not annotations:
            return
        for entry in annotations if isinstance(annotations, list | tuple) else [annotations]:
            if hasattr(entry, "annotate"):
                found = entry.annotate(self)
            elif isinstance(entry, dict):
                found = entry.get(self.name) or entry.get("*")
            else:
                raise RunnerError(f"task_annotations: {entry!r} is neither a dict of task "
                                  f"name -> attributes nor an object with annotate(task)")
            for key, value in (found or {}).items():
                setattr(self, key.lstrip("@"), value)

    # -- reporting progress -----------------------------------------------------------------

    def update_state(self, task_id: str | None = None, state: str | None = None,
                     meta: Any = None, **_ignored: Any) -> None:
        """Store a state (``'PROGRESS'``, or any name of yours) and ``meta`` for a task, by
        default the running one, as Celery's: ``AsyncResult(id).state`` and ``.info`` read
        them from any process until the task's final result replaces them."""
        from runner.backends.base import ResultRecord

        request = self.request
        task_id = task_id or request.id
        if not task_id:
            raise RunnerError(f"{self.name}.update_state(): no task id (the task is not "
                              f"running as a task: pass task_id=)")
        if not isinstance(state, str) or not state:
            raise RunnerError(f"{self.name}.update_state(): state must be a non-empty string "
                              f"such as 'PROGRESS', not {state!r}")
        serializer = self.app.conf.result_serializer
        try:
            content_type, payload = serialization.dumps(meta, serializer)
        except SerializationError as exc:
            raise SerializationError(f"{self.name}.update_state(state={state!r}): meta cannot "
                                     f"be stored with the {serializer!r} result serializer: "
                                     f"{exc}") from None
        record = ResultRecord(task_id, state, content_type, payload, date_done=time.time(),
                              meta={"name": self.name}, reply_to=request.reply_to)
        self.app.backend.store([record])

    async def aupdate_state(self, task_id: str | None = None, state: str | None = None,
                            meta: Any = None, **_ignored: Any) -> None:
        """:meth:`update_state` for async code: stored from the async client's thread (in
        the caller's context, so the running task is still the default), and the event loop,
        with every other task on it, does not wait for the backend meanwhile."""
        await in_client_thread(self.update_state, task_id, state, meta)

    def effective(self, option: str) -> Any:
        """The task's own option (``task_annotations`` applied), or the app setting it
        defaults to."""
        if not self._annotated:
            self.annotate()
        value = getattr(self, option)
        if value is not None or (option == "max_retries" and self._retry_forever):
            return value
        setting = _SETTING_FOR_OPTION.get(option)
        return getattr(self.app.conf, setting) if setting else None


_SETTING_FOR_OPTION = {
    "max_retries": "task_max_retries",
    "default_retry_delay": "task_default_retry_delay",
    "acks_late": "task_acks_late",
    "reject_on_worker_lost": "task_reject_on_worker_lost",
    "time_limit": "task_time_limit",
    "soft_time_limit": "task_soft_time_limit",
    "ignore_result": "task_ignore_result",
    "serializer": "task_serializer",
    "track_started": "task_track_started",
    "priority": "task_default_priority",
}


for _option, _default in TASK_OPTIONS.items():  # defaults a subclass or @app.task overrides
    if _option != "name":
        setattr(Task, _option, _default)
Task.name = None  # type: ignore[assignment]

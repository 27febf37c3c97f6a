"""Task: a registered function with Celery's calling API (``delay``, ``apply_async``, ``retry``).

A Task holds options only; sending goes through ``app.send_task`` and running through
``runner.execute``, so the same code path serves the worker and eager mode.
"""

from __future__ import annotations

import inspect
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from runner.exceptions import MaxRetriesExceededError, Retry

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


class _RequestStack(threading.local):
    def __init__(self) -> None:
        self.stack: list[Request] = []


_requests = _RequestStack()

#: Options a task accepts in ``@app.task(...)``, with their defaults (None = from settings).
TASK_OPTIONS: dict[str, Any] = {
    "name": None, "bind": False, "max_retries": None, "default_retry_delay": None,
    "autoretry_for": (), "dont_autoretry_for": (), "retry_kwargs": None,
    "retry_backoff": False, "retry_backoff_max": 600, "retry_jitter": True,
    "acks_late": None, "reject_on_worker_lost": None, "time_limit": None,
    "soft_time_limit": None, "queue": None, "priority": None, "ignore_result": None,
    "serializer": None, "track_started": None, "rate_limit": None, "expires": None,
    "typing": True, "base": None, "throws": (),
}


class Task:
    """A task of an app. Created by ``@app.task``; call it to run it here and now."""

    def __init__(self, app: Runner, fun, **options: Any):
        unknown = set(options) - set(TASK_OPTIONS)
        if unknown:
            raise TypeError(f"@app.task got unknown option(s) {sorted(unknown)}; "
                            f"allowed: {sorted(TASK_OPTIONS)}")
        self.app = app
        self.run = fun
        for key, default in TASK_OPTIONS.items():
            setattr(self, key, options.get(key, default))
        self.name: str = options.get("name") or app.gen_task_name(fun.__name__, fun.__module__)
        #: Celery's ``max_retries=None``: retry forever, whatever task_max_retries says
        self._retry_forever = "max_retries" in options and options["max_retries"] is None
        self.autoretry_for = tuple(self.autoretry_for or ())
        self.__doc__ = fun.__doc__
        self.__name__ = fun.__name__
        self.__module__ = fun.__module__
        self.__wrapped__ = fun

    def __repr__(self) -> str:
        return f"<@task: {self.name} of {self.app.main or 'runner'}>"

    # -- running here -----------------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task in this process, as a plain function call (``add(2, 2)``)."""
        _requests.stack.append(Request(args=list(args), kwargs=dict(kwargs), task=self.name))
        try:
            if self.bind:
                return self.run(self, *args, **kwargs)
            return self.run(*args, **kwargs)
        finally:
            _requests.stack.pop()

    @property
    def request(self) -> Request:
        stack = _requests.stack
        return stack[-1] if stack else Request(task=self.name)

    def push_request(self, request: Request) -> None:
        _requests.stack.append(request)

    def pop_request(self) -> None:
        _requests.stack.pop()

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
        return self.app.send_task(self.name, args, kwargs, _task=self, **options)

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

    def effective(self, option: str) -> Any:
        """The task's own option, or the app setting it defaults to."""
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

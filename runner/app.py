"""Runner (alias ``Celery``): the registry of tasks, the settings, and sending.

The app does no I/O of its own beyond opening the broker and backend named by its settings, once
per process (a forked child opens its own).
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from runner import _state, security, serialization, states
from runner.backends.base import ResultBackend
from runner.backends.registry import backend_class
from runner.brokers.base import Broker
from runner.canvas import (
    BUILTIN_TASKS,
    CanvasMiddleware,
    Signature,
    apply_links_eagerly,
    maybe_signature,
    register_builtins,
)
from runner.config import Conf
from runner.config.urls import EMBEDDED_DEFAULT_URL, backend_following, parse_url
from runner.connections import Connections, transport_options
from runner.control.client import Control
from runner.events import Events
from runner.events.sent import announce_sent
from runner.exceptions import (
    AppImportError,
    NotRegistered,
)
from runner.execute import apply_eagerly
from runner.idempotency import claim
from runner.message import Message
from runner.middleware import Middleware
from runner.pipeline.finish import PipelineMiddleware
from runner.publish import publish
from runner.ratelimit import book
from runner.result import AsyncResult, EagerResult
from runner.routing import Router
from runner.sending import build_message, requeue
from runner.signals import import_modules
from runner.task import Task
from runner.utils.aio import in_client_thread

#: where broker and results live when nothing is configured: no server needed
DEFAULT_URL = EMBEDDED_DEFAULT_URL

#: the app made last in this process (Celery's proxy: ``current_app.conf``; ``current_app()``
#: is the app itself)
current_app = _state.Proxy(_state.current_app, "current_app")


class Runner:
    """A runner application: ``app = Celery('tasks', broker=..., backend=...)``."""

    def __init__(self, main: str | None = None, broker: str | None = None,
                 backend: str | None = None, *, include: list[str] | None = None,
                 set_as_current: bool = True, task_cls: type[Task] | str | None = None,
                 **settings: Any):
        self.main = main
        self.task_cls = _task_class(task_cls)
        preconf: dict[str, Any] = dict(settings)
        if broker is not None:
            preconf["broker_url"] = broker
        if backend is not None:
            preconf["result_backend"] = backend
        if include:
            preconf["include"] = list(include)
        self.conf = Conf(preconf=preconf)
        self.tasks: dict[str, Task] = {}
        self.control = Control(self)
        self.events = Events(self)  # Celery's app.events: Receiver, State, Dispatcher
        #: hooks the worker calls for each finished task (chains, chords, pipelines, yours)
        self.middleware: list[Middleware] = [CanvasMiddleware(), PipelineMiddleware()]
        self._links = Connections(self)
        self._router: tuple[int, Router] | None = None
        self._imported = False
        self._discover: list[tuple[Any, str]] = []  # autodiscover_tasks() not done yet
        self._security: tuple | None = None  # (settings, Security, verifier)
        self._security_args: dict[str, Any] = {}  # setup_security()'s
        if set_as_current:
            _state.set_current_app(self)
        _state.apps.add(self)
        for fun, options in list(_state.shared_tasks):
            self._add_shared(fun, options)

    def __repr__(self) -> str:
        return f"<Runner {self.main or '__main__'} at {id(self):#x}>"

    # -- configuration ----------------------------------------------------------------------

    def config_from_object(self, obj: Any, silent: bool = False, force: bool = False,
                           namespace: str | None = None) -> None:
        """Celery's ``config_from_object``: a module name (imported when first needed), a
        module, a class or any object; only lowercase public names are settings."""
        self.conf.load_object(obj, namespace=namespace, silent=silent, force=force)

    def config_from_file(self, path: str | os.PathLike) -> None:
        """Settings from a YAML (or JSON) file, above objects loaded earlier."""
        self.conf.load_file(os.fspath(path))

    def config_from_envvar(self, variable_name: str, silent: bool = False) -> None:
        """``config_from_object`` with the module name held by an environment variable."""
        module = os.environ.get(variable_name)
        if not module:
            if silent:
                return
            from runner.exceptions import ConfigError

            raise ConfigError(f"environment variable {variable_name} is not set: it should name "
                              f"a configuration module")
        self.config_from_object(module, silent=silent)

    def _revoke_stamped(self, headers: dict, terminate: bool = False,
                        signal: str = "SIGTERM") -> None:
        """For ``app.control.revoke_by_stamped_headers`` (runner.control sits beside the
        canvas, so the app, above both, joins them)."""
        from runner.canvas.stamping import revoke_by_stamped_headers

        revoke_by_stamped_headers(self, headers, terminate=terminate, signal=signal)

    # -- message signing (runner.security) ------------------------------------------------

    def setup_security(self, allowed_serializers: list[str] | None = None,
                       key: str | None = None, key_password: str | bytes | None = None,
                       cert: str | None = None, store: str | None = None,
                       digest: str | None = None, serializer: str = "json") -> None:
        """Celery's ``app.setup_security()``: sign what this app sends and run only signed
        messages; needs ``task_serializer = 'auth'`` and ``accept_content = ['auth']``, and
        reads the key, certificate and store now (each missing file named)."""
        security.check_setup(self.conf)
        args = {"allowed_serializers": allowed_serializers, "key": key, "cert": cert,
                "key_password": key_password, "store": store, "digest": digest,
                "serializer": serializer}
        self._security_args = {k: v for k, v in args.items() if v is not None}
        self._security = None
        found = self.security
        assert found is not None
        found.check(signing=True, verifying=True)

    @property
    def security(self) -> security.Security | None:
        """How this app signs and checks messages (None: it does not), from the settings."""
        return self._security_now()[1]

    @property
    def verifier(self) -> security.Security | None:
        """What a worker checks each message's signature with (None: nothing is checked).
        Read for every message a worker runs: one lookup while the settings stay the same."""
        return self._security_now()[2]

    def _security_now(self) -> tuple:
        settings = self.conf.settings
        cached = self._security
        if cached is None or cached[0] is not settings:
            found = security.from_settings(settings, **self._security_args)
            if found is not None and security.AUTH in (
                    settings.result_serializer, *(settings.result_accept_content or ())):
                security.install_result_serializer(found)
            verifier = found if found is not None and security.verifying_wanted(settings) \
                else None
            cached = self._security = (settings, found, verifier)
        return cached

    def _signing(self) -> security.Security:
        found = self.security
        assert found is not None  # (task_serializer = 'auth' always makes one)
        return found

    @property
    def task_accept(self) -> frozenset[str]:
        """The payload content types a worker of this app decodes."""
        return security.task_accept(self.conf, self.security)

    @property
    def broker_url(self) -> str:
        return self.conf.broker_url or DEFAULT_URL

    @property
    def backend_url(self) -> str:
        """``result_backend``, or where the broker is (see :attr:`backend_follows_broker`)."""
        return self.conf.result_backend or backend_following(self.broker_url)

    @property
    def backend_follows_broker(self) -> bool:
        """No ``result_backend`` is set: results live with the broker (the same Redis or
        SQLite file; ``rpc://`` on AMQP)."""
        return not self.conf.result_backend

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.conf.timezone or "UTC")

    @property
    def result_accept(self) -> frozenset[str]:
        conf = self.conf
        if conf.result_accept_content:
            return serialization.accept_set(conf.result_accept_content)
        if security.verifying_wanted(conf) and self.security is not None:
            # accept_content = ['auth'] is about task messages: results come back in the
            # serializers allowed inside a signature, or signed themselves
            return self.task_accept | serialization.accept_set([security.AUTH])
        return serialization.accept_set(conf.accept_content)

    # -- connections (one per process and thread: see runner.connections) ------------------

    @property
    def broker(self) -> Broker:
        return self._links.broker()

    @property
    def backend(self) -> ResultBackend:
        return self._links.backend()

    def _transport_options(self) -> dict:
        return transport_options(self.conf)

    def flush_broker(self) -> None:
        """Wait until what this thread sent is safe in the broker (see ``Broker.flush``); a
        no-op where this process has no broker open."""
        self._links.flush_broker()

    def close(self) -> None:
        self._links.close()

    # -- tasks ----------------------------------------------------------------------------------

    def task(self, *args: Any, **options: Any) -> Any:
        """``@app.task`` or ``@app.task(bind=True, name=..., base=MyTask, ...)``."""
        def register(fun: Callable) -> Task:
            base = options.pop("base", None) or self.task_cls
            if not (isinstance(base, type) and issubclass(base, Task)):
                raise TypeError(f"@app.task(base={base!r}) for {fun.__name__}: base must be a "
                                f"Task class (class MyTask(app.Task): ...)")
            task = base(self, fun, **options)
            self.tasks[task.name] = task
            return task

        if len(args) == 1 and callable(args[0]) and not options:
            return register(args[0])
        if args:
            raise TypeError("@app.task takes keyword options only: @app.task(name='x')")
        return register

    def _add_shared(self, fun: Callable, options: dict) -> None:
        task = self.task(**dict(options))(fun)
        if fun.__module__ == "__main__" and not options.get("name"):  # one name on every app
            del self.tasks[task.name]
            task.name = f"{fun.__module__}.{fun.__name__}"
            self.tasks[task.name] = task

    def register_task(self, task: Task | type[Task]) -> Task:
        """Register a class-based task (an instance, or the class), as Celery's."""
        if isinstance(task, type) and issubclass(task, Task):
            task = task(self)
        if not isinstance(task, Task):
            raise TypeError(f"register_task({task!r}): expected a Task instance or class")
        task.app = self
        self.tasks[task.name] = task
        return task

    @functools.cached_property
    def Task(self) -> type[Task]:  # noqa: N802 - Celery's name
        """The base class of this app's tasks, for ``class MyTask(app.Task)``: its
        instances belong to this app."""
        return type("Task", (self.task_cls,), {"app": self, "__module__": __name__})

    def gen_task_name(self, name: str, module: str) -> str:
        """``module.function``, with the app's main name for tasks defined in ``__main__``."""
        if module == "__main__" and self.main:
            module = self.main
        return f"{module}.{name}"

    def import_task_modules(self) -> None:
        """Import ``imports``, ``include`` and what :meth:`autodiscover_tasks` asked for, so
        the worker knows their tasks."""
        if self._imported:
            return
        self._imported = True
        if import_modules.receivers:
            import_modules.send(sender=self)
        for module in [*(self.conf.imports or ()), *(self.conf.include or ())]:
            importlib.import_module(module)
        for packages, related_name in self._discover:
            self._discover_now(packages, related_name)

    def autodiscover_tasks(self, packages: Any = None, related_name: str = "tasks",
                           force: bool = False) -> None:
        """Celery's: import ``<package>.<related_name>`` (``tasks``) of each package, lazily
        (when the worker starts or a task is looked up), or now with ``force``. ``packages``
        may be a callable returning them, as Django passes ``lambda: INSTALLED_APPS``; a
        package without that module is skipped, one that does not exist is an error."""
        if force or self._imported:
            self._discover_now(packages, related_name)
        else:
            self._discover.append((packages, related_name))

    def _discover_now(self, packages: Any, related_name: str) -> None:
        names = packages() if callable(packages) else packages
        for package in names or ():
            try:
                importlib.import_module(package)
            except ImportError as exc:
                raise AppImportError(f"autodiscover_tasks: package {package!r} cannot be "
                                     f"imported: {type(exc).__name__}: {exc}") from None
            module = f"{package}.{related_name}" if related_name else package
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as exc:
                if exc.name != module:  # the tasks module exists but imports what is not there
                    raise

    def get_task(self, name: str) -> Task:
        try:
            return self.tasks[name]
        except KeyError:
            self.import_task_modules()
            if name not in self.tasks and name in BUILTIN_TASKS:
                register_builtins(self)  # celery.map, celery.starmap, ...: made when first used
            if name in self.tasks:
                return self.tasks[name]
            raise NotRegistered(f"Received unregistered task of type {name!r}: the worker's app "
                                f"does not define it (registered: "
                                f"{', '.join(sorted(self.tasks)) or 'none'})") from None

    # -- sending --------------------------------------------------------------------------------

    def router(self) -> Router:
        conf = self.conf
        key = hash((id(conf.task_routes), conf.task_default_queue, id(conf.task_queues)))
        if self._router is None or self._router[0] != key:
            queues = [q.name for q in conf.task_queues] if conf.task_queues else None
            self._router = (key, Router(conf.task_routes, conf.task_default_queue, queues,
                                        conf.task_create_missing_queues))
        return self._router[1]

    def to_timestamp(self, when: datetime | float) -> float:
        """Epoch seconds for an ``eta``: a naive datetime is read in the app's timezone (as in
        Celery: ``timezone``, else UTC, else with ``enable_utc=False`` the local time)."""
        if isinstance(when, datetime):
            if when.tzinfo is None and (self.conf.timezone or self.conf.enable_utc):
                when = when.replace(tzinfo=self.tz)
            return when.timestamp()
        return float(when)

    def now(self) -> datetime:
        return datetime.now(self.tz)

    def build_message(self, name: str, args: Any = None, kwargs: dict | None = None,
                      _task: Task | None = None, **options: Any) -> Message:
        """The message ``send_task`` would enqueue (used for bulk sends and by the worker).
        A task registered here brings its own options (queue, priority, serializer)."""
        return build_message(self, name, args, kwargs, _task, options)

    def _reply_to(self) -> str | None:
        """The reply queue to name in messages, for a result backend that sends results back
        to the caller (rpc://); None for the others (without opening them)."""
        url, cached = self.backend_url, self.__dict__.get("_sends_replies")
        if cached is None or cached[0] != url:
            cls = backend_class(parse_url(url).scheme)
            cached = self._sends_replies = (url, getattr(cls, "sends_replies", False))
        return self.backend.reply_to if cached[1] else None

    async def asend_task(self, name: str, args: Any = None, kwargs: dict | None = None,
                         **options: Any) -> AsyncResult:
        """:meth:`send_task` for async code (``await app.asend_task("tasks.add", (2, 2))``):
        sent from the async client's thread, safe in the broker when the await returns."""
        def send() -> AsyncResult:
            result = self.send_task(name, args, kwargs, **options)
            self.flush_broker()
            return result
        return await in_client_thread(send)

    def send_task(self, name: str, args: Any = None, kwargs: dict | None = None,
                  _task: Task | None = None, **options: Any) -> AsyncResult:
        """Enqueue a task by name, without needing its code here. With ``idempotency_key``,
        only once per key within ``task_idempotency_window`` (see ``runner.idempotency``)."""
        if _task is None:
            _task = self.tasks.get(name)
        key = options.pop("idempotency_key", None)
        if (_task is not None and _task.rate_limit and _task.rate_limit_scope == "global"
                and options.get("eta") is None and options.get("countdown") is None):
            options["eta"] = book(self.backend, f"task:{name}", _task.rate_limit, 1)[0]
        message = self.build_message(name, args, kwargs, _task=_task, **options)
        if key is not None:
            held, mine = claim(self.backend, key, message.id, self.conf.task_idempotency_window)
            if not mine:
                return AsyncResult(held, app=self, task_name=name)
        self.publish([message])
        result = AsyncResult(message.id, app=self, task_name=name)
        ignore = message.options.get("ignore_result")
        if ignore is None:
            ignore = (_task.effective("ignore_result") if _task is not None
                      else self.conf.task_ignore_result)
        if ignore and not message.options.get("chain"):  # (a chain needs each value)
            result.ignored = True
        return result

    def requeue_dead_letters(self, keys: Sequence[str] | None = None
                             ) -> tuple[list[str], list[str]]:
        """Send dead letters back to their queues (see :func:`runner.sending.requeue`)."""
        return requeue(self.broker, self.backend, keys)

    def publish(self, messages: list[Message]) -> None:
        """Enqueue built messages, with the ``before_task_publish`` / ``after_task_publish``
        signals around it (see runner.publish)."""
        publish(self.broker, messages)
        if self.conf.task_send_sent_event:
            announce_sent(self, messages)

    def AsyncResult(self, task_id: str, task_name: str | None = None) -> AsyncResult:  # noqa: N802
        return AsyncResult(task_id, app=self, task_name=task_name)

    def signature(self, name: Any, args: Any = None, kwargs: dict | None = None,
                  immutable: bool = False, **options: Any) -> Signature:
        """``app.signature('tasks.add', (2, 2))``: a task call as data (see runner.canvas);
        a signature, or its dict, comes back as a Signature of this app."""
        if isinstance(name, dict):
            return maybe_signature(name, app=self)
        return Signature(name, args, kwargs, options, immutable=immutable, app=self)

    def GroupResult(self, id: str, results: list, **kwargs: Any) -> Any:  # noqa: N802
        from runner.result import GroupResult

        return GroupResult(id, results, app=self, **kwargs)

    def apply_eagerly(self, task: Task, args: list, kwargs: dict,
                      options: dict[str, Any]) -> EagerResult:
        """Run ``task`` here and now through the worker's execution path (``Task.apply``);
        its link / link_error signatures run here too, as in Celery."""
        options = {**options, "task_id": options.get("task_id") or Message.new_id()}
        try:
            result = apply_eagerly(task, args, kwargs, options)
        except Exception:  # task_eager_propagates: errbacks first, as in Celery
            apply_links_eagerly(self, options, states.FAILURE, None, options["task_id"])
            raise
        apply_links_eagerly(self, options, result.state, result.result, result.id)
        return result


Celery = Runner
_state.default_app_factory = lambda: Runner("default")


def _task_class(task_cls: type[Task] | str | None) -> type[Task]:
    """``task_cls=``: a Task subclass, or its ``module:Class`` path, as Celery's."""
    if task_cls is None:
        return Task
    if isinstance(task_cls, str):
        module, _, name = task_cls.replace(":", ".").rpartition(".")
        try:
            task_cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError) as exc:
            raise TypeError(f"task_cls={task_cls!r}: cannot import it: {exc}") from None
    if not (isinstance(task_cls, type) and issubclass(task_cls, Task)):
        raise TypeError(f"task_cls={task_cls!r} must be a subclass of runner.Task")
    return task_cls

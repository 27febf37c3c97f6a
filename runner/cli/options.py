"""What every command shares: the global options (``runner -A proj -b URL worker``), the
app options after a command (``runner worker -A proj``), and loading the app they name.

Commands import this module; nothing here imports a command (the group is assembled in
:mod:`runner.cli.main`), so the dependencies point one way.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from runner.config.urls import EMBEDDED_DEFAULT_URL
from runner.exceptions import AppImportError

if TYPE_CHECKING:  # pragma: no cover
    from runner.app import Runner


@dataclass
class GlobalOptions:
    """The options given before the command, as Celery's (``celery -A proj worker``)."""

    app_path: str | None = None
    broker: str | None = None
    result_backend: str | None = None
    config_path: str | None = None
    quiet: bool = False
    no_color: bool = False


def global_options() -> GlobalOptions:
    """The options of the group in the current click context (defaults outside one)."""
    ctx = click.get_current_context(silent=True)
    found = ctx.find_object(GlobalOptions) if ctx is not None else None
    return found or GlobalOptions()


def global_option_decorators(group: Callable) -> Callable:
    """Add the global options to the root group; its callback receives them as keywords."""
    for decorator in reversed((
        click.option("-A", "--app", "app_path", envvar="RUNNER_APP", metavar="MODULE[:ATTR]",
                     help="Module holding the app (tasks, or pkg.module:app)."),
        click.option("-b", "--broker", metavar="URL", help="Broker URL (broker_url)."),
        click.option("--result-backend", metavar="URL", help="Result backend URL."),
        click.option("--workdir", metavar="DIR", type=click.Path(file_okay=False, exists=True),
                     help="Change to DIR before anything else."),
        click.option("--config", "config_path", metavar="FILE",
                     type=click.Path(dir_okay=False),
                     help="YAML settings file, above the app's own configuration."),
        click.option("-C", "--no-color", is_flag=True,
                     help="Accepted for Celery's sake: runner prints no colours."),
        click.option("-q", "--quiet", is_flag=True, help="No start banner."),
    )):
        group = decorator(group)
    return group


def app_options(command: Callable) -> Callable:
    """Add ``-A/--app``, ``--config``, ``-b/--broker`` and ``--result-backend`` after a
    command (each also accepted before it); the command receives ``app`` instead."""

    @click.option("-A", "--app", "app_path", metavar="MODULE[:ATTR]",
                  help="Module holding the app (tasks, or pkg.module:app).")
    @click.option("--config", "config_path", metavar="FILE", type=click.Path(dir_okay=False),
                  help="YAML settings file, above the app's own configuration.")
    @click.option("-b", "--broker", metavar="URL", help="Broker URL (broker_url).")
    @click.option("--result-backend", metavar="URL", help="Result backend URL.")
    @functools.wraps(command)
    def wrapper(app_path: str | None, config_path: str | None, broker: str | None,
                result_backend: str | None, **kwargs: Any):
        app = load_app(app_path, config_path, broker=broker, result_backend=result_backend,
                       warn_default=True)
        return command(app=app, **kwargs)

    return wrapper


def load_app(app_path: str | None, config_path: str | None = None, *,
             broker: str | None = None, result_backend: str | None = None,
             warn_default: bool = False) -> Runner:
    """The app named by ``-A`` (``module`` or ``module:attr``), given after the command or
    before it. Without ``-A``, a bare app configured from ``celeryconfig.py`` when the
    working directory has one; with ``warn_default``, a warning on stderr names the broker
    when nothing configures it (no module, no celeryconfig.py, no --config, no -b, no
    RUNNER_* variable), so a client never waits on the wrong broker without a word."""
    from runner.app import Runner

    given = global_options()
    app_path = app_path or given.app_path
    config_path = config_path or given.config_path
    broker = broker or given.broker
    result_backend = result_backend or given.result_backend
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    if app_path:
        app = _import_app(app_path)
    else:
        app = Runner("runner")
        configured = os.path.exists("celeryconfig.py")
        if configured:
            app.config_from_object("celeryconfig")
        if warn_default and not (configured or config_path or broker
                                 or any(k.startswith("RUNNER_") for k in os.environ)):
            click.echo(f"warning: no app and no configuration: using the default broker "
                       f"{EMBEDDED_DEFAULT_URL} (give -A MODULE, -b URL, --config FILE, "
                       f"a celeryconfig.py or RUNNER_BROKER_URL)", err=True)
    if config_path:
        app.conf.load_file(config_path, layer="cli")
    options = {"broker_url": broker, "result_backend": result_backend}
    options = {key: value for key, value in options.items() if value}
    if options:
        app.conf.load_mapping(options, "command line")
    return app


def _import_app(app_path: str) -> Runner:
    from runner.app import Runner

    module_name, _, attr = app_path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name or module_name.startswith(f"{exc.name}."):
            raise AppImportError(
                f"-A {app_path}: no module named {module_name!r} (looked in "
                f"{os.getcwd()} and sys.path; run from the folder holding "
                f"{module_name.replace('.', '/')}.py)") from None
        raise AppImportError(_inner_failure(app_path, exc)) from None
    except Exception as exc:  # noqa: BLE001 - anything the user's module raises
        raise AppImportError(_inner_failure(app_path, exc)) from None
    if attr:
        app = getattr(module, attr, None)
        if not isinstance(app, Runner):
            raise AppImportError(f"-A {app_path}: {module_name} has no app named {attr!r}")
        return app
    for name in ("app", "celery"):
        if isinstance(getattr(module, name, None), Runner):
            return getattr(module, name)
    found = [v for v in vars(module).values() if isinstance(v, Runner)]
    if len(found) == 1:
        return found[0]
    raise AppImportError(f"-A {app_path}: module {module_name} defines no app (expected "
                         f"`app = Celery(...)`, or say which with -A {module_name}:NAME)")


def _inner_failure(app_path: str, exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"-A {app_path}: importing it failed{where}: {type(exc).__name__}: {exc}"


def split_names(text: str | None) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]`` (``-Q`` and ``-X`` lists)."""
    return [name.strip() for name in (text or "").split(",") if name.strip()]


def known_queues(conf) -> list[str]:
    """The queues an app knows: ``task_queues``, else ``task_default_queue``."""
    if conf.task_queues:
        return [q.name for q in conf.task_queues]
    return [conf.task_default_queue]

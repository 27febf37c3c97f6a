"""The root ``runner`` group and what every command shares (``-A/--app``, ``--config``)."""

from __future__ import annotations

import functools
import importlib
import os
import sys
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from runner.exceptions import AppImportError, RunnerError
from runner.version import __version__

if TYPE_CHECKING:  # pragma: no cover
    from runner.app import Runner


class RunnerGroup(click.Group):
    """Turns RunnerError into one clear line and exit code 2 instead of a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except RunnerError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=RunnerGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="runner")
def main() -> None:
    """runner: a Celery-compatible task queue and YAML pipeline runner."""


def app_options(command: Callable) -> Callable:
    """Add ``-A/--app`` and ``--config`` to a command; it receives ``app`` instead."""

    @click.option("-A", "--app", "app_path", envvar="RUNNER_APP", metavar="MODULE[:ATTR]",
                  help="Module holding the app (tasks, or pkg.module:app).")
    @click.option("--config", "config_path", metavar="FILE", type=click.Path(dir_okay=False),
                  help="YAML settings file, above the app's own configuration.")
    @functools.wraps(command)
    def wrapper(app_path: str | None, config_path: str | None, **kwargs: Any):
        return command(app=load_app(app_path, config_path), **kwargs)

    return wrapper


def load_app(app_path: str | None, config_path: str | None = None) -> Runner:
    """The app named by ``-A`` (``module`` or ``module:attr``). Without ``-A``, a bare app
    configured from ``celeryconfig.py`` when the working directory has one."""
    from runner.app import Runner

    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    if app_path:
        app = _import_app(app_path)
    else:
        app = Runner("runner")
        if os.path.exists("celeryconfig.py"):
            app.config_from_object("celeryconfig")
    if config_path:
        app.conf.load_file(config_path, layer="cli")
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


def _register_commands() -> None:
    from runner.cli import (
        beat,
        call,
        dead_letters,
        pipelines,
        purge,
        result,
        validate,
        worker,
    )

    for module in (worker, call, result, purge, dead_letters, validate, pipelines, beat):
        for command in module.COMMANDS:
            main.add_command(command)


_register_commands()

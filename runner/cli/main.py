"""The root ``runner`` group: the global options, and the one place every command is added."""

from __future__ import annotations

import os
import sys

import click

from runner.cli import (
    backfill,
    beat,
    call,
    control,
    dashboard,
    dead_letters,
    events,
    inspect,
    pipelines,
    purge,
    queues,
    report,
    result,
    runs,
    shell,
    validate,
    worker,
)
from runner.cli.options import GlobalOptions, global_option_decorators
from runner.exceptions import RunnerError
from runner.version import __version__


class RunnerGroup(click.Group):
    """Turns RunnerError, and a bad option value, into one clear line and exit code 2
    instead of a traceback (or click's usage text)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except RunnerError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)
        except click.BadParameter as exc:
            click.echo(f"Error: {exc.format_message()}", err=True)
            sys.exit(2)


@click.group(cls=RunnerGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="runner")
@global_option_decorators
@click.pass_context
def main(ctx: click.Context, app_path, broker, result_backend, workdir, config_path, no_color,
         quiet) -> None:
    """runner: a Celery-compatible task queue and YAML pipeline runner.

    Global options go before the command, as Celery's (runner -A proj worker -l info); -A,
    -b, --result-backend and --config are also accepted after it."""
    if workdir:
        os.chdir(workdir)
    ctx.obj = GlobalOptions(app_path=app_path, broker=broker, result_backend=result_backend,
                            config_path=config_path, quiet=quiet, no_color=no_color)


for _module in (worker, call, result, purge, dead_letters, validate, pipelines, runs, backfill,
                beat, shell, report, inspect, control, queues, events, dashboard):
    for _command in _module.COMMANDS:
        main.add_command(_command)

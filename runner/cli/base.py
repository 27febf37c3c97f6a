"""The root ``runner`` group and what every command shares (``-A/--app``, ``--config``)."""

from __future__ import annotations

import sys

import click

from runner import __version__
from runner.exceptions import RunnerError


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


def _register_commands() -> None:
    # Imported here so that each command module may import `main`'s helpers freely.
    import importlib

    for name in ("validate",):
        try:
            module = importlib.import_module(f"runner.cli.{name}")
        except ModuleNotFoundError as exc:  # a command module still being written
            if exc.name != f"runner.cli.{name}":
                raise
            continue
        for command in getattr(module, "COMMANDS", ()):
            main.add_command(command)


_register_commands()

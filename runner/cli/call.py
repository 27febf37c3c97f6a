"""``runner call``: send a task by name, as ``celery call``."""

from __future__ import annotations

import json

import click

from runner.cli.options import app_options
from runner.exceptions import RunnerError


def _json(option: str, text: str | None, kind: type):
    if text is None:
        return kind()
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint=option) from None
    if not isinstance(value, kind):
        raise click.BadParameter(f"must be a JSON {kind.__name__}", param_hint=option)
    return value


@click.command()
@app_options
@click.argument("name")
@click.option("-a", "--args", "args_json", default=None, help="Positional arguments, JSON list.")
@click.option("-k", "--kwargs", "kwargs_json", default=None, help="Keyword arguments, JSON object.")
@click.option("--queue", default=None, help="Queue to send to (default: routing).")
@click.option("--countdown", type=float, default=None, help="Run no earlier than N s from now.")
@click.option("--priority", type=click.IntRange(0, 9), default=None)
@click.option("--serializer", default=None)
@click.option("--wait", is_flag=True, help="Wait for the result and print it.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after N s.")
def call(app, name, args_json, kwargs_json, queue, countdown, priority, serializer, wait,
         timeout) -> None:
    """Send task NAME (e.g. tasks.add) and print its id."""
    args = _json("--args", args_json, list)
    kwargs = _json("--kwargs", kwargs_json, dict)
    if app.tasks and name not in app.tasks:
        app.import_task_modules()
        if name not in app.tasks:
            raise RunnerError(f"unknown task {name!r}; the app registers: "
                              f"{', '.join(sorted(app.tasks))}")
    if wait:
        app.backend  # noqa: B018 - a backend that cannot be opened fails before the send
    result = app.send_task(name, args, kwargs, queue=queue, countdown=countdown,
                           priority=priority, serializer=serializer)
    click.echo(result.id)
    if wait:
        value = result.get(timeout=timeout, propagate=False)
        click.echo(json.dumps(value, default=repr) if result.successful() else
                   f"{result.state}: {type(value).__name__}: {value}")
        if not result.successful():
            raise SystemExit(1)


COMMANDS = [call]

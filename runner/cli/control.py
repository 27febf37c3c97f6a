"""``runner control``: change running workers (Celery's ``celery control``): pool size,
consumed queues, time and rate limits, shutdown, revoke. Replies as ``runner inspect``'s."""

from __future__ import annotations

import click

from runner.cli.inspect import (
    check_command,
    command_help,
    destination_option,
    finish,
    parse_arguments,
    request,
    show_replies,
)
from runner.cli.options import app_options


@click.command(help="Send a command to the workers (all, or -d NODE) and show their "
               "replies.\n\nCOMMAND is one of:\n\n" + command_help("control"))
@app_options
@click.argument("command", metavar="COMMAND")
@click.argument("values", nargs=-1, metavar="[ARGUMENTS]...")
@destination_option
def control(app, command, values, destination, timeout, as_json) -> None:
    spec = check_command("control", command)
    arguments = parse_arguments(spec, values)
    if command == "revoke":
        if not arguments.get("task_id"):
            raise click.BadParameter("revoke needs the id of at least one task",
                                     param_hint="ARGUMENTS")
        app.backend.revoke(arguments["task_id"])  # (kept for workers that start later)
    merged = request(app, command, arguments, destination, timeout)
    finish(merged, destination, timeout, as_json, show_replies)


COMMANDS = [control]

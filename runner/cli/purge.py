"""``runner purge``: delete waiting messages, as ``celery purge``."""

from __future__ import annotations

import click

from runner.cli.base import app_options


@click.command()
@app_options
@click.option("-Q", "--queues", default=None, help="Comma-separated queues (default: all known).")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
def purge(app, queues, force) -> None:
    """Delete every waiting task message (running ones are kept)."""
    conf = app.conf
    names = [q.strip() for q in queues.split(",") if q.strip()] if queues else (
        [q.name for q in conf.task_queues] if conf.task_queues else [conf.task_default_queue])
    if not force:
        click.confirm(f"WARNING: This will remove all tasks from {len(names)} queue(s): "
                      f"{', '.join(names)}.\n         There is no undo for this operation!\n"
                      f"Continue?", abort=True)
    count = app.broker.purge(names)
    click.echo(f"Purged {count} message{'s' if count != 1 else ''} from {len(names)} known "
               f"task queue{'s' if len(names) != 1 else ''}.")


COMMANDS = [purge]

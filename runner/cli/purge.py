"""``runner purge``: delete waiting messages, as ``celery purge``."""

from __future__ import annotations

import click

from runner.cli.options import app_options, known_queues, split_names


@click.command()
@app_options
@click.option("-Q", "--queues", default=None, help="Comma-separated queues (default: all known).")
@click.option("-X", "--exclude-queues", default=None,
              help="Comma-separated queues to leave alone.")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
def purge(app, queues, exclude_queues, force) -> None:
    """Delete every waiting task message (running ones are kept)."""
    excluded = split_names(exclude_queues)
    names = [q for q in (split_names(queues) or known_queues(app.conf)) if q not in excluded]
    if not names:
        click.echo("No queues to purge (-X excludes them all).")
        return
    if not force:
        click.confirm(f"WARNING: This will remove all tasks from {len(names)} queue(s): "
                      f"{', '.join(names)}.\n         There is no undo for this operation!\n"
                      f"Continue?", abort=True)
    count = app.broker.purge(names)
    click.echo(f"Purged {count} message{'s' if count != 1 else ''} from {len(names)} known "
               f"task queue{'s' if len(names) != 1 else ''}.")


COMMANDS = [purge]

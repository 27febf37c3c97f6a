"""``runner dead-letters``: see, requeue and purge the messages workers could not run."""

from __future__ import annotations

import datetime
import json

import click

from runner.cli.options import app_options
from runner.dead_letters import DeadLetter
from runner.exceptions import RunnerError


@click.group("dead-letters")
def dead_letters() -> None:
    """Messages a worker could not run (unreadable, refused, or delivered more than
    task_delivery_limit times), kept with the reason instead of retried."""


def _when(letter: DeadLetter) -> str:
    return datetime.datetime.fromtimestamp(letter.died_at).isoformat(sep=" ",
                                                                     timespec="seconds")


@dead_letters.command("list")
@app_options
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True,
              help="Show at most N, newest first.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: count and letters.")
def list_(app, limit, as_json) -> None:
    """The newest dead letters and how many there are."""
    broker = app.broker
    count, letters = broker.dead_letter_count(), broker.dead_letters(limit)
    if as_json:
        click.echo(json.dumps({"count": count, "dead_letters": [d.summary() for d in letters]},
                              indent=2))
        return
    click.echo(f"{count} dead letter{'s' if count != 1 else ''}")
    for d in letters:
        click.echo(f"{d.key}  {_when(d)}  queue={d.queue}  task={d.task or '?'}  "
                   f"deliveries={d.deliveries}  {d.reason}")


@dead_letters.command()
@app_options
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="As JSON.")
def show(app, key, as_json) -> None:
    """One dead letter: its reason, where and when it died, and its message."""
    letter = next((d for d in app.broker.dead_letters(limit=100_000) if d.key == key), None)
    if letter is None:
        raise RunnerError(f"no dead letter {key!r} (see `runner dead-letters list`)")
    info = letter.summary()
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    info["died_at"] = _when(letter)
    body = info.pop("body")
    for name, value in info.items():
        click.echo(f"{name + ':':12} {value}")
    click.echo(f"message:\n{body}")


@dead_letters.command()
@app_options
@click.argument("keys", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Every dead letter.")
@click.option("--json", "as_json", is_flag=True, help="As JSON: requeued ids and problems.")
def requeue(app, keys, everything, as_json) -> None:
    """Send dead letters back to their queues (after fixing what made them fail)."""
    if not keys and not everything:
        raise click.UsageError("name dead letters to requeue, or --all")
    sent, problems = app.requeue_dead_letters(None if everything else list(keys))
    if as_json:
        click.echo(json.dumps({"requeued": sent, "problems": problems}, indent=2))
    else:
        click.echo(f"Requeued {len(sent)} dead letter{'s' if len(sent) != 1 else ''}.")
        for problem in problems:
            click.echo(f"not requeued: {problem}", err=True)
    if problems:
        raise SystemExit(1)


@dead_letters.command()
@app_options
@click.argument("keys", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Every dead letter.")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="As JSON: the count removed.")
def purge(app, keys, everything, force, as_json) -> None:
    """Delete dead letters for good."""
    if not keys and not everything:
        raise click.UsageError("name dead letters to purge, or --all")
    if everything and not force:
        click.confirm(f"Delete all {app.broker.dead_letter_count()} dead letters?", abort=True)
    count = app.broker.remove_dead(None if everything else list(keys))
    if as_json:
        click.echo(json.dumps({"purged": count}))
    else:
        click.echo(f"Purged {count} dead letter{'s' if count != 1 else ''}.")


@dead_letters.command()
@app_options
def count(app) -> None:
    """How many dead letters there are (a number, for monitoring)."""
    click.echo(app.broker.dead_letter_count())


COMMANDS = [dead_letters]

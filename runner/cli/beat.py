"""``runner beat``: the periodic scheduler, its entries (``--list``) and its fires
(``--history``)."""

from __future__ import annotations

import logging
import signal
import threading
from datetime import datetime

import click

from runner.cli.options import app_options
from runner.config.urls import mask_url
from runner.log import setup_logging_subsystem

LOG_FORMAT = "[%(asctime)s: %(levelname)s/beat] %(message)s"


@click.command()
@app_options
@click.option("--pipelines", "pipelines_dir", metavar="DIR", default=None,
              help="Folder of pipeline files whose `triggers:` beat fires too.")
@click.option("-l", "--loglevel", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
                                case_sensitive=False))
@click.option("--list", "show_list", is_flag=True,
              help="Print every entry with its next three fire times, then exit.")
@click.option("--history", "show_history", is_flag=True,
              help="Print the recorded fires (of ENTRY only, when given), then exit.")
@click.argument("entry", required=False)
def beat(app, pipelines_dir, loglevel, show_list, show_history, entry) -> None:
    """Run the periodic scheduler: sends beat_schedule tasks and starts triggered pipelines.
    Start several for failover: one leads, the others stand by."""
    from runner.beat.entries import build_entries

    if entry and not show_history:
        raise click.UsageError("ENTRY goes with --history")
    if show_history:
        _print_history(app, entry)
        return
    entries = build_entries(app, pipelines_dir)
    if show_list:
        _print_list(app, entries)
        return
    _run(app, entries, loglevel)


def _run(app, entries, loglevel: str) -> None:
    from runner.beat.scheduler import Beat

    setup_logging_subsystem(app, loglevel, format=LOG_FORMAT)
    log = logging.getLogger("runner.beat")
    scheduler = Beat(app, entries)
    app.backend  # noqa: B018 - open it now: a bad URL is an error before the loop starts
    log.info("beat %s: %d entr%s, results %s", scheduler.owner, len(entries),
             "y" if len(entries) == 1 else "ies", mask_url(app.backend_url))
    for item in entries:
        log.info("  . %s: %s", item.name, item.describe())
    stop = threading.Event()

    def on_signal(signum, _frame):
        log.info("beat: %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    scheduler.run(stop)


def _print_list(app, entries) -> None:
    from runner.beat.state import read_state

    state = read_state(app.backend)
    if not entries:
        click.echo("no beat entries (beat_schedule is empty and no --pipelines triggers)")
    for item in entries:
        now = datetime.now(item.tz)
        known = state.entries.get(item.name)
        last = (datetime.fromtimestamp(known.last_fire, item.tz).isoformat()
                if known and known.last_fire else "never")
        click.echo(f"{item.name}: {item.describe()}; last fire {last}")
        for when in item.schedule.upcoming(now, 3, item.tz):
            click.echo(f"    {when.isoformat()}")


def _print_history(app, entry: str | None) -> None:
    from runner.beat.state import history

    records = history(app.backend, entry)
    if not records:
        click.echo(f"no recorded fires{f' of {entry!r}' if entry else ''}")
        return
    tz = app.tz
    click.echo(f"{'ENTRY':<24} {'SCHEDULED':<25} {'SENT':<25} ID")
    for r in records:
        scheduled = datetime.fromtimestamp(r.scheduled, tz).isoformat(timespec="seconds")
        sent = datetime.fromtimestamp(r.sent_at, tz).isoformat(timespec="seconds")
        what = f"{r.kind} {r.fire_id}" + (f" FAILED {r.error}" if r.error else "")
        click.echo(f"{r.entry:<24} {scheduled:<25} {sent:<25} {what}")


COMMANDS = [beat]

"""``runner backfill FILE --from DATE --to DATE``: one run per trigger fire in the range."""

from __future__ import annotations

import sys
import time
from datetime import date, datetime, timedelta
from datetime import time as day_time

import click

from runner.cli.pipelines import app_option, timeout_option, validated
from runner.cli.progress import POLL, TIMED_OUT
from runner.pipeline.backfill import backfill_one, fires
from runner.pipeline.runs import RUN_DONE, load_run


def _bound(text: str, app, end: bool, hint: str) -> datetime:
    """An ISO date or date-time in the app's zone; a date alone is its whole day."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an ISO date or date-time",
                                 param_hint=hint) from None
    if len(text) <= 10:  # a date: from its first instant to its last
        day = date.fromisoformat(text)
        value = datetime.combine(day + timedelta(days=1), day_time()) - timedelta(
            microseconds=1) if end else datetime.combine(day, day_time())
    return value if value.tzinfo else value.replace(tzinfo=app.tz)


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@app_option
@click.option("--from", "start", required=True, metavar="DATE",
              help="First logical date (ISO; a date alone: from its start, app timezone).")
@click.option("--to", "end", required=True, metavar="DATE",
              help="Last logical date (ISO; a date alone: to its end).")
@click.option("--dry-run", is_flag=True, help="List the fires; start nothing.")
@click.option("--wait", is_flag=True, help="Show progress until every run has ended; exit 1 "
                                           "unless all succeed.")
@timeout_option
def backfill(file, app_path, config_path, start, end, dry_run, wait, timeout) -> None:
    """One run of FILE per trigger fire from --from to --to, each keyed as its trigger keys
    it: a fire that has a run already (from beat or an earlier backfill) is not run again."""
    loaded, app = validated(file, app_path, config_path)
    found = fires(loaded, _bound(start, app, False, "--from"), _bound(end, app, True, "--to"),
                  app.tz)
    if dry_run:
        for fire in found:
            click.echo(f"{fire.at.isoformat()}  {fire.run_id}")
        click.echo(f"{len(found)} run(s) would be made")
        return
    ids = []
    for number, fire in enumerate(found, 1):
        done = backfill_one(app, loaded, fire)
        ids.append(done.record.id)
        what = f"exists ({done.record.state})" if not done.created else \
            "queued (max_active_runs)" if done.record.state == "queued" else "started"
        click.echo(f"[{number}/{len(found)}] {fire.at.isoformat()}  run {done.record.id}  "
                   f"{what}")
    if wait:
        sys.exit(_wait_all(app, ids, timeout))


def _wait_all(app, ids: list[str], timeout: float | None) -> int:
    deadline = None if timeout is None else time.monotonic() + timeout
    pending, failed = list(ids), 0
    while pending:
        for run_id in list(pending):
            record = load_run(app.backend, run_id)
            if record.state in RUN_DONE:
                pending.remove(run_id)
                failed += record.state != "success"
                click.echo(f"[{len(ids) - len(pending)}/{len(ids)} done] run {run_id}: "
                           f"{record.state}")
        if pending and deadline is not None and time.monotonic() >= deadline:
            click.echo(f"{len(pending)} run(s) still going after {timeout:g}s (--timeout); "
                       f"they go on: runner runs", err=True)
            return TIMED_OUT
        if pending:
            time.sleep(POLL)
    click.echo(f"backfill: {len(ids) - failed} of {len(ids)} run(s) succeeded")
    return 0 if failed == 0 else 1


COMMANDS = [backfill]

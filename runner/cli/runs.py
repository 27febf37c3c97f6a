"""Looking at and acting on pipeline runs: status, runs, cancel, retry (and ``runner result
RUN STEP``'s lookup)."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from datetime import UTC, date, datetime
from typing import Any

import click
import yaml

from runner.cli.pipelines import app_option, pipeline_app
from runner.cli.progress import POLL, TIMED_OUT, follow, items_done, short
from runner.pipeline import control
from runner.pipeline.engine import Driver
from runner.pipeline.runs import RUN_DONE, RUN_STATES, STEP_DONE, RunRecord, list_runs, load_run


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _took(start: float | None, end: float | None) -> str:
    return f"{end - start:.3f}s" if start and end else "-"


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    if isinstance(value, date):  # datetime too
        return value.isoformat()
    return str(value)


def run_as_json(app: Any, record: RunRecord) -> dict[str, Any]:
    """The whole run record, each step with its ``result`` (a mapped step's: the list)."""
    driver = Driver(app, record.id)
    data = _plain(asdict(record))
    for name, step in data["steps"].items():
        step["result"] = _plain(driver.step_result(record, name))
    return data


@click.command()
@click.argument("run_id", required=False)
@app_option
@click.option("--json", "as_json", is_flag=True, help="Print the whole record, with results.")
def status(run_id, app_path, config_path, as_json) -> None:
    """Show run RUN_ID: its state and its steps, each with its result or error. Without
    RUN_ID: the workers online (as celery status)."""
    if run_id is None:
        from runner.cli.inspect import show_online

        show_online(app_path, config_path)
        return
    app = pipeline_app(None, app_path, config_path)
    record = load_run(app.backend, run_id)
    if as_json:
        click.echo(json.dumps(run_as_json(app, record), indent=2, ensure_ascii=False))
        sys.exit(1 if record.state == "failed" else 0)
    click.echo(f"run {record.id}  pipeline {record.pipeline}  state {record.state}")
    finished = (f"  finished {_when(record.finished_at)} UTC" if record.finished_at
                else "  not finished")
    click.echo(f"logical date {record.logical_date.isoformat()}  created "
               f"{_when(record.created_at)} UTC{finished}")
    click.echo(f"key {record.key}" + (f"  reused {record.reused_from}" if record.reused_from
                                      else ""))
    click.echo(f"params {yaml.safe_dump(_plain(record.params), default_flow_style=True).strip()}")
    driver = Driver(app, record.id)
    width = max(20, *(len(n) for n in record.steps))
    click.echo(f"{'STEP':<{width}} {'STATE':<16} {'STARTED (UTC)':<20} {'TOOK':>9} "
               f"{'RETRIES':>7}  RESULT")
    for name, step in record.steps.items():
        state = step.state if step.items is None else \
            f"{step.state} ({items_done(app, record, name)}/{step.items})"
        if step.state == "success":
            shown = short(driver.step_result(record, name))
        else:
            shown = step.error or step.reason or ""
        click.echo(f"{name:<{width}} {state:<16} {_when(step.started_at):<20} "
                   f"{_took(step.started_at, step.ended_at):>9} {step.retries:>7}  {shown}")
    if record.state == "failed":
        sys.exit(1)


def step_result_command(app: Any, run_id: str, step: str, wait: bool = False,
                        timeout: float | None = None) -> None:
    """``runner result RUN STEP``: the step's whole result as JSON; exit 1 unless it
    succeeded (its error or state on stderr). With ``wait``, once the step is done (exit
    124 after ``timeout`` seconds)."""
    record = load_run(app.backend, run_id)
    if step not in record.steps:
        raise click.BadParameter(f"run {run_id} has no step {step!r}; its steps: "
                                 f"{', '.join(record.steps)}", param_hint="STEP")
    deadline = None if timeout is None else time.monotonic() + timeout
    while wait and record.steps[step].state not in STEP_DONE and record.state not in RUN_DONE:
        if deadline is not None and time.monotonic() >= deadline:
            click.echo(f"step {step!r} of run {run_id} still {record.steps[step].state} after "
                       f"{timeout:g}s (--timeout)", err=True)
            sys.exit(TIMED_OUT)
        time.sleep(POLL)
        record = load_run(app.backend, run_id)
    run = record.steps[step]
    if run.state != "success":
        click.echo(f"{run.state}" + (f": {run.error or run.reason}" if run.error or run.reason
                                     else ""), err=True)
        sys.exit(1)
    value = Driver(app, run_id).step_result(record, step)
    click.echo(json.dumps(_plain(value), ensure_ascii=False))


@click.command()
@app_option
@click.option("--pipeline", default=None, help="Only runs of this pipeline.")
@click.option("--state", type=click.Choice(RUN_STATES), default=None)
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
def runs(app_path, config_path, pipeline, state, limit) -> None:
    """List pipeline runs, newest first."""
    app = pipeline_app(None, app_path, config_path)
    records = [r for r in list_runs(app.backend)
               if (pipeline is None or r.pipeline == pipeline)
               and (state is None or r.state == state)]
    records.sort(key=lambda r: r.created_at, reverse=True)
    shown = records[:limit]
    id_width = max([24, *(len(r.id) for r in shown)])
    name_width = max([20, *(len(r.pipeline) for r in shown)])
    click.echo(f"{'RUN':<{id_width}} {'PIPELINE':<{name_width}} {'STATE':<10} "
               f"{'CREATED (UTC)':<20} {'TOOK':>9}")
    for r in shown:
        click.echo(f"{r.id:<{id_width}} {r.pipeline:<{name_width}} {r.state:<10} "
                   f"{_when(r.created_at):<20} {_took(r.created_at, r.finished_at):>9}")


@click.command()
@click.argument("run_id")
@app_option
def cancel(run_id, app_path, config_path) -> None:
    """Cancel run RUN_ID: revoke what has not run."""
    app = pipeline_app(None, app_path, config_path)
    record = control.cancel(app, run_id)
    click.echo(f"run {record.id}: {record.state}")


@click.command()
@click.argument("run_id")
@app_option
@click.option("--wait", is_flag=True, help="Show progress until the run ends.")
@click.option("--timeout", type=click.FloatRange(min=0), default=None,
              help="With --wait: give up waiting after N seconds (exit 124).")
def retry(run_id, app_path, config_path, wait, timeout) -> None:
    """Run the failed, skipped and cancelled steps of RUN_ID again (of a mapped step, the
    items that did not succeed)."""
    app = pipeline_app(None, app_path, config_path)
    record = control.retry(app, run_id)
    click.echo(f"run {record.id}: retrying (attempt {record.attempt})")
    if wait:
        sys.exit(follow(app, record.id, timeout=timeout))


COMMANDS = [status, runs, cancel, retry]

"""Following a pipeline run from the command line: a live table of its steps on a terminal
(rich), plain lines of what changed otherwise; a warning when nothing consumes a step; a
``--timeout``; and the final steps' results at the end."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import click

from runner.config.urls import mask_url
from runner.exceptions import PipelineError
from runner.pipeline.engine import Driver
from runner.pipeline.runs import RUN_DONE, RunRecord, items_key, load_run

POLL = 0.1  # seconds between looks at a run's record while waiting
STALL = 10.0  # seconds a step may wait in its queue before `submit --wait` says so
TIMED_OUT = 124  # exit code of a waiting command that gave up (as timeout(1))
SHORT = 60  # characters of a result shown in a table


def short(value: Any, limit: int = SHORT) -> str:
    """A result as one line of JSON, cut in the middle past ``limit`` characters."""
    try:
        text = json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else f"{text[:limit // 2 - 2]} ... {text[-limit // 2 + 3:]}"


def items_done(app: Any, record: RunRecord, name: str) -> int:
    step = record.steps[name]
    if step.state in ("success", "failed"):
        return step.items or 0
    return app.backend.set_size(items_key(record.id, name, record.attempt_of(name)))


def step_rows(app: Any, record: RunRecord) -> list[tuple[str, str, str, str]]:
    """(step, state, done/total of a map, elapsed) for each step."""
    now = time.time()
    rows = []
    for name, step in record.steps.items():
        count = "" if step.items is None else f"{items_done(app, record, name)}/{step.items}"
        start = step.started_at
        elapsed = "" if start is None else f"{(step.ended_at or now) - start:.1f}s"
        rows.append((name, step.state, count, elapsed))
    return rows


def _line(step: Any, count: str) -> str:
    text = step.state + (f" ({count})" if count else "")
    if step.error:
        text += f": {step.error}"
    elif step.reason:
        text += f": {step.reason}"
    return text


class PlainLines:
    """One line per change of a step (the output is a file or a pipe)."""

    def __init__(self) -> None:
        self.shown: dict[str, str] = {}

    def update(self, record: RunRecord, rows: list) -> None:
        for name, _state, count, _elapsed in rows:
            line = _line(record.steps[name], count)
            if self.shown.get(name) != line:
                self.shown[name] = line
                click.echo(f"  {name:<20} {line}")

    def close(self) -> None:
        pass


class LiveTable:
    """A table of the steps redrawn in place (the output is a terminal)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.live import Live

        self.live = Live(console=Console(), refresh_per_second=8, transient=False)
        self.live.start()

    def update(self, record: RunRecord, rows: list) -> None:
        from rich.table import Table

        table = Table(title=f"run {record.id} ({record.pipeline}): {record.state}")
        for column in ("STEP", "STATE", "ITEMS", "ELAPSED", "ERROR / REASON"):
            table.add_column(column)
        for name, state, count, elapsed in rows:
            step = record.steps[name]
            table.add_row(name, state, count, elapsed, step.error or step.reason or "")
        self.live.update(table)

    def close(self) -> None:
        self.live.stop()


def follow(app: Any, run_id: str, worker: subprocess.Popen | None = None,
           timeout: float | None = None, stall: float = STALL, results: bool = True) -> int:
    """Show a run's steps until it ends; its exit code (0 success, 1 not, TIMED_OUT after
    ``timeout`` seconds: the run goes on). Says once on stderr when a step has waited
    ``stall`` seconds in its queue with no worker starting it."""
    view = LiveTable() if sys.stdout.isatty() else PlainLines()
    deadline = None if timeout is None else time.monotonic() + timeout
    warned = False
    try:
        while True:
            record = load_run(app.backend, run_id)
            view.update(record, step_rows(app, record))
            if record.state in RUN_DONE:
                break
            if worker is not None and worker.poll() is not None:
                raise PipelineError(f"the local worker exited with code {worker.returncode} "
                                    f"before run {run_id} finished")
            if not warned:
                warned = _warn_if_stalled(app, record, stall)
            if deadline is not None and time.monotonic() >= deadline:
                view.close()
                click.echo(f"run {run_id}: still {record.state} after {timeout:g}s "
                           f"(--timeout); it goes on: runner status {run_id}", err=True)
                return TIMED_OUT
            time.sleep(POLL)
    finally:
        view.close()
    click.echo(f"run {run_id}: {record.state}")
    if results:
        show_final_results(app, record)
    return 0 if record.state == "success" else 1


def _warn_if_stalled(app: Any, record: RunRecord, stall: float) -> bool:
    if any(step.state == "running" for step in record.steps.values()):
        return False
    now = time.time()
    if record.state == "queued" and now - record.created_at >= stall:
        from runner.pipeline.slots import occupancy

        line = occupancy(app.backend, record.pipeline)
        ahead = line["waiting"].index(record.id) if record.id in line["waiting"] else 0
        click.echo(f"warning: run {record.id} has waited {now - record.created_at:.0f}s for "
                   f"one of pipeline {record.pipeline!r}'s max_active_runs slots "
                   f"({len(line['active'])} runs active, {ahead} waiting before it)", err=True)
        return True
    for name, step in record.steps.items():
        if step.state == "queued" and step.enqueued_at and now - step.enqueued_at >= stall:
            queue = step.queue or app.conf.task_default_queue
            click.echo(f"warning: step {name!r} has waited {now - step.enqueued_at:.0f}s in "
                       f"queue {queue!r} on broker {mask_url(app.broker_url)} and no worker "
                       f"has started it; is a worker consuming that queue? "
                       f"(runner worker -A {record.app or 'APP'} -Q {queue})", err=True)
            return True
    return False


def show_final_results(app: Any, record: RunRecord) -> None:
    """The result (or error) of each final step: what the run gives back."""
    driver = Driver(app, record.id)
    for name in driver.final_steps():
        step = record.steps[name]
        if step.state == "success":
            click.echo(f"  {name}: {short(driver.step_result(record, name), 1000)}")
        else:
            click.echo(f"  {name}: {step.state}"
                       + (f": {step.error or step.reason}" if step.error or step.reason else ""))

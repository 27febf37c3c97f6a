"""``runner result``: show a task's state and result, as ``celery result``."""

from __future__ import annotations

import json

import click

from runner.cli.options import app_options


@click.command()
@app_options
@click.argument("task_id")
@click.argument("step", required=False)
@click.option("--traceback", "show_traceback", is_flag=True, help="Print the traceback too.")
@click.option("--wait", is_flag=True, help="Wait until the task is done.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after N s.")
def result(app, task_id, step, show_traceback, wait, timeout) -> None:
    """Print the state and result of task TASK_ID (or, as ``result RUN STEP``, the result of
    step STEP of pipeline run RUN)."""
    if step is not None:
        from runner.cli.runs import step_result_command

        step_result_command(app, task_id, step, wait, timeout)
        return
    res = app.AsyncResult(task_id)
    if wait:
        res.get(timeout=timeout, propagate=False)
    state = res.state
    if state == "SUCCESS":
        click.echo(json.dumps(res.result, default=repr))
    elif res.ready() or state == "RETRY":
        error = res.result
        click.echo(f"{state}: {type(error).__name__}: {error}")
    else:
        click.echo(state)
    if show_traceback and res.traceback:
        click.echo(res.traceback.rstrip())
    if state in ("FAILURE", "REVOKED"):  # (a script sees the task did not succeed)
        raise SystemExit(1)


COMMANDS = [result]

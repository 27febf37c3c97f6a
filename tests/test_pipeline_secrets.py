"""Secret params (issue 20): ``secret: true`` values reach the tasks but are masked in the run
record, `runner status` (and `--json`), `runner runs`, and what logs and events show of a
step's arguments (its argsrepr). Real workers, SQLite and Redis."""

from __future__ import annotations

import pytest

from runner.pipeline.runs import load_run

pytestmark = pytest.mark.transports("sqlite", "redis")

TOKEN = "tok-5f3a9c1e-very-secret"

PIPELINE = """\
name: secretive
app: pipeline_tasks
params:
  token: {type: str, secret: true, required: true}
  region: {type: str, default: eu}
steps:
  login:
    task: pipeline_tasks.describe
    args: ["{{ params.token | length }}", "{{ params.region }}"]
    kwargs: {token_ok: "{{ params.token == '""" + TOKEN + """' }}"}
  call:
    task: pipeline_tasks.stamp
    needs: [login]
    args: ["{{ params.token }}"]
"""


def test_a_secret_param_reaches_its_task_and_shows_nowhere(pipelines):
    worker = pipelines.worker("-c", "2")
    path = pipelines.write(PIPELINE)
    done = pipelines.cli("submit", path, "-p", f"token={TOKEN}", "--wait", "--timeout", "60")
    assert done.returncode == 0, done.stderr
    assert TOKEN not in done.stdout + done.stderr
    records = [r for r in _runs(pipelines)]
    assert len(records) == 1
    record = records[0]
    assert record.state == "success"
    assert record.params == {"token": "***", "region": "eu"}
    described = pipelines.result(record.id, "login")
    assert described["args"] == [["int", len(TOKEN)], ["str", "eu"]]
    assert described["kwargs"]["token_ok"] == ["bool", True]  # the task got the real value
    for args in (("status", record.id), ("status", record.id, "--json"), ("runs",)):
        shown = pipelines.cli(*args)
        assert shown.returncode == 0, shown.stderr
        assert TOKEN not in shown.stdout, args
    assert "***" in pipelines.cli("status", record.id, "--json").stdout
    # what the worker logs or would show of the step's arguments
    message = _message_of(pipelines, record.id)
    assert TOKEN not in message.options["argsrepr"] and "***" in message.options["argsrepr"]
    assert TOKEN not in worker.log()
    assert pipelines.marks().count(TOKEN) == 1  # the task got the token itself


def _runs(pipelines):
    from runner.pipeline.runs import list_runs

    return list_runs(pipelines.app.backend)


def _message_of(pipelines, run_id: str):
    """The message the engine builds for the step that takes the token (built again, as the
    engine does, from the stored run)."""
    from runner.pipeline.engine import Driver

    driver = Driver(pipelines.app, run_id)
    record = load_run(pipelines.app.backend, run_id)
    step = driver.pipeline.steps["call"]
    context = driver.context(record, step)
    from runner.pipeline.starting import _masked_arguments
    from runner.pipeline.template import render

    masked = _masked_arguments(render(step.args, context), render(step.kwargs, context),
                               driver.secrets())
    return type("Shown", (), {"options": masked})

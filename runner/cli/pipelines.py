"""Pipeline commands: submit, run, status, runs, graph, cancel, retry."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

import click
import yaml

from runner.cli.options import load_app
from runner.config.safe_yaml import YAMLError, load_value
from runner.exceptions import PipelineError
from runner.pipeline import control, engine
from runner.pipeline.model import Pipeline
from runner.pipeline.runs import RUN_DONE, RunRecord, items_key, list_runs, load_run
from runner.pipeline.source import Located
from runner.pipeline.validate import load_pipeline

POLL = 0.1  # seconds between looks at a run's record while waiting


def app_option(command):
    command = click.option("--config", "config_path", metavar="FILE",
                           type=click.Path(dir_okay=False),
                           help="YAML settings file, above the app's own configuration.")(command)
    return click.option("-A", "--app", "app_path", envvar="RUNNER_APP", metavar="MODULE[:ATTR]",
                        help="Module holding the app (default: the pipeline's `app:`).")(command)


def params_option(command):
    return click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE",
                        help="Set a param (VALUE is YAML: 3, [a, b], {k: v}); repeatable.")(command)


def parse_params(pairs: tuple[str, ...], pipeline: Pipeline | None = None) -> dict[str, Any]:
    """``NAME=VALUE`` pairs; a VALUE stays text for a typed param (its type converts it), and
    is read as YAML for an untyped one (``limit: 1000`` in the file, ``-p limit=5``)."""
    params: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="-p")
        spec = pipeline.params.get(name.strip()) if pipeline else None
        if spec is not None and spec.type == "any":
            try:
                value = load_value(value)
            except YAMLError:
                pass  # not YAML: the text itself
        params[name.strip()] = value
    return params


def pipeline_app(source: Located | None, app_path: str | None, config_path: str | None):
    """The app for a pipeline: -A, else the file's ``app:``; its ``config:`` is applied. Reads
    the file as written, so that this works for a file with other problems too."""
    data = source.data if source is not None and isinstance(source.data, dict) else {}
    named, config = (data.get(key) if isinstance(data.get(key), str) else None
                     for key in ("app", "config"))
    app = load_app(app_path or named, None)
    if config:
        if config.endswith((".yaml", ".yml", ".json")):
            base = os.path.dirname(os.path.abspath(source.file))
            app.conf.load_file(os.path.join(base, config))
        else:
            app.config_from_object(config, force=True)
    if config_path:
        app.conf.load_file(config_path, layer="cli")
    return app


def registered_tasks(app) -> set[str]:
    app.import_task_modules()
    return set(app.tasks)


def validated(path: str, app_path: str | None, config_path: str | None):
    """The pipeline at ``path`` and its app; PipelineError with every problem, unknown task
    names included."""
    apps = []

    def task_names(source: Located) -> set[str]:
        apps.append(pipeline_app(source, app_path, config_path))
        return registered_tasks(apps[0])

    loaded = load_pipeline(path, task_names)
    return loaded, apps[0]


# -- submit / run ---------------------------------------------------------------------------


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@params_option
@app_option
@click.option("--logical-date", default=None, help="ISO date/time the run is for (default now).")
@click.option("--wait", is_flag=True, help="Show progress until the run ends; exit 1 unless it "
                                           "succeeds.")
def submit(file, params, app_path, config_path, logical_date, wait) -> None:
    """Validate FILE and start a run of it; print the run id."""
    loaded, app = validated(file, app_path, config_path)
    record = engine.submit(app, loaded, parse_params(params, loaded.model),
                           _logical_date(logical_date, app))
    click.echo(record.id)
    if wait:
        sys.exit(follow(app, record.id))


def _logical_date(text: str | None, app) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an ISO date or date-time",
                                 param_hint="--logical-date") from None
    return value if value.tzinfo else value.replace(tzinfo=app.tz)


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@params_option
@app_option
@click.option("-c", "--concurrency", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--logical-date", default=None, help="ISO date/time the run is for (default now).")
def run(file, params, app_path, config_path, concurrency, logical_date) -> None:
    """Run FILE to completion with a local worker pool started (and stopped) for it."""
    loaded, app = validated(file, app_path, config_path)
    app_module = app_path or loaded.model.app
    if not app_module:
        raise PipelineError(f"{file}: say which module holds the tasks: `app:` in the file, "
                            f"or -A MODULE")
    env = dict(os.environ, RUNNER_BROKER_URL=app.broker_url,
               RUNNER_RESULT_BACKEND=app.backend_url)
    command = [sys.executable, "-m", "runner", "worker", "-A", app_module, "-c",
               str(concurrency), "--quiet", "-l", "error"]
    if config_path:
        command += ["--config", config_path]
    worker = subprocess.Popen(command, env=env)
    try:
        record = engine.submit(app, loaded, parse_params(params, loaded.model),
                               _logical_date(logical_date, app))
        click.echo(f"run {record.id} of {loaded.name}")
        code = follow(app, record.id, worker=worker)
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
    sys.exit(code)


def follow(app, run_id: str, worker: subprocess.Popen | None = None) -> int:
    """Print each step's changes until the run ends; the exit code of its outcome."""
    shown: dict[str, str] = {}
    while True:
        record = load_run(app.backend, run_id)
        for name, line in step_lines(app, record).items():
            if shown.get(name) != line:
                shown[name] = line
                click.echo(f"  {name:<20} {line}")
        if record.state in RUN_DONE:
            click.echo(f"run {run_id}: {record.state}")
            return 0 if record.state == "success" else 1
        if worker is not None and worker.poll() is not None:
            raise PipelineError(f"the local worker exited with code {worker.returncode} "
                                f"before run {run_id} finished")
        time.sleep(POLL)


def step_lines(app, record: RunRecord) -> dict[str, str]:
    lines = {}
    for name, step in record.steps.items():
        text = step.state
        if step.items is not None:
            done = step.items if step.state in ("success", "failed") else _items_done(
                app, record, name)
            text += f" ({done}/{step.items})"
        if step.error:
            text += f": {step.error}"
        elif step.reason:
            text += f": {step.reason}"
        lines[name] = text
    return lines


def _items_done(app, record: RunRecord, name: str) -> int:
    return app.backend.set_size(items_key(record.id, name, record.attempt_of(name)))


# -- looking at runs ------------------------------------------------------------------------


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _took(start: float | None, end: float | None) -> str:
    return f"{end - start:.3f}s" if start and end else "-"


@click.command()
@click.argument("run_id", required=False)
@app_option
def status(run_id, app_path, config_path) -> None:
    """Show run RUN_ID: its state and a table of its steps. Without RUN_ID: the workers
    online (as celery status)."""
    if run_id is None:
        from runner.cli.inspect import show_online

        show_online(app_path, config_path)
        return
    app = pipeline_app(None, app_path, config_path)
    record = load_run(app.backend, run_id)
    click.echo(f"run {record.id}  pipeline {record.pipeline}  state {record.state}")
    click.echo(f"logical date {record.logical_date.isoformat()}  created "
               f"{_when(record.created_at)} UTC  finished {_when(record.finished_at)} UTC")
    click.echo(f"params {yaml.safe_dump(_plain(record.params), default_flow_style=True).strip()}")
    lines = step_lines(app, record)
    click.echo(f"{'STEP':<20} {'STATE':<28} {'STARTED (UTC)':<20} {'TOOK':>9} {'RETRIES':>7}")
    for name, step in record.steps.items():
        state = lines[name].split(":")[0]
        click.echo(f"{name:<20} {state:<28} {_when(step.started_at):<20} "
                   f"{_took(step.started_at, step.ended_at):>9} {step.retries:>7}")
        if step.error or step.reason:
            click.echo(f"{'':<20} {step.error or step.reason}")
    if record.state == "failed":
        sys.exit(1)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return str(value)


@click.command()
@app_option
@click.option("--pipeline", default=None, help="Only runs of this pipeline.")
@click.option("--state", type=click.Choice(["running", "success", "failed", "cancelled"]),
              default=None)
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
def runs(app_path, config_path, pipeline, state, limit) -> None:
    """List pipeline runs, newest first."""
    app = pipeline_app(None, app_path, config_path)
    records = [r for r in list_runs(app.backend)
               if (pipeline is None or r.pipeline == pipeline)
               and (state is None or r.state == state)]
    records.sort(key=lambda r: r.created_at, reverse=True)
    click.echo(f"{'RUN':<24} {'PIPELINE':<20} {'STATE':<10} {'CREATED (UTC)':<20} {'TOOK':>9}")
    for r in records[:limit]:
        click.echo(f"{r.id:<24} {r.pipeline:<20} {r.state:<10} {_when(r.created_at):<20} "
                   f"{_took(r.created_at, r.finished_at):>9}")


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["text", "dot", "mermaid"]), default="text",
              show_default=True)
def graph(file, fmt) -> None:
    """Print the steps of FILE and what each needs."""
    model = load_pipeline(file).model
    if fmt == "dot":
        click.echo(f'digraph "{model.name}" {{')
        for name, step in model.steps.items():
            label = f"{name}\\n{step.task}" + ("\\n(map)" if step.map is not None else "")
            click.echo(f'  "{name}" [label="{label}"];')
            for need in step.needs:
                click.echo(f'  "{need}" -> "{name}";')
        click.echo("}")
    elif fmt == "mermaid":
        click.echo("graph TD")
        for name, step in model.steps.items():
            click.echo(f'  {name}["{name}: {step.task}"]')
            for need in step.needs:
                click.echo(f"  {need} --> {name}")
    else:
        click.echo(f"{model.name}: {len(model.steps)} steps")
        for name, step in model.steps.items():
            extras = [f"map {step.map}" if step.map is not None else "",
                      f"when {step.when}" if step.when is not None else ""]
            needs = f" <- {', '.join(step.needs)}" if step.needs else ""
            more = "; ".join(e for e in extras if e)
            click.echo(f"  {name} ({step.task}){needs}" + (f"  [{more}]" if more else ""))


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
def retry(run_id, app_path, config_path, wait) -> None:
    """Run the failed, skipped and cancelled steps of RUN_ID again."""
    app = pipeline_app(None, app_path, config_path)
    record = control.retry(app, run_id)
    click.echo(f"run {record.id}: retrying (attempt {record.attempt})")
    if wait:
        sys.exit(follow(app, record.id))


COMMANDS = [submit, run, status, runs, graph, cancel, retry]

"""Pipeline commands: submit, run, graph (runs: :mod:`runner.cli.runs`)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from typing import Any

import click

from runner.cli.options import load_app
from runner.cli.progress import STALL, follow
from runner.config.safe_yaml import YAMLError, load_value
from runner.exceptions import PipelineError
from runner.pipeline.model import Pipeline
from runner.pipeline.partial import plan
from runner.pipeline.source import Located
from runner.pipeline.submit import submit_run
from runner.pipeline.validate import load_pipeline


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


def partial_options(command):
    command = click.option("--reuse", "reuse", default=None, metavar="RUN",
                           help="With --from/--only: the run whose results the steps before "
                                "them take (default: the last successful run).")(command)
    command = click.option("--only", "only", default=None, metavar="STEP[,STEP]",
                           help="Run only these steps (the others: reused or skipped).")(command)
    return click.option("--from", "start", default=None, metavar="STEP",
                        help="Run STEP and what comes after it; the steps before it: their "
                             "results from an earlier run (--reuse).")(command)


def timeout_option(command):
    return click.option("--timeout", type=click.FloatRange(min=0), default=None,
                        help="Give up waiting after N seconds (exit 124); the run goes on."
                        )(command)


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@params_option
@app_option
@click.option("--logical-date", default=None, help="ISO date/time the run is for (default now).")
@click.option("--key", default=None, help="Idempotency key: if a run has it, that run is "
                                          "returned and no other is started.")
@click.option("--wait", is_flag=True, help="Show progress until the run ends, then the final "
                                           "steps' results; exit 1 unless it succeeds.")
@partial_options
@timeout_option
@click.option("--stall-after", type=click.FloatRange(min=0), default=STALL, show_default=True,
              help="With --wait: say so when a step has waited this many seconds in its queue "
                   "with no worker starting it.")
def submit(file, params, app_path, config_path, logical_date, key, start, only, reuse, wait,
           timeout, stall_after) -> None:
    """Validate FILE and start a run of it; print the run id."""
    loaded, app = validated(file, app_path, config_path)
    prepare = plan(app, loaded, start, only, reuse)
    done = submit_run(app, loaded, parse_params(params, loaded.model),
                      _logical_date(logical_date, app), key=key, prepare=prepare)
    click.echo(done.record.id)
    if not done.created:
        _say_existing(done.record)
    if wait:
        sys.exit(follow(app, done.record.id, timeout=timeout, stall=stall_after))


def _say_existing(record) -> None:
    click.echo(f"run {record.id} has key {record.key!r} ({record.state}); no other run "
               f"started", err=True)


def _logical_date(text: str | None, app) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an ISO date or date-time",
                                 param_hint="--logical-date") from None
    return value if value.tzinfo else value.replace(tzinfo=app.tz)


def step_queues(app, loaded) -> list[str]:
    """:func:`pipeline_queues` of a pipeline and of its sub-pipelines."""
    found = set(pipeline_queues(app, loaded.model))
    for child in loaded.subs.values():
        found.update(step_queues(app, child))
    return sorted(found)


def pipeline_queues(app, model: Pipeline) -> list[str]:
    """Every queue the pipeline's steps are sent to (step or default ``queue:``, the task's own
    queue, ``task_routes``, the default queue), for a worker that must consume them all."""
    queues = set()
    for step in model.steps.values():
        if step.task is None:
            continue  # a sub-pipeline: its own steps below
        queue = model.option(step, "queue")
        task = app.tasks.get(step.task)
        if queue is None and task is not None and getattr(task, "queue", None):
            queue = task.queue
        queues.add(app.router().route(step.task, {"queue": queue} if queue else {})["queue"])
    return sorted(queues)


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@params_option
@app_option
@click.option("-c", "--concurrency", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--logical-date", default=None, help="ISO date/time the run is for (default now).")
@click.option("--key", default=None, help="Idempotency key (see submit).")
@partial_options
@timeout_option
def run(file, params, app_path, config_path, concurrency, logical_date, key, start, only, reuse,
        timeout) -> None:
    """Run FILE to completion with a local worker pool started (and stopped) for it, consuming
    every queue its steps use."""
    loaded, app = validated(file, app_path, config_path)
    app_module = app_path or loaded.model.app
    if not app_module:
        raise PipelineError(f"{file}: say which module holds the tasks: `app:` in the file, "
                            f"or -A MODULE")
    prepare = plan(app, loaded, start, only, reuse)  # its errors before a worker starts
    env = dict(os.environ, RUNNER_BROKER_URL=app.broker_url,
               RUNNER_RESULT_BACKEND=app.backend_url)
    # (-E: a monitor, `runner events` or the dashboard, sees the run's tasks as well)
    command = [sys.executable, "-m", "runner", "worker", "-A", app_module, "-c",
               str(concurrency), "--quiet", "-l", "error", "-E",
               "-Q", ",".join(step_queues(app, loaded))]
    if config_path:
        command += ["--config", config_path]
    worker = subprocess.Popen(command, env=env)
    try:
        done = submit_run(app, loaded, parse_params(params, loaded.model),
                          _logical_date(logical_date, app), key=key, prepare=prepare)
        click.echo(f"run {done.record.id} of {loaded.name}"
                   + (f" (results before it from run {done.record.reused_from})"
                      if done.record.reused_from else ""))
        if not done.created:
            _say_existing(done.record)
        code = follow(app, done.record.id, worker=worker, timeout=timeout)
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
    sys.exit(code)


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
            label = f"{name}\\n{step.task or step.pipeline}" + ("\\n(map)" if step.map is not None else "")
            click.echo(f'  "{name}" [label="{label}"];')
            for need in step.needs:
                click.echo(f'  "{need}" -> "{name}";')
        click.echo("}")
    elif fmt == "mermaid":
        click.echo("graph TD")
        for name, step in model.steps.items():
            click.echo(f'  {name}["{name}: {step.task or step.pipeline}"]')
            for need in step.needs:
                click.echo(f"  {need} --> {name}")
    else:
        click.echo(f"{model.name}: {len(model.steps)} steps")
        for name, step in model.steps.items():
            extras = [f"map {step.map}" if step.map is not None else "",
                      f"when {step.when}" if step.when is not None else ""]
            needs = f" <- {', '.join(step.needs)}" if step.needs else ""
            more = "; ".join(e for e in extras if e)
            what = step.task or f"pipeline {step.pipeline}"
            click.echo(f"  {name} ({what}){needs}" + (f"  [{more}]" if more else ""))


COMMANDS = [submit, run, graph]

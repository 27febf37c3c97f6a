"""``runner validate TARGET``: check a configuration (or, later, a pipeline) and describe it.

TARGET is a module name (``celeryconfig``), a ``.py`` file, or a ``.yaml``/``.yml``/``.json`` file.
A YAML file with a top-level ``steps:`` key is a pipeline; anything else is a configuration.
``--kind`` overrides the guess. Exit codes: 0 valid, 1 invalid (every problem is printed),
2 cannot be checked.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

import click

from runner.config.check import check_conf
from runner.config.conf import Conf
from runner.config.loaders import ensure_cwd_on_path, import_path
from runner.config.safe_yaml import YAMLError, load, read_text
from runner.pipeline.source import MAX_PIPELINE_BYTES

_DATA_SUFFIXES = {".yaml", ".yml", ".json"}


def guess_kind(target: str) -> str:
    """``"pipeline"`` for a YAML/JSON mapping with a top-level ``steps`` key, else ``"config"``."""
    path = Path(target)
    if path.suffix.lower() not in _DATA_SUFFIXES or not path.is_file():
        return "config"
    try:
        text = read_text(path, MAX_PIPELINE_BYTES)
    except OSError:
        return "config"  # the config loader reports the problem
    except YAMLError:  # too big or not UTF-8: the pipeline loader says so, if it is one
        with open(path, "rb") as stream:
            head = stream.read(MAX_PIPELINE_BYTES)
        return "pipeline" if re.search(rb"^steps\s*:", head, re.M) else "config"
    if re.search(r"^steps\s*:", text, re.M):  # a top-level `steps:` line tells (no parse)
        return "pipeline"
    try:
        data = load(text, str(path)).data
    except YAMLError:
        return "config"
    return "pipeline" if isinstance(data, dict) and "steps" in data else "config"


def _load_target(conf: Conf, target: str) -> None:
    path = Path(target)
    if path.suffix.lower() in _DATA_SUFFIXES:
        conf.load_file(path)
    elif path.suffix == ".py":
        conf.load_object(import_path(path))
    else:
        ensure_cwd_on_path()
        conf.load_object(target, force=True)


@click.command()
@click.argument("target")
@click.option("--kind", type=click.Choice(["config", "pipeline"]), default=None,
              help="What TARGET is (default: guessed from its content).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="A YAML settings file applied over TARGET (as every command's --config).")
def validate(target: str, kind: str | None, config_file: str | None) -> None:
    """Check TARGET (a config module, .py, .yaml or .json file) and print a summary."""
    logging.getLogger("runner.config").setLevel(logging.ERROR)  # its warnings: errors here
    kind = kind or guess_kind(target)
    if kind == "pipeline":
        sys.exit(validate_pipeline(target, config_file))

    def load(conf: Conf) -> None:
        _load_target(conf, target)
        if config_file:
            conf.load_file(config_file, layer="cli")

    sys.exit(check_conf(load))


def validate_pipeline(target: str, config_file: str | None) -> int:
    """0 and a summary when the pipeline is valid, else 1 and every problem, one per line.

    Checked as the commands that run it check it: the file (see
    :mod:`runner.pipeline.validate`), its ``app:`` (it must import; its task names are then
    checked), its triggers (as ``runner beat`` checks them) and the ``RUNNER_*`` variables.
    """
    from runner.cli.pipelines import pipeline_app, registered_tasks
    from runner.config.check import environ_issues
    from runner.exceptions import ConfigError, PipelineError, RunnerError
    from runner.pipeline.triggers import trigger_problems
    from runner.pipeline.validate import load_pipeline
    from runner.schedules import zone

    app_problems: list[str] = []

    def task_names(source) -> set[str] | None:
        try:
            return registered_tasks(pipeline_app(source, None, config_file))
        except RunnerError as exc:  # say so, and check the rest
            data = source.data if isinstance(source.data, dict) else {}
            key = "config" if isinstance(exc, ConfigError) and "config" in data else "app"
            where = source.where((key,)) if key in data else source.file
            named = data.get(key)
            app_problems.append(f"{where}: {key} {named!r} cannot be loaded: {exc}"
                                if named else f"{where}: {exc}")
            return None

    try:
        loaded = load_pipeline(target, task_names)
        problems = trigger_problems(loaded, zone("UTC"))
    except PipelineError as exc:
        loaded, problems = None, list(exc.problems)
    problems += app_problems + [str(issue) for issue in environ_issues(os.environ)]
    if problems:
        for problem in problems:
            click.echo(problem, err=True)
        return 1
    model = loaded.model
    click.echo(f"pipeline {model.name}: {len(model.steps)} steps, {len(model.params)} params, "
               f"{len(model.triggers)} trigger(s)")
    click.echo("pipeline OK")
    return 0


COMMANDS = [validate]

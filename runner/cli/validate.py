"""``runner validate TARGET``: check a configuration (or, later, a pipeline) and describe it.

TARGET is a module name (``celeryconfig``), a ``.py`` file, or a ``.yaml``/``.yml``/``.json`` file.
A YAML file with a top-level ``steps:`` key is a pipeline; anything else is a configuration.
``--kind`` overrides the guess. Exit codes: 0 valid, 1 invalid (every problem is printed),
2 cannot be checked (pipelines, until the pipeline issue lands).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import yaml

from runner.config.check import check_conf
from runner.config.conf import Conf
from runner.config.loaders import ensure_cwd_on_path, import_path

_DATA_SUFFIXES = {".yaml", ".yml", ".json"}


def guess_kind(target: str) -> str:
    """``"pipeline"`` for a YAML/JSON mapping with a top-level ``steps`` key, else ``"config"``."""
    path = Path(target)
    if path.suffix.lower() not in _DATA_SUFFIXES or not path.is_file():
        return "config"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return "config"  # the config loader reports the problem with its line
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
    kind = kind or guess_kind(target)
    if kind == "pipeline":
        click.echo(f"Error: {target}: pipelines are not supported yet", err=True)
        sys.exit(2)

    def load(conf: Conf) -> None:
        _load_target(conf, target)
        if config_file:
            conf.load_file(config_file, layer="cli")

    sys.exit(check_conf(load))


COMMANDS = [validate]

"""``runner report``: what to paste into a bug report, as ``celery report``: versions, the
platform, broker and results (passwords masked), and the settings that differ from the
defaults (secrets masked)."""

from __future__ import annotations

import sys

import click

from runner.cli.options import app_options
from runner.config.report import MASK, SECRET, masked, report_text

__all__ = ["MASK", "SECRET", "masked", "report_text", "report", "COMMANDS"]


@click.command()
@app_options
def report(app) -> None:
    """Versions, platform, broker and results, and the settings that differ from the
    defaults (passwords and secrets masked): for bug reports."""
    sys.stdout.write(report_text(app) + "\n")


COMMANDS = [report]

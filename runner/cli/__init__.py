"""The ``runner`` command: one click group (assembled in :mod:`runner.cli.main`), one module
per command (group); what they share is in :mod:`runner.cli.options`.

Commands call the library and never the reverse. Every :class:`~runner.exceptions.RunnerError`
becomes one line on stderr and a non-zero exit code; a traceback reaching a user is a bug.
"""

from __future__ import annotations

from runner.cli.main import main

__all__ = ["main"]

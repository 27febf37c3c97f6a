"""How ``runner worker`` and ``runner beat`` set up logging, as Celery's ``app.log.setup``.

If anything is connected to the ``setup_logging`` signal, runner leaves logging to it entirely
(and sends neither ``after_setup_*`` signal), as Celery does: that is how a project keeps its
own ``dictConfig``. Otherwise the root logger gets one handler (stderr, or ``logfile``),
replacing any it had when ``worker_hijack_root_logger`` is on (the default), and then
``after_setup_logger`` (the root logger) and ``after_setup_task_logger`` (the task logger,
``runner.task``) let receivers add their handlers or formatters.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from runner._state import running
from runner.signals import after_setup_logger, after_setup_task_logger, setup_logging

#: the logger task loggers hang under (Celery's ``celery.task``)
TASK_LOGGER = "runner.task"


def setup_logging_subsystem(app: Any, loglevel: str | int, logfile: str | None = None,
                            format: str | None = None, colorize: bool = False,
                            make_handler: Callable[[], logging.Handler] | None = None) -> bool:
    """Configure logging for a worker or beat process; False if a ``setup_logging``
    receiver did it instead. ``make_handler`` makes where lines go (a worker's ``--logfile``
    with ``%i`` names one file per process); default: ``logfile``, else stderr."""
    level = logging.getLevelName(loglevel.upper()) if isinstance(loglevel, str) else loglevel
    format = format or getattr(app.conf, "worker_log_format", None) or logging.BASIC_FORMAT
    if setup_logging.receivers and setup_logging.send(
            sender=None, loglevel=level, logfile=logfile, format=format, colorize=colorize):
        return False
    hijack = getattr(app.conf, "worker_hijack_root_logger", True)
    if make_handler is None:
        def make_handler() -> logging.Handler:
            return logging.FileHandler(logfile) if logfile else logging.StreamHandler(sys.stderr)
    root = logging.getLogger()
    if hijack:
        for old in list(root.handlers):
            root.removeHandler(old)
    if hijack or not root.handlers:
        handler = make_handler()
        handler.setFormatter(logging.Formatter(format))
        root.addHandler(handler)
    root.setLevel(level)
    _setup_task_logger(app, level, make_handler)
    details = {"loglevel": level, "logfile": logfile, "colorize": colorize}
    if after_setup_logger.receivers:
        after_setup_logger.send(sender=None, logger=logging.getLogger(), format=format,
                                **details)
    if after_setup_task_logger.receivers:
        task_format = getattr(app.conf, "worker_task_log_format", None) or format
        after_setup_task_logger.send(sender=None, logger=logging.getLogger(TASK_LOGGER),
                                     format=task_format, **details)
    return True


def get_task_logger(name: str) -> logging.Logger:
    """Celery's ``get_task_logger(__name__)``: a logger whose lines, in a worker, name the
    task that logs them and its id (``worker_task_log_format``)."""
    if name in (TASK_LOGGER, "celery.task"):
        raise ValueError(f"get_task_logger({name!r}): that is the parent of the task "
                         f"loggers; pass your module's __name__")
    return logging.getLogger(f"{TASK_LOGGER}.{name}")


class TaskFilter(logging.Filter):
    """Adds ``task_id`` and ``task_name`` (``???`` outside a task) to each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        tasks = running.tasks
        task = tasks[-1] if tasks else None
        request = task.request if task is not None else None
        record.task_name = getattr(task, "name", None) or "???"
        record.task_id = getattr(request, "id", None) or "???"
        return True


def _setup_task_logger(app: Any, level: int, make_handler: Callable[[], logging.Handler]
                       ) -> None:
    """The task loggers' own handler, with the task format; they do not propagate, so a line
    is written once."""
    logger = logging.getLogger(TASK_LOGGER)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = make_handler()
    handler.setFormatter(logging.Formatter(getattr(app.conf, "worker_task_log_format", None)
                                           or logging.BASIC_FORMAT))
    handler.addFilter(TaskFilter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False

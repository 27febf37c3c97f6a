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
from typing import Any

from runner.signals import after_setup_logger, after_setup_task_logger, setup_logging

#: the logger task loggers hang under (Celery's ``celery.task``)
TASK_LOGGER = "runner.task"


def setup_logging_subsystem(app: Any, loglevel: str | int, logfile: str | None = None,
                            format: str | None = None, colorize: bool = False) -> bool:
    """Configure logging for a worker or beat process; False if a ``setup_logging``
    receiver did it instead."""
    level = logging.getLevelName(loglevel.upper()) if isinstance(loglevel, str) else loglevel
    format = format or logging.BASIC_FORMAT
    if setup_logging.receivers and setup_logging.send(
            sender=None, loglevel=level, logfile=logfile, format=format, colorize=colorize):
        return False
    hijack = getattr(app.conf, "worker_hijack_root_logger", True)
    target: dict[str, Any] = {"filename": logfile} if logfile else {"stream": sys.stderr}
    logging.basicConfig(level=level, format=format, force=bool(hijack), **target)
    logging.getLogger().setLevel(level)
    details = {"loglevel": level, "logfile": logfile, "colorize": colorize}
    if after_setup_logger.receivers:
        after_setup_logger.send(sender=None, logger=logging.getLogger(), format=format,
                                **details)
    if after_setup_task_logger.receivers:
        task_format = getattr(app.conf, "worker_task_log_format", None) or format
        after_setup_task_logger.send(sender=None, logger=logging.getLogger(TASK_LOGGER),
                                     format=task_format, **details)
    return True

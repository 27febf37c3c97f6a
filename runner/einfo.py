"""``ExceptionInfo``: an exception with its type, traceback object and traceback text, as
Celery's (billiard's) ``einfo`` given to ``task_failure`` / ``task_retry`` receivers and to
``Task.on_failure`` / ``on_retry``."""

from __future__ import annotations

import sys
import traceback as tb_module
from types import TracebackType


class ExceptionInfo:
    """``str(einfo)`` is the formatted traceback; ``einfo.exception``, ``.type``, ``.tb``."""

    def __init__(self, exc_info: tuple | None = None, internal: bool = False,
                 traceback: str | None = None):
        type_, exception, tb = exc_info or sys.exc_info()
        self.type: type[BaseException] | None = type_
        self.exception: BaseException | None = exception
        self.tb: TracebackType | None = tb
        self.internal = internal
        self._text = traceback

    @classmethod
    def of(cls, exc: BaseException, traceback: str | None = None) -> ExceptionInfo:
        return cls((type(exc), exc, exc.__traceback__), traceback=traceback)

    @property
    def traceback(self) -> str:
        if self._text is None:
            self._text = "".join(tb_module.format_exception(self.type, self.exception, self.tb))
        return self._text

    @property
    def exc_info(self) -> tuple:
        return self.type, self.exception, self.tb

    def __str__(self) -> str:
        return self.traceback

    def __repr__(self) -> str:
        return f"<ExceptionInfo: {self.exception!r}>"

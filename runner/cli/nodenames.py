"""Celery's node-name and file-name expansions: ``-n worker1@%h``, ``--logfile=%n%I.log``.

- ``%h``: the host name with its domain; ``%n``: in ``-n``, the host name without its domain,
  in a file name, the node name's part before the ``@``; ``%d``: the domain; ``%p``: the
  whole node name (file names only);
- ``%i``: the pool process index (0 in the main process, 1..N in the prefork children);
  ``%I``: the same with a ``-`` in front, and nothing in the main process;
- ``%%``: a ``%``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import socket

_KEY = re.compile(r"%(.)")


def _expand(text: str, keys: dict[str, str]) -> str:
    return _KEY.sub(lambda m: keys.get(m.group(1), m.group(0)), text)


def host_format(text: str, host: str | None = None) -> str:
    """``-n``: ``worker1@%h`` -> ``worker1@box.example.com``."""
    host = host or socket.gethostname()
    short, _, domain = host.partition(".")
    return _expand(text, {"h": host, "n": short, "d": domain, "%": "%"})


def node_format(text: str, nodename: str, index: int = 0) -> str:
    """A file name (``--logfile``, ``--pidfile``) for node ``nodename`` and process ``index``."""
    name, _, host = nodename.rpartition("@")
    host = host or socket.gethostname()
    short, _, domain = host.partition(".")
    return _expand(text, {"h": host, "n": name or short, "d": domain, "p": nodename,
                          "i": str(index), "I": f"-{index}" if index else "", "%": "%"})


def process_index() -> int:
    """This process's pool index: 0 in the main process, N in ``runner-child-N``."""
    name = multiprocessing.current_process().name
    prefix, _, number = name.rpartition("-")
    return int(number) if prefix == "runner-child" and number.isdigit() else 0


class NodeLogFile(logging.FileHandler):
    """A log file named by a pattern with ``%i``/``%I``: a prefork child that logs through it
    writes to its own file (the pattern expanded with its index), as Celery's children do."""

    def __init__(self, pattern: str, nodename: str):
        self.pattern, self.nodename = pattern, nodename
        self._pid = os.getpid()
        super().__init__(node_format(pattern, nodename, process_index()), encoding="utf-8")

    def emit(self, record: logging.LogRecord) -> None:
        if os.getpid() != self._pid:
            self._follow_fork()
        super().emit(record)

    def _follow_fork(self) -> None:
        self._pid = os.getpid()
        path = os.path.abspath(node_format(self.pattern, self.nodename, process_index()))
        if path != self.baseFilename:
            if self.stream is not None:  # (empty: the handler flushes after every record)
                self.stream.close()
                self.stream = None
            self.baseFilename = path

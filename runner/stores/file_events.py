"""A descriptor that becomes readable when a file is written (Linux inotify, through ctypes).

The SQLite store blocks on it instead of polling: every commit in WAL mode writes the
``-wal`` file, by whichever process on this machine, so an idle waiter costs nothing and wakes
at once. Where inotify is missing (not Linux, or the per-user limit of instances reached),
:func:`watch_writes` returns None and the caller polls.
"""

from __future__ import annotations

import ctypes
import os

IN_MODIFY = 0x2
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000


def _libc():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.inotify_init1, libc.inotify_add_watch  # noqa: B018 - present (Linux)?
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


def watch_writes(path: str) -> int | None:
    """A non-blocking descriptor readable once ``path`` was written to since the last
    :func:`drain`; None if this system cannot watch it."""
    if _LIBC is None:
        return None
    fd = _LIBC.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
    if fd < 0:
        return None
    if _LIBC.inotify_add_watch(fd, os.fsencode(path), IN_MODIFY) < 0:
        os.close(fd)
        return None
    return fd


def drain(fd: int) -> None:
    """Read the events queued on ``fd`` (only their arrival matters)."""
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass

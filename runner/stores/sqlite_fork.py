"""No fork while a thread of this process is writing to a SQLite file.

SQLite keeps the locks of a process's connections in the process's memory as well as in the
kernel, and a forked child inherits that memory: forked while another thread held the write
lock, a child believes a connection of its own still holds it, and each of its writes waits out
the whole busy timeout (30 s) and fails. A worker forks pool processes while its other threads
(embedded beat, the result writer, remote control and events) write, so every write
(:func:`runner.stores.sqlite.writing` / ``transaction``) is counted here, and a fork waits until
none is under way in another thread (a thread that forks in the middle of its own write is
not waited for).
"""

from __future__ import annotations

import os
import threading


class ForkGuard:
    """Writes counted in, forks held back until other threads' writes are done."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._active = 0  # writes under way, all threads
        self._forking = False
        self._mine = threading.local()  # this thread's writes under way

    def enter(self) -> None:
        """A write begins (waits while a fork is under way)."""
        with self._cond:
            while self._forking:
                self._cond.wait()
            self._active += 1
        self._mine.depth = getattr(self._mine, "depth", 0) + 1

    def exit(self) -> None:
        """A write ended."""
        self._mine.depth -= 1
        with self._cond:
            self._active -= 1
            if self._active == 0 or self._forking:
                self._cond.notify_all()

    def before_fork(self) -> None:
        """Hold new writes back and wait for other threads' writes to end; the lock is kept
        through the fork."""
        self._cond.acquire()
        self._forking = True
        own = getattr(self._mine, "depth", 0)
        while self._active > own:
            self._cond.wait()

    def after_fork_in_parent(self) -> None:
        self._forking = False
        self._cond.notify_all()
        self._cond.release()

    def after_fork_in_child(self) -> None:
        """Only the forking thread goes on in the child: its own writes are all there is."""
        own = getattr(self._mine, "depth", 0)
        self._reset()
        self._active = self._mine.depth = own


GUARD = ForkGuard()
os.register_at_fork(before=GUARD.before_fork, after_in_parent=GUARD.after_fork_in_parent,
                    after_in_child=GUARD.after_fork_in_child)

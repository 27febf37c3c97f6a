"""``runner worker --detach`` and ``--pidfile``: what a systemd unit or an init script needs.

A pidfile is created exclusively: a second worker given the same file refuses to start while
the process it names lives; a file naming a dead process is stale and replaced. The worker
removes its pidfile when it exits (only while the file still names it).
"""

from __future__ import annotations

import os
import sys

from runner.exceptions import ConfigError


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


class Pidfile:
    def __init__(self, path: str):
        self.path = os.path.abspath(path)

    def check(self) -> None:
        """Raise when the file names a live process other than this one; remove a stale one."""
        try:
            with open(self.path) as file:
                text = file.read().strip()
        except FileNotFoundError:
            return
        pid = int(text) if text.isdigit() else None
        if pid is not None and pid != os.getpid() and _running(pid):
            raise ConfigError(f"--pidfile {self.path}: names process {pid}, which is running "
                              f"(another worker?); stop it, or remove the file if it is not one")
        os.unlink(self.path)  # stale: its process is gone (or the file is not a pid)

    def acquire(self) -> None:
        """Write this process's pid; refuse as :meth:`check` does, also against a worker
        that wrote the file in between."""
        self.check()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            raise ConfigError(f"--pidfile {self.path}: another worker created it just now"
                              ) from None
        except OSError as exc:
            raise ConfigError(f"--pidfile {self.path}: cannot create it: {exc.strerror}"
                              ) from None
        with os.fdopen(fd, "w") as file:
            file.write(f"{os.getpid()}\n")

    def release(self) -> None:
        try:
            with open(self.path) as file:
                mine = file.read().strip() == str(os.getpid())
            if mine:
                os.unlink(self.path)
        except OSError:
            pass


def detach() -> None:
    """Become a daemon: fork twice (no controlling terminal, not a session leader), stdin,
    stdout and stderr on /dev/null; the working directory stays (relative SQLite URLs and
    -A modules keep working). The calling process exits 0 once the daemon is forked."""
    sys.stdout.flush()
    sys.stderr.flush()
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    os.umask(0o022)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)

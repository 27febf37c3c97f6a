"""The benchmark's own vhost and user on the machine's RabbitMQ (127.0.0.1:5672).

The RabbitMQ server is shared (tests use it too), so the bench never touches anything it did
not create: it adds a vhost ``runner-bench-<pid>`` and a user with rights on it alone, empties
the vhost before each system by deleting and re-creating it (runner and Celery both use a queue
called ``celery``, declared with different arguments, and Celery leaves exchanges behind), and
deletes both at the end, even on failure or Ctrl-C.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess

HOST, PORT = "127.0.0.1", 5672
CTL_TIMEOUT = 60.0  # seconds for one rabbitmqctl call


def unavailable() -> str | None:
    """Why the amqp transport cannot run here, or None when it can."""
    if shutil.which("rabbitmqctl") is None:
        return "rabbitmqctl is not installed (apt-get install rabbitmq-server)"
    try:
        socket.create_connection((HOST, PORT), timeout=2).close()
    except OSError as exc:
        return f"no RabbitMQ listening on {HOST}:{PORT} ({exc})"
    done = rabbitmqctl("list_vhosts", check=False)  # e.g. not root, or a wrong Erlang cookie
    if done.returncode != 0:
        return f"rabbitmqctl cannot manage the node: {said(done)}"
    return None


def said(done: subprocess.CompletedProcess) -> str:
    """What a failed rabbitmqctl said first (its wrapper script's refusal goes to stdout, with
    the usage text on stderr; its own errors are ``Error:`` and the reason on the next line)."""
    lines = [line.strip() for line in (done.stdout + "\n" + done.stderr).splitlines()
             if line.strip()]
    if not lines:
        return f"exit status {done.returncode}"
    return " ".join(lines[:2]) if lines[0].endswith(":") else lines[0]


def rabbitmqctl(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """In a session of its own, so that a Ctrl-C reaches run.py (which cleans up) and not a
    half-done rabbitmqctl."""
    done = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True,
                          timeout=CTL_TIMEOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args[:2])} failed: {said(done)}")
    return done


def version() -> str:
    out = rabbitmqctl("version", check=False).stdout.strip()
    return f"rabbitmq-server {out}" if out else "rabbitmq-server (version unknown)"


class RabbitVhost:
    """``with RabbitVhost() as vhost: ... vhost.url``; :meth:`reset` before each system; vhost
    and user deleted on the way out."""

    def __init__(self):
        self.name = f"runner-bench-{os.getpid()}"
        self.user = self.name
        self.password = secrets.token_hex(8)

    @property
    def url(self) -> str:
        """``amqp://``: runner and kombu (py-amqp, as ``pyamqp://``) both read it."""
        return f"amqp://{self.user}:{self.password}@{HOST}:{PORT}/{self.name}"

    def __enter__(self) -> RabbitVhost:
        try:
            rabbitmqctl("add_user", self.user, self.password)
            self.create()
        except BaseException:
            self.delete()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.delete()

    def create(self) -> None:
        rabbitmqctl("add_vhost", self.name)
        rabbitmqctl("set_permissions", "-p", self.name, self.user, ".*", ".*", ".*")

    def reset(self) -> None:
        """An empty vhost: no queue, exchange or message left by the system before."""
        rabbitmqctl("delete_vhost", self.name, check=False)
        self.create()

    def delete(self) -> None:
        """Vhost and user gone; a second Ctrl-C meanwhile does not stop it half-way."""
        handlers = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            rabbitmqctl("delete_vhost", self.name, check=False)
            rabbitmqctl("delete_user", self.user, check=False)
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)

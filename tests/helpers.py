"""Small helpers the test modules share (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def wait_for_state(result, state: str, timeout: float = 5.0) -> None:
    """Wait until ``result.state`` is ``state``; fail naming the state it is in instead."""
    deadline = time.monotonic() + timeout
    while result.state != state:
        assert time.monotonic() < deadline, f"{result.id} is {result.state}, not {state}"
        time.sleep(0.01)


def rabbitmqctl(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True,
                          timeout=60, check=check)


def require_rabbitmq() -> None:
    """Skip the test unless the machine's RabbitMQ (127.0.0.1:5672, rabbitmqctl) is there."""
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("RabbitMQ is not installed (no rabbitmqctl)")
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=2).close()
    except OSError:
        pytest.skip("no RabbitMQ listening on 127.0.0.1:5672")


def run_runner(*args: object, cwd: Path, env: dict | None = None,
               timeout: float = 60) -> subprocess.CompletedProcess:
    """``python -m runner ARGS`` in a process of its own, as a user runs it, on this checkout's
    ``runner`` (not an installed one), in any working directory; ``timeout`` turns a hang into
    a failure."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "runner", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def make_tls_certs(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, signed by it
    (openssl)."""
    ca_key, ca, key, csr, cert = (folder / n for n in
                                  ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt"))

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
        "-days", "2", "-subj", "/CN=runner test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj",
        "/CN=127.0.0.1")
    ext = folder / "san.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))
    client_key, client_csr, client = (folder / n for n in
                                      ("client.key", "client.csr", "client.crt"))
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(client_key), "-out",
        str(client_csr), "-subj", "/CN=runner worker")
    run("x509", "-req", "-in", str(client_csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(client), "-days", "2")
    return {"ca": ca, "cert": cert, "key": key, "client_cert": client, "client_key": client_key}

"""Small helpers the test modules share (fixtures live in conftest.py)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def wait_for_state(result, state: str, timeout: float = 5.0) -> None:
    """Wait until ``result.state`` is ``state``; fail naming the state it is in instead."""
    deadline = time.monotonic() + timeout
    while result.state != state:
        assert time.monotonic() < deadline, f"{result.id} is {result.state}, not {state}"
        time.sleep(0.01)


def eventually(check: Callable[[], object], timeout: float = 5.0) -> bool:
    """``check()`` became true within ``timeout`` (for what a worker does after a reply)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def rabbitmqctl(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True,
                          timeout=60, check=check)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def rabbitmq_node(name: str, config: Callable[[Path, int], str]) -> Iterator[tuple[str, int, Path]]:
    """A RabbitMQ node of the test's own (name ``<name><pid>@localhost``), run as the rabbitmq
    user with ``config(folder, port)`` as its rabbitmq.conf, listening on ``port``: for tests
    that stop or reconfigure a broker, which must not touch the machine's node that other
    tests use at the same time. Yields (node name, port, folder); stopped and removed after.
    Skips where rabbitmq-server or root is missing."""
    if shutil.which("rabbitmq-server") is None or os.geteuid() != 0:
        pytest.skip("needs rabbitmq-server and root (to run a node as the rabbitmq user)")
    # (pytest's own folders are root's alone: the node runs as the rabbitmq user)
    folder = Path(tempfile.mkdtemp(prefix=f"runner-rabbitmq-{name}-"))
    port = free_port()
    (folder / "rabbitmq.conf").write_text(config(folder, port))
    for path in [folder, *folder.iterdir()]:
        shutil.chown(path, "rabbitmq")
        path.chmod(0o755 if path.is_dir() else 0o644)
    node_name = f"{name}{os.getpid()}@localhost"
    env = {**os.environ, "RABBITMQ_NODENAME": node_name,
           "RABBITMQ_CONFIG_FILE": str(folder / "rabbitmq.conf"),
           "RABBITMQ_MNESIA_BASE": str(folder / "mnesia"),
           "RABBITMQ_LOG_BASE": str(folder / "log"),
           "RABBITMQ_DIST_PORT": str(free_port()),
           "RABBITMQ_ENABLED_PLUGINS_FILE": str(folder / "plugins"),
           "RABBITMQ_PID_FILE": str(folder / "pid")}
    log = (folder / "node.log").open("wb")
    node = subprocess.Popen(["rabbitmq-server"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if node.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the RabbitMQ node {node_name} did not start:\n"
                                f"{(folder / 'node.log').read_text()[-2000:]}")
                time.sleep(0.2)
        yield node_name, port, folder
    finally:
        # the wrapper runs the node as another user, in a session of its own: stop the node
        # by the pid it wrote, then the wrapper
        pid_file = folder / "pid"
        beam = int(pid_file.read_text()) if pid_file.exists() else None
        for pid in filter(None, [beam, node.pid]):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while beam and time.monotonic() < deadline and Path(f"/proc/{beam}").exists():
            time.sleep(0.2)
        for pid in filter(None, [beam, node.pid]):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        node.wait(10)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


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

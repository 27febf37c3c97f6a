"""amqps:// with a client certificate (mutual TLS) against a real RabbitMQ node of the test's
own: TLS listener only, ``fail_if_no_peer_cert``, on 127.0.0.1 and free ports; started as the
machine's ``rabbitmq`` user (the test runs as root, as CI does) and stopped at the end."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from runner import Celery
from runner.exceptions import ConfigError
from tests.conftest import APPS, ROOT
from tests.helpers import make_tls_certs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def tls_rabbitmq():
    if shutil.which("rabbitmq-server") is None or os.geteuid() != 0:
        pytest.skip("needs rabbitmq-server and root (to run a node as the rabbitmq user)")
    # (pytest's own folders are root's alone: the node runs as the rabbitmq user)
    folder = Path(tempfile.mkdtemp(prefix="runner-rabbitmq-tls-"))
    certs = make_tls_certs(folder)
    port = free_port()
    (folder / "rabbitmq.conf").write_text(
        f"listeners.tcp = none\nlisteners.ssl.default = 127.0.0.1:{port}\n"
        f"ssl_options.cacertfile = {certs['ca']}\nssl_options.certfile = {certs['cert']}\n"
        f"ssl_options.keyfile = {certs['key']}\nssl_options.verify = verify_peer\n"
        f"ssl_options.fail_if_no_peer_cert = true\n")
    for path in [folder, *folder.iterdir()]:
        shutil.chown(path, "rabbitmq")
        path.chmod(0o755 if path.is_dir() else 0o644)
    env = {**os.environ, "RABBITMQ_NODENAME": f"tls{os.getpid()}@localhost",
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
                    pytest.fail(f"the TLS RabbitMQ node did not start:\n"
                                f"{(folder / 'node.log').read_text()[-2000:]}")
                time.sleep(0.2)
        yield port, certs
    finally:
        # the wrapper runs the node as another user, in a session of its own: stop the node
        # by the pid it wrote, then the wrapper
        pid_file = folder / "pid"
        beam = int(pid_file.read_text()) if pid_file.exists() else None
        for pid in filter(None, [beam, node.pid]):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 30
        while beam and time.monotonic() < deadline and Path(f"/proc/{beam}").exists():
            time.sleep(0.2)
        for pid in filter(None, [beam, node.pid]):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        node.wait(10)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)


def test_amqps_with_a_client_certificate_runs_tasks(tls_rabbitmq, redis_server, tmp_path):
    port, certs = tls_rabbitmq
    broker = (f"amqps://guest:guest@127.0.0.1:{port}//?ssl_ca_certs={certs['ca']}"
              f"&ssl_certfile={certs['client_cert']}&ssl_keyfile={certs['client_key']}")
    backend = redis_server.fresh()
    env = {**os.environ, "PYTHONPATH": f"{APPS}:{ROOT}", "RUNNER_BROKER_URL": broker,
           "RUNNER_RESULT_BACKEND": backend}
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen([sys.executable, "-m", "runner", "worker", "-A", "tasks", "-c",
                               "1"], cwd=tmp_path, env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    app = Celery("tasks", broker=broker, backend=backend, set_as_current=False)
    try:
        assert app.send_task("tasks.add", (20, 22)).get(timeout=30) == 42
    finally:
        app.close()
        worker.terminate()
        worker.wait(20)
        log.close()


def test_amqps_without_the_client_certificate_or_the_ca_is_one_clear_error(tls_rabbitmq):
    port, certs = tls_rabbitmq
    cases = {f"?ssl_ca_certs={certs['ca']}": "asks for a client certificate",
             "": "TLS certificate is not trusted"}
    for query, words in cases.items():
        app = Celery("tasks", broker=f"amqps://guest:guest@127.0.0.1:{port}//{query}",
                     backend="memory://", set_as_current=False)
        started = time.monotonic()
        with pytest.raises(ConfigError, match=words):
            app.broker.check(["celery"])
        assert time.monotonic() - started < 10  # not retried as if RabbitMQ were down
        app.close()

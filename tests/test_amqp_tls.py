"""amqps:// with a client certificate (mutual TLS) against a real RabbitMQ node of the test's
own: TLS listener only, ``fail_if_no_peer_cert``, on 127.0.0.1 and free ports; started as the
machine's ``rabbitmq`` user (the test runs as root, as CI does) and stopped at the end."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner import Celery
from runner.exceptions import ConfigError
from tests.conftest import APPS, ROOT
from tests.helpers import make_tls_certs, rabbitmq_node


@pytest.fixture(scope="module")
def tls_rabbitmq():
    certs: dict[str, Path] = {}

    def config(folder: Path, port: int) -> str:
        certs.update(make_tls_certs(folder))
        return (f"listeners.tcp = none\nlisteners.ssl.default = 127.0.0.1:{port}\n"
                f"ssl_options.cacertfile = {certs['ca']}\nssl_options.certfile = {certs['cert']}\n"
                f"ssl_options.keyfile = {certs['key']}\nssl_options.verify = verify_peer\n"
                f"ssl_options.fail_if_no_peer_cert = true\n")
    with rabbitmq_node("tls", config) as (_name, port, _folder):
        yield port, certs


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

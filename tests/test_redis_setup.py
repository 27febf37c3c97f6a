"""The seed's Redis set-up as users write it: ``redis://host:port/db`` in ``Celery(...)`` or in
``app.conf``, a password, a unix socket and TLS, each against a real redis-server and worker."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import time

import pytest

from runner.exceptions import ConfigError
from tests.conftest import ROOT, RedisServer, WorkerProcess
from tests.helpers import make_tls_certs

PASSWORD = "s3cret-pw"

APP = """
from runner import Celery

{setup}


@app.task
def add(x, y):
    return x + y
"""


@pytest.fixture
def seed_app(tmp_path):
    """``seed_app(setup)`` writes ``seedapp.py`` (``setup`` makes ``app``), starts ``runner
    worker -A seedapp`` on it (no RUNNER_* environment) and imports it here too."""
    started: list[WorkerProcess] = []
    imported = []

    def make(setup: str, wait: bool = True):
        folder = tmp_path / f"app{len(imported)}"
        folder.mkdir()
        (folder / "seedapp.py").write_text(APP.format(setup=setup))
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
        worker = WorkerProcess(["-c", "1"], env, folder, folder / "worker.log", app="seedapp")
        started.append(worker)
        if wait:
            worker.wait_for_log("ready.")
        spec = importlib.util.spec_from_file_location("seedapp", folder / "seedapp.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        imported.append(module)
        return module, worker

    yield make
    for module in imported:
        module.app.close()
    for worker in started:
        worker.stop()


def _server(tmp_path_factory, name: str, *args: str, password: str | None = None):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path_factory.mktemp(name), *args, password=password)
    server.start()
    return server


@pytest.fixture(scope="module")
def password_server(tmp_path_factory):
    """A second redis-server, started with ``--requirepass``."""
    server = _server(tmp_path_factory, "redis-pw", password=PASSWORD)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def socket_server(tmp_path_factory):
    """A redis-server that also listens on a unix socket; yields (server, socket path)."""
    folder = tmp_path_factory.mktemp("redis-sock")
    path = folder / "redis.sock"
    server = _server(tmp_path_factory, "redis-sock-data", "--unixsocket", str(path),
                     "--unixsocketperm", "700")
    yield server, path
    server.stop()


def _supports_tls() -> bool:
    """Built with TLS, redis-server complains of the missing certificate, not of the option."""
    if shutil.which("openssl") is None:
        return False
    out = subprocess.run(["redis-server", "--port", "0", "--tls-port", "1", "--bind",
                          "127.0.0.1"], capture_output=True, text=True, timeout=10)
    return "tls-cert-file" in out.stdout


def _tls_server(tmp_path_factory, name: str, clients: str):
    """A redis-server with ``--tls-port`` (plain port too, for the fixture's own checks) and
    ``--tls-auth-clients clients``; returns (server, tls port, certificate paths)."""
    if not _supports_tls():
        pytest.skip("this redis-server was built without TLS support")
    certs = make_tls_certs(tmp_path_factory.mktemp(f"{name}-certs"))
    tls_port = RedisServer(tmp_path_factory.mktemp("unused")).port
    server = _server(tmp_path_factory, name, "--tls-port", str(tls_port),
                     "--tls-cert-file", str(certs["cert"]), "--tls-key-file", str(certs["key"]),
                     "--tls-ca-cert-file", str(certs["ca"]), "--tls-auth-clients", clients)
    return server, tls_port, certs


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    found = _tls_server(tmp_path_factory, "redis-tls", "no")
    yield found
    found[0].stop()


@pytest.fixture(scope="module")
def mutual_tls_server(tmp_path_factory):
    """A redis-server that requires a client certificate signed by its CA (mutual TLS)."""
    found = _tls_server(tmp_path_factory, "redis-mtls", "yes")
    yield found
    found[0].stop()


# -- the seed's set-up -------------------------------------------------------------------------


def test_seed_redis_urls_given_to_celery_run_a_task_and_store_its_result(seed_app,
                                                                         redis_server):
    url = redis_server.fresh()
    seed, worker = seed_app(f"app = Celery('tasks', broker={url!r}, backend={url!r})")
    assert seed.add.delay(4, 4).get(timeout=10) == 8
    assert f"transport:   {url}" in worker.log()


def test_password_url_against_a_server_with_requirepass(seed_app, password_server):
    password_server.flush()
    url = f"redis://:{PASSWORD}@127.0.0.1:{password_server.port}/1"
    seed, worker = seed_app(f"app = Celery('tasks')\n"
                            f"app.conf.broker_url = {url!r}\n"
                            f"app.conf.result_backend = {url!r}")
    assert seed.add.delay(2, 3).get(timeout=10) == 5
    assert PASSWORD not in worker.log()
    assert f"redis://:**@127.0.0.1:{password_server.port}/1" in worker.log()


def test_wrong_password_is_one_clear_error_with_the_password_masked(seed_app, password_server):
    url = f"redis://:wrong-pw@127.0.0.1:{password_server.port}/0"
    seed, worker = seed_app(f"app = Celery('tasks', broker={url!r}, backend={url!r})",
                            wait=False)
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        seed.add.delay(1, 1)
    assert time.monotonic() - started < 2  # not retried as if Redis were down
    message = str(caught.value)
    assert "wrong-pw" not in message and "redis://:**@127.0.0.1" in message
    assert "refused the credentials" in message and "password" in message

    assert worker.proc.wait(15) == 2  # the worker stops with it too, at once
    log = worker.log()
    assert "wrong-pw" not in log and "Traceback" not in log
    assert "ready." not in log  # refused before it says it is ready
    errors = [line for line in log.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "refused the credentials" in errors[0]


def test_missing_password_is_one_clear_error_of_the_first_delay(seed_app, password_server):
    """The first enqueue of a connection waits for its reply (later ones are streamed), so a
    server that wants a password the URL lacks is an error of that delay() call."""
    url = f"redis://127.0.0.1:{password_server.port}/0"
    seed, _worker = seed_app(f"app = Celery('tasks', broker={url!r}, backend={url!r})",
                             wait=False)
    with pytest.raises(ConfigError, match="refused the credentials .* check the password"):
        seed.add.delay(1, 1)


def test_unix_socket_url(seed_app, socket_server):
    server, path = socket_server
    server.flush()
    url = f"redis+socket://{path}"
    seed, worker = seed_app(f"app = Celery('tasks', broker={url!r}, backend={url!r})")
    assert seed.add.delay(20, 22).get(timeout=10) == 42
    assert seed.app.broker.client.connection_pool.connection_kwargs["path"] == str(path)


def test_rediss_tls_options_reach_the_client(redis_server):
    from runner import Celery

    url = ("rediss://:pw@redis.example:6380/2?ssl_cert_reqs=optional&ssl_ca_certs=/etc/ca.pem"
           "&ssl_certfile=/etc/client.crt&ssl_keyfile=/etc/client.key")
    app = Celery("tls", broker=url, backend=url, set_as_current=False)
    try:
        for client in (app.broker.client, app.backend.client):
            pool = client.connection_pool
            kwargs = pool.connection_kwargs
            assert pool.connection_class.__name__ == "SSLConnection"
            assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("redis.example", 6380, 2)
            assert kwargs["ssl_ca_certs"] == "/etc/ca.pem"
            assert kwargs["ssl_certfile"] == "/etc/client.crt"
            assert kwargs["ssl_keyfile"] == "/etc/client.key"
            import ssl

            assert kwargs["ssl_cert_reqs"] == ssl.CERT_OPTIONAL
    finally:
        app.close()


def test_rediss_against_a_real_tls_server(seed_app, tls_server):
    server, tls_port, certs = tls_server
    server.flush()
    url = f"rediss://127.0.0.1:{tls_port}/0?ssl_cert_reqs=required&ssl_ca_certs={certs['ca']}"
    seed, worker = seed_app(f"app = Celery('tasks', broker={url!r}, backend={url!r})")
    assert seed.add.delay(1, 2).get(timeout=10) == 3

    from runner import Celery

    untrusted = f"rediss://127.0.0.1:{tls_port}/0"  # the system CAs do not know ours
    app = Celery("untrusted", broker=untrusted, backend=untrusted, set_as_current=False)
    started = time.monotonic()
    try:
        with pytest.raises(ConfigError, match="TLS certificate is not trusted.*ssl_ca_certs"):
            app.send_task("seedapp.add", (1, 1))
    finally:
        app.close()
    assert time.monotonic() - started < 2  # at once: not retried as if Redis were down


def test_rediss_with_a_client_certificate_mutual_tls(seed_app, mutual_tls_server):
    server, tls_port, certs = mutual_tls_server
    server.flush()
    url = (f"rediss://127.0.0.1:{tls_port}/0?ssl_cert_reqs=required&ssl_ca_certs={certs['ca']}"
           f"&ssl_certfile={certs['client_cert']}&ssl_keyfile={certs['client_key']}")
    seed, worker = seed_app(f"app = Celery('tasks', broker={url!r}, backend={url!r})")
    assert seed.add.delay(2, 3).get(timeout=10) == 5

    from runner import Celery

    anonymous = f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={certs['ca']}"
    app = Celery("anonymous", broker=anonymous, backend=anonymous, set_as_current=False)
    started = time.monotonic()
    try:
        with pytest.raises(ConfigError, match="client certificate.*ssl_certfile"):
            app.send_task("seedapp.add", (1, 1))
    finally:
        app.close()
    assert time.monotonic() - started < 5  # at once: not retried as if Redis were down

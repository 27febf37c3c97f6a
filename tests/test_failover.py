"""Several brokers (issue 21): failover lists (Celery's ``redis://a;redis://b``, a list, or
``amqp://`` likewise) and Redis Sentinel (``sentinel://``), with real servers and a real
worker: workers and producers move to the server that is up, and say which."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner import Celery
from runner.exceptions import BrokerError, ConfigError
from tests.conftest import APPS, ROOT, RedisServer


def worker(broker: str, backend: str, cwd: Path, **settings: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{APPS}:{ROOT}", "RUNNER_BROKER_URL": broker,
           "RUNNER_RESULT_BACKEND": backend, **settings}
    log = (cwd / f"worker-{time.monotonic_ns()}.log").open("wb")
    return subprocess.Popen([sys.executable, "-m", "runner", "worker", "-A", "tasks", "-c", "1",
                             "-l", "info"], cwd=cwd, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def logs(cwd: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in cwd.glob("worker-*.log"))


def test_a_redis_failover_list_moves_workers_and_producers_to_the_server_that_is_up(tmp_path):
    a, b = RedisServer(tmp_path / "a"), RedisServer(tmp_path / "b")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    b.start()  # a is down at first
    url = f"redis://127.0.0.1:{a.port}/0;redis://127.0.0.1:{b.port}/0"
    proc = worker(url, url, tmp_path)
    app = Celery("tasks", broker=url, backend=url, set_as_current=False)
    try:
        assert app.send_task("tasks.add", (1, 2)).get(timeout=30) == 3
        a.start()
        b.stop()  # now only a is up: everyone moves to it
        app2 = Celery("tasks", broker=url, backend=url, set_as_current=False)
        assert app2.send_task("tasks.add", (2, 2)).get(timeout=60) == 4
        app2.close()
    finally:
        app.close()
        stop(proc)
        a.stop()
        b.stop()
    text = logs(tmp_path)
    assert f"is lost; using redis://127.0.0.1:{b.port}/0 now (failover list of 2)" in text
    assert f"is lost; using redis://127.0.0.1:{a.port}/0 now (failover list of 2)" in text


def test_failover_lists_as_celery_writes_them_and_bad_ones():
    app = Celery("t", set_as_current=False,
                 broker=["redis://127.0.0.1:1/0", "redis://:secret@127.0.0.1:2/0"],
                 broker_failover_strategy="shuffle", broker_connection_timeout=0.5)
    assert app.conf.broker_url == "redis://127.0.0.1:1/0;redis://:secret@127.0.0.1:2/0"
    with pytest.raises(BrokerError) as caught:  # all down: one error naming each
        app.send_task("tasks.add", (1, 1))
    assert "127.0.0.1:1/0;redis://:**@127.0.0.1:2/0" in str(caught.value)
    assert "secret" not in str(caught.value)
    app.close()
    with pytest.raises(ConfigError, match=r"failover list .*, URL 2 of 3: invalid URL "
                                          r"'redis://h:port'"):
        _ = Celery("t", broker="redis://a/0;redis://h:port;redis://c/0",
                   set_as_current=False).conf.broker_url
    with pytest.raises(ConfigError, match="must all be Redis, all RabbitMQ"):
        _ = Celery("t", broker="redis://a/0;amqp://b//", set_as_current=False).conf.broker_url
    with pytest.raises(ConfigError, match="broker_failover_strategy"):
        _ = Celery("t", broker_failover_strategy="fastest", set_as_current=False).conf.broker_url


def test_an_amqp_failover_list_skips_the_server_that_is_down(amqp_url, redis_server, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    url = amqp_url.replace(":5672/", f":{closed}/") + ";" + amqp_url
    backend = redis_server.fresh()
    proc = worker(url, backend, tmp_path)
    app = Celery("tasks", broker=url, backend=backend, set_as_current=False)
    try:
        assert app.send_task("tasks.add", (4, 5)).get(timeout=30) == 9
    finally:
        app.close()
        stop(proc)
    assert "is lost; using amqp://" in logs(tmp_path)


def sentinel_command(config: Path) -> list[str]:
    """A real ``redis-sentinel`` (Debian's package, installed by .ci/run) on ``config``. Where
    it is not installed, the same server in Sentinel mode (``redis-server --sentinel``: the
    package's binary is that server started under the name redis-sentinel)."""
    if shutil.which("redis-sentinel"):
        return ["redis-sentinel", str(config)]
    return ["redis-server", str(config), "--sentinel"]


class Sentinel:
    """A master, a replica (redis-server processes) and one Sentinel watching them."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.master, self.replica = RedisServer(folder / "m"), RedisServer(folder / "r")
        self.port = RedisServer(folder).port
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        for server in (self.master, self.replica):
            server.folder.mkdir(parents=True, exist_ok=True)
        self.master.start()
        self.replica.args = ["--replicaof", "127.0.0.1", str(self.master.port)]
        self.replica.start()
        import redis

        deadline = time.monotonic() + 20  # the replica in sync before anything is written
        while redis.Redis(port=self.replica.port).info("replication").get(
                "master_link_status") != "up":
            assert time.monotonic() < deadline, "the replica did not sync with the master"
            time.sleep(0.05)
        config = self.folder / "sentinel.conf"
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.folder}\n"
            f"sentinel monitor mymaster 127.0.0.1 {self.master.port} 1\n"
            f"sentinel down-after-milliseconds mymaster 1000\n"
            f"sentinel failover-timeout mymaster 5000\n")
        self.proc = subprocess.Popen(sentinel_command(config), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "the Sentinel did not start"
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"sentinel://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.master.stop()
        self.replica.stop()


@pytest.fixture
def sentinel(tmp_path):
    found = Sentinel(tmp_path / "sentinel")
    found.folder.mkdir()
    found.start()
    yield found
    found.stop()


def test_sentinel_follows_the_promoted_replica_when_the_master_dies(sentinel, tmp_path):
    options = '{"master_name": "mymaster"}'
    proc = worker(sentinel.url, sentinel.url, tmp_path,
                  RUNNER_BROKER_TRANSPORT_OPTIONS=options)
    app = Celery("tasks", broker=sentinel.url, backend=sentinel.url, set_as_current=False,
                 broker_transport_options={"master_name": "mymaster"})
    import redis

    try:
        assert app.send_task("tasks.add", (1, 1)).get(timeout=30) == 2
        # on the master Sentinel names (not a default localhost:6379)
        assert redis.Redis(port=sentinel.master.port, db=0).dbsize() > 0
        time.sleep(1)  # the replica has what the master wrote (asynchronous replication)
        sentinel.master.proc.send_signal(signal.SIGKILL)
        sentinel.master.proc.wait()
        results = [app.send_task("tasks.add", (i, i)) for i in range(5)]
        assert [r.get(timeout=60) for r in results] == [0, 2, 4, 6, 8]
        promoted = redis.Redis(port=sentinel.replica.port)
        assert promoted.execute_command("ROLE")[0] in (b"master", "master")
        assert any(key.startswith(b"runner:result:") for key in
                   redis.Redis(port=sentinel.replica.port, db=0).keys("runner:result:*")) or \
            promoted.dbsize() > 0  # everyone moved to it: the new results are there
    finally:
        app.close()
        stop(proc)


def test_sentinel_without_master_name_or_with_an_unknown_one_is_a_clear_error(sentinel):
    app = Celery("t", broker=sentinel.url, backend="memory://", set_as_current=False)
    with pytest.raises(ConfigError, match="needs the transport option master_name"):
        app.send_task("tasks.add", (1, 1))
    app.close()
    app = Celery("t", broker=sentinel.url, backend="memory://", set_as_current=False,
                 broker_transport_options={"master_name": "nosuch"},
                 broker_connection_timeout=1)
    started = time.monotonic()
    with pytest.raises(ConfigError, match="knows no master named 'nosuch'"):
        app.send_task("tasks.add", (1, 1))
    assert time.monotonic() - started < 5
    app.close()


@pytest.mark.parametrize("wait", [0, 1])
def test_what_a_failover_loses_and_wait_for_replicas_losing_nothing(sentinel, wait, tmp_path):
    """Enqueue 300 tasks and kill the master at once: with wait_for_replicas=1 every task
    delay() returned for is on the promoted replica; without, Redis's asynchronous replication
    may lose the last ones (counted and printed, not asserted: it depends on timing)."""
    import redis

    options = {"master_name": "mymaster", "wait_for_replicas": wait}
    if wait:  # a worker storing its results with WAIT, through Sentinel, while both are up
        proc = worker(sentinel.url, sentinel.url, tmp_path,
                      RUNNER_BROKER_TRANSPORT_OPTIONS=json.dumps(options))
        first = Celery("tasks", broker=sentinel.url, backend=sentinel.url,
                       set_as_current=False, broker_transport_options=options)
        try:
            assert first.send_task("tasks.add", (20, 1)).get(timeout=60) == 21
        finally:
            first.close()
            stop(proc)
    app = Celery("tasks", broker=sentinel.url, backend=sentinel.url, set_as_current=False,
                 broker_transport_options=options)
    sent = 0
    for i in range(300):
        app.send_task("tasks.add", (i, i))
        sent += 1
    app.broker.flush()  # (streamed: every reply read)
    sentinel.master.proc.send_signal(signal.SIGKILL)
    sentinel.master.proc.wait()
    app.close()
    promoted = redis.Redis(port=sentinel.replica.port)
    deadline = time.monotonic() + 30
    while promoted.execute_command("ROLE")[0] not in (b"master", "master"):
        assert time.monotonic() < deadline, "Sentinel did not promote the replica"
        time.sleep(0.2)
    kept = promoted.zcard("runner:q:celery")
    print(f"wait_for_replicas={wait}: {sent - kept} of {sent} acknowledged enqueues lost")
    if wait:
        assert kept == sent


def test_broker_and_results_on_one_sentinel_master_are_stored_in_one_round_trip(sentinel,
                                                                                 tmp_path):
    """Broker (db 0) and results (db 1) through the same Sentinels and master name are one
    server: the worker stores results within its ack-and-fetch round trip, as on redis://
    (without it the Sentinel drain lost a round trip per batch). Another master name is
    another server."""
    import redis

    options = {"master_name": "mymaster"}
    broker, backend = sentinel.url, sentinel.url.replace("/0", "/1")
    app = Celery("tasks", broker=broker, backend=backend, set_as_current=False,
                 broker_transport_options=options, result_backend_transport_options=options)
    assert app.backend.shares_store_with(app.broker.url, app.broker.transport_options)
    assert not app.backend.shares_store_with(app.broker.url, {"master_name": "other"})
    proc = worker(broker, backend, tmp_path,
                  RUNNER_BROKER_TRANSPORT_OPTIONS=json.dumps(options),
                  RUNNER_RESULT_BACKEND_TRANSPORT_OPTIONS=json.dumps(options))
    try:
        results = [app.send_task("tasks.add", (i, i)) for i in range(20)]
        assert [r.get(timeout=30) for r in results] == [2 * i for i in range(20)]
    finally:
        app.close()
        stop(proc)
    master = sentinel.master.port
    assert redis.Redis(port=master, db=1).exists(f"runner:result:{results[0].id}")
    assert not redis.Redis(port=master, db=0).keys("runner:result:*")

"""Brokers with least privilege (issue 20): the Redis ACL line and the RabbitMQ permissions the
README gives are enough for a worker and a producer (tasks, countdowns, a chord, revoke, dead
letters), and a user limited to them cannot do what runner never needs (FLUSHALL, touching
other keys, configuring RabbitMQ)."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from runner import Celery, chord
from runner.exceptions import ConfigError
from tests.conftest import APPS, ROOT, RedisServer
from tests.helpers import rabbitmqctl, require_rabbitmq

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def readme_acl_line() -> str:
    """The README's ``ACL SETUSER`` line (the test runs the documented one, not a copy)."""
    found = re.search(r"^(ACL SETUSER runner .+)$", README, re.MULTILINE)
    assert found, "the README's Security section gives an ACL SETUSER line"
    return found.group(1)


def readme_rabbitmq_permissions() -> tuple[str, str, str]:
    found = re.search(r'rabbitmqctl set_permissions -p \S+ runner "([^"]+)" "([^"]+)" "([^"]+)"',
                      README)
    assert found, "the README's Security section gives a rabbitmqctl set_permissions line"
    return found.group(1), found.group(2), found.group(3)


def exercise(broker: str, backend: str, tmp_path: Path) -> None:
    """A worker and a producer, as the limited user: a task, a countdown, a chord, a revoke,
    a dead letter counted."""
    env = {"PYTHONPATH": f"{APPS}:{ROOT}", "RUNNER_BROKER_URL": broker,
           "RUNNER_RESULT_BACKEND": backend, "PATH": "/usr/bin:/bin"}
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen([sys.executable, "-m", "runner", "worker", "-A", "tasks", "-c",
                               "1", "-l", "info"], cwd=tmp_path, env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    app = Celery("tasks", broker=broker, backend=backend, set_as_current=False)
    try:
        assert app.send_task("tasks.add", (2, 3)).get(timeout=30) == 5
        assert app.send_task("tasks.add", (1, 1), countdown=0.5).get(timeout=30) == 2
        header = [app.signature("tasks.add", (i, i)) for i in range(3)]
        assert chord(header)(app.signature("tasks.tsum")).get(timeout=30) == 6
        revoked = app.send_task("tasks.add", (9, 9), countdown=2)
        revoked.revoke()
        assert app.broker.dead_letter_count() >= 0
    finally:
        worker.terminate()
        worker.wait(20)
        log.close()
        app.close()
    text = (tmp_path / "worker.log").read_text()
    assert "NOPERM" not in text and "ACCESS_REFUSED" not in text, text


def test_the_readme_redis_acl_is_enough_and_nothing_more(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    try:
        import redis

        admin = redis.Redis(port=server.port)
        line = readme_acl_line().replace("<password>", "s3cret")
        admin.execute_command(*line.split())
        url = f"redis://runner:s3cret@127.0.0.1:{server.port}"
        exercise(f"{url}/0", f"{url}/1", tmp_path)
        limited = redis.Redis(port=server.port, username="runner", password="s3cret")
        for command in (("FLUSHALL",), ("CONFIG", "GET", "*"), ("KEYS", "*"),
                        ("SET", "other:key", "1")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                limited.execute_command(*command)
    finally:
        server.stop()


def test_the_readme_rabbitmq_permissions_are_enough(tmp_path, redis_server):
    require_rabbitmq()
    vhost, password = f"runner_lp_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    user = vhost  # the README's user "runner", under a name no other test or session uses
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("add_user", user, password)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, user, *readme_rabbitmq_permissions())
        broker = f"amqp://{user}:{password}@127.0.0.1:5672/{vhost}"
        exercise(broker, redis_server.fresh(), tmp_path)
        import pika

        connection = pika.BlockingConnection(pika.URLParameters(broker))
        try:
            channel = connection.channel()
            with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="ACCESS_REFUSED"):
                channel.exchange_declare("someone.elses", "fanout")
        finally:
            if connection.is_open:
                connection.close()
    finally:
        rabbitmqctl("delete_vhost", vhost, check=False)
        rabbitmqctl("delete_user", user, check=False)


def test_an_acl_that_lacks_a_command_is_one_clear_error_not_a_hang(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    try:
        import redis

        redis.Redis(port=server.port).execute_command(
            *readme_acl_line().replace("<password>", "pw").replace(" +@scripting", "").split())
        url = f"redis://runner:pw@127.0.0.1:{server.port}/0"
        app = Celery("tasks", broker=url, backend=url, set_as_current=False)
        with pytest.raises(ConfigError, match=r"refused a command .*'evalsha'.*ACL SETUSER"):
            app.send_task("tasks.add", (1, 2))
            app.broker.flush()
        app.close()
        env = {"PYTHONPATH": f"{APPS}:{ROOT}", "RUNNER_BROKER_URL": url,
               "RUNNER_RESULT_BACKEND": url, "PATH": "/usr/bin:/bin"}
        done = subprocess.run([sys.executable, "-m", "runner", "worker", "-A", "tasks", "-c",
                               "1"], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode != 0
        assert "ACL SETUSER" in done.stderr and "Traceback" not in done.stderr
    finally:
        server.stop()

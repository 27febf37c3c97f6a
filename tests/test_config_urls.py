"""Broker/backend URLs: every scheme parsed, bad ones named, passwords masked."""

from __future__ import annotations

import pytest

from runner.config import mask_url, parse_url
from runner.config.urls import BACKEND_CLASSES, BROKER_CLASSES, not_supported_message
from runner.exceptions import ConfigError


def test_sqlite_relative_and_absolute_paths():
    assert parse_url("sqlite:///.runner/runner.db").path == ".runner/runner.db"
    assert parse_url("sqlite:////var/lib/runner.db").path == "/var/lib/runner.db"
    assert parse_url("sqlite:///:memory:").path == ":memory:"


@pytest.mark.parametrize(("url", "problem"), [
    ("sqlite://somehost/x.db", "sqlite URLs have no host"),
    ("sqlite://", "needs a database path"),
    ("redis://localhost:6379/zero", "must be a number"),
    ("redis://localhost:99999/0", "out of range"),
    ("rediss://h:6380/0?ssl_cert_reqs=sometimes", "ssl_cert_reqs"),
    ("redis+socket://", "needs a socket path"),
    ("localhost:6379", "not a URL"),
    ("", "expected a string"),
    ("reddis://localhost", "did you mean redis://?"),
    ("db+sqlite:///results.db", "did you mean sqlite://?"),
    ("mongodb://localhost", "unknown scheme 'mongodb'"),
])
def test_malformed_urls_name_the_problem(url, problem):
    with pytest.raises(ConfigError, match=problem.replace("?", r"\?").replace("+", r"\+")):
        parse_url(url)


def test_redis_urls():
    url = parse_url("redis://:p%40ss@cache.local:6380/3")
    assert (url.scheme, url.host, url.port, url.db, url.password) == \
        ("redis", "cache.local", 6380, 3, "p@ss")
    assert parse_url("redis://localhost").db == 0
    tls = parse_url("rediss://:pw@h:6380/1?ssl_cert_reqs=required")
    assert (tls.scheme, tls.db, tls.query) == ("rediss", 1, {"ssl_cert_reqs": "required"})
    sock = parse_url("redis+socket:///run/redis.sock?db=2")
    assert (sock.path, sock.db, sock.host) == ("/run/redis.sock", 2, None)


def test_amqp_urls():
    url = parse_url("amqp://user:pass@rabbit:5672/myvhost")
    assert (url.username, url.password, url.host, url.port, url.path) == \
        ("user", "pass", "rabbit", 5672, "myvhost")
    assert parse_url("pyamqp://").path == "/"
    assert parse_url("amqps://guest:guest@localhost:5671//").path == "/"


def test_memory_and_rpc_urls():
    assert parse_url("memory://").scheme == "memory"
    assert parse_url("rpc://").scheme == "rpc"


def test_url_repr_hides_the_password():
    assert "secret" not in repr(parse_url("redis://:secret@h:6379/0"))


@pytest.mark.parametrize(("url", "masked"), [
    ("redis://:secret@host:6379/0", "redis://:**@host:6379/0"),
    ("amqp://user:secret@host:5672/vhost", "amqp://user:**@host:5672/vhost"),
    ("amqp://user:se/cr@et@host:5672/vhost", "amqp://user:**@host:5672/vhost"),
    ("redis://host:6379/0", "redis://host:6379/0"),
    ("amqp://user@host//", "amqp://user@host//"),
    ("sqlite:///.runner/a@b.db", "sqlite:///.runner/a@b.db"),
    ("not a url", "not a url"),
    ("", ""),
])
def test_mask_url(url, masked):
    assert mask_url(url) == masked


def test_mask_url_is_safe_on_garbage():
    assert mask_url(None) is None
    assert mask_url("://:@") == "://:**@"


def test_scheme_tables_name_classes_without_importing_them():
    assert BROKER_CLASSES["sqlite"] == "runner.brokers.sqlite:SQLiteBroker"
    assert BROKER_CLASSES["memory"] == "runner.brokers.memory:MemoryBroker"
    assert BACKEND_CLASSES["sqlite"] == "runner.backends.sqlite:SQLiteBackend"
    assert BACKEND_CLASSES["memory"] == "runner.backends.memory:MemoryBackend"
    assert BROKER_CLASSES["redis"] == "runner.brokers.redis:RedisBroker"
    assert BACKEND_CLASSES["redis"] == "runner.backends.redis:RedisBackend"
    for scheme in ("amqp", "pyamqp", "amqps"):
        assert BROKER_CLASSES[scheme] == "runner.brokers.amqp:AMQPBroker"
    assert BACKEND_CLASSES["rpc"] == "runner.backends.rpc:RPCBackend"
    assert "rpc" not in BROKER_CLASSES


def test_not_supported_message_is_clear_and_masked(monkeypatch):
    monkeypatch.setitem(BROKER_CLASSES, "amqps", None)  # a scheme this version would lack
    monkeypatch.setitem(BACKEND_CLASSES, "rpc", None)
    text = not_supported_message("broker", "amqps://guest:pw@localhost:5671/vhost")
    assert text.startswith("broker URL scheme 'amqps' (amqps://guest:**@localhost:5671/vhost) "
                           "is not supported yet by runner ")
    assert text.endswith("supported now: sqlite://, memory://, redis://, rediss://, "
                         "redis+socket://, amqp://, pyamqp://, sentinel://")
    assert "rpc" in not_supported_message("backend", "rpc://")

"""What a user reads when a setting is wrong: key, source, what was given, what is allowed."""

from __future__ import annotations

import textwrap
from datetime import timedelta

import pytest

from runner.config import Conf, Settings, summary
from runner.exceptions import ConfigError

SECRET = "s3cr3t-pw"


def _issues(conf: Conf) -> dict[str, tuple[str, str | None]]:
    with pytest.raises(ConfigError) as info:
        _ = conf.settings
    return {issue.key: (issue.message, issue.source) for issue in info.value.issues}


def _conf_from_yaml(tmp_path, text: str) -> tuple[Conf, str]:
    path = tmp_path / "runner.yaml"
    path.write_text(textwrap.dedent(text).lstrip())
    conf = Conf(environ={})
    conf.load_file(path)
    return conf, str(path)


def test_unknown_key_in_yaml_names_line_and_closest_setting(tmp_path):
    conf, path = _conf_from_yaml(tmp_path, """
        task_serializer: json
        task_serializr: json
    """)
    message, source = _issues(conf)["task_serializr"]
    assert message == "unknown setting; did you mean task_serializer?"
    assert source == f"{path}:2"


def test_unknown_key_in_python_module_names_line(tmp_path, monkeypatch):
    (tmp_path / "typo_config.py").write_text("broker_url = 'memory://'\n\nworker_concurency = 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(__import__("sys").modules, "typo_config", raising=False)
    conf = Conf(environ={})
    conf.load_object("typo_config")
    message, source = _issues(conf)["worker_concurency"]
    assert "did you mean worker_concurrency?" in message
    assert source.endswith("typo_config.py:3")


def test_unknown_key_on_assignment_raises_at_once_with_did_you_mean():
    conf = Conf(environ={})
    with pytest.raises(ConfigError, match="did you mean broker_url"):
        conf.broker_ulr = "memory://"
    with pytest.raises(ConfigError, match="did you mean task_acks_late"):
        conf.update(task_ack_late=True)
    with pytest.raises(AttributeError, match="did you mean task_serializer"):
        _ = conf.task_serialiser


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("task_serializer", "xml", "serializer 'xml' is not registered; allowed: json, pickle"),
    ("result_serializer", "bson", "allowed: json"),
    ("accept_content", ["json", "application/xml"], "unknown content type(s) 'application/xml'"),
    ("result_accept_content", ["jsn"], "unknown content type(s) 'jsn'"),
    ("worker_concurrency", 0, "greater than or equal to 1; given 0"),
    ("worker_concurrency", "many", "valid integer"),
    ("worker_pool", "gevent", "'prefork', 'threads', 'solo' or 'asyncio'; given 'gevent'"),
    ("worker_prefetch_multiplier", -1, "greater than or equal to 0"),
    ("task_default_priority", 10, "less than or equal to 9"),
    ("task_compression", "lz4", "'gzip', 'zlib' or 'bzip2'"),
    ("timezone", "Europe/Olso", "unknown timezone 'Europe/Olso'; did you mean Europe/Oslo?"),
    ("timezone", "Mars/Olympus", "unknown timezone 'Mars/Olympus'"),
    ("broker_url", "redsi://localhost:6379/0", "unknown scheme 'redsi'; did you mean redis://?"),
    ("broker_url", "rpc://", "rpc:// is a result backend scheme, not a broker one"),
    ("broker_url", "sqlite:///:memory:", "in-memory SQLite database"),
    ("result_backend", "redis://localhost/zero", "Redis database must be a number"),
    ("task_routes", {"tasks.*": {"priority": 1}}, "no 'queue' key"),
    ("task_queues", ["a", {"name": "a"}], "declared twice: a"),
    ("beat_schedule", {"tick": {"schedule": 5}}, "required key missing"),
    ("beat_schedule", {"tick": {"task": "t", "schedule": "* * *"}}, "needs 5 fields"),
    ("beat_schedule", {"tick": {"task": "t", "schedule": 5, "when": 1}}, "unknown key"),
    ("enable_utc", "perhaps", "valid boolean"),
])
def test_bad_values_say_key_given_and_allowed(key, value, expected):
    conf = Conf(environ={})
    with pytest.raises(ConfigError) as info:
        conf[key] = value
    text = str(info.value)
    assert expected in text
    assert key in text


def test_soft_time_limit_must_be_below_hard_limit():
    conf = Conf(environ={})
    with pytest.raises(ConfigError, match="must be below task_time_limit"):
        conf.update(task_time_limit=10, task_soft_time_limit=20)


def test_every_error_is_reported_at_once_with_its_source(tmp_path, monkeypatch):
    conf, path = _conf_from_yaml(tmp_path, """
        task_serializr: json
        worker_concurrency: 0
        timezone: Narnia/Cair_Paravel
        accept_content: [json, xml]
    """)
    conf = Conf(preconf={"broker_url": "amqpp://guest@localhost//"},
                environ={"RUNNER_TASK_SERIALIZER": "toml"})
    conf.load_file(path)
    issues = _issues(conf)
    assert set(issues) == {"task_serializr", "worker_concurrency", "timezone", "accept_content",
                           "broker_url", "task_serializer"}
    assert issues["worker_concurrency"][1] == f"{path}:2"
    assert issues["accept_content"][1] == f"{path}:4"
    assert issues["broker_url"][1] == "Celery(broker=...)"
    assert issues["task_serializer"][1] == "env RUNNER_TASK_SERIALIZER"
    assert "did you mean amqp://" in issues["broker_url"][0]


def test_a_rejected_assignment_leaves_the_old_value():
    conf = Conf(environ={})
    conf.worker_concurrency = 2
    with pytest.raises(ConfigError):
        conf.worker_concurrency = 0
    assert conf.worker_concurrency == 2


def test_values_are_normalized():
    class Queue:  # the shape of a kombu Queue
        def __init__(self, name, routing_key=None):
            self.name, self.routing_key = name, routing_key
            self.queue_arguments = {"x-max-priority": 5}

    conf = Conf(environ={})
    conf.update(result_expires=timedelta(minutes=2), imports=("a.tasks", "b.tasks"),
                task_queues={"default": {"routing_key": "d"}, "low": None},
                worker_pool="processes")
    assert conf.result_expires == 120.0
    assert conf.imports == ["a.tasks", "b.tasks"]
    assert [(q.name, q.routing_key) for q in conf.task_queues] == [("default", "d"), ("low", None)]
    assert conf.worker_pool == "prefork"
    conf.task_queues = [Queue("media", "media.#"), "celery"]
    assert (conf.task_queues[0].routing_key, conf.task_queues[0].max_priority) == ("media.#", 5)
    conf.beat_schedule = {"a": {"task": "t", "schedule": timedelta(seconds=30), "args": [1]}}
    assert conf.beat_schedule["a"].args == (1,)


def test_defaults_match_celery():
    s = Settings()
    assert (s.broker_url, s.result_backend, s.task_serializer, s.accept_content) == \
        (None, None, "json", ["json"])
    assert (s.result_expires, s.task_default_queue, s.worker_prefetch_multiplier) == \
        (86400.0, "celery", 4)
    assert (s.task_default_retry_delay, s.task_max_retries, s.broker_connection_max_retries) == \
        (180, 3, 100)
    assert s.broker_transport_options.visibility_timeout == 30.0
    assert all(field.description for field in Settings.model_fields.values())


# --- passwords -----------------------------------------------------------------------------


def test_password_never_shown_by_repr_str_summary_or_errors():
    conf = Conf(preconf={"broker_url": f"amqp://user:{SECRET}@rabbit:5672/vhost",
                         "result_backend": f"redis://:{SECRET}@cache:6379/1"}, environ={})
    shown = [repr(conf), str(conf), repr(conf.settings), str(conf.settings), summary(conf)]
    assert all(SECRET not in text for text in shown)
    assert "amqp://user:**@rabbit:5672/vhost" in summary(conf)
    assert "redis://:**@cache:6379/1" in summary(conf)
    with pytest.raises(ConfigError) as info:
        conf.broker_url = f"redis://:{SECRET}@cache:6379/notanumber"
    assert SECRET not in str(info.value)
    with pytest.raises(ConfigError) as info:
        conf.broker_url = f"amqpx://u:{SECRET}@cache:1/x"
    assert SECRET not in str(info.value)


def test_summary_describes_the_configuration():
    conf = Conf(environ={})
    conf.update(timezone="Europe/Oslo", task_queues=["high"], task_routes={"a.*": "high"},
                beat_schedule={"tick": {"task": "tasks.tick", "schedule": 30}})
    text = summary(conf)
    assert "(embedded SQLite default: sqlite:///.runner/runner.db)" in text
    assert "task=json result=json" in text
    assert "Europe/Oslo (enable_utc=True)" in text
    assert "celery (default), high" in text
    assert "routes:          1" in text
    assert "tick: tasks.tick, every 30s" in text

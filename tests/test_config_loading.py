"""Every way settings reach ``app.conf``, Celery's config_from_object rules, and precedence."""

from __future__ import annotations

import sys
import textwrap
import types
import uuid
import warnings
from datetime import timedelta

import pytest

from runner.config import Conf
from runner.exceptions import ConfigError


@pytest.fixture
def make_module(tmp_path, monkeypatch):
    """Write ``<unique name>.py`` in tmp_path, importable by name; forgotten after the test."""
    monkeypatch.syspath_prepend(str(tmp_path))
    names = []

    def make(source: str, name: str | None = None) -> str:
        name = name or f"cfg_{uuid.uuid4().hex[:10]}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        names.append(name)
        return name

    yield make
    for name in names:
        sys.modules.pop(name, None)


@pytest.fixture
def yaml_file(tmp_path):
    def make(text: str, name: str = "runner.yaml"):
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return make


# --- Python sources -----------------------------------------------------------------------


def test_module_name_string_is_imported_lazily_when_a_setting_is_read(make_module):
    name = make_module("task_serializer = 'pickle'\naccept_content = ['json', 'pickle']\n")
    conf = Conf(environ={})
    conf.load_object(name)
    assert name not in sys.modules
    assert conf.task_serializer == "pickle"
    assert name in sys.modules
    assert conf.accept_content == ["json", "pickle"]


def test_force_imports_the_module_at_once(make_module):
    name = make_module("timezone = 'Europe/Oslo'\n")
    conf = Conf(environ={})
    conf.load_object(name, force=True)
    assert name in sys.modules
    assert conf.timezone == "Europe/Oslo"


def test_missing_module_is_an_error_naming_it_when_settings_are_read():
    conf = Conf(environ={})
    conf.load_object("no_such_config_module_xyz")
    with pytest.raises(ConfigError, match="no_such_config_module_xyz"):
        _ = conf.broker_url


def test_silent_ignores_a_missing_module():
    conf = Conf(environ={})
    conf.load_object("no_such_config_module_xyz", silent=True)
    conf.load_object("no_such_config_module_xyz", silent=True, force=True)
    assert conf.task_serializer == "json"


def test_error_inside_module_names_module_and_line(make_module):
    name = make_module("broker_url = 'memory://'\nvalue = undefined_name\n")
    conf = Conf(environ={})
    with pytest.raises(ConfigError) as info:
        conf.load_object(name, force=True)
    message = str(info.value)
    assert name in message and "NameError" in message and f"{name}.py:2" in message


def test_module_object_class_and_instance_are_read(make_module):
    module = types.ModuleType("inline_config")
    module.worker_concurrency = 3

    class Config:
        task_acks_late = True
        result_expires = timedelta(hours=1)

        def helper(self):  # methods are not settings
            return 1

    class Holder:
        def __init__(self):
            self.task_default_queue = "jobs"

    conf = Conf(environ={})
    conf.load_object(module)
    conf.load_object(Config)
    conf.load_object(Holder())
    assert conf.worker_concurrency == 3
    assert conf.task_acks_late is True
    assert conf.result_expires == 3600.0
    assert conf.task_default_queue == "jobs"


def test_module_attribute_path_is_accepted(make_module):
    name = make_module("class Settings:\n    task_track_started = True\n")
    for spec in (f"{name}:Settings", f"{name}.Settings"):
        conf = Conf(environ={})
        conf.load_object(spec)
        assert conf.task_track_started is True


def test_imports_functions_and_uppercase_constants_are_not_settings(make_module):
    name = make_module("""
        import os
        from datetime import timedelta
        SOME_CONSTANT = 5
        def route(name, args, kwargs, options, task=None, **kw):
            return None
        task_routes = route
        result_expires = timedelta(minutes=5)
    """)
    conf = Conf(environ={})
    conf.load_object(name)
    assert conf.result_expires == 300.0
    assert callable(conf.task_routes)


def test_later_file_layers_win(make_module, yaml_file):
    first = make_module("task_default_queue = 'first'\nworker_concurrency = 2\n")
    second = yaml_file("task_default_queue: second\n")
    conf = Conf(environ={})
    conf.load_object(first)
    conf.load_file(second)
    assert conf.task_default_queue == "second"
    assert conf.worker_concurrency == 2


# --- Celery's old names and the Django-style namespace -------------------------------------


def test_old_uppercase_names_are_mapped_with_a_deprecation_warning(make_module):
    name = make_module("""
        BROKER_URL = 'memory://'
        CELERY_RESULT_BACKEND = 'memory://'
        CELERY_TASK_SERIALIZER = 'json'
        CELERYD_CONCURRENCY = 2
        CELERY_ALWAYS_EAGER = True
        CELERYBEAT_SCHEDULE = {'tick': {'task': 'tasks.tick', 'schedule': 10}}
    """)
    conf = Conf(environ={})
    conf.load_object(name)
    with pytest.warns(DeprecationWarning) as record:
        assert conf.worker_concurrency == 2
    messages = [str(warning.message) for warning in record]
    assert len(messages) == 6
    assert any("CELERYD_CONCURRENCY is Celery's old name of the setting worker_concurrency" in m
               for m in messages)
    assert conf.broker_url == "memory://"
    assert conf.result_backend == "memory://"
    assert conf.task_always_eager is True
    assert conf.beat_schedule["tick"].task == "tasks.tick"
    assert conf.source_of("worker_concurrency").endswith(f"{name}.py:5")


def test_mixing_old_and_new_names_in_one_source_is_an_error(make_module):
    name = make_module("broker_url = 'memory://'\nCELERY_ALWAYS_EAGER = True\n")
    conf = Conf(environ={})
    conf.load_object(name)
    with pytest.raises(ConfigError) as info:
        _ = conf.settings
    issue = info.value.issues[0]
    assert "Cannot mix new and old setting keys" in issue.message
    assert "CELERY_ALWAYS_EAGER -> task_always_eager" in issue.message
    assert issue.source.endswith(f"{name}.py:2")


def test_namespace_celery_reads_only_prefixed_names(make_module):
    name = make_module("""
        CELERY_BROKER_URL = 'memory://'
        CELERY_TASK_ACKS_LATE = True
        BROKER_URL = 'redis://ignored:6379/0'
        DEBUG = True
        broker_url = 'sqlite:///ignored.db'
    """)
    conf = Conf(environ={})
    conf.load_object(name, namespace="CELERY")
    assert conf.broker_url == "memory://"
    assert conf.task_acks_late is True


def test_namespace_typo_gets_did_you_mean(make_module):
    name = make_module("CELERY_TASK_SERIALIZR = 'json'\n")
    conf = Conf(environ={})
    conf.load_object(name, namespace="CELERY")
    with pytest.raises(ConfigError, match="did you mean task_serializer"):
        _ = conf.settings


# --- YAML and environment ------------------------------------------------------------------


def test_yaml_file_is_read_with_nested_settings(yaml_file):
    path = yaml_file("""
        broker_url: sqlite:///jobs.db
        broker_transport_options:
          visibility_timeout: 60
          custom_option: 1
        task_queues: [default, {name: high, max_priority: 9}]
        beat_schedule:
          cleanup: {task: tasks.cleanup, schedule: '0 3 * * *'}
    """)
    conf = Conf(environ={})
    conf.load_file(path)
    assert conf.broker_url == "sqlite:///jobs.db"
    assert conf.broker_transport_options.visibility_timeout == 60
    assert conf.broker_transport_options["custom_option"] == 1
    assert [q.name for q in conf.task_queues] == ["default", "high"]
    assert conf.task_queues[1].max_priority == 9
    assert conf.beat_schedule["cleanup"].schedule == "0 3 * * *"
    assert conf.source_of("task_queues") == f"{path}:6"  # line 1 is blank


def test_json_file_is_read(tmp_path):
    path = tmp_path / "runner.json"
    path.write_text('{"worker_pool": "threads", "worker_concurrency": 8}')
    conf = Conf(environ={})
    conf.load_file(path)
    assert (conf.worker_pool, conf.worker_concurrency) == ("threads", 8)


def test_unreadable_settings_files_are_clear_errors(tmp_path, yaml_file):
    conf = Conf(environ={})
    with pytest.raises(ConfigError, match="no such settings file"):
        conf.load_file(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        conf.load_file(yaml_file("a: [1, 2\n"))
    with pytest.raises(ConfigError, match="expected a mapping"):
        conf.load_file(yaml_file("- 1\n- 2\n"))
    with pytest.raises(ConfigError, match="not a settings file"):
        conf.load_file(tmp_path / "settings.toml")


def test_environment_variables_are_parsed_to_the_setting_type():
    conf = Conf(environ={
        "RUNNER_BROKER_URL": "memory://",
        "RUNNER_WORKER_CONCURRENCY": "4",
        "RUNNER_TASK_ACKS_LATE": "true",
        "RUNNER_ACCEPT_CONTENT": '["json", "msgpack"]',
        "RUNNER_RESULT_ACCEPT_CONTENT": "json,yaml",
        "RUNNER_BROKER_TRANSPORT_OPTIONS": '{"visibility_timeout": 10}',
        "RUNNER_TIMEZONE": "Europe/Oslo",
        "RUNNER_OS": "Linux",  # set by GitHub Actions: not a setting, ignored
    })
    assert conf.broker_url == "memory://"
    assert conf.worker_concurrency == 4
    assert conf.task_acks_late is True
    assert conf.accept_content == ["json", "msgpack"]
    assert conf.result_accept_content == ["json", "yaml"]
    assert conf.broker_transport_options.visibility_timeout == 10
    assert conf.source_of("worker_concurrency") == "env RUNNER_WORKER_CONCURRENCY"


def test_runner_config_names_a_yaml_file(yaml_file):
    path = yaml_file("task_default_queue: from-env-file\n")
    conf = Conf(environ={"RUNNER_CONFIG": str(path)})
    assert conf.task_default_queue == "from-env-file"
    missing = Conf(environ={"RUNNER_CONFIG": str(path) + ".nope"})
    with pytest.raises(ConfigError, match="RUNNER_CONFIG"):
        _ = missing.settings


# --- precedence ----------------------------------------------------------------------------

LAYERS = ["file", "env_file", "preconf", "cli", "env", "runtime"]


def _conf_with(layers: list[str], make_module, yaml_file) -> Conf:
    """A Conf where each named layer sets task_default_queue to its own name."""
    environ = {}
    if "env_file" in layers:
        environ["RUNNER_CONFIG"] = str(yaml_file("task_default_queue: env_file\n", "env.yaml"))
    if "env" in layers:
        environ["RUNNER_TASK_DEFAULT_QUEUE"] = "env"
    preconf = {"task_default_queue": "preconf"} if "preconf" in layers else None
    conf = Conf(preconf=preconf, environ=environ)
    # Added in the "wrong" order on purpose: precedence must not depend on call order.
    if "runtime" in layers:
        conf.task_default_queue = "runtime"
    if "cli" in layers:
        conf.load_file(yaml_file("task_default_queue: cli\n", "cli.yaml"), layer="cli")
    if "file" in layers:
        conf.load_object(make_module("task_default_queue = 'file'\n"))
    return conf


@pytest.mark.parametrize("top", range(len(LAYERS)), ids=LAYERS)
def test_each_layer_beats_the_one_below(top, make_module, yaml_file):
    conf = _conf_with(LAYERS[: top + 1], make_module, yaml_file)
    assert conf.task_default_queue == LAYERS[top]


def test_defaults_are_the_bottom_layer():
    conf = Conf(environ={})
    assert conf.task_default_queue == "celery"
    assert conf.source_of("task_default_queue") is None


def test_preconf_none_means_not_given(make_module):
    conf = Conf(preconf={"broker_url": None, "result_backend": "memory://"}, environ={})
    conf.load_object(make_module("broker_url = 'sqlite:///a.db'\n"))
    assert conf.broker_url == "sqlite:///a.db"
    assert conf.result_backend == "memory://"
    assert conf.source_of("result_backend") == "Celery(backend=...)"


def test_preconf_none_is_a_value_where_the_setting_takes_none():
    """``Celery(result_expires=None)``: results never expire, as Celery documents."""
    assert Conf(preconf={"result_expires": None}, environ={}).result_expires is None
    assert Conf(preconf={"task_serializer": None}, environ={}).task_serializer == "json"
    assert Conf(preconf={}, environ={}).result_expires == 86400


def test_runtime_changes_invalidate_the_cached_settings():
    conf = Conf(environ={})
    first = conf.settings
    conf.update(worker_concurrency=2)
    assert conf.settings is not first
    assert conf.worker_concurrency == 2
    conf["worker_concurrency"] = 3
    assert conf.worker_concurrency == 3 and conf.source_of("worker_concurrency") == \
        "conf['worker_concurrency']"


def test_mapping_interface():
    conf = Conf(environ={})
    assert "broker_url" in conf and "nope" not in conf
    assert conf.get("nope", 5) == 5 and conf.get("task_serializer") == "json"
    assert set(conf.keys()) == set(conf.as_dict()) == set(dict(conf.items()))
    with pytest.raises(KeyError):
        conf["nope"]


def test_no_warnings_for_new_style_config(make_module):
    conf = Conf(environ={})
    conf.load_object(make_module("broker_url = 'memory://'\n"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert conf.broker_url == "memory://"

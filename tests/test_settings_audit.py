"""Every setting runner accepts is honoured, or says that it is not: none is validated,
documented and then silently ignored. A real Celery configuration loads: Celery's settings
runner does not use are accepted with a warning; those whose absence would change what a user
relies on (TLS, which broker, message signing) are refused, naming the README."""

from __future__ import annotations

import pathlib
import warnings

import pytest

from runner import Celery
from runner.config import settings as settings_module
from runner.config.settings import NOT_ACTED_ON, Settings
from runner.exceptions import ConfigError

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_every_setting_is_read_outside_the_settings_code_or_flagged():
    """A setting's name must appear where runner acts (outside runner/config), or in
    NOT_ACTED_ON, which warns when it is set."""
    code = "".join(path.read_text() for path in (ROOT / "runner").rglob("*.py")
                   if "config" not in path.relative_to(ROOT / "runner").parts)
    never_read = [name for name in Settings.model_fields
                  if name not in code and name not in NOT_ACTED_ON]
    assert never_read == []
    assert all(name in Settings.model_fields for name in NOT_ACTED_ON)


@pytest.mark.parametrize("name", sorted(NOT_ACTED_ON))
def test_a_setting_runner_does_not_act_on_warns_when_set(name, monkeypatch):
    monkeypatch.setattr(settings_module, "_warned", set())
    default = Settings.model_fields[name].get_default(call_default_factory=True)
    value = {bool: not default, type(None): True, int: 3, dict: {"max_retries": 1}}[
        type(default)]
    app = Celery("audit", broker="memory://", backend="memory://", set_as_current=False)
    with pytest.warns(UserWarning, match=rf"{name}=.* has no effect in runner"):
        app.conf.update({name: value})
        assert app.conf.task_serializer  # (read: the settings are built)


def test_a_celery_configuration_with_settings_runner_lacks_loads_with_warnings(tmp_path,
                                                                              monkeypatch):
    (tmp_path / "celeryconf.py").write_text(
        "broker_url = 'memory://'\n"
        "result_backend = 'memory://'\n"
        "result_chord_join_timeout = 5\n"
        "redis_max_connections = 20\n"
        "cassandra_servers = ['db1']\n"
        "worker_direct = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    app = Celery("proj", set_as_current=False)
    app.config_from_object("celeryconf")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert app.conf.broker_url == "memory://"
    said = "\n".join(str(w.message) for w in caught)
    for name in ("result_chord_join_timeout", "redis_max_connections",
                 "cassandra_servers", "worker_direct"):
        assert f"{name} is a Celery setting runner does not use" in said


@pytest.mark.parametrize("name, value, words", [
    ("broker_use_ssl", True, "TLS in the URL"),
    ("broker_host", "rabbit", "broker_url"),
])
def test_a_celery_setting_whose_absence_matters_is_refused(name, value, words):
    app = Celery("proj", broker="memory://", backend="memory://", set_as_current=False)
    with pytest.raises(ConfigError, match=rf"{name}: a Celery setting runner does not support"
                                          rf": .*{words}.*Coming from Celery"):
        app.conf.update({name: value})


def test_celerys_extras_are_declared_so_the_seeds_pip_line_installs():
    """`pip install 'runner[librabbitmq,redis,auth,msgpack]'` (the seed's line, with runner
    for celery) names extras runner declares: pip installs them without a warning."""
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert {"librabbitmq", "redis", "auth", "msgpack", "amqp"} <= set(extras)

"""What a user sees from ``python -m celeryconfig``, ``runner validate`` and the schema check."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from runner.cli.validate import validate
from runner.config import check_module
from runner.config.schema import SCHEMA_PATH, render

REPO = Path(__file__).resolve().parents[1]
CHECK_LINES = ('if __name__ == "__main__":\n'
               '    from runner.config import check_module; '
               'raise SystemExit(check_module(__name__))\n')


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_python_m_celeryconfig_prints_summary_and_exits_0():
    done = _run([sys.executable, "-m", "celeryconfig"], REPO)
    assert done.returncode == 0, done.stderr
    assert "broker:          sqlite:///.runner/runner.db" in done.stdout
    assert "serializers:     task=json result=json" in done.stdout
    assert "timezone:        Europe/Oslo (enable_utc=True)" in done.stdout
    assert done.stdout.rstrip().endswith("configuration OK")


def test_python_m_on_an_invalid_module_prints_every_error(tmp_path):
    (tmp_path / "badconfig.py").write_text(textwrap.dedent("""\
        broker_url = 'redis://:hunter2@localhost:6379/zero'
        task_serializr = 'json'
        worker_concurrency = 0
        timezone = 'Europe/Olso'
        accept_content = ['json', 'xml']
    """) + CHECK_LINES)
    done = _run([sys.executable, "-m", "badconfig"], tmp_path)
    assert done.returncode == 1
    err = done.stderr
    assert "configuration invalid: 5 problem(s)" in err
    assert "badconfig.py:1: broker_url: invalid URL 'redis://:**@localhost:6379/zero'" in err
    assert "badconfig.py:2: task_serializr: unknown setting; did you mean task_serializer?" in err
    assert "badconfig.py:3: worker_concurrency:" in err
    assert "badconfig.py:4: timezone: unknown timezone 'Europe/Olso'; did you mean Europe/Oslo?" \
        in err
    assert "badconfig.py:5: accept_content: unknown content type(s) 'xml'" in err
    assert "hunter2" not in done.stdout + err
    assert "Traceback" not in err


def test_seed_rabbitmq_urls_are_supported(tmp_path, capsys, monkeypatch):
    (tmp_path / "seedconfig.py").write_text("broker_url = 'pyamqp://'\nresult_backend = 'rpc://'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert check_module("seedconfig") == 0
    assert "not supported" not in capsys.readouterr().err


def test_a_scheme_not_supported_yet_is_named_with_the_password_masked(
        tmp_path, capsys, monkeypatch):
    from runner.config.urls import BROKER_CLASSES

    monkeypatch.setitem(BROKER_CLASSES, "amqps", None)  # as a version without it would say
    (tmp_path / "seedconfig2.py").write_text("broker_url = 'amqps://u:hunter2@h/v'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert check_module("seedconfig2") == 1
    err = capsys.readouterr().err
    assert "broker URL scheme 'amqps' (amqps://u:**@h/v) is not supported yet" in err
    assert "hunter2" not in err
    sys.modules.pop("seedconfig2", None)
    sys.modules.pop("seedconfig", None)


# --- runner validate ----------------------------------------------------------------------


@pytest.fixture
def cli():
    return CliRunner()


def test_validate_module_name(cli, monkeypatch):
    monkeypatch.chdir(REPO)
    result = cli.invoke(validate, ["celeryconfig"])
    assert result.exit_code == 0, result.output
    assert "configuration OK" in result.stdout


def test_validate_py_path_yaml_and_json(cli, tmp_path):
    (tmp_path / "conf.py").write_text("worker_pool = 'threads'\n")
    (tmp_path / "runner.yaml").write_text("broker_url: memory://\nworker_concurrency: 2\n")
    (tmp_path / "runner.json").write_text(json.dumps({"task_default_queue": "jobs"}))
    for name, expected in (("conf.py", "queues:          celery (default)"),
                           ("runner.yaml", "broker:          memory://"),
                           ("runner.json", "queues:          jobs (default)")):
        result = cli.invoke(validate, [str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        assert expected in result.stdout


def test_validate_reports_every_error_and_exits_1(cli, tmp_path):
    path = tmp_path / "runner.yaml"
    path.write_text("task_serializr: json\nworker_concurrency: 0\n")
    result = cli.invoke(validate, [str(path)])
    assert result.exit_code == 1
    assert f"{path}:1: task_serializr: unknown setting; did you mean task_serializer?" \
        in result.stderr
    assert f"{path}:2: worker_concurrency:" in result.stderr


def test_validate_config_option_applies_over_target(cli, tmp_path):
    (tmp_path / "base.yaml").write_text("task_default_queue: base\n")
    (tmp_path / "override.yaml").write_text("task_default_queue: override\n")
    result = cli.invoke(validate, [str(tmp_path / "base.yaml"),
                                   "--config", str(tmp_path / "override.yaml")])
    assert result.exit_code == 0, result.output
    assert "override (default)" in result.stdout


def test_validate_shows_old_name_deprecations(cli, tmp_path):
    (tmp_path / "oldconfig.py").write_text("BROKER_URL = 'memory://'\nCELERYD_CONCURRENCY = 2\n")
    result = cli.invoke(validate, [str(tmp_path / "oldconfig.py")])
    assert result.exit_code == 0, result.output
    assert "oldconfig.py:2: CELERYD_CONCURRENCY is Celery's old name of the setting " \
        "worker_concurrency" in result.stderr
    assert "broker:          memory://" in result.stdout


def test_validate_tells_a_pipeline_by_its_steps_key(cli, tmp_path):
    path = tmp_path / "etl.yaml"
    path.write_text("name: etl\nsteps:\n  - task: tasks.extract\n")
    result = cli.invoke(validate, [str(path)])
    assert result.exit_code == 1  # checked as a pipeline: its steps must be a mapping
    assert "etl.yaml:2:1: steps: Input should be a valid dictionary" in result.stderr
    forced = cli.invoke(validate, [str(path), "--kind", "config"])
    assert forced.exit_code == 1 and "steps: unknown setting" in forced.stderr


def test_validate_missing_module_is_one_clear_error(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli.invoke(validate, ["no_such_settings_module"])
    assert result.exit_code == 1
    assert "cannot import config module 'no_such_settings_module'" in result.stderr
    assert "Traceback" not in result.output


def test_runner_console_script_validates_celeryconfig():
    runner = Path(sys.executable).with_name("runner")
    done = _run([str(runner), "validate", "celeryconfig"], REPO)
    assert done.returncode == 0, done.stderr
    assert "configuration OK" in done.stdout


# --- schema ---------------------------------------------------------------------------------


def test_committed_schema_is_up_to_date():
    assert SCHEMA_PATH.read_text(encoding="utf-8") == render(), (
        "schemas/config.schema.json is stale; run: python -m runner.config.schema")


def test_schema_describes_every_setting():
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert schema["additionalProperties"] is False
    assert "broker_url" in schema["properties"]
    assert all(prop.get("description") for prop in schema["properties"].values())

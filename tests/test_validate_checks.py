"""``runner validate`` and ``python -m celeryconfig`` check what run time checks: the
``RUNNER_*`` variables (names and values), broker_transport_options, a pipeline's triggers as
``runner beat`` checks them and its ``app:``; run time names an unknown variable in a warning."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import ROOT, run_runner

TYPO = "RUNNER_WORKER_CONCURENCY"


def env_with(**variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    return {**env, **variables}


def test_validate_names_a_misspelt_runner_variable_and_the_one_meant():
    result = run_runner("validate", "celeryconfig", cwd=ROOT, env=env_with(**{TYPO: "3"}))
    assert result.returncode == 1, result.stdout
    assert result.stderr.splitlines()[1:] == [
        f"  environment: {TYPO}: not a setting, ignored; did you mean "
        f"RUNNER_WORKER_CONCURRENCY?"]


def test_validate_names_the_variable_whose_value_is_bad():
    result = run_runner("validate", "celeryconfig", cwd=ROOT,
                        env=env_with(RUNNER_WORKER_CONCURRENCY="abc"))
    assert result.returncode == 1, result.stdout
    assert result.stderr.splitlines()[1:] == [
        "  env RUNNER_WORKER_CONCURRENCY: worker_concurrency: Input should be a valid integer, "
        "unable to parse string as an integer; given 'abc'"]


def test_a_deeply_nested_json_variable_is_an_error_naming_it_not_a_traceback():
    nested = "[" * 5000 + "]" * 5000
    result = run_runner("validate", "celeryconfig", cwd=ROOT,
                        env=env_with(RUNNER_ACCEPT_CONTENT=nested))
    assert result.returncode == 1, result.stdout
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[1].startswith(
        "  env RUNNER_ACCEPT_CONTENT: accept_content: ")


def test_python_m_celeryconfig_checks_the_environment_too():
    result = subprocess.run([sys.executable, "-m", "celeryconfig"], cwd=ROOT, timeout=60,
                            capture_output=True, text=True, env=env_with(**{TYPO: "3"}))
    assert result.returncode == 1, result.stdout
    assert "did you mean RUNNER_WORKER_CONCURRENCY?" in result.stderr


def test_variables_runner_and_ci_systems_set_are_not_settings_and_not_errors():
    result = run_runner("validate", "celeryconfig", cwd=ROOT, env=env_with(
        RUNNER_CONFIG="", RUNNER_APP="tasks", RUNNER_OS="Linux", RUNNER_TEMP="/tmp"))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_a_command_that_loads_the_config_warns_of_a_misspelt_variable(tmp_path):
    env = env_with(**{TYPO: "3", "RUNNER_BROKER_URL": f"sqlite:///{tmp_path}/q.db"})
    result = run_runner("purge", "-f", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"environment: {TYPO}: not a setting, ignored; did you mean "
        f"RUNNER_WORKER_CONCURRENCY?"]


def test_a_misspelt_transport_option_is_an_error_and_an_unknown_one_a_warning(tmp_path):
    path = tmp_path / "runner.yaml"
    path.write_text("broker_url: memory://\nbroker_transport_options:\n"
                    "  visiblity_timeout: 5\n")
    result = run_runner("validate", path, cwd=tmp_path)
    assert result.returncode == 1, result.stdout
    assert result.stderr.splitlines()[1:] == [
        "  runner.yaml:2: broker_transport_options.visiblity_timeout: unknown option; did you "
        "mean 'visibility_timeout'?"]
    path.write_text("broker_url: memory://\nbroker_transport_options: {my_broker_knob: 1}\n")
    result = run_runner("validate", path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "warning: runner.yaml:2: broker_transport_options.my_broker_knob: not an option "
        "runner's brokers read; passed to the broker as is"]


def test_a_typed_transport_option_with_a_bad_value_is_an_error(tmp_path):
    path = tmp_path / "runner.yaml"
    path.write_text("broker_url: memory://\nbroker_transport_options: {heartbeat: often}\n")
    result = run_runner("validate", path, cwd=tmp_path)
    assert result.returncode == 1
    assert "broker_transport_options.heartbeat: Input should be a valid integer" in \
        result.stderr


TRIGGERED = """\
name: nightly
params:
  day: {type: date, required: true}
steps:
  a: {task: t.a, args: ["{{ params.day }}"]}
triggers:
  - cron: "0 3 * * *"
    params: {days: 2026-01-01}
"""


def test_validate_refuses_trigger_params_that_beat_refuses(tmp_path):
    path = tmp_path / "nightly.yaml"
    path.write_text(TRIGGERED)
    result = run_runner("validate", path, cwd=tmp_path)
    assert result.returncode == 1, result.stdout
    expected = (f"{path}:7:5: trigger 'nightly': 2 problems:\n"
                f"  - unknown param 'days'; the pipeline has: day\n"
                f"  - param 'day' is required (-p day=...)")
    assert result.stderr.strip() == expected
    beat = run_runner("beat", "--pipelines", tmp_path, "--list", cwd=tmp_path,
                      env=env_with(RUNNER_BROKER_URL=f"sqlite:///{tmp_path}/b.db"))
    assert beat.returncode != 0
    assert "unknown param 'days'" in beat.stderr and "nightly.yaml:7:5" in beat.stderr


def test_validate_refuses_a_pipeline_whose_app_fails_inside_its_import(tmp_path):
    (tmp_path / "brokenapp.py").write_text("import no_such_dependency\n")
    path = tmp_path / "p.yaml"
    path.write_text("name: p\napp: brokenapp\nsteps:\n  a: {task: brokenapp.a}\n")
    result = run_runner("validate", path, cwd=tmp_path)
    assert result.returncode == 1, result.stdout
    [line] = result.stderr.splitlines()
    assert line.startswith(f"{path}:2:1: app 'brokenapp' cannot be loaded: ")
    assert "no_such_dependency" in line

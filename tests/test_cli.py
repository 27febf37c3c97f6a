"""The ``runner`` command as a user types it: call, result, purge, --version, -A and --config,
and errors that are one clear line with a non-zero exit code, never a traceback."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid

import pytest
from click.testing import CliRunner

from runner.cli import main
from runner.version import __version__
from tests.helpers import wait_for_state

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@pytest.fixture
def cli():
    """``cli('call', '-A', 'tasks', ...)``: the command run in this process."""
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None):
        return runner.invoke(main, list(args), input=input, catch_exceptions=False)

    return invoke


def run(*args: str, env: dict[str, str], cwd, timeout: float = 30) -> subprocess.CompletedProcess:
    """``runner ARGS`` as a separate process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "runner", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(stderr: str, *expected: str) -> None:
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("Error: ")
    for text in expected:
        assert text in lines[0]


@pytest.fixture
def module_dir(tmp_path, monkeypatch):
    """A folder on sys.path for app modules a test writes; returns a writer of modules."""
    folder = tmp_path / "mods"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))

    def write(source: str) -> str:
        name = f"mod_{uuid.uuid4().hex[:8]}"
        (folder / f"{name}.py").write_text(source)
        return name

    return write


# -- what a user runs -----------------------------------------------------------------------------


def test_version_prints_the_version(worker_env, tmp_path):
    done = run("--version", env=worker_env, cwd=tmp_path)
    assert done.returncode == 0
    assert done.stdout.strip() == f"runner, version {__version__}"


def test_call_wait_prints_the_task_id_then_the_result(worker_env, tmp_path, start_worker):
    start_worker("-c", "1")
    done = run("call", "-A", "tasks", "tasks.add", "--args", "[4, 4]", "--kwargs", "{}",
               "--wait", "--timeout", "10", env=worker_env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    task_id, value = done.stdout.splitlines()
    assert UUID.match(task_id)
    assert value == "8"


def test_call_wait_of_a_failing_task_prints_the_error_and_exits_1(
        worker_env, tmp_path, start_worker):
    start_worker("-c", "1")
    done = run("call", "-A", "tasks", "tasks.boom", "--args", '["oops"]', "--wait",
               env=worker_env, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stdout.splitlines()[1] == "FAILURE: ValueError: oops"


def test_config_file_is_used_by_every_command(app, db_url, worker_env, tmp_path):
    """No RUNNER_* variables: broker and backend come only from ``--config runner.yaml``."""
    env = {k: v for k, v in worker_env.items() if not k.startswith("RUNNER_")}
    config = tmp_path / "runner.yaml"
    config.write_text(f"broker_url: {db_url}\nresult_backend: {db_url}\n")
    common = ["-A", "tasks", "--config", str(config)]

    sent = run("call", *common, "tasks.add", "--args", "[1, 2]", env=env, cwd=tmp_path)
    assert sent.returncode == 0, sent.stderr
    assert app.broker.qsize("celery") == 1  # in the file named by the YAML
    purged = run("purge", *common, "-f", env=env, cwd=tmp_path)
    assert purged.stdout.strip() == "Purged 1 message from 1 known task queue."

    task_id = run("call", *common, "tasks.add", "--args", "[2, 3]", env=env,
                  cwd=tmp_path).stdout.strip()
    worker = subprocess.Popen([sys.executable, "-m", "runner", "worker", *common, "-c", "1"],
                              env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        assert app.AsyncResult(task_id).get(timeout=15) == 5
    finally:
        worker.terminate()
        _, err = worker.communicate(timeout=15)
    assert f".> transport:   {db_url}" in err
    shown = run("result", *common, task_id, env=env, cwd=tmp_path)
    assert (shown.returncode, shown.stdout.strip()) == (0, "5")


def test_app_module_that_fails_to_import_says_what_failed_inside_it(worker_env, tmp_path):
    (tmp_path / "broken.py").write_text(
        "from runner import Celery\n\napp = Celery('broken')\nprint(undefined_name)\n")
    for command in (["worker"], ["call", "broken.x"], ["result", "some-id"], ["purge", "-f"]):
        done = run(command[0], "-A", "broken", *command[1:], env=worker_env, cwd=tmp_path)
        assert done.returncode == 2
        assert_one_line_error(done.stderr, "-A broken", "broken.py:4",
                              "NameError: name 'undefined_name' is not defined")


def test_unreachable_amqp_broker_is_one_line_that_never_shows_the_password(worker_env, tmp_path):
    env = {**worker_env, "RUNNER_BROKER_URL": "amqp://guest:secret@127.0.0.1:1/vhost",
           "RUNNER_BROKER_TRANSPORT_OPTIONS": '{"max_retries": 1}'}
    for command in (["worker"], ["call", "tasks.add"], ["purge", "-f"]):
        done = run(command[0], "-A", "tasks", *command[1:], env=env, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()  # reconnection warnings, then the error
        assert "could not connect to RabbitMQ at amqp://guest:**@127.0.0.1:1/vhost" in lines[-1]
        assert "Traceback" not in done.stderr
        assert "secret" not in done.stderr + done.stdout


def test_rpc_result_backend_without_amqp_broker_is_an_error_before_anything_is_sent(
        app, worker_env, tmp_path):
    env = {**worker_env, "RUNNER_RESULT_BACKEND": "rpc://"}
    for command in (["worker"], ["result", "an-id"], ["call", "tasks.add", "--wait"]):
        done = run(command[0], "-A", "tasks", *command[1:], env=env, cwd=tmp_path)
        assert done.returncode == 2
        assert_one_line_error(done.stderr, "rpc://", "needs an AMQP broker")
    assert app.broker.qsize("celery") == 0  # call --wait did not send a task it cannot wait for


def test_unreachable_redis_is_one_line_that_never_shows_the_password(worker_env, tmp_path):
    env = {**worker_env, "RUNNER_BROKER_URL": "redis://:secret@127.0.0.1:1/0",
           "RUNNER_RESULT_BACKEND": "redis://:secret@127.0.0.1:1/1",
           "RUNNER_BROKER_TRANSPORT_OPTIONS": '{"max_retries": 1}'}
    for command in (["call", "tasks.add", "--args", "[1, 2]"], ["result", "an-id"]):
        done = run(command[0], "-A", "tasks", *command[1:], env=env, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()  # retry warnings, then the error
        assert lines[-1].startswith("Error: could not connect to Redis at redis://:**@127.0.0.1:1/")
        assert "Traceback" not in done.stderr
        assert "secret" not in done.stderr + done.stdout


def test_sqlite_broker_in_a_place_that_cannot_hold_a_file_is_a_clear_error(
        worker_env, tmp_path):
    (tmp_path / "plain-file").write_text("")
    url = f"sqlite:///{tmp_path}/plain-file/runner.db"  # a folder inside a regular file
    env = {**worker_env, "RUNNER_BROKER_URL": url}
    for command in (["worker"], ["call", "tasks.add"]):
        done = run(command[0], "-A", "tasks", *command[1:], env=env, cwd=tmp_path)
        assert done.returncode == 2
        assert_one_line_error(done.stderr, "cannot open SQLite broker",
                              f"{tmp_path}/plain-file/runner.db")


# -- runner call ----------------------------------------------------------------------------------


def test_call_sends_args_and_kwargs_and_prints_the_id(app, cli, start_worker):
    start_worker("-c", "1")
    done = cli("call", "-A", "tasks", "tasks.whoami", "--kwargs", "{}")
    assert done.exit_code == 0
    assert UUID.match(done.output.strip())
    echoed = cli("call", "-A", "tasks", "tasks.echo", "--kwargs", '{"value": {"a": [1]}}')
    assert app.AsyncResult(echoed.output.strip()).get(timeout=10) == {"a": [1]}
    added = cli("call", "-A", "tasks", "tasks.add", "-a", "[20, 22]")
    assert app.AsyncResult(added.output.strip()).get(timeout=10) == 42


def test_call_queue_sends_to_that_queue(app, cli, start_worker):
    done = cli("call", "-A", "tasks", "tasks.whoami", "--queue", "reports")
    assert done.exit_code == 0
    assert app.broker.qsize("reports") == 1 and app.broker.qsize("celery") == 0
    start_worker("-Q", "reports")
    assert app.AsyncResult(done.output.strip()).get(timeout=10)["queue"] == "reports"


def test_call_countdown_runs_the_task_no_earlier_than_asked(app, cli, start_worker):
    start_worker("-c", "1")
    started = time.monotonic()
    done = cli("call", "-A", "tasks", "tasks.add", "--args", "[1, 1]", "--countdown", "1")
    result = app.AsyncResult(done.output.strip())
    time.sleep(0.5)
    assert result.state == "PENDING"
    assert result.get(timeout=10) == 2
    assert time.monotonic() - started >= 1


def test_call_unknown_task_is_an_error_naming_it(app, cli):
    done = cli("call", "-A", "tasks", "tasks.nope", "--args", "[1]")
    assert done.exit_code == 2
    assert "unknown task 'tasks.nope'" in done.output
    assert "tasks.add" in done.output  # what the app does register
    assert app.broker.qsize("celery") == 0


@pytest.mark.parametrize("option, text", [("--args", "{not json"), ("--args", '{"a": 1}'),
                                          ("--kwargs", "[1, 2]")])
def test_call_with_bad_json_arguments_is_a_usage_error(app, cli, option, text):
    done = cli("call", "-A", "tasks", "tasks.add", option, text)
    assert done.exit_code == 2
    assert option in done.output
    assert app.broker.qsize("celery") == 0


def test_call_wait_gives_up_after_the_timeout_with_one_line(app, cli):
    done = CliRunner().invoke(main, ["call", "-A", "tasks", "tasks.add", "--args", "[1, 2]",
                                     "--wait", "--timeout", "0.2"])
    assert done.exit_code == 2
    task_id, error = done.output.splitlines()
    assert UUID.match(task_id)
    assert error.startswith("Error: ") and "timed out" in error and task_id in error


# -- runner result --------------------------------------------------------------------------------


def test_result_prints_the_value_of_a_finished_task(app, cli, start_worker):
    from tasks import add, echo

    start_worker("-c", "1")
    done = add.delay(2, 2)
    done.get(timeout=10)
    shown = cli("result", "-A", "tasks", done.id)
    assert (shown.exit_code, shown.output) == (0, "4\n")
    text = echo.delay({"k": "v"})
    text.get(timeout=10)
    assert cli("result", "-A", "tasks", text.id).output == '{"k": "v"}\n'


def test_result_of_a_revoked_task_says_so_and_exits_1(app, cli, start_worker):
    """A script sees that a revoked task did not succeed, as it does for a failed one."""
    from tasks import add

    start_worker("-c", "1")
    later = add.apply_async((1, 1), countdown=1)
    later.revoke()
    wait_for_state(later, "REVOKED", timeout=15)  # (the worker records it when it is due)
    shown = cli("result", "-A", "tasks", later.id)
    assert shown.exit_code == 1 and shown.output.startswith("REVOKED: TaskRevokedError")


def test_result_of_a_failed_task_shows_the_error_and_with_traceback_the_traceback(
        app, cli, start_worker):
    from tasks import boom

    start_worker("-c", "1")
    failed = boom.delay("bad input")
    failed.get(timeout=10, propagate=False)
    shown = cli("result", "-A", "tasks", failed.id)
    assert (shown.exit_code, shown.output) == (1, "FAILURE: ValueError: bad input\n")
    detailed = cli("result", "-A", "tasks", failed.id, "--traceback")
    assert detailed.exit_code == 1
    assert detailed.output.startswith("FAILURE: ValueError: bad input\nTraceback")
    assert "raise ValueError(message)" in detailed.output


def test_result_of_an_unknown_or_waiting_task_is_pending(app, cli):
    from tasks import add

    waiting = add.delay(1, 1)
    assert cli("result", "-A", "tasks", waiting.id).output == "PENDING\n"
    assert cli("result", "-A", "tasks", "no-such-id").output == "PENDING\n"


def test_result_wait_waits_for_the_task(app, cli, start_worker):
    from tasks import sleep

    start_worker("-c", "1")
    slow = sleep.delay(0.5, "late")
    shown = cli("result", "-A", "tasks", slow.id, "--wait", "--timeout", "10")
    assert (shown.exit_code, shown.output) == (0, '"late"\n')


# -- runner purge ---------------------------------------------------------------------------------


def test_purge_force_deletes_waiting_tasks(app, cli):
    from tasks import add

    for i in range(3):
        add.delay(i, i)
    done = cli("purge", "-A", "tasks", "-f")
    assert done.exit_code == 0
    assert done.output == "Purged 3 messages from 1 known task queue.\n"
    assert app.broker.qsize("celery") == 0


def test_purge_only_the_queues_given(app, cli):
    from tasks import add

    add.apply_async((1, 1), queue="q1")
    add.apply_async((1, 1), queue="q2")
    add.apply_async((1, 1), queue="q3")
    done = cli("purge", "-A", "tasks", "-Q", "q1,q2", "-f")
    assert done.output == "Purged 2 messages from 2 known task queues.\n"
    assert [app.broker.qsize(q) for q in ("q1", "q2", "q3")] == [0, 0, 1]


def test_purge_asks_first_and_keeps_the_tasks_when_told_no(app, cli):
    from tasks import add

    add.delay(1, 1)
    refused = cli("purge", "-A", "tasks", input="n\n")
    assert "This will remove all tasks from 1 queue(s): celery" in refused.output
    assert "Continue? [y/N]" in refused.output
    assert "Aborted!" in refused.output
    assert refused.exit_code == 1
    assert app.broker.qsize("celery") == 1

    agreed = cli("purge", "-A", "tasks", input="y\n")
    assert agreed.exit_code == 0
    assert "Purged 1 message from 1 known task queue." in agreed.output
    assert app.broker.qsize("celery") == 0


# -- -A errors ------------------------------------------------------------------------------------


def test_app_module_that_does_not_exist_is_named(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for command in (["call", "x.y"], ["result", "an-id"], ["purge", "-f"]):
        done = cli(command[0], "-A", "no_such_module", *command[1:])
        assert done.exit_code == 2
        assert "Error: -A no_such_module: no module named 'no_such_module'" in done.output
        assert "Traceback" not in done.output


def test_app_module_whose_import_fails_inside_says_what_failed(cli, module_dir):
    name = module_dir("import os\n\nfrom runner import Celery\n\napp = Celery('x')\n"
                      "raise RuntimeError('no database configured')\n")
    done = cli("call", "-A", name, "x.y")
    assert done.exit_code == 2
    assert f"Error: -A {name}: importing it failed (" in done.output
    assert f"{name}.py:6): RuntimeError: no database configured" in done.output
    assert "Traceback" not in done.output


def test_app_module_importing_a_missing_dependency_names_the_dependency(cli, module_dir):
    name = module_dir("import not_installed_dependency\n")
    done = cli("result", "-A", name, "an-id")
    assert done.exit_code == 2
    assert f"-A {name}: importing it failed" in done.output
    assert "ModuleNotFoundError: No module named 'not_installed_dependency'" in done.output


def test_app_attribute_that_is_not_an_app_is_an_error(cli, module_dir):
    name = module_dir("from runner import Celery\n\napp = Celery('x')\nother = 3\n")
    done = cli("purge", "-A", f"{name}:other", "-f")
    assert done.exit_code == 2
    assert f"Error: -A {name}:other: {name} has no app named 'other'" in done.output
    nothing = module_dir("x = 1\n")
    done = cli("purge", "-A", nothing, "-f")
    assert done.exit_code == 2
    assert f"module {nothing} defines no app" in done.output


def test_app_module_given_by_environment_variable(app, cli, monkeypatch):
    monkeypatch.setenv("RUNNER_APP", "tasks")
    done = cli("call", "tasks.add", "--args", "[1, 1]")
    assert done.exit_code == 0
    assert app.broker.qsize("celery") == 1


def test_missing_config_file_is_a_usage_error(cli, tmp_path):
    done = cli("purge", "-A", "tasks", "--config", str(tmp_path / "nope.yaml"), "-f")
    assert done.exit_code != 0
    assert "nope.yaml" in done.output
    assert "Traceback" not in done.output

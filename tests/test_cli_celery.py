"""The command line as Celery users type it, with real worker processes: global options before
the command, the worker's Celery options (-B, --detach, --pidfile, --logfile, -X, -n,
--autoscale, -O, time limits, --prefetch-multiplier 0), runner shell, runner report,
purge -X, and the result backend that follows the broker."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner import Celery
from tests.conftest import APPS, ROOT, WorkerProcess

HOST = socket.gethostname()


def bare_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: no RUNNER_* settings, runner and the test apps
    importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    env["PYTHONPATH"] = os.pathsep.join([str(APPS), str(ROOT), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def runner(*args: str, env: dict[str, str], cwd: Path, input: str | None = None,
           timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runner", *map(str, args)], env=env, cwd=cwd,
                          input=input, capture_output=True, text=True, timeout=timeout)


class RunnerProcess(WorkerProcess):
    """``runner ARGS`` (any order of options and command) as a long-running process."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path, log_path: Path):
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "runner", *args], cwd=cwd, env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)


@pytest.fixture
def spawn(tmp_path):
    """``spawn('-A', 'tasks', 'worker', ...)``: a ``runner`` process, stopped after the test."""
    started: list[RunnerProcess] = []

    def start(*args: str, env: dict[str, str], cwd: Path | None = None,
              wait: str | None = "ready.") -> RunnerProcess:
        proc = RunnerProcess([str(a) for a in args], env, cwd or tmp_path,
                             tmp_path / f"runner-{len(started)}.log")
        started.append(proc)
        if wait:
            proc.wait_for_log(wait)
        return proc

    yield start
    for proc in started:
        proc.stop()


def assert_one_line_error(stderr: str, *expected: str) -> None:
    lines = [line for line in stderr.strip().splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("Error: ")
    for text in expected:
        assert text in lines[0], stderr


# -- global options ---------------------------------------------------------------------------

def test_global_app_option_before_the_command_starts_a_worker_that_runs_a_task(
        app, spawn, worker_env):
    worker = spawn("-A", "tasks", "-q", "worker", "-l", "info", "-n", "worker1@%h", "-c", "1",
                   env=worker_env)
    info = app.tasks["tasks.whoami"].delay().get(timeout=20)
    assert info["hostname"] == f"worker1@{HOST}"
    assert f"worker1@{HOST} ready." in worker.log()
    assert "[tasks]" not in worker.log()  # -q: no banner


def test_broker_backend_and_workdir_before_the_command_reach_the_worker(
        app, start_worker, db_url, tmp_path):
    start_worker()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = runner("--workdir", APPS, "-A", "tasks", "-b", db_url, "--result-backend", db_url,
                  "call", "tasks.add", "--args", "[20, 22]", "--wait", "--timeout", "20",
                  env=bare_env(), cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "42"
    assert not (elsewhere / ".runner").exists()
    # -b after the command too, and -C / -q accepted before it
    done = runner("-C", "-q", "call", "-A", "tasks", "-b", db_url, "tasks.add", "--args",
                  "[1, 2]", "--wait", "--timeout", "20", env=bare_env(), cwd=APPS)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "3"


def test_call_without_app_or_configuration_warns_which_broker_it_uses(tmp_path):
    done = runner("call", "tasks.add", "--args", "[1, 1]", env=bare_env(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert ("warning: no app and no configuration: using the default broker "
            "sqlite:///.runner/runner.db") in done.stderr
    configured = runner("call", "tasks.add", "--args", "[1, 1]", cwd=tmp_path,
                        env=bare_env(RUNNER_BROKER_URL=f"sqlite:///{tmp_path}/x.db"))
    assert configured.returncode == 0, configured.stderr
    assert "warning" not in configured.stderr


# -- the worker's options ---------------------------------------------------------------------

@pytest.fixture
def daemons():
    """Pids of detached workers (not our children): SIGKILLed, with their group, after."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _wait(condition, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout}s")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_detached_worker_writes_pidfile_and_expanded_logfiles_and_stops_on_sigterm(
        app, worker_env, tmp_path, daemons):
    args = ["-A", "tasks", "worker", "--detach", "--pidfile", tmp_path / "%n.pid",
            "--logfile", tmp_path / "%n%I.log", "-n", "w1@%h", "-c", "2", "-l", "info"]
    started = time.monotonic()
    done = runner(*args, env=worker_env, cwd=tmp_path, timeout=30)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 10  # it returned: the worker runs in the background
    pidfile = tmp_path / "w1.pid"
    pid = int(_wait(lambda: pidfile.exists() and pidfile.read_text().strip(), what="pidfile"))
    daemons.append(pid)
    main_log = tmp_path / "w1.log"
    _wait(lambda: main_log.exists() and f"w1@{HOST} ready." in main_log.read_text(),
          what="ready in w1.log")
    assert app.tasks["tasks.add"].delay(2, 3).get(timeout=20) == 5
    # each prefork child logs to its own file: %I is "-<index>" there
    child_logs = _wait(lambda: [p for p in (tmp_path / "w1-1.log", tmp_path / "w1-2.log")
                                if p.exists() and "succeeded" in p.read_text()],
                       what="a child's log file")
    assert "runner-child-" in child_logs[0].read_text()

    # a second worker given the same pidfile is refused while the first lives
    again = runner("-A", "tasks", "worker", "--pidfile", tmp_path / "%n.pid", "-n", "w1@%h",
                   env=worker_env, cwd=tmp_path, timeout=30)
    assert again.returncode == 2
    assert_one_line_error(again.stderr, "--pidfile", str(pidfile), f"names process {pid}")
    assert pidfile.read_text().strip() == str(pid)

    os.kill(pid, signal.SIGTERM)
    _wait(lambda: not _alive(pid), what="the daemon to stop")
    assert not pidfile.exists()
    assert "stopped." in main_log.read_text()


def test_stale_pidfile_is_replaced(start_worker, tmp_path):
    pidfile = tmp_path / "w.pid"
    dead = subprocess.Popen(["true"])
    dead.wait()
    pidfile.write_text(f"{dead.pid}\n")
    worker = start_worker("--pidfile", pidfile)
    assert pidfile.read_text().strip() == str(worker.pid)
    worker.stop()
    assert not pidfile.exists()


BEAT_APP = """
import os
from runner import Celery

app = Celery('beatapp')
app.conf.beat_schedule = {'tick': {'task': 'beatapp.tick', 'schedule': 1.0}}

@app.task(bind=True)
def tick(self):
    with open(os.environ['TICKS'], 'a') as f:
        f.write(self.request.id + '\\n')
"""


def test_two_workers_with_embedded_beat_fire_each_schedule_once(
        start_worker, worker_env, tmp_path):
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "beatapp.py").write_text(BEAT_APP)
    ticks = tmp_path / "ticks"
    env = {"PYTHONPATH": f"{mods}{os.pathsep}{worker_env['PYTHONPATH']}", "TICKS": str(ticks)}
    first = start_worker("-B", "-c", "1", app="beatapp", env=env)
    second = start_worker("--beat", "-c", "1", app="beatapp", env=env)
    try:
        _wait(lambda: ticks.exists() and len(ticks.read_text().split()) >= 4, timeout=30,
              what="four fires")
    except AssertionError as exc:  # (what each beat did, to tell a stall from a lost lead)
        raise AssertionError(f"{exc}\n--- first:\n{first.log()[-3000:]}\n--- second:\n"
                             f"{second.log()[-3000:]}") from None
    logs = first.log() + second.log()
    assert logs.count(": leading (lease") == 1, logs
    assert "standing by" in logs
    first.stop()
    second.stop()
    ids = ticks.read_text().split()
    assert len(ids) == len(set(ids)), f"a fire was sent twice: {ids}"
    assert "beat:        embedded (-B)" in logs


def test_exclude_queues_leaves_a_queue_alone(app, start_worker):
    worker = start_worker("-X", "other", "-O", "fair",
                          env={"RUNNER_TASK_QUEUES": '["celery", "other"]'})
    add = app.tasks["tasks.add"]
    skipped = add.apply_async((1, 1), queue="other")
    assert add.apply_async((2, 2), queue="celery").get(timeout=20) == 4
    time.sleep(0.5)
    assert skipped.state == "PENDING"
    assert app.broker.qsize("other") == 1
    log = worker.log()
    assert "                .> celery" in log and "                .> other" not in log
    assert "-O fair: accepted; runner's scheduling is always fair" in log


def test_systemd_unit_flags_include_purge_and_accepted_no_ops(app, start_worker, worker_env,
                                                             tmp_path):
    """A typical unit's line: -I more modules, --purge, and flags runner has nothing for."""
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "extra_tasks.py").write_text(
        "from tasks import app\n\n@app.task\ndef triple(x):\n    return 3 * x\n")
    stale = app.tasks["tasks.add"].delay(1, 1)
    worker = start_worker("-I", "extra_tasks", "--purge", "-E", "--without-gossip",
                          "--without-mingle", "--without-heartbeat",
                          env={"PYTHONPATH": f"{mods}{os.pathsep}{worker_env['PYTHONPATH']}"})
    assert app.send_task("extra_tasks.triple", (3,)).get(timeout=20) == 9
    assert stale.state == "PENDING"
    log = worker.log()
    assert "--purge: deleted 1 waiting message(s) from celery" in log
    assert ("accepted and without effect in runner: --without-gossip, "
            "--without-mingle") in log


def test_prefetch_multiplier_zero_means_no_limit(app, start_worker):
    sleep = app.tasks["tasks.sleep"]
    results = [sleep.delay(0.5, i) for i in range(8)]
    worker = start_worker("-P", "threads", "-c", "1", "--prefetch-multiplier", "0")
    _wait(lambda: app.broker.qsize("celery") == 0, timeout=3,
          what="every message reserved by the worker")
    assert results[-1].state == "PENDING"  # reserved, not run: one thread runs them in turn
    assert "prefetch:    no limit" in worker.log()
    assert [r.get(timeout=30) for r in results] == list(range(8))


def test_time_limit_options_apply_to_every_task(app, start_worker):
    start_worker("--time-limit", "1", "-c", "1")
    hard = app.tasks["tasks.sleep"].delay(5, "late")
    assert hard.get(timeout=20, propagate=False).__class__.__name__ == "TimeLimitExceeded"
    app.close()


def test_soft_time_limit_option_raises_in_the_task(app, start_worker):
    start_worker("--soft-time-limit", "0.5", "-c", "1")
    soft = app.tasks["tasks.sleep"].delay(5, "late")
    assert soft.get(timeout=20, propagate=False).__class__.__name__ == "SoftTimeLimitExceeded"


def _children(pid: int) -> int:
    """The worker's live pool processes (one that ends while it is looked at is not)."""
    import psutil

    count = 0
    for child in psutil.Process(pid).children():
        try:
            count += child.status() != "zombie"
        except (psutil.Error, OSError):  # (gone meanwhile: a retired process)
            pass
    return count


@pytest.mark.transports("sqlite", "redis")
def test_autoscale_grows_with_the_backlog_and_shrinks_when_idle(app, start_worker):
    worker = start_worker("--autoscale=3,1", env={"AUTOSCALE_KEEPALIVE": "1"})
    assert "concurrency: {min=1, max=3} (prefork, autoscale)" in worker.log()
    assert _children(worker.pid) == 1
    results = [app.tasks["tasks.sleep"].delay(1.5, i) for i in range(6)]
    _wait(lambda: _children(worker.pid) == 3, timeout=5, what="three processes")
    assert [r.get(timeout=30) for r in results] == list(range(6))
    _wait(lambda: _children(worker.pid) == 1, timeout=10, what="back to one process")
    log = worker.log()
    assert "autoscale: growing from 1 to 3 processes" in log
    assert "autoscale: shrinking from" in log
    # and it still works after shrinking
    assert app.tasks["tasks.add"].delay(1, 2).get(timeout=20) == 3


@pytest.mark.transports("amqp")
def test_autoscale_grows_and_shrinks_on_rabbitmq_with_rpc_results(app, start_worker):
    """RabbitMQ pushes messages to the processes (their prefetch), which its queue count
    leaves out: the pool grows while every process is busy."""
    app.conf.update(result_backend="rpc://")
    worker = start_worker("--autoscale=3,1", env={"AUTOSCALE_KEEPALIVE": "1",
                                                  "RUNNER_RESULT_BACKEND": "rpc://"})
    results = [app.tasks["tasks.sleep"].delay(1.5, i) for i in range(6)]
    _wait(lambda: _children(worker.pid) == 3, timeout=5, what="three processes")
    assert [r.get(timeout=30) for r in results] == list(range(6))
    _wait(lambda: _children(worker.pid) == 1, timeout=10, what="back to one process")
    assert app.tasks["tasks.add"].delay(1, 2).get(timeout=20) == 3


@pytest.mark.parametrize("args, named", [
    (["--autoscale=abc"], "--autoscale"),
    (["--autoscale=2,5"], "--autoscale"),
    (["-X", "celery"], "-X celery"),
    (["--time-limit", "1", "--soft-time-limit", "5"], "task_soft_time_limit"),
    (["--prefetch-multiplier", "-1"], "--prefetch-multiplier"),
])
def test_bad_worker_option_is_one_line_naming_it(worker_env, tmp_path, args, named):
    done = runner("-A", "tasks", "worker", *args, env=worker_env, cwd=tmp_path, timeout=30)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert_one_line_error(done.stderr, named)


# -- shell, report, purge ---------------------------------------------------------------------

def test_shell_runs_piped_code_with_the_app_and_its_tasks(app, start_worker, worker_env,
                                                          tmp_path):
    start_worker()
    code = ("print('local', add(2, 3))\n"
            "print('remote', add.delay(4, 4).get(timeout=20))\n"
            "print('names', app.main, celery is app, runner is app)\n")
    done = runner("-A", "tasks", "shell", "--python", env=worker_env, cwd=tmp_path, input=code)
    assert done.returncode == 0, done.stderr
    assert "local 5" in done.stdout
    assert "remote 8" in done.stdout
    assert "names tasks True True" in done.stdout


def test_report_shows_versions_and_changed_settings_with_passwords_masked(tmp_path):
    env = bare_env(RUNNER_BROKER_URL="redis://:s3cret-pw@cache.example:6379/0",
                   RUNNER_RESULT_BACKEND_TRANSPORT_OPTIONS='{"password": "other-secret"}',
                   RUNNER_TASK_DEFAULT_QUEUE="jobs")
    done = runner("-A", "tasks", "report", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "s3cret-pw" not in out and "other-secret" not in out
    assert "software -> runner:" in out and f"py:{sys.version_info[0]}." in out
    assert "transport:redis://:**@cache.example:6379/0" in out
    assert "results:redis://:**@cache.example:6379/0 (follows the broker)" in out
    assert "task_default_queue: 'jobs'" in out
    assert "result_backend_transport_options: {'password': '********'}" in out
    assert "task_serializer" not in out  # a default


def test_purge_takes_queues_and_excluded_queues(app):
    from click.testing import CliRunner

    from runner.cli import main

    add = app.tasks["tasks.add"]
    for queue in ("a", "b", "c"):
        add.apply_async((1, 1), queue=queue)
    done = CliRunner().invoke(main, ["purge", "-A", "tasks", "-Q", "a,b,c", "-X", "b", "-f"])
    assert done.exit_code == 0, done.output
    assert "Purged 2 messages from 2 known task queues." in done.output
    assert [app.broker.qsize(q) for q in ("a", "b", "c")] == [0, 1, 0]


# -- the result backend follows the broker ----------------------------------------------------

def test_result_backend_follows_the_broker_when_none_is_given():
    assert Celery("x", broker="redis://:pw@host:6379/3").backend_url == "redis://:pw@host:6379/3"
    assert Celery("x", broker="sqlite:////tmp/jobs.db").backend_url == "sqlite:////tmp/jobs.db"
    assert Celery("x", broker="amqp://u:p@host//").backend_url == "rpc://"
    assert Celery("x", broker="redis://h/0", backend="redis://h/1").backend_url == "redis://h/1"
    assert Celery("x", broker="redis://h/0").backend_follows_broker
    assert not Celery("x", broker="redis://h/0", backend="redis://h/1").backend_follows_broker


def _hosts(tmp_path: Path) -> tuple[Path, Path]:
    """Two working directories: what is local to one "host" the other cannot see."""
    worker_dir, client_dir = tmp_path / "worker-host", tmp_path / "client-host"
    worker_dir.mkdir()
    client_dir.mkdir()
    return worker_dir, client_dir


def test_client_on_another_host_gets_results_through_the_redis_broker(
        redis_server, spawn, tmp_path):
    url = redis_server.fresh()
    worker_dir, client_dir = _hosts(tmp_path)
    env = bare_env(RUNNER_BROKER_URL=url)  # the broker and nothing else
    worker = spawn("worker", "-A", "tasks", "-l", "info", "-c", "1", env=env, cwd=worker_dir)
    assert f"results:     {url} (follows the broker)" in worker.log()
    done = runner("call", "-A", "tasks", "tasks.add", "--args", "[3, 4]", "--wait",
                  "--timeout", "20", env=env, cwd=client_dir)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "7"
    assert not (worker_dir / ".runner").exists() and not (client_dir / ".runner").exists()


def test_amqp_broker_alone_sends_results_back_by_rpc(amqp_url, spawn, tmp_path):
    worker_dir, client_dir = _hosts(tmp_path)
    env = bare_env(RUNNER_BROKER_URL=amqp_url)
    worker = spawn("worker", "-A", "tasks", "-l", "info", "-c", "1", env=env, cwd=worker_dir)
    assert "results:     rpc:// (follows the broker)" in worker.log()
    done = runner("call", "-A", "tasks", "tasks.add", "--args", "[5, 6]", "--wait",
                  "--timeout", "20", env=env, cwd=client_dir)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "11"
    assert not (worker_dir / ".runner").exists() and not (client_dir / ".runner").exists()
    refused = runner("-A", "tasks", "-b", amqp_url, "worker", "-B", env=bare_env(),
                     cwd=worker_dir, timeout=30)
    assert refused.returncode == 2
    assert_one_line_error(refused.stderr, "-B: beat keeps its lease", "rpc://")

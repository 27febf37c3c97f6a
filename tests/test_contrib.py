"""Testing a runner project as Celery projects test theirs: ``start_worker`` and the opt-in
pytest plugin, run as a user runs them (pytest in a subprocess, on a test file of theirs)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.conftest import APPS, ROOT

USER_TESTS = '''
import pytest
from runner import shared_task
from runner.contrib.testing import start_worker


@pytest.fixture(scope="session")
def celery_config():
    return {"task_serializer": "json", "result_serializer": "json"}


@shared_task
def double(x):
    return 2 * x


def test_celery_worker_runs_a_task_defined_in_the_test(celery_app, celery_worker):
    @celery_app.task
    def mul(x, y):
        return x * y

    celery_worker.reload()
    assert mul.delay(4, 4).get(timeout=10) == 16
    assert double.delay(21).get(timeout=10) == 42  # the shared task, on this app
    assert celery_app.conf.task_serializer == "json"


def test_session_worker(celery_session_app, celery_session_worker):
    add = celery_session_app.task(name="user.add")(lambda x, y: x + y)
    assert add.delay(1, 2).get(timeout=10) == 3


def test_start_worker_on_a_sqlite_file(tmp_path):
    from runner import Celery

    url = f"sqlite:///{tmp_path}/t.db"
    app = Celery("mine", broker=url, backend=url)
    square = app.task(name="mine.square")(lambda x: x * x)
    with start_worker(app, pool="threads", concurrency=2) as worker:
        assert [r.get(timeout=10) for r in [square.delay(i) for i in range(5)]] == [
            0, 1, 4, 9, 16]
        assert worker.stopping is False
    assert worker.stopping is True


class TestTrap:
    @pytest.fixture
    def use_celery_app_trap(self):
        return True

    def test_the_trap_refuses_the_current_app(self, celery_app):
        from runner import current_app

        with pytest.raises(RuntimeError, match="use_celery_app_trap"):
            current_app.conf
'''


def test_the_pytest_plugin_and_start_worker_as_a_user_runs_them(tmp_path):
    (tmp_path / "test_user.py").write_text(textwrap.dedent(USER_TESTS))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "runner.contrib.pytest", "-p",
         "no:cacheprovider", "test_user.py"], cwd=tmp_path, capture_output=True, text=True,
        timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{ROOT}:{APPS}"})
    assert run.returncode == 0, run.stdout + run.stderr
    assert "4 passed" in run.stdout


def test_start_worker_refuses_a_prefork_pool(app):
    from runner.contrib.testing import start_worker

    with pytest.raises(ValueError, match="prefork"), start_worker(app, pool="prefork"):
        pass


def test_start_worker_runs_async_tasks_on_an_asyncio_pool(app, tmp_path):
    import os
    import time

    import async_tasks

    from runner.contrib.testing import start_worker

    with start_worker(app, pool="asyncio", concurrency=10) as worker:
        got = [r.get(timeout=15) for r in [async_tasks.apid.delay(0.3) for _ in range(10)]]
        assert {pid for pid, _ in got} == {os.getpid()}  # on a loop in the test's process
        assert max(most for _, most in got) > 1  # several at once
        marker = tmp_path / "long"
        long = async_tasks.along.delay(str(marker), 30)
        deadline = time.monotonic() + 15
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        long.revoke(terminate=True)
        while long.state != "REVOKED" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert long.state == "REVOKED" and marker.read_text() == "cancelled"
        assert worker.terminated == {}  # forgotten once its job is over (it was kept: #22)


def test_start_worker_solo_in_a_thread_applies_a_hard_time_limit(app):
    """The solo pool in a test's thread cannot use a signal: the limit is injected (best
    effort: a busy task sees it at its next instruction), and the worker goes on."""
    from tasks import add, spin_hard_limited

    from runner.contrib.testing import start_worker
    from runner.exceptions import TimeLimitExceeded

    with start_worker(app, pool="solo"):
        with pytest.raises(TimeLimitExceeded):
            spin_hard_limited.delay(30).get(timeout=10)
        assert add.delay(2, 2).get(timeout=10) == 4

"""AsyncResult as a user reads it: states, values, exceptions, waiting, forget, revoke, expiry."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from runner import AsyncResult, states
from runner.exceptions import TaskRevokedError
from runner.exceptions import TimeoutError as RunnerTimeoutError
from tests.helpers import wait_for_state

pytestmark = pytest.mark.transports("sqlite", "redis")



def test_unknown_task_id_is_pending_and_not_ready(app):
    result = app.AsyncResult("no-such-task")
    assert result.id == "no-such-task" and str(result) == "no-such-task"
    assert result.state == result.status == states.PENDING
    assert not result.ready() and not result.successful() and not result.failed()
    assert result.result is None and result.traceback is None and result.date_done is None
    assert states.RECEIVED == "RECEIVED"  # a name users compare against; not stored yet


def test_successful_result_as_the_user_sees_it(app, start_worker):
    from tasks import add

    start_worker()
    before = datetime.now(UTC)
    result = add.delay(20, 22)
    assert result.get(timeout=10, interval=0.05) == 42
    assert result.state == states.SUCCESS
    assert result.ready() and result.successful() and not result.failed()
    assert result.result == 42 and result.traceback is None
    assert before - timedelta(seconds=1) <= result.date_done <= datetime.now(UTC)
    again = AsyncResult(result.id, app=app)  # a fresh handle reads the same
    assert (again.state, again.result, again.get(timeout=1)) == (states.SUCCESS, 42, 42)
    assert again == result and again.id == result.id


def test_failure_result_as_the_user_sees_it(app, start_worker):
    from tasks import boom

    start_worker()
    result = boom.delay("broken")
    error = result.get(timeout=10, propagate=False)
    assert isinstance(error, ValueError) and str(error) == "broken"
    assert result.state == states.FAILURE and result.failed() and result.ready()
    assert not result.successful()
    assert isinstance(result.result, ValueError)
    assert "ValueError: broken" in result.traceback
    assert result.date_done is not None
    with pytest.raises(ValueError, match="broken"):
        result.get(timeout=1)


def test_get_reraises_the_tasks_own_exception_type(app, start_worker):
    from tasks import CustomError, custom_boom

    start_worker()
    result = custom_boom.delay()
    with pytest.raises(CustomError) as caught:
        result.get(timeout=10)
    assert caught.value.args == ("custom", 42)


def test_exception_class_the_caller_cannot_import_comes_back_as_a_stand_in(app, start_worker):
    from tasks import worker_only_error

    start_worker()
    result = worker_only_error.delay()
    with pytest.raises(Exception) as caught:  # noqa: PT011 - the class exists only on the worker
        result.get(timeout=10)
    error = caught.value
    assert type(error).__name__ == "WorkerOnlyError"
    assert type(error).__module__ == "worker_only_errors"
    assert str(error) == "only here"
    assert "WorkerOnlyError: only here" in result.traceback


def test_get_timeout_is_catchable_as_runner_and_builtin_timeout(app):
    from tasks import add

    result = add.delay(1, 1)  # no worker
    started = time.monotonic()
    with pytest.raises(RunnerTimeoutError, match=result.id):
        result.get(timeout=0.3, interval=0.05)
    assert 0.3 <= time.monotonic() - started < 2
    with pytest.raises(TimeoutError):
        result.get(timeout=0.1)


def test_started_state_is_recorded_with_task_track_started(app, start_worker):
    from tasks import sleep

    start_worker("-c", "1", "--prefetch-multiplier", "1",
                 env={"RUNNER_TASK_TRACK_STARTED": "true"})
    result = sleep.delay(1.0, "slept")
    wait_for_state(result, states.STARTED, timeout=0.5)  # at once, not when the task ends
    assert not result.ready()
    assert result.get(timeout=10) == "slept"


def test_without_track_started_a_running_task_reads_pending(app, start_worker):
    from tasks import sleep

    start_worker("-c", "1")
    result = sleep.delay(0.6, "slept")
    time.sleep(0.3)
    assert result.state == states.PENDING
    assert result.get(timeout=10) == "slept"


def test_forget_makes_a_finished_result_pending_again(app, start_worker):
    from tasks import add

    start_worker()
    result = add.delay(1, 2)
    assert result.get(timeout=10) == 3
    result.forget()
    assert result.state == states.PENDING and result.result is None
    assert app.AsyncResult(result.id).state == states.PENDING


def test_revoked_before_a_worker_runs_it_is_never_executed(app, start_worker, tmp_path):
    from tasks import add, log_label

    marker = tmp_path / "ran.txt"
    result = log_label.delay(str(marker), "should not run")
    result.revoke()
    other = log_label.delay(str(marker), "second")
    app.control.revoke(other.id)
    start_worker()
    with pytest.raises(TaskRevokedError):
        result.get(timeout=10)
    assert result.state == states.REVOKED and result.ready() and not result.successful()
    assert isinstance(result.get(propagate=False), TaskRevokedError)
    assert app.AsyncResult(other.id).get(timeout=10, propagate=False).__class__ is (
        TaskRevokedError)
    assert add.delay(1, 1).get(timeout=10) == 2  # the worker carried on
    assert not marker.exists()


def test_result_reads_pending_after_result_expires(app, start_worker):
    from tasks import add

    start_worker(env={"RUNNER_RESULT_EXPIRES": "0.5"})
    result = add.delay(2, 3)
    assert result.get(timeout=10) == 5
    assert app.AsyncResult(result.id).state == states.SUCCESS
    time.sleep(0.7)
    assert app.AsyncResult(result.id).state == states.PENDING


def test_results_of_many_tasks_come_back_in_order(app, start_worker):
    from tasks import add

    start_worker("-c", "2")
    results = [add.delay(i, i) for i in range(20)]
    assert [r.get(timeout=10) for r in results] == [2 * i for i in range(20)]


def test_result_extended_keeps_name_args_kwargs_and_worker(app, start_worker):
    from tasks import add

    start_worker("-n", "ext@test", env={"RUNNER_RESULT_EXTENDED": "true"})
    result = add.apply_async((1,), {"y": 5})
    assert result.get(timeout=10) == 6
    fresh = app.AsyncResult(result.id)
    assert fresh.name == "tasks.add"
    assert (fresh.args, fresh.kwargs) == ([1], {"y": 5})
    assert fresh.worker == "ext@test"
    assert fresh.retries == 0


def test_revoking_a_delayed_task_stops_it_before_its_eta(app, start_worker, tmp_path):
    from tasks import log_label

    start_worker()
    marker = tmp_path / "ran.txt"
    result = log_label.apply_async((str(marker), "late"), countdown=0.5)
    result.revoke()
    with pytest.raises(TaskRevokedError):
        result.get(timeout=10)
    assert not marker.exists()

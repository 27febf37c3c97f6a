"""``task_always_eager`` and ``Task.apply()``: tasks run in the caller, and still return a result
object with the AsyncResult API."""

from __future__ import annotations

import time

import pytest

from runner import states
from runner.result import EagerResult


@pytest.fixture
def eager(app):
    app.conf.update(task_always_eager=True)
    return app


def test_always_eager_runs_in_process_and_returns_an_eager_result(eager):
    from tasks import add

    result = add.delay(4, 4)
    assert isinstance(result, EagerResult)
    assert result.get() == 8 and result.result == 8
    assert result.state == states.SUCCESS and result.ready() and result.successful()
    assert result.id and result.date_done is not None and result.traceback is None
    assert eager.broker.qsize("celery") == 0  # nothing was sent


def test_always_eager_keeps_task_id_args_kwargs_and_headers(eager):
    from tasks import request_info

    result = request_info.apply_async((1,), {"b": 2}, task_id="eager-id",
                                      headers={"trace": "t1"})
    info = result.get()
    assert result.id == info["id"] == "eager-id"
    assert info["args"] == [1] and info["kwargs"] == {"b": 2}
    assert info["headers"] == {"trace": "t1"}
    assert info["is_eager"] is True


def test_eager_failure_is_a_failed_result_unless_propagating(eager):
    from tasks import boom

    result = boom.delay("eager kaput")
    assert result.state == states.FAILURE and result.failed() and result.ready()
    assert isinstance(result.result, ValueError)
    assert "ValueError: eager kaput" in result.traceback
    assert isinstance(result.get(propagate=False), ValueError)
    with pytest.raises(ValueError, match="eager kaput"):
        result.get()


def test_task_eager_propagates_raises_in_the_caller(eager):
    from tasks import CustomError, custom_boom

    eager.conf.update(task_eager_propagates=True)
    with pytest.raises(CustomError):
        custom_boom.delay()


def test_eager_retries_run_at_once_until_success(eager):
    from tasks import flaky, retry_once

    assert flaky.delay(2).get() == 2  # two retries, then success
    started = time.monotonic()
    result = retry_once.delay(30)  # a 30 s countdown is not waited for in eager mode
    assert result.get().startswith("second try")
    assert time.monotonic() - started < 2


def test_eager_retries_past_max_retries_fail_with_the_original_exception(eager):
    from tasks import divide, flaky

    result = flaky.delay(10)
    assert result.state == states.FAILURE
    with pytest.raises(RuntimeError, match="attempt 3"):
        result.get()
    with pytest.raises(ZeroDivisionError):
        divide.delay(1, 0).get()  # autoretry_for, then its exception


def test_apply_runs_here_without_always_eager(app):
    from tasks import add, boom

    result = add.apply((2, 3))
    assert isinstance(result, EagerResult) and result.get() == 5
    assert boom.apply(("x",)).state == states.FAILURE
    assert app.broker.qsize("celery") == 0


def test_eager_result_is_not_stored_in_the_backend(eager):
    from tasks import add

    result = add.delay(1, 1)
    assert eager.AsyncResult(result.id).state == states.PENDING

"""The seed document's tutorial, step by step, against a real worker on SQLite."""

import pytest

from runner.exceptions import TimeoutError as RunnerTimeoutError

pytestmark = pytest.mark.transports("sqlite", "redis")


def test_seed_tutorial_end_to_end(app, start_worker):
    from tasks import add, boom

    worker = start_worker("-c", "2")
    result = add.delay(4, 4)
    assert result.get(timeout=10) == 8
    assert result.ready() and result.successful() and result.state == "SUCCESS"
    worker.wait_for_log(f"Task tasks.add[{result.id}] succeeded in")

    failed = boom.delay()
    with pytest.raises(ValueError, match="kaput"):
        failed.get(timeout=10)
    error = failed.get(propagate=False)
    assert isinstance(error, ValueError) and str(error) == "kaput"
    assert failed.failed() and failed.state == "FAILURE"
    assert "ValueError: kaput" in failed.traceback
    assert 'raise ValueError(message)' in failed.traceback


def test_result_is_not_ready_before_a_worker_runs_it_and_get_times_out(app):
    from tasks import add

    result = add.delay(4, 4)
    assert result.ready() is False
    assert result.state == "PENDING"
    with pytest.raises(RunnerTimeoutError):
        result.get(timeout=0.2)
    with pytest.raises(TimeoutError):  # the builtin name works too
        result.get(timeout=0.1)

"""Calling tasks as a user does: ``add(2, 2)``, ``delay``, ``apply_async`` options, ``send_task``,
and the options of ``@app.task``, each checked through a real worker on SQLite."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from runner import Celery, states
from runner.exceptions import (
    NotRegistered,
    SoftTimeLimitExceeded,
    TaskRevokedError,
    TimeLimitExceeded,
)
from runner.exceptions import TimeoutError as RunnerTimeoutError
from tests.helpers import wait_for_state

pytestmark = pytest.mark.transports("sqlite", "redis")



# -- calling ------------------------------------------------------------------------------------


def test_calling_a_task_runs_it_here_without_a_broker(app):
    from tasks import add, request_info

    assert add(2, 2) == 4
    assert app.broker.qsize("celery") == 0
    info = request_info(1, x=2)
    assert info["args"] == [1] and info["kwargs"] == {"x": 2}


def test_delay_and_apply_async_send_args_and_kwargs_to_a_worker(app, start_worker):
    from tasks import add

    start_worker("-c", "2")
    assert add.delay(4, 4).get(timeout=10) == 8
    assert add.delay(1, y=2).get(timeout=10) == 3
    assert add.apply_async((5,), {"y": 6}).get(timeout=10) == 11
    assert add.apply_async(args=[1, 1]).get(timeout=10) == 2


def test_wrong_arguments_fail_in_the_caller_before_anything_is_sent(app):
    from tasks import add, request_info, whoami

    with pytest.raises(TypeError, match="tasks.add.*missing a required argument: 'y'"):
        add.delay(1)
    with pytest.raises(TypeError, match="too many positional arguments"):
        add.apply_async((1, 2, 3))
    with pytest.raises(TypeError, match="tasks.whoami"):
        whoami.delay("self is not an argument of a bound task's caller")
    app.conf.update(task_always_eager=True)
    with pytest.raises(TypeError, match="unexpected keyword argument 'z'"):
        add.delay(1, 2, z=3)
    assert app.broker.qsize("celery") == 0
    assert request_info.delay(1, 2, any="thing").get()["args"] == [1, 2]  # *args, **kwargs


def test_apply_async_task_id_is_the_result_id(app, start_worker):
    from tasks import request_info

    start_worker()
    result = request_info.apply_async(task_id="my-own-id")
    assert result.id == "my-own-id"
    assert result.get(timeout=10)["id"] == "my-own-id"
    assert app.AsyncResult("my-own-id").state == states.SUCCESS


def test_bound_task_sees_its_request(app, start_worker):
    from tasks import request_info

    start_worker("-n", "alpha@testhost", "-Q", "celery")
    result = request_info.apply_async((1, "two"), {"three": 3}, headers={"trace": "abc-123"},
                                      priority=7)
    info = result.get(timeout=10)
    assert info["id"] == result.id
    assert info["args"] == [1, "two"] and info["kwargs"] == {"three": 3}
    assert info["hostname"] == "alpha@testhost"
    assert info["retries"] == 0 and info["is_eager"] is False
    assert info["headers"]["trace"] == "abc-123"
    assert info["delivery_info"]["queue"] == info["delivery_info"]["routing_key"] == "celery"
    assert info["delivery_info"]["redelivered"] is False
    assert info["delivery_info"]["priority"] == 7


def test_send_task_by_name_needs_no_code_of_the_task(app, db_url, start_worker):
    start_worker()
    client = Celery("client", broker=db_url, backend=db_url, set_as_current=False)
    try:
        assert "tasks.add" not in client.tasks and "calling.renamed" not in client.tasks
        assert client.send_task("tasks.add", args=(2, 3)).get(timeout=10) == 5
        assert client.send_task("tasks.add", args=[1], kwargs={"y": 1}).get(timeout=10) == 2
        assert client.send_task("calling.renamed", args=["me"]).get(timeout=10) == "renamed me"
    finally:
        client.close()


def test_send_task_of_an_unknown_name_fails_saying_so(app, start_worker):
    worker = start_worker()
    result = app.send_task("tasks.no_such_task", args=[1])
    with pytest.raises(NotRegistered, match="tasks.no_such_task"):
        result.get(timeout=10)
    assert result.state == states.FAILURE
    worker.wait_for_log("tasks.no_such_task")
    assert worker.proc.poll() is None


def test_task_name_option_registers_the_task_under_that_name(app):
    from tasks import renamed

    assert renamed.name == "calling.renamed"
    assert app.tasks["calling.renamed"] is renamed


# -- countdown, eta, expires ---------------------------------------------------------------------


def test_countdown_task_does_not_run_before_its_time(app, start_worker):
    from tasks import add

    start_worker()
    sent = time.monotonic()
    result = add.apply_async((1, 1), countdown=1.0)
    time.sleep(0.6)
    assert result.state == states.PENDING
    assert result.get(timeout=5) == 2
    assert 1.0 <= time.monotonic() - sent < 3


def test_eta_as_an_aware_datetime(app, start_worker):
    from tasks import add

    start_worker()
    sent = time.monotonic()
    result = add.apply_async((2, 2), eta=datetime.now(UTC) + timedelta(seconds=0.8))
    assert result.get(timeout=5) == 4
    assert 0.8 <= time.monotonic() - sent < 3


def test_naive_eta_is_read_in_the_configured_timezone(app, start_worker):
    from tasks import add

    app.conf.update(timezone="Asia/Tokyo")  # UTC+9: read as UTC it would be 9 hours off
    start_worker()
    tokyo_now = datetime.now(ZoneInfo("Asia/Tokyo")).replace(tzinfo=None)
    sent = time.monotonic()
    result = add.apply_async((3, 3), eta=tokyo_now + timedelta(seconds=0.8))
    assert result.get(timeout=5) == 6
    assert 0.8 <= time.monotonic() - sent < 3


def test_naive_eta_in_tokyo_and_in_utc_are_nine_hours_apart(app):
    naive = datetime(2030, 1, 1, 12, 0, 0)
    app.conf.update(timezone="Asia/Tokyo")
    in_tokyo = app.build_message("tasks.add", (1, 1), eta=naive).eta
    app.conf.update(timezone="UTC")
    in_utc = app.build_message("tasks.add", (1, 1), eta=naive).eta
    assert in_utc - in_tokyo == 9 * 3600
    assert in_utc == datetime(2030, 1, 1, 12, tzinfo=UTC).timestamp()


def test_naive_eta_without_timezone_and_enable_utc_off_is_local_time(app, monkeypatch):
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        app.conf.update(enable_utc=False, timezone=None)
        naive = datetime(2030, 1, 1, 12, 0, 0)
        eta = app.build_message("tasks.add", (1, 1), eta=naive).eta
        assert eta == datetime(2030, 1, 1, 12, tzinfo=ZoneInfo("America/New_York")).timestamp()
        app.conf.update(enable_utc=True)
        eta = app.build_message("tasks.add", (1, 1), eta=naive).eta
        assert eta == datetime(2030, 1, 1, 12, tzinfo=UTC).timestamp()
    finally:
        monkeypatch.undo()
        time.tzset()


def test_expired_task_is_revoked_and_never_runs(app, start_worker, tmp_path):
    from tasks import log_label

    marker = tmp_path / "ran.txt"
    by_seconds = log_label.apply_async((str(marker), "a"), expires=-1)
    by_date = log_label.apply_async((str(marker), "b"),
                                    expires=datetime.now(UTC) - timedelta(minutes=1))
    by_delta = log_label.apply_async((str(marker), "c"), countdown=0.5,
                                     expires=timedelta(seconds=0.2))
    start_worker()
    for result in (by_seconds, by_date, by_delta):
        with pytest.raises(TaskRevokedError):
            result.get(timeout=10)
        assert result.state == states.REVOKED
    assert not marker.exists()


def test_task_that_has_not_expired_runs(app, start_worker):
    from tasks import add

    start_worker()
    assert add.apply_async((1, 2), expires=60).get(timeout=10) == 3
    in_a_minute = datetime.now(UTC) + timedelta(minutes=1)
    assert add.apply_async((1, 3), expires=in_a_minute).get(timeout=10) == 4


# -- retries --------------------------------------------------------------------------------


def test_retry_with_countdown_shows_retry_state_then_succeeds(app, start_worker):
    from tasks import retry_once

    start_worker()
    result = retry_once.delay(1.0)
    wait_for_state(result, states.RETRY)
    assert isinstance(result.result, KeyError)  # the exception that caused the retry
    assert "first try" in result.traceback
    assert result.get(timeout=10) == f"second try of {result.id}"
    assert result.retries == 1


def test_retry_past_max_retries_fails_with_the_original_exception(app, start_worker):
    from tasks import flaky

    start_worker()
    assert flaky.delay(2).get(timeout=10) == 2  # default_retry_delay=0.1, max_retries=3
    failing = flaky.delay(10)
    with pytest.raises(RuntimeError, match="attempt 3"):
        failing.get(timeout=10)
    assert failing.retries == 3


def test_max_retries_none_retries_forever(app, start_worker):
    from tasks import retry_forever

    start_worker()
    assert app.conf.task_max_retries == 3
    assert retry_forever.delay(5).get(timeout=10) == 5


def test_autoretry_for_retries_the_listed_exception_then_fails(app, start_worker):
    from tasks import divide

    start_worker()
    assert divide.delay(6, 3).get(timeout=10) == 2
    started = time.monotonic()
    result = divide.delay(1, 0)
    with pytest.raises(ZeroDivisionError):
        result.get(timeout=10)
    assert result.retries == 2
    assert time.monotonic() - started >= 0.1 + 0.2  # retry_backoff=0.1: 0.1s, then 0.2s


def test_retry_backoff_max_caps_the_wait_between_tries(app, start_worker):
    from tasks import capped_backoff_fail

    start_worker()
    started = time.monotonic()
    result = capped_backoff_fail.delay()  # backoff 5s, 10s, capped at 0.2s each
    with pytest.raises(ZeroDivisionError):
        result.get(timeout=10)
    assert result.retries == 2
    assert 0.4 <= time.monotonic() - started < 4


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_retry_with_new_arguments_runs_again_with_them(app, start_worker, compression):
    from tasks import retry_with_new_args

    app.conf.update(task_compression=compression)
    start_worker()
    result = retry_with_new_args.delay(1)
    assert result.get(timeout=10) == 2
    assert result.retries == 1


# -- per-task and per-call options ------------------------------------------------------------


def _messages_in_broker(db_url: str) -> int:
    if db_url.startswith("redis://"):
        import redis

        return redis.Redis.from_url(db_url).hlen("runner:body")
    path = db_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT count(*) FROM runner_messages").fetchone()[0]


def test_acks_late_task_stays_in_the_broker_until_it_finished(app, db_url, start_worker):
    from tasks import sleep, slow_late

    start_worker("-c", "1")
    late = slow_late.delay(0.8)  # @app.task(acks_late=True)
    time.sleep(0.4)  # it runs now
    assert _messages_in_broker(db_url) == 1
    assert late.get(timeout=10) == "done"
    per_call = sleep.apply_async((0.8, "late"), acks_late=True)
    time.sleep(0.4)
    assert _messages_in_broker(db_url) == 1
    assert per_call.get(timeout=10) == "late"
    early = sleep.delay(0.8, "early")
    time.sleep(0.4)
    assert _messages_in_broker(db_url) == 0  # acked when it started, as Celery does
    assert early.get(timeout=10) == "early"


def test_soft_time_limit_per_call_raises_inside_the_task(app, start_worker):
    from tasks import sleep

    start_worker()
    started = time.monotonic()
    result = sleep.apply_async((5,), soft_time_limit=0.3)
    with pytest.raises(SoftTimeLimitExceeded):
        result.get(timeout=10)
    assert time.monotonic() - started < 3


def test_time_limit_per_call_stops_the_task(app, start_worker):
    from tasks import sleep

    start_worker()
    started = time.monotonic()
    result = sleep.apply_async((5,), time_limit=0.3)
    with pytest.raises(TimeLimitExceeded):
        result.get(timeout=10)
    assert time.monotonic() - started < 3


def test_ignore_result_task_runs_but_stores_nothing(app, start_worker, tmp_path):
    from tasks import add, fire_and_forget

    start_worker()
    marker = tmp_path / "ran.txt"
    result = fire_and_forget.delay(str(marker))
    per_call = add.apply_async((1, 1), ignore_result=True)
    deadline = time.monotonic() + 10
    while not marker.exists():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert add.delay(2, 2).get(timeout=10) == 4  # the worker has moved on
    assert result.state == states.PENDING and per_call.state == states.PENDING
    assert result.ignored and per_call.ignored and not add.delay(1, 1).ignored
    started = time.monotonic()
    assert result.get(timeout=5) is None and per_call.get() is None  # as Celery: at once
    assert time.monotonic() - started < 1
    with pytest.raises(RunnerTimeoutError):  # a handle made from the id alone still waits
        app.AsyncResult(result.id).get(timeout=0.2)


def test_unknown_task_option_is_an_error_naming_it(app):
    with pytest.raises(TypeError, match="retry_backof"):
        app.task(retry_backof=True)(lambda: None)

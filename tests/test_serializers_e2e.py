"""Serializers through a real worker: what survives the round trip, and what is refused.

A message in a content type the worker does not accept must never run: the worker logs why and
stores a FAILURE (ContentDisallowed) so that the caller is not left waiting on PENDING.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from runner import states
from runner.exceptions import ContentDisallowed, SerializationError

ACCEPT_ALL = {"RUNNER_ACCEPT_CONTENT": '["json", "pickle", "yaml", "msgpack"]'}


def test_json_round_trips_dates_uuids_decimals_and_bytes(app, start_worker):
    from tasks import echo

    start_worker()
    value = {
        "aware": datetime(2024, 5, 17, 8, 30, 15, 123456, tzinfo=UTC),
        "naive": datetime(2024, 5, 17, 8, 30),
        "day": date(2024, 2, 29),
        "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "money": Decimal("12.3400"),
        "raw": b"\x00\xffbytes",
        "nested": [1, 2.5, None, True, "text é"],
    }
    result = echo.delay(value)
    assert result.get(timeout=10) == value
    assert echo.apply_async((value,), serializer="json").get(timeout=10) == value


@pytest.mark.parametrize("serializer", ["pickle", "yaml", "msgpack"])
def test_other_serializers_run_when_the_worker_accepts_them(app, start_worker, serializer):
    from tasks import echo

    start_worker(env=ACCEPT_ALL)
    value = {"when": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), "money": Decimal("1.5"),
             "list": [1, "two"]}
    assert echo.apply_async((value,), serializer=serializer).get(timeout=10) == value


def test_pickle_carries_python_objects_both_ways_when_accepted(app, start_worker):
    from tasks import echo, pickled_echo

    app.conf.update(accept_content=["json", "pickle"])  # the caller accepts pickled results
    start_worker(env={**ACCEPT_ALL, "RUNNER_RESULT_SERIALIZER": "pickle"})
    assert echo.apply_async(({1, 2, 3},), serializer="pickle").get(timeout=10) == {1, 2, 3}
    assert pickled_echo.delay(frozenset("ab")).get(timeout=10) == frozenset("ab")


def test_pickle_is_refused_by_default_never_run_and_logged(app, start_worker, tmp_path):
    from tasks import add, log_label

    worker = start_worker()  # accept_content: json only
    marker = tmp_path / "ran.txt"
    result = log_label.apply_async((str(marker), "pickled"), serializer="pickle")
    with pytest.raises(ContentDisallowed, match="pickle"):
        result.get(timeout=10)
    assert result.state == states.FAILURE
    assert "accept_content" in str(result.result)
    worker.wait_for_log(f"Task tasks.log_label[{result.id}] refused, not run: "
                        f"ContentDisallowed: Refusing to deserialize content of type pickle")
    assert add.delay(1, 1).get(timeout=10) == 2  # the worker carried on
    assert not marker.exists()


def test_task_serializer_option_is_refused_by_a_worker_that_does_not_accept_it(
        app, start_worker):
    from tasks import pickled_echo

    start_worker(env={"RUNNER_ACCEPT_CONTENT": '["json", "yaml"]'})
    with pytest.raises(ContentDisallowed, match="pickle"):
        pickled_echo.delay("x").get(timeout=10)


def test_yaml_is_refused_when_not_accepted(app, start_worker):
    from tasks import echo

    start_worker()
    with pytest.raises(ContentDisallowed, match="yaml"):
        echo.apply_async(("x",), serializer="yaml").get(timeout=10)


def test_task_serializer_setting_is_used_for_sending(app, start_worker):
    from tasks import echo

    app.conf.update(task_serializer="yaml")
    start_worker(env=ACCEPT_ALL)
    assert echo.delay(date(2024, 1, 1)).get(timeout=10) == date(2024, 1, 1)
    assert app.build_message("tasks.echo", (1,)).content_type == "application/x-yaml"


def test_result_accept_content_is_enforced_when_reading_a_result(app, start_worker):
    from tasks import add

    start_worker(env={**ACCEPT_ALL, "RUNNER_RESULT_SERIALIZER": "pickle"})
    app.conf.update(result_accept_content=["json"])
    result = add.delay(2, 2)
    with pytest.raises(ContentDisallowed, match="pickle"):
        result.get(timeout=10)
    app.conf.update(result_accept_content=["json", "pickle"])
    assert app.AsyncResult(result.id).get(timeout=10) == 4


def test_a_result_the_serializer_cannot_encode_is_a_failure_saying_so(app, start_worker):
    from tasks import add, unserializable_result

    worker = start_worker("-c", "1")
    result = unserializable_result.delay()
    with pytest.raises(SerializationError, match="object"):
        result.get(timeout=10)
    assert result.state == states.FAILURE
    assert add.delay(1, 2).get(timeout=10) == 3
    assert "WorkerLostError" not in worker.log()


def test_arguments_json_cannot_encode_fail_when_sending(app):
    from tasks import echo

    with pytest.raises(SerializationError, match="set"):
        echo.delay({1, 2})
    assert app.broker.qsize("celery") == 0

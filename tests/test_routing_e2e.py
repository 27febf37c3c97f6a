"""Routing and priorities with real workers consuming queues (``-Q``): a task runs on the worker
that consumes the queue it was routed to."""

from __future__ import annotations

import re
import time

import pytest

from runner import group, states

pytestmark = pytest.mark.transports("sqlite", "redis")


@pytest.fixture
def two_workers(start_worker):
    """``alpha@test`` consumes queue ``q1``, ``beta@test`` consumes ``q2`` and ``media``."""
    start_worker("-n", "alpha@test", "-Q", "q1", "-c", "1")
    start_worker("-n", "beta@test", "-Q", "q2,media", "-c", "1")


def where(result) -> tuple[str, str]:
    info = result.get(timeout=10)
    return info["hostname"], info["delivery_info"]["queue"]


def test_queue_option_runs_the_task_on_the_worker_of_that_queue(app, two_workers):
    from tasks import request_info

    assert where(request_info.apply_async(queue="q1")) == ("alpha@test", "q1")
    assert where(request_info.apply_async(queue="q2")) == ("beta@test", "q2")
    assert where(app.send_task("tasks.request_info", queue="q2")) == ("beta@test", "q2")


def test_task_queue_option_of_the_decorator(app, two_workers):
    from tasks import on_media_queue

    assert on_media_queue.delay().get(timeout=10) == "media"
    assert app.build_message(on_media_queue.name).queue == "media"
    together = group(on_media_queue.s(), on_media_queue.s()).apply_async()  # bulk send
    assert together.get(timeout=10) == ["media", "media"]


def test_task_sent_to_a_queue_nobody_consumes_waits_there(app, two_workers):
    from tasks import add

    result = add.apply_async((1, 1), queue="nobody")
    time.sleep(0.3)
    assert result.state == states.PENDING
    assert app.broker.qsize("nobody") == 1


def test_task_routes_exact_glob_and_regex(app, two_workers):
    from tasks import add, echo, request_info

    app.conf.update(task_routes={
        "tasks.request_info": {"queue": "q2"},  # exact name
        "tasks.ec*": "q1",  # glob
        re.compile(r"tasks\.ad+$"): {"queue": "q2"},  # regex
    })
    assert where(request_info.delay()) == ("beta@test", "q2")
    assert echo.delay("hi").get(timeout=10) == "hi"
    assert app.build_message("tasks.echo", ("hi",)).queue == "q1"
    assert add.delay(1, 2).get(timeout=10) == 3
    assert app.build_message("tasks.add", (1, 2)).queue == "q2"
    # an explicit queue= beats the route
    assert where(request_info.apply_async(queue="q1")) == ("alpha@test", "q1")


def test_task_routes_as_an_ordered_list_of_patterns_with_re_prefix(app, two_workers):
    from tasks import request_info

    app.conf.update(task_routes=([("re:tasks\\.req.*", "q1"), ("tasks.*", "q2")],))
    assert where(request_info.delay()) == ("alpha@test", "q1")
    assert app.build_message("tasks.add", (1, 1)).queue == "q2"


def test_unrouted_tasks_go_to_the_default_queue(app, start_worker):
    from tasks import request_info

    app.conf.update(task_default_queue="jobs")
    start_worker("-n", "jobs@test", "-Q", "jobs")
    assert where(request_info.delay()) == ("jobs@test", "jobs")


def _run_order(marker) -> list[str]:
    return marker.read_text().split()


def test_higher_priority_tasks_queued_behind_a_busy_worker_run_first(app, start_worker,
                                                                      tmp_path):
    from tasks import log_label, sleep

    start_worker("-c", "1", "--prefetch-multiplier", "1")
    marker = tmp_path / "order.txt"
    busy = sleep.delay(0.6)
    time.sleep(0.2)  # the worker holds nothing but the running task
    results = [log_label.apply_async((str(marker), "low1"), priority=1),
               log_label.apply_async((str(marker), "none1")),
               log_label.apply_async((str(marker), "high1"), priority=9),
               log_label.apply_async((str(marker), "mid1"), priority=5),
               log_label.apply_async((str(marker), "high2"), priority=9)]
    busy.get(timeout=10)
    for result in results:
        result.get(timeout=10)
    assert _run_order(marker) == ["high1", "high2", "mid1", "low1", "none1"]


def test_priority_from_a_route_and_task_default_priority(app, start_worker, tmp_path):
    from tasks import log_label, sleep

    app.conf.update(task_routes={"tasks.log_label": {"queue": "celery", "priority": 8}},
                    task_default_priority=3)
    assert app.build_message("tasks.log_label", ("x", "y")).priority == 8
    assert app.build_message("tasks.add", (1, 1)).priority == 3
    start_worker("-c", "1", "--prefetch-multiplier", "1")
    marker = tmp_path / "order.txt"
    busy = sleep.delay(0.6)
    time.sleep(0.2)
    low = log_label.apply_async((str(marker), "explicit1"), priority=1)
    routed = log_label.apply_async((str(marker), "routed8"))
    busy.get(timeout=10)
    low.get(timeout=10), routed.get(timeout=10)
    assert _run_order(marker) == ["routed8", "explicit1"]


def test_prefetched_tasks_start_highest_priority_first(app, start_worker, tmp_path):
    from tasks import log_label, sleep

    marker = tmp_path / "order.txt"
    busy = sleep.apply_async((0.4,), priority=9)  # sent first: keeps the single slot busy
    results = [log_label.apply_async((str(marker), f"p{p}"), priority=p) for p in (0, 2, 7, 4)]
    start_worker("-c", "1")  # prefetches all of them while the first runs
    busy.get(timeout=10)
    for result in results:
        result.get(timeout=10)
    assert _run_order(marker) == ["p7", "p4", "p2", "p0"]

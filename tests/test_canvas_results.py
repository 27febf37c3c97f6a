"""Results as Celery's: parent, children, collect, info/name/args/kwargs/date_done,
GroupResult.save/restore, ResultSet, get() refused inside a task unless allowed, and the
result backend methods Celery's extensions call."""

from __future__ import annotations

from datetime import datetime

import pytest
from canvas_tasks import joins_inside, spawn, xsum
from tasks import add, boom, sleep

from runner import chord, group
from runner.result import AsyncResult, GroupResult, ResultSet
from tests import canvas_fixtures

db_url, worker = canvas_fixtures.db_url, canvas_fixtures.worker  # fixtures

pytestmark = pytest.mark.transports("sqlite", "redis", "amqp")

TIMEOUT = 20



def test_result_fields_children_and_collect(app, worker):
    app.conf.update(result_extended=True)
    result = add.delay(2, 3)
    assert result.get(timeout=TIMEOUT) == 5
    assert result.info == 5 and result.name == add.name
    assert isinstance(result.date_done, datetime)
    parent = spawn.delay(3)
    assert parent.get(timeout=TIMEOUT) == 3
    children = parent.children
    assert len(children) == 3 and all(isinstance(c, AsyncResult) for c in children)
    assert sorted(c.get(timeout=TIMEOUT) for c in children) == [0, 2, 4]
    collected = list(parent.collect(timeout=TIMEOUT))
    assert collected[0] == (parent, 3) and sorted(v for _, v in collected[1:]) == [0, 2, 4]


def test_result_extended_args_and_kwargs(app, start_worker):
    start_worker("-c", "1", env={"RUNNER_RESULT_EXTENDED": "true"})
    result = add.apply_async((2,), {"y": 3})
    assert result.get(timeout=TIMEOUT) == 5
    assert result.args == [2] and result.kwargs == {"y": 3} and result.name == add.name


def test_group_result_save_restore_and_result_set(app, worker):
    result = group(add.s(1, 1), add.s(2, 2))()
    result.save()
    restored = GroupResult.restore(result.id, app=app)
    assert restored == result and restored.get(timeout=TIMEOUT) == [2, 4]
    restored.delete()
    assert GroupResult.restore(result.id, app=app) is None

    members = ResultSet([add.delay(1, 1), boom.delay("set member"), sleep.delay(30)])
    assert members.waiting() and not members.ready()
    ResultSet([members.results[2]]).revoke(terminate=True, wait=True, timeout=TIMEOUT)
    assert members.results[2].state == "REVOKED"
    with pytest.raises(ValueError, match="set member"):
        members.join(timeout=TIMEOUT)
    assert members.join(timeout=TIMEOUT, propagate=False)[0] == 2
    assert members.failed() and not members.successful() and members.completed_count() == 1
    seen = {}
    ResultSet([add.delay(3, 3)]).join_native(timeout=TIMEOUT,
                                             callback=lambda i, v: seen.update({i: v}))
    assert list(seen.values()) == [6]
    members.add(add.delay(4, 4))
    assert len(members) == 4
    members.discard(members.results[0])
    assert len(members) == 3


def test_get_inside_a_task_is_refused_unless_allowed(app, worker, start_worker):
    start_worker("-c", "1", "-Q", "inner", app="canvas_tasks")
    with pytest.raises(RuntimeError, match="Never call result.get"):
        joins_inside.delay(2, False).get(timeout=TIMEOUT)
    assert joins_inside.delay(2, True).get(timeout=TIMEOUT) == 4


def test_backend_methods_celery_extensions_call(app, worker):
    backend = app.backend
    backend.ensure_chords_allowed()
    backend.store_result("made-by-hand", {"x": 1}, "SUCCESS")
    assert AsyncResult("made-by-hand", app=app).get(timeout=TIMEOUT) == {"x": 1}
    backend.mark_as_failure("failed-by-hand", KeyError("nope"))
    with pytest.raises(KeyError):
        AsyncResult("failed-by-hand", app=app).get(timeout=TIMEOUT)
    meta = backend.get_task_meta("made-by-hand")
    assert meta["status"] == "SUCCESS" and meta["result"] == {"x": 1}
    assert backend.get_task_meta("never-ran")["status"] == "PENDING"
    assert backend.get_state("failed-by-hand") == "FAILURE"
    # a chord built around a header counted by Celery's set_chord_size
    assert chord((add.s(i, i) for i in range(3)), xsum.s())().get(timeout=TIMEOUT) == 6

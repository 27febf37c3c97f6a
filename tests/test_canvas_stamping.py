"""Stamping, as in the Stamping part of Celery's Canvas guide: ``stamp()`` with headers or a
visitor on a signature, group, chain or chord; the stamps reach every task (links too), and
``app.control.revoke_by_stamped_headers`` revokes what carries one."""

from __future__ import annotations

from uuid import uuid4

import pytest
from canvas_tasks import stamps_of, xsum
from tasks import add

from runner import chain, chord, group, signature
from runner.canvas import StampingVisitor
from runner.exceptions import TaskRevokedError
from tests import canvas_fixtures

db_url, worker = canvas_fixtures.db_url, canvas_fixtures.worker  # fixtures

pytestmark = pytest.mark.transports("sqlite", "redis", "amqp")

TIMEOUT = 20



class MonitoringIdStampingVisitor(StampingVisitor):
    def on_signature(self, sig, **headers) -> dict:
        return {"monitoring_id": uuid4().hex}


class FullVisitor(StampingVisitor):
    def on_signature(self, sig, **headers) -> dict:
        return {"on_signature": True}

    def on_group_start(self, group, **headers) -> dict:
        return {"on_group_start": True}

    def on_chain_start(self, chain, **headers) -> dict:
        return {"on_chain_start": True}

    def on_chord_header_start(self, sig, **header) -> dict:
        return {"on_chord_header_start": True}

    def on_chord_body(self, sig, **header) -> dict:
        return {"on_chord_body": True}


def test_stamps_reach_every_task_of_a_canvas(app, worker):
    sig = stamps_of.s()
    sig.stamp(stamp="value")
    assert sig.delay().get(timeout=TIMEOUT) == {"stamp": "value"}

    sig_example = signature("canvas_tasks.stamps_of", app=app)
    sig_example.stamp(visitor=MonitoringIdStampingVisitor())
    assert len(sig_example.delay().get(timeout=TIMEOUT)["monitoring_id"]) == 32

    group_example = group([stamps_of.si(), stamps_of.si()])
    group_example.stamp(visitor=MonitoringIdStampingVisitor())
    first, second = group_example().get(timeout=TIMEOUT)
    assert first["monitoring_id"] != second["monitoring_id"]  # one per signature

    chain_example = chain(stamps_of.si(), stamps_of.si())
    chain_example.stamp(visitor=FullVisitor())
    last = chain_example().get(timeout=TIMEOUT)
    assert last == {"on_chain_start": True, "on_signature": True}

    chord_example = chord([stamps_of.si()], stamps_of.s())
    chord_example.stamp(visitor=FullVisitor(), run="r1")
    body = chord_example().get(timeout=TIMEOUT)
    assert body == {"run": "r1", "on_chord_body": True, "on_signature": True}
    header = chord_example.tasks[0]["options"]["headers"]
    assert header["on_chord_header_start"] and header["run"] == "r1"


def test_revoke_by_stamped_headers(app, worker):
    doomed = add.s(1, 1)
    doomed.stamp(batch="b-7")
    spared = add.s(2, 2)
    spared.stamp(batch="b-8")
    app.control.revoke_by_stamped_headers({"batch": "b-7"})
    result = doomed.delay()
    with pytest.raises(TaskRevokedError):
        result.get(timeout=TIMEOUT)
    assert result.state == "REVOKED"
    assert spared.delay().get(timeout=TIMEOUT) == 4
    workflow = chord([add.s(1, 1), doomed.clone()], xsum.s())()
    with pytest.raises(TaskRevokedError):
        workflow.get(timeout=TIMEOUT)


def test_stamps_are_kept_with_the_result(app, worker):
    sig1 = add.si(2, 2)
    sig1_res = sig1.freeze()
    g = group(sig1, add.si(3, 3))
    g.stamp(stamp="your_custom_stamp")
    res = g.apply_async()
    assert res.get(timeout=TIMEOUT) == [4, 6]
    assert sig1_res._get_task_meta()["stamp"] == "your_custom_stamp"
    assert sig1_res._get_task_meta()["stamped_headers"] == ["stamp"]


class LinkVisitor(StampingVisitor):
    def on_signature(self, sig, **headers) -> dict:
        return {"kind": "task"}

    def on_callback(self, callback, **header) -> dict:
        return {"kind": "callback"}


def test_callbacks_are_stamped_too(app, worker):
    sig = add.s(1, 1)
    sig.link(stamps_of.s())
    sig.stamp(visitor=LinkVisitor(), run="r2")
    link = sig.options["link"][0]
    assert link["options"]["headers"]["kind"] == "callback"
    assert link["options"]["headers"]["run"] == "r2"
    assert sig.options["headers"]["kind"] == "task"
    assert sig.delay().get(timeout=TIMEOUT) == 2

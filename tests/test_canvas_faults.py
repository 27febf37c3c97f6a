"""Canvases keep the guarantees of single tasks: a worker SIGKILLed in the middle of a nested
chord (acks_late) makes every body run exactly once; a header part delivered twice is counted
once."""

from __future__ import annotations

import json
import time

import pytest
from canvas_tasks import counted_sum, slow_part
from tasks import add, tsum

from runner import chain, chord
from runner.canvas import CanvasMiddleware
from tests.canvas_fixtures import db_url  # noqa: F401 - fixture

SHORT_VISIBILITY = {"RUNNER_BROKER_TRANSPORT_OPTIONS": json.dumps({"visibility_timeout": 1})}


def lines(path) -> list[str]:
    return path.read_text().split() if path.exists() else []


@pytest.mark.transports("sqlite", "redis", "amqp")
def test_sigkilled_worker_in_a_nested_chord_runs_each_body_once(app, start_worker, tmp_path,
                                                                wait_for_lines):
    parts, outer, inner = tmp_path / "parts", tmp_path / "outer", tmp_path / "inner"
    nested = chain(slow_part.si(10, str(parts), 0.2),
                   chord([slow_part.si(11, str(parts), 0.2), slow_part.si(12, str(parts), 0.2)],
                         counted_sum.s(str(inner))))
    header = [slow_part.si(i, str(parts), 0.6) for i in range(4)] + [nested]
    first = start_worker("-c", "2", env=SHORT_VISIBILITY, app="canvas_tasks")
    result = chord(header, counted_sum.s(str(outer)))()
    wait_for_lines(parts, 2)
    first.kill_all()  # mid-header: the running parts were not acked
    start_worker("-c", "2", env=SHORT_VISIBILITY, app="canvas_tasks")
    assert result.get(timeout=30) == 0 + 1 + 2 + 3 + 23
    time.sleep(1.5)  # a second body would have run by now
    assert len(lines(outer)) == 1 and len(lines(inner)) == 1
    assert len(lines(parts)) >= 7  # every part ran (the killed ones twice)


def test_header_part_delivered_twice_is_counted_once(app):
    """The same finished part reported again (its worker died before the ack) adds nothing:
    the body is sent once, when the last other part is in, and not again after."""
    from runner import states
    from runner.backends.base import ResultRecord
    from runner.message import Message

    chord([add.s(1, 1), add.s(2, 2), add.s(3, 3)])(tsum.s())
    header = [Message.decode(d.body) for d in app.broker.fetch(["celery"], 10, "test")]
    records = {m.id: ResultRecord(m.id, states.SUCCESS, "application/json", b"%d" % v,
                                  date_done=time.time())
               for m, v in zip(header, (2, 4, 6), strict=True)}
    app.backend.store(list(records.values()))
    hooks = CanvasMiddleware()

    def report(message):
        hooks.after_task_stored(app, message, states.SUCCESS, records[message.id])

    report(header[0])
    report(header[1])
    report(header[1])  # delivered again
    assert app.broker.qsize("celery") == 0  # two of three: no body
    report(header[2])
    assert app.broker.qsize("celery") == 1  # the body, once
    report(header[2])
    report(header[0])
    assert app.broker.qsize("celery") == 1
    body = Message.decode(app.broker.fetch(["celery"], 10, "test")[0].body)
    assert body.task == tsum.name


@pytest.mark.transports("sqlite", "redis")
def test_replaced_task_whose_worker_dies_runs_its_replacement_once(app, start_worker,
                                                                    tmp_path):
    from canvas_tasks import replace_then_die

    marker, ran = tmp_path / "started", tmp_path / "ran"
    worker = start_worker("-c", "1", env=SHORT_VISIBILITY, app="canvas_tasks")
    result = replace_then_die.delay(str(marker), str(ran))
    assert result.get(timeout=20) == 5
    worker.wait_for_log("exited with exit code 1; delivering it again")
    time.sleep(1.5)
    # delivered again, it either ran again and found its replacement sent, or found the
    # replacement's result already stored under its id: either way the replacement ran once
    assert lines(marker) in (["started"], ["started", "started"])
    assert lines(ran) == ["ran"]

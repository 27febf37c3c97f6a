"""The canvas as a Celery user checks it: signatures, chain, group, chord, link, link_error,
on real worker processes (SQLite and Redis), and in eager mode."""

from __future__ import annotations

import json
import time

import pytest
from tasks import add, boom, note_failure, pair, record, tsum

from runner import chain, chord, group, signature
from runner.canvas import ChordError, Signature
from runner.result import GroupResult

pytestmark = pytest.mark.transports("sqlite", "redis")

TIMEOUT = 15


def lines(path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_signature_delay_returns_the_task_result(app, start_worker):
    start_worker("-c", "2")
    assert add.s(2, 2).delay().get(timeout=TIMEOUT) == 4
    assert add.s(2, 2).apply_async(countdown=0).get(timeout=TIMEOUT) == 4
    # a partial signature: the args given when calling go first, as in Celery
    assert pair.s(2).delay(3).get(timeout=TIMEOUT) == [3, 2]
    assert pair.s(second="k").delay("a").get(timeout=TIMEOUT) == ["a", "k"]


def test_chain_passes_each_result_to_the_next_task(app, start_worker):
    start_worker("-c", "2")
    result = chain(add.s(1, 1), add.s(10), add.s(100)).apply_async()
    assert result.get(timeout=TIMEOUT) == 112
    assert (add.s(1, 1) | add.s(10) | add.s(100))().get(timeout=TIMEOUT) == 112
    # .si() ignores the parent's result
    assert (add.s(1, 1) | add.si(5, 5) | pair.s("x")).delay().get(timeout=TIMEOUT) == [10, "x"]


def test_failed_chain_step_stops_the_chain_and_fails_its_result(app, start_worker, tmp_path):
    """As in Celery 5: the later tasks never run, and the chain's result (the last task's)
    is marked FAILURE with the failing task's error, so get() raises it instead of hanging."""
    start_worker("-c", "2")
    marker = tmp_path / "later.log"
    result = (add.s(1, 1) | boom.si("step two broke") | record.s(str(marker))
              | record.s(str(marker)))()
    with pytest.raises(ValueError, match="step two broke"):
        result.get(timeout=TIMEOUT)
    assert result.state == "FAILURE"
    time.sleep(0.3)
    assert lines(marker) == []


def test_group_result_reports_in_order(app, start_worker):
    start_worker("-c", "2")
    result = group(add.s(i, i) for i in range(6))()
    assert isinstance(result, GroupResult) and len(result) == 6
    assert result.get(timeout=TIMEOUT) == [0, 2, 4, 6, 8, 10]
    assert result.ready() and result.successful() and result.completed_count() == 6

    partial = group(add.s(1, 1), boom.s("one of them"))()
    with pytest.raises(ValueError, match="one of them"):
        partial.get(timeout=TIMEOUT)
    assert partial.get(timeout=TIMEOUT, propagate=False)[0] == 2
    assert partial.ready() and not partial.successful() and partial.failed()
    assert partial.completed_count() == 1


def test_chord_body_runs_once_with_header_results_in_order(app, start_worker, tmp_path):
    start_worker("-c", "2")
    start_worker("-c", "2")
    header_marker, body_marker = tmp_path / "header.log", tmp_path / "body.log"
    result = chord(record.s(i, str(header_marker)) for i in range(20))(
        pair.s("body"))
    values, label = result.get(timeout=TIMEOUT)
    assert (values, label) == ([2 * i for i in range(20)], "body")

    result = chord([add.s(i, 0) for i in range(20)])(tsum.s(str(body_marker)))
    assert result.get(timeout=TIMEOUT) == sum(range(20))
    time.sleep(0.5)  # a second body would run by now
    assert lines(body_marker) == ["body"]
    assert sorted(map(int, lines(header_marker))) == list(range(20))


def test_chord_with_failed_header_task_fails_the_body(app, start_worker, tmp_path):
    start_worker("-c", "2")
    marker = tmp_path / "body.log"
    header = group(add.s(1, 1), boom.s("header broke"), add.s(2, 2))
    result = chord(header)(tsum.s(str(marker)))
    with pytest.raises(ValueError, match="header broke"):  # as Celery: the part's own error
        result.get(timeout=TIMEOUT)
    with pytest.raises(ChordError) as raised:  # what the body stored, read without parents
        app.AsyncResult(result.id).get(timeout=TIMEOUT)
    failed_id = result.parent[1].id  # the header's GroupResult
    assert str(raised.value) == f"Dependency {failed_id} raised ValueError('header broke')"
    assert result.state == "FAILURE"
    assert lines(marker) == []


def test_group_piped_to_a_task_in_a_chain_is_a_chord(app, start_worker):
    start_worker("-c", "2")
    workflow = add.s(1, 1) | group(add.s(1), add.s(2)) | tsum.s() | add.s(10)
    assert workflow().get(timeout=TIMEOUT) == 17  # 2 -> [3, 4] -> 7 -> 17
    assert (group(add.s(1, 1), add.s(2, 2)) | tsum.s())().get(timeout=TIMEOUT) == 6


def test_link_callback_gets_the_result(app, start_worker, tmp_path, wait_for_lines):
    start_worker("-c", "2")
    marker = tmp_path / "linked.log"
    assert add.apply_async((2, 2), link=record.s(str(marker))).get(timeout=TIMEOUT) == 4
    assert wait_for_lines(marker, 1) == ["4"]
    sig = add.s(3, 3)
    sig.link(record.s(str(marker)))
    sig.delay()
    assert sorted(wait_for_lines(marker, 2)) == ["4", "6"]


def test_link_error_errback_gets_the_failed_task_id(app, start_worker, tmp_path,
                                                    wait_for_lines):
    start_worker("-c", "2")
    marker, callback_marker = tmp_path / "errback.log", tmp_path / "callback.log"
    result = boom.apply_async(("no luck",), link=record.s(str(callback_marker)),
                              link_error=note_failure.s(str(marker)))
    with pytest.raises(ValueError):
        result.get(timeout=TIMEOUT)
    assert wait_for_lines(marker, 1) == [result.id]
    assert lines(callback_marker) == []
    ok = add.apply_async((1, 1), link_error=note_failure.s(str(marker)))
    assert ok.get(timeout=TIMEOUT) == 2
    time.sleep(0.3)
    assert lines(marker) == [result.id]


def test_signatures_survive_a_json_round_trip(app, start_worker):
    start_worker("-c", "2")

    def round_trip(sig):
        return signature(json.loads(json.dumps(sig)), app=app)

    sig = round_trip(add.s(2).set(countdown=0))
    assert isinstance(sig, Signature) and sig.task == add.name and sig.args == (2,)
    assert sig.delay(5).get(timeout=TIMEOUT) == 7
    assert round_trip(add.si(1, 2)).immutable
    workflow = round_trip(add.s(1, 1) | add.s(2))
    assert isinstance(workflow, chain)
    assert workflow.apply_async().get(timeout=TIMEOUT) == 4
    together = round_trip(group(add.s(1, 1), add.s(2, 2)))
    assert isinstance(together, group)
    assert together.apply_async().get(timeout=TIMEOUT) == [2, 4]
    joined = round_trip(chord([add.s(1, 1), add.s(2, 2)], tsum.s()))
    assert isinstance(joined, chord)
    assert joined.apply_async().get(timeout=TIMEOUT) == 6


def test_eager_mode_runs_the_canvas_in_process(app, tmp_path):
    app.conf.update(task_always_eager=True)
    marker = tmp_path / "eager.log"
    assert add.s(2, 2).delay().get() == 4
    assert pair.s(2).delay(3).get() == [3, 2]
    assert (add.s(1, 1) | add.s(10) | add.s(100))().get() == 112
    assert group(add.s(i, i) for i in range(3))().get() == [0, 2, 4]
    assert chord(add.s(i, i) for i in range(3))(tsum.s()).get() == 6
    assert (add.s(1, 1) | group(add.s(1), add.s(2)) | tsum.s())().get() == 7
    add.apply_async((2, 2), link=record.s(str(marker)))
    assert lines(marker) == ["4"]
    failed = boom.apply_async(link_error=note_failure.s(str(marker)))
    assert lines(marker) == ["4", failed.id]
    with pytest.raises(ValueError, match="kaput"):
        (add.s(1, 1) | boom.si() | record.s(str(marker)))()
    assert lines(marker) == ["4", failed.id]


def test_chord_body_is_sent_by_the_redelivery_of_a_worker_that_died_before_sending_it(
        app, monkeypatch):
    """The worker that counts the last header task dies before it sends the body: its message
    is delivered again (not acked), and counting it again sends the body. Nothing is lost."""
    from runner import states
    from runner.backends.base import ResultRecord
    from runner.canvas import CanvasMiddleware
    from runner.message import Message

    result = chord([add.s(1, 1), add.s(2, 2)])(tsum.s())
    header = [Message.decode(d.body) for d in app.broker.fetch(["celery"], 10, "test")]
    assert [m.task for m in header] == ["tasks.add", "tasks.add"]
    records = {m.id: ResultRecord(m.id, states.SUCCESS, "application/json", b"%d" % v,
                                  date_done=time.time())
               for m, v in zip(header, (2, 4), strict=True)}
    app.backend.store(list(records.values()))
    hooks = CanvasMiddleware()
    hooks.after_task_stored(app, header[0], states.SUCCESS, records[header[0].id])
    assert app.broker.qsize("celery") == 0  # one part missing: no body yet

    sending = Signature.apply_async

    def dies(self, *args, **kwargs):
        raise SystemExit("the worker died here")
    monkeypatch.setattr(Signature, "apply_async", dies)
    with pytest.raises(SystemExit):
        hooks.after_task_stored(app, header[1], states.SUCCESS, records[header[1].id])
    monkeypatch.setattr(Signature, "apply_async", sending)
    assert app.broker.qsize("celery") == 0

    hooks.after_task_stored(app, header[1], states.SUCCESS, records[header[1].id])  # again
    body = [Message.decode(d.body) for d in app.broker.fetch(["celery"], 10, "test")]
    assert [(m.task, m.id) for m in body] == [("tasks.tsum", result.id)]
    hooks.after_task_stored(app, header[0], states.SUCCESS, records[header[0].id])  # late
    assert app.broker.qsize("celery") == 0  # sent once it is marked sent

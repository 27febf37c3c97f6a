"""Any canvas inside any other, as a Celery user writes them, on real workers: chains and
chords in groups, groups and chords in chains, chords in chord headers, one-signature and
generator headers, a chain ending in a group; failures raise the task's own exception and
errbacks are called once, at every level."""

from __future__ import annotations

import time

import pytest
from canvas_tasks import mul, note_args, note_error, note_id, xsum
from tasks import add, boom, echo

from runner import chain, chord, group
from runner.canvas import ChordError
from runner.result import AsyncResult, GroupResult
from tests import canvas_fixtures

db_url, worker = canvas_fixtures.db_url, canvas_fixtures.worker  # fixtures

pytestmark = pytest.mark.transports("sqlite", "redis", "amqp")

TIMEOUT = 20



def lines(path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_chains_and_chords_inside_a_group(app, worker):
    result = group(chain(add.s(1, 1), add.s(1)), add.s(5, 5),
                   chord([add.s(1, 1), add.s(2, 2)], xsum.s()))()
    assert isinstance(result, GroupResult) and len(result) == 3
    assert result.get(timeout=TIMEOUT) == [3, 10, 6]
    # nested groups are flattened, as Celery does
    assert group(group(add.s(1, 1), add.s(2, 2)), add.s(3, 3))().get(timeout=TIMEOUT) == [2, 4, 6]


def test_chain_ending_in_a_group_returns_its_group_result(app, worker):
    result = chain(add.s(1, 1), group(add.s(1), add.s(2)))()
    assert isinstance(result, GroupResult)
    assert result.get(timeout=TIMEOUT) == [3, 4]
    assert result.parent.get(timeout=TIMEOUT) == 2
    # a group in the middle is a chord; a chord in a chain passes its result on
    assert (add.s(1, 1) | chord([add.s(1), add.s(2)], xsum.s()) | add.s(100))().get(
        timeout=TIMEOUT) == 107
    # group | group: the second group's tasks each get the first's list
    assert (group(add.s(1, 1), add.s(2, 2)) | group(xsum.s(), xsum.s()))().get(
        timeout=TIMEOUT) == [6, 6]


def test_chord_headers_of_every_kind(app, worker):
    header = [chain(add.s(1, 1), add.s(1)),  # 3
              chord([add.s(1, 1), add.s(2, 2)], xsum.s()),  # 6
              group(add.s(0, 1), add.s(0, 2))]  # flattened: 1, 2
    assert chord(header, xsum.s())().get(timeout=TIMEOUT) == 12
    assert chord(add.s(2, 2), xsum.s())().get(timeout=TIMEOUT) == 4  # one signature
    generated = (add.s(i, i) for i in range(10))
    assert chord(generated, xsum.s())().get(timeout=TIMEOUT) == 90  # a generator
    assert chord([], xsum.s())().get(timeout=TIMEOUT) == 0
    # a body that is a chain, and one that is a group
    assert chord([add.s(1, 1)], chain(xsum.s(), add.s(1)))().get(timeout=TIMEOUT) == 3
    assert chord([add.s(1, 1), add.s(1, 2)], group(xsum.s(), mul.s(2)))().get(
        timeout=TIMEOUT) == [5, [2, 3, 2, 3]]
    # a chain in a header ending in a group reports the group's list
    assert chord([add.s(1, 1) | group(add.s(1), add.s(2)), add.s(0, 5)], echo.s())().get(
        timeout=TIMEOUT) == [[3, 4], 5]


def test_failed_chain_and_chord_raise_the_tasks_own_exception(app, worker):
    with pytest.raises(ValueError, match="in the chain"):
        (add.s(1, 1) | boom.si("in the chain") | add.s(1))().get(timeout=TIMEOUT)
    result = chord([add.s(1, 1), boom.si("in the header")], xsum.s())()
    with pytest.raises(ValueError, match="in the header"):
        result.get(timeout=TIMEOUT)
    with pytest.raises(ChordError, match="in the header"):  # what the body stored
        AsyncResult(result.id, app=app).get(timeout=TIMEOUT)
    nested = chord([chain(add.s(1, 1), chord([boom.si("deep down"), add.s(1, 1)],
                                             xsum.s()))], xsum.s())()
    with pytest.raises(ValueError, match="deep down"):
        nested.get(timeout=TIMEOUT)


def test_link_error_on_chain_group_and_chord_is_called_once(app, worker, tmp_path,
                                                             wait_for_lines):
    marker, old = tmp_path / "errors.log", tmp_path / "old.log"
    workflow = add.s(1, 1) | boom.si("chain step") | add.s(1)
    workflow.link_error(note_error.s(str(marker)))
    workflow.link_error(note_id.s(str(old)))
    result = workflow()
    with pytest.raises(ValueError):
        result.get(timeout=TIMEOUT)
    failed = result.parent.id  # boom's
    assert wait_for_lines(marker, 1) == [f"{failed}|ValueError|True"]
    assert wait_for_lines(old, 1) == [f"{failed}|id"]

    together = group(add.s(1, 1), boom.si("group member"))
    together.link_error(note_error.s(str(marker)))
    result = together()
    with pytest.raises(ValueError):
        result.get(timeout=TIMEOUT)
    assert wait_for_lines(marker, 2)[1] == f"{result[1].id}|ValueError|True"

    joined = chord([add.s(1, 1), boom.si("header part")], xsum.s())
    joined.link_error(note_error.s(str(marker)))
    result = joined()
    with pytest.raises(ValueError):
        result.get(timeout=TIMEOUT)
    assert wait_for_lines(marker, 3)[2] == f"{result.id}|ChordError|False"
    time.sleep(0.5)
    assert len(lines(marker)) == 3 and len(lines(old)) == 1  # each called once


def test_depth_three_with_failures_and_errbacks_at_each_level(app, worker, tmp_path,
                                                             wait_for_lines):
    """A chord whose header is a group of chains, one holding a chord: all good first, then
    with a failure at each level, and an errback at each level called once."""
    def build(fail_at: str | None):
        inner_body = boom.si("inner body") if fail_at == "inner body" else xsum.s()
        inner_body.link_error(note_error.s(str(tmp_path / "inner.log")))
        inner_header = [add.s(1, 1), boom.si("inner header") if fail_at == "inner header"
                        else add.s(2, 2)]
        inner = chord(inner_header, inner_body)  # 6
        holder = chain(add.s(1, 1), boom.si("chain step") if fail_at == "chain step"
                       else add.s(1), inner.clone())  # the inner chord gets nothing: immutable
        inner_parts = holder.tasks[-1].tasks
        for part in inner_parts:
            part.set_immutable(True)
        holder.link_error(note_error.s(str(tmp_path / "chain.log")))
        other = chain(add.s(10, 10), add.s(1))  # 21
        outer = chord(group(holder, other), xsum.s())
        outer.link_error(note_error.s(str(tmp_path / "outer.log")))
        return outer

    assert build(None)().get(timeout=TIMEOUT) == 27
    expected = {"inner header": "inner header", "inner body": "inner body",
                "chain step": "chain step"}
    for count, (level, message) in enumerate(expected.items(), start=1):
        result = build(level)()
        with pytest.raises(ValueError, match=message):
            result.get(timeout=TIMEOUT)
        last = wait_for_lines(tmp_path / "outer.log", count)[-1]
        assert last == f"{result.id}|ChordError|False"
    # the inner chord's errback: once for its failed header (ChordError), once for its body
    # (sorted: an errback runs after the failure it answers is stored, so one of an earlier
    # run may still be on its way when the next run's comes: a CI run saw them swap)
    inner = wait_for_lines(tmp_path / "inner.log", 2)
    assert sorted(line.split("|")[1] for line in inner) == ["ChordError", "ValueError"]
    # the chain's errback is on each of its steps (as Celery's), the inner chord's body too:
    # called once per failed run
    assert sorted(line.split("|")[1] for line in wait_for_lines(tmp_path / "chain.log", 3)) \
        == ["ChordError", "ValueError", "ValueError"]
    time.sleep(0.5)
    assert len(lines(tmp_path / "outer.log")) == 3
    assert len(lines(tmp_path / "inner.log")) == 2
    assert len(lines(tmp_path / "chain.log")) == 3


def test_nested_canvases_run_eagerly(app, tmp_path):
    app.conf.update(task_always_eager=True)
    header = [chain(add.s(1, 1), add.s(1)), chord([add.s(1, 1), add.s(2, 2)], xsum.s()),
              group(add.s(0, 1), add.s(0, 2))]
    assert chord(header, xsum.s())().get() == 12
    assert group(chain(add.s(1, 1), add.s(1)), add.s(5, 5))().get() == [3, 10]
    assert chain(add.s(1, 1), group(add.s(1), add.s(2)))().get() == [3, 4]
    assert (add.s(1, 1) | chord([add.s(1), add.s(2)], xsum.s()) | add.s(100))().get() == 107
    marker = tmp_path / "errors.log"
    failing = boom.si("eager")
    failing.link_error(note_error.s(str(marker)))
    failing.apply_async()
    assert lines(marker)[0].endswith("|ValueError|False")


def test_chord_errback_on_the_header_too_with_the_celery_setting(app, start_worker, tmp_path,
                                                                  wait_for_lines):
    start_worker("-c", "2", app="canvas_tasks",
                 env={"RUNNER_TASK_ALLOW_ERROR_CB_ON_CHORD_HEADER": "true"})
    app.conf.update(task_allow_error_cb_on_chord_header=True)
    marker = tmp_path / "errors.log"
    joined = chord([add.s(1, 1), boom.si("header part")], xsum.s())
    joined.link_error(note_args.s(marker=str(marker)))
    result = joined()
    with pytest.raises(ValueError):
        result.get(timeout=TIMEOUT)
    # the body's errback gets (request, exc, traceback); the failed header task's is an
    # immutable copy, called with none of them (as Celery's)
    assert sorted(wait_for_lines(marker, 2)) == ["0", "3"]


def test_a_canvas_sent_as_a_task_runs(app, worker):
    """What a producer before this version sent for a nested canvas (a task named
    runner.chain / runner.group / runner.chord with the canvas in its kwargs) runs now."""
    nested = chain(add.s(1, 1), add.s(1))
    assert app.send_task("runner.chain", [], dict(nested.kwargs)).get(timeout=TIMEOUT) == 3
    assert app.send_task("runner.chain", [10], {"tasks": [add.s(1), add.s(2)]}).get(
        timeout=TIMEOUT) == 13
    together = group(add.s(1, 1), add.s(2, 2))
    assert app.send_task("celery.group", [], dict(together.kwargs)).get(
        timeout=TIMEOUT) == [2, 4]
    joined = {"header": [add.s(1, 1), add.s(2, 2)], "body": xsum.s()}
    assert app.send_task("runner.chord", [], joined).get(timeout=TIMEOUT) == 6

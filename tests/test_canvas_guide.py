"""The examples of Celery's Canvas guide (Signatures, Primitives: chain, group, chord, map &
starmap, chunks), with ``from celery import ...`` changed to ``from runner import ...``, on
real workers; then the signature API the guide uses (freeze, set, clone, immutable,
on_error, writable fields, one signature used twice, app.signature, maybe_signature)."""

from __future__ import annotations

import pickle

import pytest
from canvas_tasks import mul, xsum
from tasks import add, boom, echo, tsum

from runner import Signature, chain, chord, group, maybe_signature, signature
from runner.result import AsyncResult, GroupResult
from tests import canvas_fixtures

db_url, worker = canvas_fixtures.db_url, canvas_fixtures.worker  # fixtures

pytestmark = pytest.mark.transports("sqlite", "redis", "amqp")

TIMEOUT = 20



def test_signatures_section(app, worker):
    assert signature("tasks.add", args=(2, 2), countdown=10) == add.s(2, 2).set(countdown=10)
    s = add.signature((2, 2), {"debug": True}, countdown=10)
    assert s.args == (2, 2) and s.kwargs == {"debug": True} and s.options == {"countdown": 10}
    assert add.s(2, 2).delay().get(timeout=TIMEOUT) == 4
    assert add.s(2, 2).apply_async(countdown=0).get(timeout=TIMEOUT) == 4
    assert ~add.s(2, 2) == 4  # ~sig: apply_async().get()
    partial = add.s(2)  # incomplete partial: add(?, 2)
    assert partial.delay(8).get(timeout=TIMEOUT) == 10
    assert partial.clone(args=(8,), kwargs={}).args == (8, 2)
    s = add.s(2, 2)
    assert s.apply_async(countdown=0.1).get(timeout=TIMEOUT) == 4
    # immutability: the callback ignores the parent's result
    result = add.apply_async((2, 2), link=add.si(8, 8))
    assert result.get(timeout=TIMEOUT) == 4
    assert add.signature((2, 2), immutable=True).immutable
    # callbacks: link gets the parent's result
    result = add.apply_async((2, 2), link=add.s(8))
    assert result.get(timeout=TIMEOUT) == 4


def test_chain_section(app, worker):
    assert chain(add.s(4, 4), mul.s(8), mul.s(10))().get(timeout=TIMEOUT) == 640
    res = chain(add.s(4, 4), mul.s(8), mul.s(10)).apply_async()
    assert res.get(timeout=TIMEOUT) == 640
    assert res.parent.get(timeout=TIMEOUT) == 64
    assert res.parent.parent.get(timeout=TIMEOUT) == 8
    assert res.parent.parent.parent is None
    res = (add.si(2, 2) | add.si(4, 4) | add.si(8, 8))()
    assert res.get(timeout=TIMEOUT) == 16
    assert res.parent.get(timeout=TIMEOUT) == 8
    assert res.parent.parent.get(timeout=TIMEOUT) == 4
    assert (add.s(2, 2) | add.s(4) | add.s(8))().get(timeout=TIMEOUT) == 16
    c1 = add.s(4) | mul.s(8)
    assert (c1 | mul.s(10)).delay(16).get(timeout=TIMEOUT) == 1600
    assert ((add.s(4, 4) | mul.s(8)) | (add.s(4) | mul.s(8)))().get(timeout=TIMEOUT) == 544


def test_group_section(app, worker):
    res = group(add.s(i, i) for i in range(10))()
    assert res.get(timeout=TIMEOUT) == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
    g = group(add.s(2, 2), add.s(4, 4))
    res = g()
    assert res.get(timeout=TIMEOUT) == [4, 8]
    assert res.ready() and res.successful() and not res.failed() and not res.waiting()
    assert res.completed_count() == 2
    assert [r.get(timeout=TIMEOUT) for r in res.results] == [4, 8]
    # a group of partials: each gets the argument
    assert group(add.s(2), add.s(4))(10).get(timeout=TIMEOUT) == [12, 14]
    assert group(add.s(i, i) for i in range(3)).skew(start=0, step=0.05)().get(
        timeout=TIMEOUT) == [0, 2, 4]
    assert group([add.s(1, 1) | add.s(1), mul.s(2, 2)])().get(timeout=TIMEOUT) == [3, 4]


def test_chord_section(app, worker):
    assert chord(add.s(i, i) for i in range(100))(tsum.s()).get(timeout=TIMEOUT) == 9900
    assert (group(add.s(i, i) for i in range(10)) | xsum.s())().get(timeout=TIMEOUT) == 90
    callback = tsum.s()
    header = [add.s(2, 2), add.s(4, 4)]
    result = chord(header)(callback)
    assert result.get(timeout=TIMEOUT) == 12
    assert isinstance(result.parent, GroupResult)
    assert result.parent.get(timeout=TIMEOUT) == [4, 8]
    # error handling: get() raises the failed header task's error; the body's result
    # holds the ChordError naming it
    c = chord([add.s(4, 4), boom.si("something something"), add.s(8, 8)])
    result = c(xsum.s())
    with pytest.raises(ValueError, match="something something"):
        result.get(timeout=TIMEOUT)
    stored = AsyncResult(result.id, app=app).get(timeout=TIMEOUT, propagate=False)
    assert type(stored).__name__ == "ChordError"
    assert str(stored) == (f"Dependency {result.parent[1].id} raised "
                           f"ValueError('something something')")
    # chord | task: the task follows the body
    assert (chord([add.s(1, 1), add.s(2, 2)], xsum.s()) | mul.s(10))().get(
        timeout=TIMEOUT) == 60


def test_map_starmap_and_chunks_sections(app, worker):
    assert ~xsum.map([range(10), range(100)]) == [45, 4950]
    assert ~add.starmap(zip(range(10), range(10), strict=True)) == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
    assert add.starmap(zip(range(3), range(3), strict=True)).apply_async(countdown=0.1).get(
        timeout=TIMEOUT) == [0, 2, 4]
    res = add.chunks(zip(range(100), range(100), strict=True), 10)()
    assert res.get(timeout=TIMEOUT) == [[2 * (10 * c + i) for i in range(10)]
                                         for c in range(10)]
    skewed = add.chunks(zip(range(20), range(20), strict=True), 10).group().skew(start=0, stop=0.2)()
    assert len(skewed.get(timeout=TIMEOUT)) == 2
    # chunks and map inside other canvases
    assert (add.chunks(zip(range(4), range(4), strict=True), 2).group() | echo.s())().get(
        timeout=TIMEOUT) == [[0, 2], [4, 6]]
    assert group(xsum.map([[1, 2], [3]]), add.s(1, 1))().get(timeout=TIMEOUT) == [[3, 3], 2]


def test_signature_api(app, worker):
    # freeze: the id is known before sending, and the result is that id's
    sig = add.s(2, 2)
    frozen = sig.freeze()
    assert sig.id == frozen.id
    assert sig.delay().get(timeout=TIMEOUT) == 4
    assert frozen.get(timeout=TIMEOUT) == 4
    workflow = add.s(1, 1) | mul.s(3)
    promised = workflow.freeze()
    workflow.apply_async()
    assert AsyncResult(promised.id, app=app).get(timeout=TIMEOUT) == 6
    # writable fields, set, clone, immutable, on_error
    sig = add.s(1, 1)
    sig.args = (5, 5)
    sig.kwargs = {}
    sig.options = {"countdown": 0}
    assert sig.delay().get(timeout=TIMEOUT) == 10
    sig.set(immutable=True)
    assert sig.immutable and sig.clone(args=(1,)).args == (5, 5)
    assert add.s(1).on_error(boom.si()).options["link_error"][0]["task"] == boom.name
    # one signature used twice: two tasks, two ids
    twice = add.s(1, 1)
    res = chain(twice, add.s(1), twice.clone(immutable=True))()
    assert res.get(timeout=TIMEOUT) == 2
    res = group(twice, twice)()
    assert res.get(timeout=TIMEOUT) == [2, 2] and res[0].id != res[1].id
    # app.signature, maybe_signature, and a signature through JSON and pickle
    assert app.signature("tasks.add", (2, 3)).delay().get(timeout=TIMEOUT) == 5
    as_dict = dict(add.s(3, 3))
    assert isinstance(app.signature(as_dict), Signature)
    assert maybe_signature(as_dict, app=app).delay().get(timeout=TIMEOUT) == 6
    assert maybe_signature(None) is None
    back = pickle.loads(pickle.dumps(chord([add.s(1, 1)], xsum.s())))
    assert isinstance(back, chord) and back().get(timeout=TIMEOUT) == 2


def test_task_id_of_a_canvas_is_its_final_result(app, worker):
    assert chain(add.s(1, 1), add.s(1)).apply_async(task_id="chain-end").id == "chain-end"
    assert AsyncResult("chain-end", app=app).get(timeout=TIMEOUT) == 3
    result = chord([add.s(1, 1), add.s(2, 2)], xsum.s()).apply_async(task_id="chord-body")
    assert result.id == "chord-body" and result.get(timeout=TIMEOUT) == 6
    assert len({r.id for r in result.parent}) == 2
    together = group(add.s(1, 1), add.s(2, 2)).apply_async(task_id="the-group")
    assert together.id == "the-group" and together.get(timeout=TIMEOUT) == [2, 4]

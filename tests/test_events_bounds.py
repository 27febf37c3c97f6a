"""Events are bounded and best effort: a sender whose broker is unreachable, or whose events
nobody reads, keeps at most its buffer and goes on (in process, no worker needed)."""

from __future__ import annotations

import json
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner import Celery
from runner.events.dispatcher import EventDispatcher
from runner.events.state import State

#: any JSON value, nested a little
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=4),
    max_leaves=12)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_dispatcher_whose_broker_is_down_keeps_only_its_buffer():
    app = Celery("bounded", broker=f"redis://127.0.0.1:{_closed_port()}/0", backend="memory://",
                 set_as_current=False, broker_connection_max_retries=1,
                 broker_connection_timeout=0.2)
    dispatcher = EventDispatcher(app, "w@h", buffer_size=50)
    for i in range(1000):
        dispatcher.send("task-received", uuid=str(i))
    assert len(dispatcher._buffer) <= 50
    assert dispatcher.dropped >= 900  # (at most one batch more is in flight)
    assert dispatcher.sent == 1000


def test_events_nobody_reads_are_not_kept_by_the_memory_transport():
    app = Celery("unread", broker="memory://unread", backend="memory://", set_as_current=False)
    fanout = app.control.fanout()
    for _ in range(100):
        fanout.publish("events", b"[]")  # no subscriber: nothing is kept anywhere
    subscription = fanout.subscribe("events")
    assert subscription.get(0.05) == []
    subscription.close()


@pytest.mark.parametrize("order", [
    ["task-received", "task-started", "task-succeeded"],
    ["task-succeeded", "task-started", "task-received"],  # out of order: SUCCESS stays
])
def test_state_keeps_the_latest_task_state_whatever_the_order(order):
    state = State()
    for n, kind in enumerate(order):
        state.event({"type": kind, "uuid": "t1", "hostname": "w@h", "timestamp": 100.0 + n,
                     "name": "tasks.add" if kind == "task-received" else None})
    task = state.tasks["t1"]
    assert (task.state, task.name, task.worker) == ("SUCCESS", "tasks.add", "w@h")


def test_state_shows_a_worker_offline_two_heartbeats_after_its_last():
    import time

    state = State()
    now = time.time()
    state.event({"type": "worker-heartbeat", "hostname": "w@h", "freq": 2.0,
                 "timestamp": now - 3.0, "active": 1, "processed": 5})
    assert state.workers["w@h"].alive  # 3 s after a heartbeat every 2 s: within the window
    state.event({"type": "worker-heartbeat", "hostname": "v@h", "freq": 2.0,
                 "timestamp": now - 4.5})
    assert not state.workers["v@h"].alive
    assert [w.hostname for w in state.alive_workers()] == ["w@h"]
    state.event({"type": "worker-offline", "hostname": "w@h", "timestamp": now})
    assert not state.workers["w@h"].alive


def test_a_batch_is_published_packed_and_read_back_as_celery_event_dicts():
    """Workers publish batches with shared fields written once; a receiver sees each event as
    Celery's dict (hostname, pid, utcoffset, its own fields, type, timestamp, clock)."""
    from runner.events.receiver import decode

    app = Celery("packed", broker="memory://packed", backend="memory://", set_as_current=False)
    dispatcher = EventDispatcher(app, "w@h")
    subscription = app.control.fanout().subscribe("events")
    dispatcher.send("task-received", uuid="t1", name="tasks.add", args="(1, 2)", eta=None)
    dispatcher.send("task-started", uuid="t1")
    dispatcher.send("task-succeeded", uuid="t1", result="3", runtime=0.5)
    dispatcher.flush()
    (body,) = subscription.get(1.0)
    subscription.close()
    dispatcher.close()
    events = decode(body)
    assert [e["type"] for e in events] == ["task-received", "task-started", "task-succeeded"]
    received, _, succeeded = events
    assert received["hostname"] == "w@h" and isinstance(received["pid"], int)
    assert (received["name"], received["args"], received["eta"]) == ("tasks.add", "(1, 2)", None)
    assert (succeeded["result"], succeeded["runtime"]) == ("3", 0.5)
    assert events[0]["clock"] < events[1]["clock"] < events[2]["clock"]
    assert len(body) < len(str(events))  # (the shared fields are written once)


@pytest.mark.parametrize("body", [
    b'{"v": 2, "base": {}, "shapes": [["uuid"]], "rows": [["task-started", 1.0, 1, 0]]}',
    b'{"v": 2, "base": {}, "shapes": [], "rows": [["task-started", 1.0, 1, 0, "t1"]]}',
    b'{"v": 2, "base": {}, "shapes": [["uuid"]], "rows": [["task-started"]]}',
    b'{"v": 2, "base": "x", "shapes": [["uuid"]], "rows": [["task-started", 1.0, 1, 0, "t"]]}',
    b'not json',
])
def test_a_malformed_event_body_is_dropped_with_a_warning(body, caplog):
    from runner.events.receiver import decode

    assert decode(body) == []
    assert "dropped a malformed body" in caplog.text



@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.binary(max_size=200),
    st.fixed_dictionaries({"v": st.just(2), "base": JSON_VALUES, "shapes": JSON_VALUES,
                           "rows": JSON_VALUES}).map(lambda d: json.dumps(d).encode()),
    JSON_VALUES.map(lambda v: json.dumps(v).encode())))
def test_any_event_body_is_read_or_dropped_never_raises(body):
    """Whatever arrives on the events channel, a receiver gets a list of event dicts (maybe
    empty): a garbled or hostile body never stops ``runner events`` or the dashboard."""
    from runner.events.receiver import decode

    events = decode(body)
    assert isinstance(events, list)
    assert all(isinstance(e, dict) and isinstance(e["type"], str) for e in events)

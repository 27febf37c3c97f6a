"""Property-based tests of message decoding: whatever bytes a broker hands a worker, decoding
gives a message whose every field has its type, or runner's own BadMessage; and what decodes
goes through the worker's handling (options, discard check, job, run) without an exception
escaping."""

from __future__ import annotations

import dataclasses
import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.message import BadMessage, Message, call_arguments
from runner.worker.trace import (
    acks_late_of,
    discard_reason,
    handle,
    rejects_on_worker_lost,
    time_limit_of,
)

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=4),
    max_leaves=12)

FIELDS = ["id", "task", "content_type", "queue", "priority", "eta", "expires", "retries",
          "root_id", "parent_id", "group_id", "headers", "options", "sent_at", "reply_to", "v"]
OPTIONS = ["acks_late", "ignore_result", "time_limit", "soft_time_limit", "result_serializer",
           "compression", "link", "link_error", "chain", "chord", "group_index",
           "step_retries", "something_new"]


def good_head(task: str = "tasks.add") -> dict:
    return {"id": "t-1", "task": task, "content_type": "application/json", "queue": "celery",
            "priority": None, "eta": None, "expires": None, "retries": 0, "root_id": None,
            "parent_id": None, "group_id": None, "headers": {}, "options": {},
            "sent_at": 1.0, "v": 1}


@st.composite
def envelopes(draw) -> dict:
    """A good envelope with a few fields (and options) replaced by any JSON value."""
    head = good_head(draw(st.sampled_from(["tasks.add", "tasks.echo", "tasks.nope"])))
    for name in draw(st.lists(st.sampled_from(FIELDS + ["extra_field"]), max_size=3)):
        head[name] = draw(json_values)
    if draw(st.booleans()):  # a pipeline step's headers, some of them of any type
        head["headers"] = {"pipeline_run": "run-1", "pipeline_step": "step"}
        for name in draw(st.lists(st.sampled_from(
                ["pipeline_run", "pipeline_step", "pipeline_index", "pipeline_attempt",
                 "pipeline_items"]), max_size=2)):
            head["headers"][name] = draw(json_values)
    if draw(st.booleans()) and isinstance(head.get("options"), dict):
        for name in draw(st.lists(st.sampled_from(OPTIONS), min_size=1, max_size=3)):
            head["options"][name] = draw(json_values)
    return head


def check_types(message: Message) -> None:
    """What the rest of runner relies on, field by field."""
    for name in ("id", "task", "content_type", "queue"):
        assert type(getattr(message, name)) is str and getattr(message, name)
    for name in ("root_id", "parent_id", "group_id", "reply_to"):
        assert getattr(message, name) is None or type(getattr(message, name)) is str
    assert message.priority is None or type(message.priority) is int
    for name in ("eta", "expires", "sent_at"):
        value = getattr(message, name)
        assert value is None or (type(value) in (int, float) and math.isfinite(value))
    assert type(message.retries) is int and message.retries >= 0
    assert type(message.headers) is dict and type(message.options) is dict
    if "pipeline_run" in message.headers:
        assert type(message.headers["pipeline_run"]) is str
        assert type(message.headers["pipeline_step"]) is str
        for name in ("pipeline_index", "pipeline_attempt", "pipeline_items"):
            assert message.headers.get(name) is None or type(message.headers[name]) is int
    for name in ("time_limit", "soft_time_limit"):
        value = message.options.get(name)
        assert value is None or (type(value) in (int, float) and value > 0)


@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes_decode_to_a_checked_message_or_a_bad_message(raw):
    try:
        message = Message.decode(raw)
    except BadMessage:
        return
    check_types(message)


@FUZZ
@given(envelopes(), st.binary(max_size=40))
def test_any_envelope_decodes_to_a_checked_message_or_a_bad_message(head, payload):
    raw = json.dumps(head).encode() + b"\n" + payload
    try:
        message = Message.decode(raw)
    except BadMessage as exc:
        if isinstance(head.get("id"), str) and 0 < len(head["id"]) <= 255:
            assert exc.task_id == head["id"]  # its FAILURE can be stored under it
        return
    check_types(message)
    again = Message.decode(message.encode())
    if not message.sent_at:  # (0: "not stamped", so sending stamps it now)
        assert again.sent_at > 0
        message = dataclasses.replace(message, sent_at=again.sent_at)
    assert again == message  # unknown fields kept, re-sent as is


@FUZZ
@given(envelopes(), json_values)
def test_what_decodes_goes_through_the_worker_without_an_exception(app, head, arguments):
    """The worker's look-ups and the run itself never raise for a decoded message: a bad
    payload, an unknown task, an unaccepted content type are a refused FAILURE result."""
    raw = json.dumps(head).encode() + b"\n" + json.dumps(arguments).encode()
    try:
        message = Message.decode(raw)
    except BadMessage:
        return
    acks_late_of(app, message), rejects_on_worker_lost(app, message)
    time_limit_of(app, message), discard_reason(message, False, 0.0)
    result = handle(app, 1, message, "fuzz@host", frozenset({"application/json"}), {})
    assert result.state in ("SUCCESS", "FAILURE")
    try:
        call_arguments(arguments)
    except BadMessage:
        assert result.refused and result.state == "FAILURE"


def test_a_message_never_stamped_is_stamped_when_sent_again():
    """(Found by the envelope fuzz: ``sent_at: 0`` means "not stamped"; sending stamps it.)"""
    head = {"id": "t-1", "task": "tasks.add", "content_type": "application/json",
            "sent_at": 0, "v": 1}
    message = Message.decode(json.dumps(head).encode() + b"\n[]")
    assert message.sent_at == 0
    assert Message.decode(message.encode()).sent_at > 0

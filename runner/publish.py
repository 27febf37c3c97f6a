"""Handing task messages to the broker, with Celery's ``before_task_publish`` and
``after_task_publish`` signals around it, in the sending process (sender: the task name).

What receivers get, as Celery's task protocol 2 has it:
- ``headers``: ``lang``, ``task``, ``id``, ``root_id``, ``parent_id``, ``group``,
  ``group_index``, ``retries``, ``eta``, ``expires`` (ISO 8601 or None), ``timelimit``
  (``[hard, soft]``), ``ignore_result``, ``origin``, then the caller's own ``headers=``. Keys a
  ``before_task_publish`` receiver adds (tracing context, ...) travel with the message and are
  in the task's ``self.request.headers``.
- ``body``: ``(args, kwargs, {"callbacks", "errbacks", "chain", "chord"})``, decoded from the
  message; changing it changes nothing sent.
- ``exchange`` ``""`` and ``routing_key`` the queue's name (runner routes to queues by name);
  ``properties``: ``correlation_id``, ``reply_to``, ``priority``, ``content_type``,
  ``content_encoding``; ``declare`` ``[]`` (runner declares its queues itself);
  ``retry_policy`` None.
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime
from typing import Any

from runner import serialization
from runner.message import Message
from runner.signals import after_task_publish, before_task_publish

_STANDARD = frozenset({"lang", "task", "id", "root_id", "parent_id", "group", "group_index",
                       "retries", "eta", "expires", "timelimit", "ignore_result", "origin"})


def publish(broker: Any, messages: list[Message]) -> None:
    """``broker.enqueue(messages)``, sending the publish signals for each where connected."""
    if not (before_task_publish.receivers or after_task_publish.receivers):
        broker.enqueue(messages)
        return
    described = [(_headers(m), _body(m)) for m in messages]
    if before_task_publish.receivers:
        for message, (headers, body) in zip(messages, described, strict=True):
            before_task_publish.send(
                sender=message.task, body=body, exchange="", routing_key=message.queue,
                headers=headers, properties=_properties(message), declare=[],
                retry_policy=None)
            for key, value in headers.items():  # what receivers added goes with the message
                if key not in _STANDARD:
                    message.headers[key] = value
    broker.enqueue(messages)
    if after_task_publish.receivers:
        for message, (headers, body) in zip(messages, described, strict=True):
            after_task_publish.send(sender=message.task, body=body, exchange="",
                                    routing_key=message.queue, headers=headers)


def _iso(when: float | None) -> str | None:
    return datetime.fromtimestamp(when, UTC).isoformat() if when is not None else None


def _headers(message: Message) -> dict[str, Any]:
    options = message.options
    return {
        "lang": "py", "task": message.task, "id": message.id, "root_id": message.root_id,
        "parent_id": message.parent_id, "group": message.group_id,
        "group_index": options.get("group_index"), "retries": message.retries,
        "eta": _iso(message.eta), "expires": _iso(message.expires),
        "timelimit": [options.get("time_limit"), options.get("soft_time_limit")],
        "ignore_result": bool(options.get("ignore_result")),
        "origin": f"{os.getpid()}@{socket.gethostname()}",
        **message.headers,
    }


def _body(message: Message) -> tuple:
    try:
        payload = serialization.decompress(message.payload, message.options.get("compression"))
        args, kwargs = serialization.loads(payload, message.content_type)
    except Exception:  # noqa: BLE001 - (what the caller sent, it can read: never here)
        args, kwargs = None, None
    options = message.options
    return (args, kwargs, {"callbacks": options.get("link"),
                           "errbacks": options.get("link_error"),
                           "chain": options.get("chain"), "chord": options.get("chord")})


def _properties(message: Message) -> dict[str, Any]:
    binary = message.content_type not in ("application/json", "application/x-yaml")
    return {"correlation_id": message.id, "reply_to": message.reply_to or "",
            "priority": message.priority, "content_type": message.content_type,
            "content_encoding": "binary" if binary else "utf-8"}

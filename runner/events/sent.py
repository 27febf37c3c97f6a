"""``task-sent`` events (``task_send_sent_event``), from the process that publishes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from runner import serialization
from runner.events.dispatcher import safe_repr

if TYPE_CHECKING:  # pragma: no cover
    from runner.app import Runner
    from runner.message import Message


def _arguments(app: Runner, message: Message) -> tuple[str | None, str | None]:
    try:
        payload = serialization.decompress(message.payload, message.options.get("compression"))
        body = serialization.loads(payload, message.content_type,
                                   serialization.accept_set(app.conf.accept_content))
        args, kwargs = (body[0], body[1]) if isinstance(body, list | tuple) else (body, {})
        return safe_repr(list(args)), safe_repr(kwargs)
    except Exception:  # noqa: BLE001 - the event goes without them
        return None, None


def announce_sent(app: Runner, messages: list[Message]) -> None:
    dispatcher = app.events.default()
    for message in messages:
        args, kwargs = _arguments(app, message)
        dispatcher.send("task-sent", uuid=message.id, name=message.task, args=args,
                        kwargs=kwargs, retries=message.retries, eta=message.eta,
                        expires=message.expires, queue=message.queue, exchange="",
                        routing_key=message.queue, root_id=message.root_id,
                        parent_id=message.parent_id)
    dispatcher.flush(wait=False)  # (out before the worker's events of the task, as Celery's)

"""Celery's built-in tasks that canvases send (``celery.map``, ``celery.starmap``,
``celery.accumulate``), and ``Task.replace``."""

from __future__ import annotations

from typing import Any

from runner.canvas.chord import chord
from runner.canvas.primitives import chain, group
from runner.canvas.signature import Signature, maybe_signature
from runner.exceptions import Ignore, RunnerError


def register_builtins(app: Any) -> None:
    """Add the built-in tasks to ``app`` (every worker knows them, as Celery's)."""

    def xmap(task: dict, it: list) -> list:
        sig = maybe_signature(task, app=app)
        return [sig.type(item) for item in it]

    def xstarmap(task: dict, it: list) -> list:
        sig = maybe_signature(task, app=app)
        return [sig.type(*item) for item in it]

    def accumulate(*args: Any, index: int | None = None) -> Any:
        return args[index] if index is not None else list(args)

    for name, fun in (("celery.map", xmap), ("celery.starmap", xstarmap),
                      ("celery.accumulate", accumulate)):
        if name not in app.tasks:
            app.task(name=name)(fun)


def replace_task(task: Any, sig: Any) -> Any:
    """``self.replace(sig)`` in a running task: ``sig`` takes the task's place. Its final
    result gets the task's id (results already handed out stay valid), and the task's
    chain, chord membership, links and errbacks move to it; the task itself stores no result
    (Celery's ``Ignore``). Run eagerly, the replacement's value is returned."""
    request = task.request
    sig = task.on_replace(maybe_signature(sig, app=task.app))
    if not isinstance(sig, Signature):
        raise RunnerError(f"{task.name}.replace(): expected a signature, not {sig!r}")
    sig = sig.clone()
    if isinstance(sig, chain) and not sig.tasks:
        raise RunnerError(f"{task.name}.replace(): cannot replace with an empty chain")
    if isinstance(sig, group):  # reported as one value: a chord joining the group's
        sig = chord(sig, None, app=task.app)
    options = request.options or {}
    for errback in options.get("link_error") or ():
        sig.link_error(errback)
    if request.is_eager or request.called_directly:
        return sig.apply().get()
    sig.freeze(request.id)  # (first: the tail must not move the id to a later step)
    tail = {key: options[key] for key in ("chain", "chord", "link") if options.get(key)}
    if request.group:
        tail.update(group_id=request.group, group_index=options.get("group_index"))
    if tail:
        sig = sig._attach(tail)
    sig.apply_async(parent_id=request.id, root_id=request.root_id or request.id,
                    reply_to=request.reply_to)
    raise Ignore("Replaced by new task")

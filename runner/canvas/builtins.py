"""Celery's built-in tasks that canvases send (``celery.map``, ``celery.starmap``,
``celery.accumulate``), and ``Task.replace``."""

from __future__ import annotations

from typing import Any

from runner.canvas.chord import chord
from runner.canvas.primitives import chain, group
from runner.canvas.signature import Signature, ids_from, maybe_signature
from runner.exceptions import Ignore, RunnerError

BUILTIN_TASKS = frozenset({"celery.map", "celery.starmap", "celery.accumulate", "celery.chain",
                           "celery.group", "celery.chord", "runner.chain", "runner.group",
                           "runner.chord"})


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

    # A canvas sent as a task (a producer before runner 17 sent nested canvases so, as Celery
    # can): the task replaces itself with the canvas, its arguments going to the first tasks.
    def run_chain(self: Any, *args: Any, tasks: list, **_: Any) -> Any:
        steps = [maybe_signature(t, app=app).clone() for t in tasks]
        steps[0] = steps[0].clone(args)
        return self.replace(chain(steps, app=app))

    def run_group(self: Any, *args: Any, tasks: list, **_: Any) -> Any:
        return self.replace(group([maybe_signature(t, app=app).clone(args) for t in tasks],
                                  app=app))

    def run_chord(self: Any, *args: Any, header: list, body: dict | None = None,
                  **_: Any) -> Any:
        parts = [maybe_signature(t, app=app).clone(args) for t in header]
        return self.replace(chord(parts, maybe_signature(body, app=app), app=app))

    for prefix in ("celery", "runner"):
        for kind, fun in (("chain", run_chain), ("group", run_group), ("chord", run_chord)):
            if f"{prefix}.{kind}" not in app.tasks:
                app.task(name=f"{prefix}.{kind}", bind=True, typing=False)(fun)


def replace_task(task: Any, sig: Any) -> Any:
    """``self.replace(sig)`` in a running task: ``sig`` takes the task's place. Its final
    result gets the task's id (results already handed out stay valid), and the task's
    chain, chord membership, links and errbacks move to it; the task itself stores no result
    (Celery's ``Ignore``). Run eagerly, the replacement's value is returned.

    A worker that dies after sending the replacement, before its ack: the redelivered task
    finds the replacement marked sent and does not send it again (the replacement runs once).
    Dying between the send and the mark sends it twice, with the same ids (derived from the
    task's id): each of its tasks stores one result."""
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
    with ids_from(request.id):  # run again (redelivered), the replacement has the same ids
        sig.freeze(request.id)  # (first: the tail must not move the id to a later step)
    tail = {key: options[key] for key in ("chain", "chord", "link") if options.get(key)}
    if request.group:
        tail.update(group_id=request.group, group_index=options.get("group_index"))
    if tail:
        sig = sig._attach(tail)
    backend, marker = task.app.backend, f"replaced:{request.id}"
    if request.delivery_info.get("redelivered") and backend.get_data(marker):
        raise Ignore("Replaced by new task (sent before this redelivery)")
    sig.apply_async(parent_id=request.id, root_id=request.root_id or request.id,
                    reply_to=request.reply_to)
    backend.put_data(marker, b"1")
    raise Ignore("Replaced by new task")

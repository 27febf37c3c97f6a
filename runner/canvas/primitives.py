"""The canvas primitives chain and group (chord in ``runner.canvas.chord``, chunks / xmap /
xstarmap in ``runner.canvas.maps``), with Celery's semantics, any of them inside any other (see
``runner.canvas.signature`` for how a canvas is frozen, given its tail and turned into
messages).

- ``chain(a, b, c)`` / ``a | b | c``: each result is prepended to the next task's args (unless
  it is immutable, ``.si()``); a failure stops the chain and is stored as the result of every
  later step. A group followed by anything in a chain is a chord; a chain ending in a group
  returns that group's :class:`GroupResult`.
- ``group(...)`` sends every task in one round trip; nested groups are flattened, as Celery
  does; a group that must report as one value (a chain step, a chord header part) becomes a
  chord whose "body" joins the values into a list.
- ``chord(header, body)``: the body gets the header's results, in header order, once every
  part has finished, counted in the result backend as a set of finished parts (see
  ``runner.canvas.flow``). A header may be a generator: it is consumed as it is sent.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from runner.canvas.signature import (
    KINDS,
    Signature,
    maybe_signature,
    merge_options,
    new_id,
    split_tail,
)
from runner.exceptions import RunnerError
from runner.message import Message
from runner.result import GroupResult


def _app_of(tasks: Iterable[Any]) -> Any:
    return next((t._app for t in tasks if getattr(t, "_app", None)), None)


def _own_options(sig: Signature, options: dict) -> dict:
    """The canvas's own options (its id and tail aside) with the call's on top."""
    own = {k: v for k, v in sig["options"].items() if k != "task_id"}
    own = split_tail(own)[1]
    return merge_options(own, options)


def _prepared(sig: Signature, options: dict) -> tuple[Signature, dict]:
    """The tail options of a call attached to ``sig`` (which may become another canvas: a
    group that must report as one value becomes a chord), and the call's other options."""
    tail, options = split_tail(options)
    own_tail = split_tail(sig["options"])[0]
    if own_tail:
        for key in own_tail:
            sig["options"].pop(key, None)
        sig = sig._attach(own_tail)
    if tail:
        sig = sig._attach(tail)
    return sig, options


class chain(Signature):  # noqa: N801 - Celery's name
    """Tasks run one after the other, each getting the previous result."""

    def __init__(self, *tasks: Any, app: Any = None, **options: Any):
        if len(tasks) == 1 and not isinstance(tasks[0], dict):
            tasks = tuple(tasks[0])
        flat: list[Signature] = []
        for task in tasks:
            task = maybe_signature(task, app=app)
            if isinstance(task, chain) and not task.options:
                flat += [t.clone() for t in task.tasks]
            else:
                flat.append(task.clone())
        super().__init__("celery.chain", (), {}, options, subtask_type="chain",
                         app=app or _app_of(flat))
        self["kwargs"] = {"tasks": flat}

    def _wrap(self) -> None:
        self["kwargs"]["tasks"] = [maybe_signature(t, app=self._app)
                                   for t in self["kwargs"]["tasks"]]

    @property
    def tasks(self) -> list[Signature]:
        return self["kwargs"]["tasks"]

    def __repr__(self) -> str:
        return " | ".join(map(repr, self.tasks)) if self.tasks else "chain()"

    def __or__(self, other: Any) -> Any:
        if isinstance(other, chain) and not other.options:
            return chain(*self.tasks, *other.tasks, app=self._app, **self.options)
        if isinstance(other, Signature):
            return chain(*self.tasks, other, app=self._app, **self.options)
        return NotImplemented

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def _steps(self) -> list[Signature]:
        """The steps as they run: chunks as groups, ``group | x`` as chords (in place)."""
        out: list[Signature] = []
        for task in self.tasks:
            if isinstance(task, KINDS["chunks"]):
                task = task.group()
            if out and isinstance(out[-1], group):
                out.append(KINDS["chord"](out.pop(), task, app=self._app))
            else:
                out.append(task)
        self["kwargs"]["tasks"] = out
        return out

    def freeze(self, _id: str | None = None, group_id: str | None = None,
               chord: dict | None = None, root_id: str | None = None,
               parent_id: str | None = None, group_index: int | None = None) -> Any:
        """Fix every step's id; the result is the last step's, its ``parent`` the one before
        (and so on), as Celery's."""
        steps = self._steps()
        if not steps:
            raise RunnerError("an empty chain has nothing to run")
        parent = None
        for index, step in enumerate(steps):
            last = index == len(steps) - 1
            result = step.freeze(_id if last else None)
            if parent is not None:
                _set_parent(result, parent)
            parent = result
        return parent

    def _attach(self, tail: dict) -> Signature:
        steps = self._steps()
        steps[-1] = steps[-1]._attach(tail)
        return self

    def _result_ids(self) -> list[str]:
        return [i for step in self.tasks for i in step._result_ids()]

    def _finals(self) -> list[dict]:
        return self.tasks[-1]._finals()

    def link(self, callback: dict) -> dict:
        self._steps()[-1].link(callback)
        return callback

    def link_error(self, errback: dict) -> dict:
        for step in self._steps():
            step.link_error(errback)
        return errback

    def _messages(self, args: Iterable | None, kwargs: dict | None,
                  options: dict) -> list[Message]:
        sig, options = _prepared(self, options)
        if not isinstance(sig, chain):
            return sig._messages(args, kwargs, options)
        own = _own_options(sig, options)
        errbacks = own.pop("link_error", None)
        steps = sig._steps()
        for errback in errbacks or ():
            for step in steps:
                step.link_error(errback)
        first = steps[0]
        if len(steps) > 1:
            first = first._attach({"chain": steps[1:]})
        return first._messages(args, kwargs, own)

    def apply(self, args: Iterable | None = None, kwargs: dict | None = None,
              **options: Any) -> Any:
        """Each step here, in turn (eager); a failed step's error is raised when the next
        one would get its value, as Celery's."""
        steps = self.clone()._steps()
        result = steps[0].apply(args, kwargs, **options)
        for step in steps[1:]:
            parent, result = result, step.apply((result.get(disable_sync_subtasks=False),))
            _set_parent(result, parent)
        return result


class group(Signature):  # noqa: N801 - Celery's name
    """Tasks run in parallel; ``apply_async`` sends them all in one round trip."""

    def __init__(self, *tasks: Any, app: Any = None, **options: Any):
        if len(tasks) == 1 and not isinstance(tasks[0], dict):
            tasks = tuple(tasks[0])
        members = [maybe_signature(t, app=app).clone() for t in tasks]
        super().__init__("celery.group", (), {}, options, subtask_type="group",
                         app=app or _app_of(members))
        self["kwargs"] = {"tasks": _flatten(members)}

    def _wrap(self) -> None:
        self["kwargs"]["tasks"] = [maybe_signature(t, app=self._app)
                                   for t in self["kwargs"]["tasks"]]

    @property
    def tasks(self) -> list[Signature]:
        return self["kwargs"]["tasks"]

    def __len__(self) -> int:  # type: ignore[override]
        return len(self.tasks)

    def __bool__(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"group([{', '.join(map(repr, self.tasks))}])"

    def __or__(self, other: Any) -> Any:
        if isinstance(other, (chain, group)):  # noqa: UP038
            return chain(self, other, app=self._app)
        if isinstance(other, Signature):
            return KINDS["chord"](self, other, app=self._app)
        return NotImplemented

    def __call__(self, *args: Any, **options: Any) -> Any:
        return self.apply_async(args, **options)

    def skew(self, start: float = 1.0, stop: float | None = None,
             step: float = 1.0) -> group:
        """Spread the tasks out in time: countdowns start, start+step, ..."""
        for index, task in enumerate(self.tasks):
            countdown = start + index * step
            task.set(countdown=countdown if stop is None else min(countdown, stop))
        return self

    def freeze(self, _id: str | None = None, group_id: str | None = None,
               chord: dict | None = None, root_id: str | None = None,
               parent_id: str | None = None, group_index: int | None = None) -> GroupResult:
        options = self["options"]
        if _id is not None:
            options["task_id"] = _id
        group_id = options.setdefault("task_id", new_id())
        return GroupResult(group_id, [t.freeze() for t in self.tasks], app=self.app)

    def _attach(self, tail: dict) -> Signature:
        if tail.get("chain") or tail.get("chord") or tail.get("group_id"):
            return KINDS["chord"](self, None, app=self._app, header_id=self.id)._attach(tail)
        if tail.get("link"):  # as Celery: to the first task, immutable
            for link in tail["link"]:
                self.tasks[0].link(maybe_signature(link, app=self._app).clone(immutable=True))
        return self

    def _result_ids(self) -> list[str]:
        return [i for t in self.tasks for i in t._result_ids()]

    def _finals(self) -> list[dict]:
        return [f for t in self.tasks for f in t._finals()]

    def set_immutable(self, immutable: bool) -> None:
        for task in self.tasks:
            task.set_immutable(immutable)

    def link(self, callback: dict) -> dict:
        self._attach({"link": [callback]})
        return callback

    def link_error(self, errback: dict) -> dict:
        for task in self.tasks:
            task.link_error(maybe_signature(errback, app=self._app).clone())
        return errback

    def _messages(self, args: Iterable | None, kwargs: dict | None,
                  options: dict) -> list[Message]:
        sig, options = _prepared(self, options)
        if not isinstance(sig, group):
            return sig._messages(args, kwargs, options)
        own, group_id = _own_options(sig, options), sig.id
        errbacks = own.pop("link_error", None)
        messages: list[Message] = []
        for index, task in enumerate(sig.tasks):
            for errback in errbacks or ():
                task.link_error(errback)
            if not task["options"].get("group_id"):
                task = task._attach({"group_id": group_id, "group_index": index})
            messages += task._messages(args, kwargs, own)
        return messages

    def apply_async(self, args: Iterable | None = None, kwargs: dict | None = None,
                    **options: Any) -> Any:
        group_id = options.pop("group_id", None)  # (Celery's name for the group's own id)
        sig = self.clone()
        if group_id and not sig.id:
            sig["options"]["task_id"] = group_id
        return Signature.apply_async(sig, args, kwargs, **options)

    def apply(self, args: Iterable | None = None, kwargs: dict | None = None,
              **options: Any) -> GroupResult:
        sig = self.clone()
        result = sig.freeze()
        return GroupResult(result.id, [t.apply(args, kwargs, **{**options, "task_id": r.id})
                                       for t, r in zip(sig.tasks, result.results, strict=True)],
                           app=self.app)


def _flatten(members: list[Signature]) -> list[Signature]:
    """Nested groups (without options of their own) unrolled, as Celery does."""
    flat: list[Signature] = []
    for member in members:
        if isinstance(member, group) and not split_tail(member.options)[1]:
            flat += _flatten(member.tasks)
        elif isinstance(member, KINDS["chunks"]):
            flat += member.group().tasks
        else:
            flat.append(member)
    return flat


def _set_parent(result: Any, parent: Any) -> None:
    """Link ``result`` to the one before it; a chord's result to its header's group first."""
    node = result
    while getattr(node, "parent", None) is not None and node.parent is not parent:
        node = node.parent
    if node is not parent:
        node.parent = parent

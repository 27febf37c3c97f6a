"""Signature: one task call as data, and what every canvas shares (cloning, freezing, options).

A signature is a dict (task, args, kwargs, options, immutable, subtask_type), so it travels
inside a message as JSON and comes back as the same class (:meth:`Signature.from_dict`).

How a canvas is sent: it is cloned, its ids are fixed (:meth:`freeze`, which returns the result
the caller gets), then :meth:`_messages` turns it into the task messages to publish now. What
must happen when a part finishes travels in the options of its *final* task(s), the "tail"
(:data:`TAIL`): the later steps of a chain (``chain``), the chord a task is a header part of
(``chord``, ``group_id``, ``group_index``) and ``link`` callbacks. :meth:`_attach` pushes a
tail down a canvas to where it belongs (a chain's last step, a chord's body); so any canvas can
sit inside any other, and the worker moves each forward with the same few options
(see ``runner.canvas.flow``).
"""

from __future__ import annotations

import copy
import inspect
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from runner import _state
from runner.exceptions import RunnerError
from runner.message import Message
from runner.result import AsyncResult
from runner.task import _requests

#: options that belong to the final task(s) of a canvas, not to every task in it
TAIL = ("chain", "chord", "group_id", "group_index", "link")
#: options holding lists of signatures: merged by extending, not replacing
LISTS = ("link", "link_error", "chain")
#: subtask_type -> class, for rebuilding signatures from their dicts
KINDS: dict[str, type] = {}


class _Ids(threading.local):
    seed: str | None = None
    count = 0


_ids = _Ids()


def new_id() -> str:
    """A new task id; inside :func:`ids_from` the same seed gives the same ids, in order."""
    if _ids.seed is None:
        return Message.new_id()
    _ids.count += 1
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"runner:{_ids.seed}:{_ids.count}"))


@contextmanager
def ids_from(seed: str) -> Iterator[None]:
    """Ids made by freezing in this block are derived from ``seed``: a task that builds the
    same canvas again (it ran twice) gets the same ids, so its results are the same."""
    previous = _ids.seed, _ids.count
    _ids.seed, _ids.count = seed, 0
    try:
        yield
    finally:
        _ids.seed, _ids.count = previous


class ChordError(RunnerError):
    """A task of a chord's header failed, so its body cannot run."""


def merge_options(into: dict, extra: dict) -> dict:
    """``into`` updated with ``extra``: lists of signatures extended, the rest replaced."""
    for key, value in extra.items():
        if key in LISTS and into.get(key) and value:
            new = [value] if isinstance(value, dict) else list(value)
            old = into[key] if isinstance(into[key], list) else [into[key]]
            into[key] = [*old, *(dict(v) for v in new)]
        elif key in ("link", "link_error") and isinstance(value, dict):
            into[key] = [dict(value)]
        else:
            into[key] = value
    return into


def split_tail(options: dict) -> tuple[dict, dict]:
    """(the tail options, the others), see :data:`TAIL`."""
    tail = {k: v for k, v in options.items() if k in TAIL and v is not None}
    rest = {k: v for k, v in options.items() if k not in TAIL}
    return tail, rest


class Signature(dict):
    """A task call described as data: ``add.s(2, 2)``, ``signature('tasks.add', (2, 2))``."""

    def __init__(self, task: Any = None, args: Iterable | None = None,
                 kwargs: dict | None = None, options: dict | None = None,
                 immutable: bool = False, subtask_type: str | None = None, app: Any = None,
                 **extra: Any):
        if isinstance(task, dict):  # rebuilding from a message
            super().__init__(copy.deepcopy(dict(task)))
        else:
            super().__init__(task=getattr(task, "name", task), args=list(args or ()),
                             kwargs=dict(kwargs or {}), options=dict(options or {}, **extra),
                             immutable=bool(immutable), subtask_type=subtask_type)
        self._app = app or getattr(task, "app", None) or getattr(task, "_app", None)

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        KINDS[cls.__name__] = cls

    # -- fields (readable and writable, as Celery's) --------------------------------------------

    @property
    def app(self) -> Any:
        return self._app or _state.current_app()

    def _field(name: str) -> property:  # noqa: N805 - a property factory
        return property(lambda self: self[name],
                        lambda self, value: self.__setitem__(name, value))

    task = _field("task")
    options = _field("options")
    subtask_type = _field("subtask_type")

    @property
    def args(self) -> tuple:
        return tuple(self["args"])

    @args.setter
    def args(self, value: Iterable) -> None:
        self["args"] = list(value)

    @property
    def kwargs(self) -> dict:
        return self["kwargs"]

    @kwargs.setter
    def kwargs(self, value: dict) -> None:
        self["kwargs"] = dict(value)

    @property
    def immutable(self) -> bool:
        return self["immutable"]

    @immutable.setter
    def immutable(self, value: bool) -> None:
        self["immutable"] = bool(value)

    name = task

    @property
    def id(self) -> str | None:
        return self["options"].get("task_id")

    @property
    def type(self) -> Any:
        """The task this signature calls (as registered in its app)."""
        return self.app.tasks.get(self.task) or self.app.get_task(self.task)

    @property
    def AsyncResult(self) -> Any:  # noqa: N802 - Celery's name
        return lambda task_id: AsyncResult(task_id, app=self.app, task_name=self.task)

    def __repr__(self) -> str:
        return self.reprcall(*self["args"], **self["kwargs"])

    def reprcall(self, *args: Any, **kwargs: Any) -> str:
        call = ", ".join([*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items())])
        return f"{self.task}({call}){'!' if self.immutable else ''}"

    def __deepcopy__(self, memo: dict) -> Signature:
        return self.from_dict(copy.deepcopy(dict(self), memo), app=self._app)

    def __reduce__(self) -> tuple:
        return signature, (dict(self),)

    # -- building -----------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: dict, app: Any = None) -> Signature:
        """The signature (or chain, group, chord, ...) a dict describes, as its own class."""
        target = KINDS.get(data.get("subtask_type") or "", Signature)
        sig = dict.__new__(target)
        dict.__init__(sig, data)
        sig._app = app
        sig._wrap()
        return sig

    def _wrap(self) -> None:
        """Make the signatures a container holds (as dicts) Signatures again."""

    def clone(self, args: Iterable | None = None, kwargs: dict | None = None,
              **options: Any) -> Signature:
        """A deep copy with ``args`` prepended (unless immutable), kwargs and options merged;
        ``immutable=`` sets the flag of the copy."""
        sig = self.__deepcopy__({})
        immutable = options.pop("immutable", None)
        if not sig.immutable:
            sig["args"] = [*(args or ()), *sig["args"]]
            sig["kwargs"] = {**sig["kwargs"], **(kwargs or {})}
        merge_options(sig["options"], options)
        if immutable is not None:
            sig.set_immutable(immutable)
        return sig

    def replace(self, args: Iterable | None = None, kwargs: dict | None = None,
                options: dict | None = None) -> Signature:
        """A copy with args, kwargs or options replaced (not merged)."""
        sig = self.__deepcopy__({})
        if args is not None:
            sig["args"] = list(args)
        if kwargs is not None:
            sig["kwargs"] = dict(kwargs)
        if options is not None:
            sig["options"] = dict(options)
        return sig

    def set(self, immutable: bool | None = None, **options: Any) -> Signature:
        """Set options (queue, countdown, ...) in place; returns the signature."""
        if immutable is not None:
            self.set_immutable(immutable)
        merge_options(self["options"], options)
        return self

    def set_immutable(self, immutable: bool) -> None:
        self["immutable"] = bool(immutable)

    def link(self, callback: dict) -> dict:
        """Run ``callback`` with this task's result once it succeeded."""
        merge_options(self["options"], {"link": [dict(callback)]})
        return callback

    def link_error(self, errback: dict) -> dict:
        """Call ``errback`` if this task fails: with ``(request, exc, traceback)`` for a task
        taking more than one argument, else as a task with the failed task's id."""
        merge_options(self["options"], {"link_error": [dict(errback)]})
        return errback

    def on_error(self, errback: dict) -> Signature:
        """:meth:`link_error`, returning the signature itself (for chaining calls)."""
        self.link_error(errback)
        return self

    def flatten_links(self) -> list[Signature]:
        """This signature and every callback linked to it, depth first."""
        found = [self]
        for link in self["options"].get("link") or ():
            found += maybe_signature(link, app=self._app).flatten_links()
        return found

    def freeze(self, _id: str | None = None, group_id: str | None = None,
               chord: dict | None = None, root_id: str | None = None,
               parent_id: str | None = None, group_index: int | None = None) -> Any:
        """Fix the task id now (``_id`` or a new one, kept if already set), so the result is
        known before sending."""
        options = self["options"]
        if _id is not None:
            options["task_id"] = _id
        options.setdefault("task_id", new_id())
        for key, value in (("group_id", group_id), ("chord", chord), ("root_id", root_id),
                           ("parent_id", parent_id), ("group_index", group_index)):
            if value is not None:
                options[key] = value
        return AsyncResult(self.id, app=self.app, task_name=self.task)

    def _attach(self, tail: dict) -> Signature:
        """This signature with ``tail`` in the options of its final task(s) (see module)."""
        merge_options(self["options"], tail)
        return self

    def _result_ids(self) -> list[str]:
        """Every result id this signature will have (frozen), for storing a failure."""
        return [self.id] if self.id else []

    def _finals(self) -> list[dict]:
        """The options of the final task(s): where the tail is."""
        return [self["options"]]

    def __or__(self, other: Any) -> Any:
        chain = KINDS["chain"]
        if isinstance(other, chain):
            return chain(self, *other.tasks, app=self._app)
        if isinstance(other, Signature):
            return chain(self, other, app=self._app)
        return NotImplemented

    def __ior__(self, other: Any) -> Any:
        return self | other

    def _kind(self, name: str, *args: Any) -> Any:
        """``task.map`` / ``starmap`` / ``chunks`` (Task cannot import the canvas)."""
        return KINDS[name](self, *args, app=self._app)

    def _replace_task(self, task: Any) -> Any:
        from runner.canvas.builtins import replace_task

        return replace_task(task, self)

    def __invert__(self) -> Any:
        return self.apply_async().get()

    # -- stamping -------------------------------------------------------------------------------

    def stamp(self, visitor: Any = None, append_stamps: bool = False, **headers: Any) -> None:
        """Add stamps (headers that travel with every task of the canvas, readable in
        ``self.request.stamps`` and usable with ``revoke_by_stamped_headers``)."""
        from runner.canvas.stamping import stamp

        stamp(self, visitor, append_stamps, headers)

    # -- sending --------------------------------------------------------------------------------

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def apply_async(self, args: Iterable | None = None, kwargs: dict | None = None,
                    **options: Any) -> Any:
        """Send the task (or the whole canvas); returns its result, as Celery's."""
        app = self.app
        if app.conf.task_always_eager:
            return self.apply(args, kwargs, **options)
        if type(self) is Signature and not any(k in options for k in TAIL):
            sig = self.clone(args, kwargs, **options)
            result = sig.app.send_task(sig.task, sig["args"], sig["kwargs"], **sig["options"])
            _add_to_parent(result)
            return result
        sig = self.clone()
        tail, options = split_tail({k: v for k, v in options.items() if v is not None})
        if tail:
            sig = sig._attach(tail)
        result = sig.freeze(options.pop("task_id", None))  # a canvas's: its final result's
        app.publish(sig._messages(args, kwargs, options))
        _add_to_parent(result)
        return result

    def _messages(self, args: Iterable | None, kwargs: dict | None,
                  options: dict) -> list[Message]:
        """The messages to publish now to start this signature (frozen first)."""
        sig = self.clone(args, kwargs, **options)
        return [sig.app.build_message(sig.task, sig["args"], sig["kwargs"], **sig["options"])]

    def apply(self, args: Iterable | None = None, kwargs: dict | None = None,
              **options: Any) -> Any:
        """Run here and now (eager), links included."""
        sig = self.clone(args, kwargs, **options)
        return sig.app.get_task(sig.task).apply(sig["args"], sig["kwargs"], **sig["options"])

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        sig = self.clone(args, kwargs)
        return sig.type(*sig["args"], **sig["kwargs"])


def _add_to_parent(result: Any) -> None:
    """A result sent from inside a running task is one of its children (Celery's
    ``AsyncResult.children``, stored with the task's result)."""
    stack = _requests.stack
    if stack and not stack[-1].called_directly:
        stack[-1].children.append(result)


def signature(varies: Any, *args: Any, **kwargs: Any) -> Signature:
    """``signature('tasks.add', args=(2, 2))``, or a Signature rebuilt from its dict (bound
    to ``app=``, else to the current app when it is sent)."""
    if isinstance(varies, dict):
        if isinstance(varies, Signature):
            return varies.clone()
        return Signature.from_dict(copy.deepcopy(varies), app=kwargs.get("app"))
    return Signature(varies, *args, **kwargs)


def maybe_signature(value: Any, app: Any = None, clone: bool = False) -> Any:
    """A Signature from a dict (a signature kept as is unless ``clone``); None stays None."""
    if value is None:
        return None
    if isinstance(value, Signature):
        sig = value.clone() if clone else value
    elif isinstance(value, dict):
        sig = Signature.from_dict(copy.deepcopy(value) if clone else value, app=app)
    else:
        return value
    if app is not None and sig._app is None:
        sig._app = app
    return sig


def takes_request(sig: Signature) -> bool:
    """Whether an errback takes Celery's ``(request, exc, traceback)`` (more than one
    argument left to fill), rather than the old-style failed task id."""
    task = sig.app.tasks.get(sig.task)
    if task is None:
        return False
    try:
        params = list(inspect.signature(task.run).parameters.values())
    except (TypeError, ValueError):
        return False
    if task.bind:
        params = params[1:]
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    bound = 0 if sig.immutable else len(sig["args"])  # (as Celery: an immutable one, all)
    return len(positional) - bound > 1

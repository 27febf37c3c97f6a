"""AsyncResult and EagerResult: Celery's handles on a task's state and return value.

A result made when a canvas is sent knows the results before it (``parent``: a chain's earlier
step, a chord's header): ``get()`` of a result whose task failed because a step before it
failed raises that step's own exception, as Celery's. ``get()`` inside a task running in a
worker is refused (it can deadlock the pool), unless inside ``allow_join_result()``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from runner import serialization, states
from runner._state import current_app, running
from runner.exceptions import RunnerError, TaskRevokedError, TimeoutError
from runner.utils.aio import WAIT_SLICE, in_client_thread, in_waiting_thread

SENT_CHECK = 1.0  # seconds AsyncResult.get() waits before it makes sure its task was sent
ASYNC_POLL = 0.1  # seconds AsyncResult.aget() waits at most between two looks at the backend

if TYPE_CHECKING:  # pragma: no cover
    from runner.app import Runner
    from runner.backends.base import ResultRecord


E_WOULDBLOCK = ("Never call result.get() within a task!\nSee https://docs.celeryq.dev/en/latest/"
                "userguide/tasks.html#avoid-launching-synchronous-subtasks")


class _JoinPolicy(threading.local):
    allowed = False


_join = _JoinPolicy()


def task_join_will_block() -> bool:
    """Whether this thread runs a task in a worker, where waiting for a result may block."""
    if _join.allowed or not running.tasks:
        return False
    request = running.tasks[-1].request
    return not (request.called_directly or request.is_eager)


def assert_will_not_block() -> None:
    if task_join_will_block():
        raise RuntimeError(E_WOULDBLOCK)


@contextmanager
def allow_join_result() -> Iterator[None]:
    """Allow ``get()`` inside a task (it waits on another task: make sure a worker is free)."""
    previous, _join.allowed = _join.allowed, True
    try:
        yield
    finally:
        _join.allowed = previous


@contextmanager
def denied_join_result() -> Iterator[None]:
    previous, _join.allowed = _join.allowed, False
    try:
        yield
    finally:
        _join.allowed = previous


class IncompleteStream(RunnerError):
    """``collect()`` met a result not ready yet (pass ``intermediate=True`` to go on)."""


class AsyncResult:
    """The state and result of a task, read from the app's result backend.

    A ready result is cached: after SUCCESS, FAILURE or REVOKED, nothing is read again.
    """

    #: the task was sent with ``ignore_result``: nothing will be stored, get() returns None
    ignored = False
    supports_native_join = True

    def __init__(self, id: str, app: Runner | None = None, task_name: str | None = None,
                 parent: Any = None, backend: Any = None):
        if app is None:
            app = current_app()
        self.id = id
        self.app = app
        self.task_name = task_name
        self.parent = parent
        self._record: ResultRecord | None = None

    task_id = property(lambda self: self.id)

    @property
    def backend(self) -> Any:
        return self.app.backend

    def as_tuple(self) -> tuple:
        """``((id, parent), None)``, Celery's form for storing a result's identity."""
        parent = self.parent.as_tuple() if self.parent is not None else None
        return (self.id, parent), None

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.id}>"

    def __str__(self) -> str:
        return self.id

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AsyncResult):
            return other.id == self.id
        return other == self.id if isinstance(other, str) else NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)

    # -- reading ------------------------------------------------------------------------------

    def _fetch(self) -> ResultRecord | None:
        if self._record is None or not self._record.ready:
            self._record = self.app.backend.get(self.id)
        return self._record

    @property
    def state(self) -> str:
        record = self._fetch()
        return record.state if record else states.PENDING

    status = state

    def ready(self) -> bool:
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        return self.state == states.FAILURE

    @property
    def result(self) -> Any:
        """The return value, or the exception for FAILURE/RETRY/REVOKED; None while pending."""
        record = self._fetch()
        return self._decode(record) if record else None

    info = result

    @property
    def traceback(self) -> str | None:
        record = self._fetch()
        return record.traceback if record else None

    @property
    def date_done(self) -> datetime | None:
        record = self._fetch()
        if record is None or record.date_done is None:
            return None
        return datetime.fromtimestamp(record.date_done, UTC)

    @property
    def name(self) -> str | None:
        record = self._fetch()
        return (record.meta.get("name") if record else None) or self.task_name

    @property
    def retries(self) -> int | None:
        record = self._fetch()
        return record.meta.get("retries") if record else None

    @property
    def args(self) -> list | None:
        record = self._fetch()
        return record.meta.get("args") if record else None

    @property
    def kwargs(self) -> dict | None:
        record = self._fetch()
        return record.meta.get("kwargs") if record else None

    @property
    def worker(self) -> str | None:
        record = self._fetch()
        return record.meta.get("worker") if record else None

    @property
    def queue(self) -> str | None:
        record = self._fetch()
        return record.meta.get("queue") if record else None

    @property
    def children(self) -> list[Any] | None:
        """The results of the tasks this task sent while it ran (stored with its result)."""
        record = self._fetch()
        if record is None:
            return None
        return [result_from_tuple(c, self.app) for c in record.meta.get("children") or ()]

    def _get_task_meta(self) -> dict[str, Any]:
        """Celery's meta dict of this task (see ``ResultBackend.get_task_meta``)."""
        return self.app.backend.get_task_meta(self.id)

    def _parents(self) -> Iterator[Any]:
        node = self.parent
        while node is not None:
            yield node
            node = getattr(node, "parent", None)

    def _maybe_reraise_parent_error(self) -> None:
        """Raise the exception of the first failed result before this one, root first."""
        for node in reversed(list(self._parents())):
            node.maybe_throw()

    def iterdeps(self, intermediate: bool = False) -> Iterator[tuple[Any, Any]]:
        """(parent, result) for this result and, depth first, its children's."""
        stack: deque = deque([(None, self)])
        while stack:
            parent, node = stack.popleft()
            yield parent, node
            if node.ready():
                stack.extend((node, child) for child in node.children or ())
            elif not intermediate:
                raise IncompleteStream(f"result {node.id} is not ready: collect() stops here")

    def collect(self, intermediate: bool = False, **kwargs: Any) -> Iterator[tuple[Any, Any]]:
        """(result, value) for this task and every task it (and they) sent, as they are in
        the graph of ``children``; ``kwargs`` go to each ``get()``."""
        for _, node in self.iterdeps(intermediate=intermediate):
            yield node, node.get(**kwargs)

    def _decode(self, record: ResultRecord) -> Any:
        accept = self.app.result_accept
        value = serialization.loads(record.payload, record.content_type, accept)
        if record.state in states.EXCEPTION_STATES and isinstance(value, dict):
            if record.state == states.REVOKED and "exc_type" not in value:
                return TaskRevokedError(value.get("reason", "revoked"))
            return serialization.dict_to_exception(value)
        return value

    # -- waiting ------------------------------------------------------------------------------

    def get(self, timeout: float | None = None, propagate: bool = True,
            interval: float | None = None, disable_sync_subtasks: bool = True,
            follow_parents: bool = True, **_ignored: Any) -> Any:
        """Wait for the task and return its value; re-raise its exception with ``propagate``
        (or, when it failed because a step before it did, that step's exception).

        ``timeout`` raises :class:`runner.exceptions.TimeoutError` (also a builtin
        ``TimeoutError``). Waiting wakes on change in the backend rather than sleeping
        ``interval`` (which only caps the check period of polling backends)."""
        if disable_sync_subtasks:
            assert_will_not_block()
        if self.ignored:  # as Celery: nothing will ever be stored to wait for
            return None
        record = self._record
        if record is None or not record.ready:  # (every backend's wait reads it first)
            record = self._wait(timeout, interval)
            self._record = record
            if record is None or not record.ready:
                raise TimeoutError(
                    f"The operation timed out: task {self.id} is still "
                    f"{record.state if record else states.PENDING} after {timeout}s")
        if propagate and follow_parents and self.parent is not None and (
                record.state in states.PROPAGATE_STATES):
            self._maybe_reraise_parent_error()
        return self._value_or_raise(record, propagate)

    wait = get

    async def aget(self, timeout: float | None = None, propagate: bool = True,
                   interval: float | None = None, follow_parents: bool = True,
                   **_ignored: Any) -> Any:
        """:meth:`get` for async code (``await result.aget(timeout=10)``): the caller's event
        loop keeps serving other work while a thread waits with the backend's own wait, which
        wakes when the result is stored (Redis: its announcement; SQLite: a write to the file;
        see :func:`runner.utils.aio.in_waiting_thread`). With ``rpc://``, whose replies come
        on the async client's connection, that thread reads them between sleeps on the
        caller's loop (every 5 ms at first, backing off to ``interval``, 0.1 s by default).
        ``timeout`` raises :class:`runner.exceptions.TimeoutError`."""
        if self.ignored:
            return None
        deadline = None if timeout is None else time.monotonic() + timeout
        pause, most = 0.005, interval or ASYNC_POLL
        replies = self.app.backend.sends_replies
        record = self._record
        while record is None or not record.ready:
            left = None if deadline is None else deadline - time.monotonic()
            if replies:
                record = await in_client_thread(self._read_backend)
            else:
                part = WAIT_SLICE if left is None else max(0.0, min(left, WAIT_SLICE))
                record = await in_waiting_thread(self.app.backend.wait, self.id, part,
                                                 interval)
            if record is not None and record.ready:
                break
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(
                    f"The operation timed out: task {self.id} is still "
                    f"{record.state if record else states.PENDING} after {timeout}s")
            if replies:
                await asyncio.sleep(pause if left is None else min(pause, left))
                pause = min(pause * 2, most)
        self._record = record
        if propagate and follow_parents and self.parent is not None and (
                record.state in states.PROPAGATE_STATES):
            await in_client_thread(self._maybe_reraise_parent_error)
        return self._value_or_raise(record, propagate)

    async def aready(self) -> bool:
        """:meth:`ready` for async code: whether the task has finished."""
        return await in_client_thread(self.ready)

    async def astate(self) -> str:
        """:attr:`state` for async code."""
        return await in_client_thread(lambda: self.state)

    def _read_backend(self) -> ResultRecord | None:
        return self.app.backend.get(self.id)

    def _wait(self, timeout: float | None, interval: float | None) -> ResultRecord | None:
        """Wait for the backend in slices of SENT_CHECK seconds; between two, make sure what
        this thread sent is in the broker. A broker that confirms in the background (AMQP,
        Redis) sends again what was refused or lost in an outage since, so get() never
        waits for a task that only its own producer could still deliver."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            part = SENT_CHECK if left is None else min(left, SENT_CHECK)
            record = self.app.backend.wait(self.id, part, interval)
            if (record is not None and record.ready) or (left is not None and left <= part):
                return record
            self.app.flush_broker()

    def _value_or_raise(self, record: ResultRecord, propagate: bool) -> Any:
        value = self._decode(record)
        if propagate and record.state in states.PROPAGATE_STATES:
            raise value
        return value

    def maybe_throw(self, propagate: bool = True, follow_parents: bool = False) -> None:
        """Raise the task's exception if it failed (with ``follow_parents``, first that of a
        failed result before it)."""
        record = self._fetch()
        if record is not None:
            if (propagate and follow_parents and self.parent is not None
                    and record.state in states.PROPAGATE_STATES):
                self._maybe_reraise_parent_error()
            self._value_or_raise(record, propagate)

    # -- acting -------------------------------------------------------------------------------

    def forget(self) -> None:
        """Delete the stored result: the task reads PENDING again."""
        self._record = None
        self.app.backend.forget(self.id)

    def revoke(self, terminate: bool = False, signal: str = "SIGTERM",
               wait: bool = False, timeout: float | None = None) -> None:
        """Stop the task: it will not start; with ``terminate`` a running one is killed."""
        self.app.control.revoke(self.id, terminate=terminate, signal=signal)
        if wait:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self.ready():
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"task {self.id} not revoked after {timeout}s")
                time.sleep(0.01)


class EagerResult(AsyncResult):
    """The result of a task run in this process (``apply()``, ``task_always_eager``)."""

    def __init__(self, id: str, value: Any, state: str, traceback: str | None = None,
                 app: Runner | None = None, task_name: str | None = None):
        super().__init__(id, app=app, task_name=task_name)
        self._value = value
        self._state = state
        self._traceback = traceback
        self._done = datetime.now(UTC)

    @property
    def state(self) -> str:
        return self._state

    status = state

    @property
    def result(self) -> Any:
        return self._value

    info = result

    @property
    def traceback(self) -> str | None:
        return self._traceback

    @property
    def date_done(self) -> datetime | None:
        return self._done

    @property
    def children(self) -> list[Any] | None:
        return None

    def get(self, timeout: float | None = None, propagate: bool = True, **_: Any) -> Any:
        if propagate and self._state in states.PROPAGATE_STATES:
            raise self._value
        return self._value

    wait = get

    async def aget(self, timeout: float | None = None, propagate: bool = True,
                   **_: Any) -> Any:
        return self.get(timeout, propagate)

    async def aready(self) -> bool:
        return True

    async def astate(self) -> str:
        return self.state

    def maybe_throw(self, propagate: bool = True, follow_parents: bool = False) -> None:
        self.get(propagate=propagate)

    def forget(self) -> None:
        pass

    def revoke(self, *args: Any, **kwargs: Any) -> None:
        pass


def result_from_tuple(value: Any, app: Runner | None = None) -> Any:
    """An AsyncResult (or GroupResult) from its stored form: an id, ``as_tuple()``'s, or
    ``["group", id, [members]]``."""
    if isinstance(value, str):
        return AsyncResult(value, app=app)
    if isinstance(value, (list, tuple)) and value and value[0] == "group":  # noqa: UP038
        from runner.result.sets import GroupResult

        return GroupResult(value[1], [result_from_tuple(v, app) for v in value[2]], app=app)
    if isinstance(value, (list, tuple)) and len(value) == 2:  # noqa: UP038
        head, nodes = value
        if nodes:  # a GroupResult's as_tuple
            from runner.result.sets import GroupResult

            gid, parent = head
            group = GroupResult(gid, [result_from_tuple(n, app) for n in nodes], app=app)
            group.parent = result_from_tuple(parent, app) if parent else None
            return group
        task_id, parent = head
        return AsyncResult(task_id, app=app,
                           parent=result_from_tuple(parent, app) if parent else None)
    raise ValueError(f"not a stored result: {value!r}")

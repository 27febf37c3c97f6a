"""AsyncResult and EagerResult: Celery's handles on a task's state and return value."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from runner import serialization, states
from runner._state import current_app
from runner.exceptions import TaskRevokedError, TimeoutError

SENT_CHECK = 1.0  # seconds AsyncResult.get() waits before it makes sure its task was sent

if TYPE_CHECKING:  # pragma: no cover
    from runner.app import Runner
    from runner.backends.base import ResultRecord


class AsyncResult:
    """The state and result of a task, read from the app's result backend.

    A ready result is cached: after SUCCESS, FAILURE or REVOKED, nothing is read again.
    """

    #: the task was sent with ``ignore_result``: nothing will be stored, get() returns None
    ignored = False

    def __init__(self, id: str, app: Runner | None = None, task_name: str | None = None):
        if app is None:
            app = current_app()
        self.id = id
        self.app = app
        self.task_name = task_name
        self._record: ResultRecord | None = None

    task_id = property(lambda self: self.id)

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
            interval: float | None = None, **_ignored: Any) -> Any:
        """Wait for the task and return its value; re-raise its exception with ``propagate``.

        ``timeout`` raises :class:`runner.exceptions.TimeoutError` (also a builtin
        ``TimeoutError``). Waiting wakes on change in the backend rather than sleeping
        ``interval`` (which only caps the check period of polling backends)."""
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
        return self._value_or_raise(record, propagate)

    wait = get

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

    def maybe_throw(self, propagate: bool = True) -> None:
        record = self._fetch()
        if record is not None:
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


class GroupResult:
    """The results of a group, in the order its tasks were given."""

    def __init__(self, id: str, results: list[AsyncResult], app: Runner | None = None):
        self.id = id
        self.results = list(results)
        self.app = app or current_app()

    def __repr__(self) -> str:
        return f"<GroupResult: {self.id} [{', '.join(r.id for r in self.results)}]>"

    def __iter__(self):
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index: int) -> AsyncResult:
        return self.results[index]

    def ready(self) -> bool:
        return all(r.ready() for r in self.results)

    def successful(self) -> bool:
        return all(r.successful() for r in self.results)

    def failed(self) -> bool:
        return any(r.failed() for r in self.results)

    def waiting(self) -> bool:
        return not self.ready()

    def completed_count(self) -> int:
        return sum(1 for r in self.results if r.successful())

    def get(self, timeout: float | None = None, propagate: bool = True,
            interval: float | None = None, **_ignored: Any) -> list[Any]:
        """Every task's value, in order; ``timeout`` bounds the whole wait."""
        deadline = None if timeout is None else time.monotonic() + timeout
        values = []
        for result in self.results:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            values.append(result.get(timeout=left, propagate=propagate, interval=interval))
        return values

    join = get

    def forget(self) -> None:
        for result in self.results:
            result.forget()

    def revoke(self, terminate: bool = False, signal: str = "SIGTERM") -> None:
        self.app.control.revoke([r.id for r in self.results], terminate=terminate,
                                signal=signal)


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

    def get(self, timeout: float | None = None, propagate: bool = True, **_: Any) -> Any:
        if propagate and self._state in states.PROPAGATE_STATES:
            raise self._value
        return self._value

    wait = get

    def maybe_throw(self, propagate: bool = True) -> None:
        self.get(propagate=propagate)

    def forget(self) -> None:
        pass

    def revoke(self, *args: Any, **kwargs: Any) -> None:
        pass

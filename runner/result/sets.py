"""ResultSet and GroupResult: many results handled as one, as Celery's."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from runner import states
from runner._state import current_app
from runner.exceptions import TimeoutError
from runner.result.async_result import AsyncResult, assert_will_not_block, result_from_tuple

if TYPE_CHECKING:  # pragma: no cover
    from runner.app import Runner


class ResultSet:
    """Results waited for and looked at together (in the order given)."""

    supports_native_join = True
    parent: Any = None

    def __init__(self, results: Iterable[Any], app: Runner | None = None, **_ignored: Any):
        self.results = list(results)
        self.app = app or (self.results[0].app if self.results else current_app())

    @property
    def backend(self) -> Any:
        return self.app.backend

    # -- the members ----------------------------------------------------------------------------

    def add(self, result: Any) -> None:
        if result not in self.results:
            self.results.append(result)

    def remove(self, result: Any) -> None:
        if isinstance(result, str):
            result = AsyncResult(result, app=self.app)
        self.results.remove(result)

    def discard(self, result: Any) -> None:
        try:
            self.remove(result)
        except ValueError:
            pass

    def update(self, results: Iterable[Any]) -> None:
        self.results.extend(r for r in results if r not in self.results)

    def clear(self) -> None:
        self.results[:] = []

    def __iter__(self) -> Iterator[Any]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index: int) -> Any:
        return self.results[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ResultSet):
            return other.results == self.results
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: [{', '.join(r.id for r in self.results)}]>"

    # -- state (one round trip to the backend for the plain members) -----------------------------

    def _states(self) -> list[str]:
        plain = [r for r in self.results if type(r) is AsyncResult and r._record is None]
        if plain:
            found = self.app.backend.get_many([r.id for r in plain])
            for result in plain:
                result._record = found.get(result.id)
        out = []
        for result in self.results:
            if isinstance(result, ResultSet):  # a nested group: one state for all of it
                inner = result._states()
                out.append(states.FAILURE if states.FAILURE in inner else
                           next((s for s in inner if s != states.SUCCESS), states.SUCCESS))
            else:
                out.append(result.state)
        for result in plain:
            if result._record is not None and not result._record.ready:
                result._record = None
        return out

    def successful(self) -> bool:
        return all(state == states.SUCCESS for state in self._states())

    def failed(self) -> bool:
        return any(state == states.FAILURE for state in self._states())

    def waiting(self) -> bool:
        return any(state not in states.READY_STATES for state in self._states())

    def ready(self) -> bool:
        return all(state in states.READY_STATES for state in self._states())

    def completed_count(self) -> int:
        return sum(1 for state in self._states() if state == states.SUCCESS)

    def maybe_throw(self, callback: Callable | None = None, propagate: bool = True,
                    follow_parents: bool = True) -> None:
        """Raise the first failed member's exception (a failure before it first)."""
        self._states()  # (the members' records in one round trip)
        for result in self.results:
            result.maybe_throw(propagate=propagate, follow_parents=follow_parents)

    # -- waiting ----------------------------------------------------------------------------

    def join(self, timeout: float | None = None, propagate: bool = True,
             interval: float | None = 0.5, callback: Callable | None = None,
             no_ack: bool = True, on_message: Any = None, disable_sync_subtasks: bool = True,
             on_interval: Any = None) -> list[Any] | None:
        """Every member's value, in order; ``timeout`` bounds the whole wait; with
        ``callback(task_id, value)`` the values go to it instead (None is returned)."""
        if disable_sync_subtasks:
            assert_will_not_block()
        deadline = None if timeout is None else time.monotonic() + timeout
        self._states()  # what is ready already is read in one round trip
        values = []
        for result in self.results:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError("The operation timed out.")
            value = result.get(timeout=left, propagate=propagate, interval=interval,
                               disable_sync_subtasks=False)
            if callback is not None:
                callback(result.id, value)
            else:
                values.append(value)
        return None if callback is not None else values

    join_native = join

    def get(self, timeout: float | None = None, propagate: bool = True,
            interval: float | None = 0.5, callback: Callable | None = None,
            no_ack: bool = True, on_message: Any = None, disable_sync_subtasks: bool = True,
            **_ignored: Any) -> list[Any] | None:
        return self.join(timeout, propagate, interval, callback, no_ack, on_message,
                         disable_sync_subtasks)

    def iter_native(self, timeout: float | None = None, **kwargs: Any
                    ) -> Iterator[tuple[str, dict]]:
        """(task_id, meta) for each member, as each is ready."""
        for result in self.results:
            result.get(timeout=timeout, propagate=False, disable_sync_subtasks=False)
            yield result.id, self.app.backend.get_task_meta(result.id)

    # -- acting ---------------------------------------------------------------------------

    def forget(self) -> None:
        for result in self.results:
            result.forget()

    def revoke(self, connection: Any = None, terminate: bool = False, signal: str = "SIGTERM",
               wait: bool = False, timeout: float | None = None) -> None:
        self.app.control.revoke([r.id for r in self._leaves()], terminate=terminate,
                                signal=signal)
        if wait:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self.ready():
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"results not revoked after {timeout}s")
                time.sleep(0.01)

    def _leaves(self) -> list[AsyncResult]:
        found: list[AsyncResult] = []
        for result in self.results:
            found += result._leaves() if isinstance(result, ResultSet) else [result]
        return found


class GroupResult(ResultSet):
    """The results of a group, in the order its tasks were given; ``save()`` keeps it in the
    result backend so that ``GroupResult.restore(id)`` finds it from any process."""

    def __init__(self, id: str | None = None, results: Iterable[Any] = (),
                 app: Runner | None = None, parent: Any = None, **kwargs: Any):
        super().__init__(results, app=app, **kwargs)
        self.id = id
        self.parent = parent

    def __repr__(self) -> str:
        return f"<GroupResult: {self.id} [{', '.join(r.id for r in self.results)}]>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, GroupResult):
            return other.id == self.id and other.results == self.results
        if isinstance(other, str):
            return other == self.id
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    @property
    def children(self) -> list[Any]:
        return self.results

    def as_tuple(self) -> tuple:
        parent = self.parent.as_tuple() if self.parent is not None else None
        return (self.id, parent), [r.as_tuple() for r in self.results]

    def save(self, backend: Any = None) -> GroupResult:
        (backend or self.app.backend).save_group(self.id, self)
        return self

    def delete(self, backend: Any = None) -> None:
        (backend or self.app.backend).delete_group(self.id)

    @classmethod
    def restore(cls, id: str, backend: Any = None, app: Runner | None = None
                ) -> GroupResult | None:
        """The group saved as ``id`` (None if none was)."""
        app = app or current_app()
        meta = (backend or app.backend).restore_group(id)
        if meta is None:
            return None
        return result_from_tuple(json.loads(json.dumps(meta["result"])), app)

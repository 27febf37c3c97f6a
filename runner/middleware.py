"""Middleware: behaviour that hooks into the worker instead of branching inside its loop.

A middleware sees each task that reached a final state (SUCCESS, FAILURE, REVOKED), after its
result is stored and before its message is acked, in the worker's main process. Chains, links,
chords and pipelines move forward this way. A hook that raises is logged and does not stop the
worker; since the message is acked afterwards, a worker killed in between runs the task again
and the hook sees it twice, so hooks must be idempotent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from runner.backends.base import ResultRecord
    from runner.message import Message


class Middleware:
    def wants(self, message: Message) -> bool:
        """Whether :meth:`after_task_stored` has anything to do for ``message``; messages no
        middleware wants are stored and acked in one step where the store allows it."""
        return True

    def before_tasks_start(self, app: Any, messages: list[Message]) -> None:
        """Called in the worker's main process with messages it is handing to the pool (those
        :meth:`wants`), before they run. Keep it cheap: it is on the worker's loop."""

    def after_task_stored(self, app: Any, message: Message, state: str,
                          record: ResultRecord | None) -> None:
        """Called once per final outcome of a message (see the module docstring)."""

    def after_tasks_stored(self, app: Any,
                           completed: list[tuple[Message, str, ResultRecord | None]]) -> None:
        """The batch form, called by the worker with every wanted outcome of one flush;
        override it to do one round trip for many tasks."""
        for message, state, record in completed:
            self.after_task_stored(app, message, state, record)

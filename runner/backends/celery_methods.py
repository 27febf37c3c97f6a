"""The result backend methods Celery's own code and its extensions call (``store_result``,
``mark_as_failure``, ``get_task_meta``, ``save_group``, ``ensure_chords_allowed``, ...),
written once over runner's small backend interface (``store``, ``get``, keyed data)."""

from __future__ import annotations

import json
import time
import traceback as tb_module
from typing import Any

from runner import serialization, states
from runner.exceptions import BackendError


class CeleryBackendMethods:
    """Mixed into :class:`runner.backends.base.ResultBackend`."""

    serializer = "json"

    def _record_for(self, task_id: str, result: Any, state: str, traceback: Any = None,
                    request: Any = None) -> Any:
        from runner.backends.base import ResultRecord

        value = (serialization.exception_to_dict(result)
                 if isinstance(result, BaseException) else result)
        content_type, payload = serialization.dumps(value, self.serializer)
        if traceback is not None and not isinstance(traceback, str):
            traceback = "".join(tb_module.format_tb(traceback))
        meta: dict[str, Any] = {}
        if request is not None:
            meta["name"] = getattr(request, "task", None)
            children = [getattr(c, "id", c) for c in getattr(request, "children", ()) or ()]
            if children:
                meta["children"] = children
        return ResultRecord(task_id, state, content_type, payload, traceback, time.time(), meta,
                            reply_to=getattr(request, "reply_to", None))

    def store_result(self, task_id: str, result: Any, state: str, traceback: Any = None,
                     request: Any = None, **kwargs: Any) -> Any:
        """Store ``result`` (a value, or an exception for the failure states) as Celery's."""
        self.store([self._record_for(task_id, result, state, traceback, request)])
        return result

    def mark_as_started(self, task_id: str, **meta: Any) -> Any:
        return self.store_result(task_id, meta, states.STARTED)

    def mark_as_done(self, task_id: str, result: Any, request: Any = None,
                     store_result: bool = True, state: str = states.SUCCESS) -> None:
        if store_result:
            self.store_result(task_id, result, state, request=request)

    def mark_as_failure(self, task_id: str, exc: BaseException, traceback: Any = None,
                        request: Any = None, store_result: bool = True,
                        call_errbacks: bool = True, state: str = states.FAILURE) -> None:
        if store_result:
            self.store_result(task_id, exc, state, traceback=traceback, request=request)

    def mark_as_revoked(self, task_id: str, reason: str = "", request: Any = None,
                        store_result: bool = True, state: str = states.REVOKED) -> None:
        from runner.exceptions import TaskRevokedError

        if store_result:
            self.store_result(task_id, TaskRevokedError(reason), state, request=request)

    def mark_as_retry(self, task_id: str, exc: BaseException, traceback: Any = None,
                      request: Any = None) -> Any:
        return self.store_result(task_id, exc, states.RETRY, traceback=traceback,
                                 request=request)

    def get_task_meta(self, task_id: str, cache: bool = True) -> dict[str, Any]:
        """Celery's meta dict: status, result, traceback, children, date_done, task_id (and
        name, args, kwargs, worker, retries, queue with ``result_extended``)."""
        record = self.get(task_id)
        if record is None:
            return {"status": states.PENDING, "result": None, "traceback": None,
                    "children": [], "date_done": None, "task_id": task_id}
        value = serialization.loads(record.payload, record.content_type)
        if record.state in states.EXCEPTION_STATES and isinstance(value, dict):
            value = serialization.dict_to_exception(value)
        date_done = None
        if record.date_done is not None:
            from datetime import UTC, datetime

            date_done = datetime.fromtimestamp(record.date_done, UTC)
        meta = {"status": record.state, "result": value, "traceback": record.traceback,
                "children": record.meta.get("children") or [], "date_done": date_done,
                "task_id": task_id}
        meta.update({k: v for k, v in record.meta.items() if k != "children"})
        return meta

    def get_state(self, task_id: str) -> str:
        return self.get_task_meta(task_id)["status"]

    get_status = get_state

    def get_result(self, task_id: str) -> Any:
        return self.get_task_meta(task_id)["result"]

    def get_traceback(self, task_id: str) -> str | None:
        return self.get_task_meta(task_id)["traceback"]

    def get_children(self, task_id: str) -> list | None:
        return self.get_task_meta(task_id).get("children")

    def ensure_chords_allowed(self) -> None:
        """Raise where this backend cannot count a chord (one that keeps no state)."""
        if not getattr(self, "keeps_state", True):
            raise BackendError(f"{type(self).__name__} keeps no state: chords need a result "
                               f"backend that does (redis:// or sqlite://)")

    # -- saved groups (GroupResult.save / restore) ----------------------------------------------

    def save_group(self, group_id: str, result: Any) -> Any:
        stored = result.as_tuple() if hasattr(result, "as_tuple") else result
        self.put_data(f"group:{group_id}", json.dumps({"result": stored,
                                                        "date_done": time.time()}).encode())
        return result

    def restore_group(self, group_id: str, cache: bool = True) -> dict | None:
        raw = self.get_data(f"group:{group_id}")
        return json.loads(raw) if raw else None

    def delete_group(self, group_id: str) -> None:
        self.delete_data(f"group:{group_id}")

    def forget_group(self, group_id: str) -> None:
        self.delete_group(group_id)

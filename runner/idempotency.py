"""``apply_async(..., idempotency_key=K)``: one task per key within ``task_idempotency_window``.

The key is claimed in the result backend in one atomic change (``update_data``: a Redis
transaction, an SQLite write transaction), before the message is sent: of two callers with the
same key at the same moment, one sends and both get the same task id. The promise is at most
once per key and window: a caller that dies between claiming and sending leaves the key held
and nothing sent, until the window passes.
"""

from __future__ import annotations

import json
import time
from typing import Any

from runner.exceptions import RunnerError


def idempotency_data_key(key: str) -> str:
    return f"idem:{key}"


def claim(backend: Any, key: str, task_id: str, window: float) -> tuple[str, bool]:
    """(the task id holding ``key``, whether it is ``task_id``: this caller sends it)."""
    if not backend.keeps_state:
        raise RunnerError(f"idempotency_key needs a result backend that keeps state (redis://, "
                          f"sqlite:///...), not {backend.scheme}://")
    if not isinstance(key, str) or not key or len(key) > 255:
        raise RunnerError(f"idempotency_key must be a non-empty string of at most 255 "
                          f"characters, not {key!r}")
    now = time.time()

    def change(raw: bytes | None) -> bytes:
        if raw:
            _held, at = json.loads(raw)
            if now - at < window:
                return raw
        return json.dumps([task_id, now]).encode()

    held = json.loads(backend.update_data(idempotency_data_key(key), change))[0]
    return held, held == task_id

"""``max_active_runs``: at most N runs of a pipeline at once, the others wait in order.

One small value per pipeline, ``runslots:<pipeline>`` = ``{"active": [ids], "waiting": [ids]}``,
changed atomically (``update_data``): of two runs submitted at the same moment for the last
slot, one gets it and the other waits. A run that ends releases its slot and the first run
waiting takes it; ``release`` returns the runs that took a slot, for the caller to start.
"""

from __future__ import annotations

import json

from runner.backends.base import ResultBackend


def slots_key(pipeline: str) -> str:
    return f"runslots:{pipeline}"


def _load(raw: bytes | None) -> dict[str, list[str]]:
    return json.loads(raw) if raw else {"active": [], "waiting": []}


def admit(backend: ResultBackend, pipeline: str, run_id: str, limit: int) -> bool:
    """Whether run ``run_id`` may start now; if not, it waits in line (once)."""
    answer: list[bool] = []

    def change(raw: bytes | None) -> bytes:
        slots = _load(raw)
        if run_id in slots["active"]:
            answer[:] = [True]
        elif len(slots["active"]) < limit and not slots["waiting"]:
            slots["active"].append(run_id)
            answer[:] = [True]
        else:
            if run_id not in slots["waiting"]:
                slots["waiting"].append(run_id)
            answer[:] = [False]
        return json.dumps(slots).encode()

    backend.update_data(slots_key(pipeline), change)
    return answer[0]


def release(backend: ResultBackend, pipeline: str, run_id: str, limit: int) -> list[str]:
    """Run ``run_id`` ended (or was cancelled while waiting): the runs now given a slot."""
    promoted: list[str] = []

    def change(raw: bytes | None) -> bytes:
        slots = _load(raw)
        slots["active"] = [r for r in slots["active"] if r != run_id]
        slots["waiting"] = [r for r in slots["waiting"] if r != run_id]
        promoted.clear()
        while slots["waiting"] and len(slots["active"]) < limit:
            promoted.append(slots["waiting"].pop(0))
            slots["active"].append(promoted[-1])
        return json.dumps(slots).encode()

    backend.update_data(slots_key(pipeline), change)
    return list(promoted)


def occupancy(backend: ResultBackend, pipeline: str) -> dict[str, list[str]]:
    return _load(backend.get_data(slots_key(pipeline)))

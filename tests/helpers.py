"""Small helpers the test modules share (fixtures live in conftest.py)."""

from __future__ import annotations

import time


def wait_for_state(result, state: str, timeout: float = 5.0) -> None:
    """Wait until ``result.state`` is ``state``; fail naming the state it is in instead."""
    deadline = time.monotonic() + timeout
    while result.state != state:
        assert time.monotonic() < deadline, f"{result.id} is {result.state}, not {state}"
        time.sleep(0.01)

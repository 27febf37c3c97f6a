"""Task states, with Celery's names and meaning."""

from __future__ import annotations

PENDING = "PENDING"  # unknown to the backend: not run yet, or forgotten, or expired
RECEIVED = "RECEIVED"  # a worker took the message (recorded with task_track_started)
STARTED = "STARTED"  # running (recorded with task_track_started)
RETRY = "RETRY"  # failed, and will run again later
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
REVOKED = "REVOKED"
IGNORED = "IGNORED"

READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED})
UNREADY_STATES = frozenset({PENDING, RECEIVED, STARTED, RETRY})
EXCEPTION_STATES = frozenset({RETRY, FAILURE, REVOKED})
PROPAGATE_STATES = frozenset({FAILURE, REVOKED})
ALL_STATES = READY_STATES | UNREADY_STATES

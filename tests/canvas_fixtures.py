"""Fixtures the canvas tests share: results in Redis for the redis and amqp transports (so
AMQP runs with a Redis result backend, as the issue asks), and a worker that knows the tasks
of ``tests/apps/canvas_tasks.py``."""

from __future__ import annotations

import pytest


@pytest.fixture
def db_url(tmp_path, transport, request) -> str:
    if transport in ("redis", "amqp"):
        return request.getfixturevalue("redis_server").fresh()
    return f"sqlite:///{tmp_path}/runner.db"


@pytest.fixture
def worker(app, start_worker):
    return start_worker("-c", "2", app="canvas_tasks")

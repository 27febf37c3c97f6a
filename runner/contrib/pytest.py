"""A pytest plugin with Celery's fixtures (``celery.contrib.pytest``), for runner apps.

Opt in as with Celery 5: ``pytest -p runner.contrib.pytest``, or in a conftest.py
``pytest_plugins = ("runner.contrib.pytest",)``. Fixtures:

- ``celery_config`` (session): settings of the test app; default ``memory://`` broker and
  results, which a worker started by ``celery_worker`` shares (same process).
- ``celery_parameters``, ``celery_worker_parameters``, ``celery_includes``,
  ``celery_worker_pool`` (``"solo"``), ``celery_enable_logging``: override them to shape the
  app and worker.
- ``celery_app`` / ``celery_worker``: a fresh app (the current app while the test runs) and a
  worker of it in a thread, for one test; ``celery_session_app`` / ``celery_session_worker``:
  the same for the whole session.
- ``use_celery_app_trap``: override to return True to make any use of the current app (a
  shared task, or an AsyncResult without ``app=``) an error during the test: ``celery_app``
  is then not made current.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from runner import _state
from runner.app import Runner
from runner.contrib.testing import start_worker

DEFAULT_CONFIG = {"broker_url": "memory://", "result_backend": "memory://"}


def _make_app(config: dict, parameters: dict, includes: tuple) -> Runner:
    parameters = {"main": "celery.tests", **parameters}
    app = Runner(parameters.pop("main"), set_as_current=False, **parameters)
    app.conf.update({**DEFAULT_CONFIG, **config})
    if includes:
        app.conf.update(include=list(includes))
    return app


@pytest.fixture(scope="session")
def celery_config() -> dict[str, Any]:
    """Override to give the test app settings (Celery's fixture of this name)."""
    return {}


@pytest.fixture(scope="session")
def celery_parameters() -> dict[str, Any]:
    """Override to pass keyword arguments to the app (``Celery(main, **parameters)``)."""
    return {}


@pytest.fixture(scope="session")
def celery_worker_parameters() -> dict[str, Any]:
    """Override to pass keyword arguments to ``start_worker``."""
    return {}


@pytest.fixture(scope="session")
def celery_includes() -> tuple[str, ...]:
    """Override with modules holding the tests' tasks (imported by the worker)."""
    return ()


@pytest.fixture(scope="session")
def celery_worker_pool() -> str:
    return "solo"


@pytest.fixture(scope="session")
def celery_enable_logging() -> bool:
    return False


@pytest.fixture(scope="session")
def use_celery_app_trap() -> bool:
    return False


@pytest.fixture(scope="session")
def celery_session_app(celery_config, celery_parameters, celery_includes) -> Iterator[Runner]:
    app = _make_app(celery_config, celery_parameters, celery_includes)
    yield app
    app.close()


@pytest.fixture(scope="session")
def celery_session_worker(celery_session_app, celery_worker_pool, celery_worker_parameters):
    with start_worker(celery_session_app, pool=celery_worker_pool,
                      **celery_worker_parameters) as worker:
        yield worker


@pytest.fixture
def celery_app(celery_config, celery_parameters, celery_includes,
               use_celery_app_trap) -> Iterator[Runner]:
    """A fresh app for one test, the current app while the test runs."""
    app = _make_app(celery_config, celery_parameters, celery_includes)
    previous, factory = _state._current, _state.default_app_factory
    if use_celery_app_trap:  # no current app: whatever reaches for one fails
        _state.set_current_app(None)
        _state.default_app_factory = _trap
    else:
        _state.set_current_app(app)
    try:
        yield app
    finally:
        _state.default_app_factory = factory
        _state.set_current_app(previous)
        app.close()


@pytest.fixture
def celery_worker(celery_app, celery_worker_pool, celery_worker_parameters):
    """A worker of ``celery_app`` running in a thread for the test."""
    with start_worker(celery_app, pool=celery_worker_pool, **celery_worker_parameters) as worker:
        yield worker


@pytest.fixture
def depends_on_current_app(celery_app) -> None:
    """Celery's: the test needs ``celery_app`` as the current app (it is already)."""


def _trap() -> Runner:
    raise RuntimeError("use_celery_app_trap: the test used the default app; pass app= or use "
                       "the celery_app fixture")

"""What every handler works with: the app, the options, the event store and the poller."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from runner.dashboard.poller import Poller
from runner.dashboard.store import EventStore


@dataclass
class Options:
    """``runner dashboard``'s options (see :mod:`runner.cli.dashboard`)."""

    host: str = "127.0.0.1"
    port: int = 5555
    auth: str | None = None  # "user:password"
    token: str | None = None
    hide_args: bool = False  # args, kwargs and results shown as ***
    max_tasks: int = 10000
    pipelines: str | None = None  # folder of pipeline files (submit forms, triggers)
    poll_interval: float = 2.0
    refresh: float = 1.0  # seconds between two refreshes of a live page


@dataclass
class Context:
    app: Any
    options: Options
    store: EventStore
    poller: Poller
    extra: dict[str, Any] = field(default_factory=dict)

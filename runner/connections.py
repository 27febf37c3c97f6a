"""The broker and result backend an app's code talks to: opened from the settings when first
used, one of each per process and thread (a forked child, or another thread, opens its own:
connections are not shared across either), and opened again when the URL setting changes."""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from runner import security
from runner.backends.base import ResultBackend
from runner.backends.registry import open_backend
from runner.brokers.base import Broker
from runner.brokers.registry import open_broker
from runner.config import Conf

if TYPE_CHECKING:  # pragma: no cover
    from runner.app import Runner


class Connections:
    """``app.broker`` and ``app.backend`` of one app."""

    def __init__(self, app: Runner):
        self.app = app
        self._local = threading.local()

    def _here(self) -> threading.local:
        """This thread's connections, none yet in a new process."""
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            local.pid, local.broker, local.backend = os.getpid(), None, None
            local.broker_url = local.backend_url = None
        return local

    def broker(self) -> Broker:
        app = self.app
        local, url = self._here(), app.broker_url
        if local.broker is None or local.broker_url != url:
            if local.broker is not None:
                local.broker.close()
            conf = app.conf
            local.broker = open_broker(url, transport_options(conf))
            local.broker.max_priorities = max_priorities(conf)
            local.broker.queue_types = queue_types(conf)
            if security.signing_wanted(conf):
                local.broker.signer = app.security
            local.broker_url = url
        return local.broker

    def backend(self) -> ResultBackend:
        app = self.app
        local, url = self._here(), app.backend_url
        if local.backend is None or local.backend_url != url:
            if local.backend is not None:
                local.backend.close()
            conf = app.conf
            options = {**transport_options(conf),  # (the broker's, where it is the same
                       **(conf.result_backend_transport_options or {})}  # server) + its own
            local.backend = open_backend(url, conf.result_expires, options, app.broker_url)
            local.backend_url = url
        return local.backend

    def flush_broker(self) -> None:
        broker = self._here().broker
        if broker is not None:
            broker.flush()

    def close(self) -> None:
        local = self._here()
        for name in ("broker", "backend"):
            conn = getattr(local, name)
            if conn is not None:
                conn.close()
                setattr(local, name, None)


def max_priorities(conf: Conf) -> dict[str | None, int | None]:
    """Each configured queue's highest priority (None: the default for the others)."""
    found: dict[str | None, int | None] = {None: conf.task_queue_max_priority}
    for queue in conf.task_queues:
        if queue.max_priority is not None:
            found[queue.name] = queue.max_priority
    return found


def queue_types(conf: Conf) -> dict[str | None, str]:
    """Each configured queue's RabbitMQ type (None: the default for the others)."""
    found: dict[str | None, str] = {None: conf.task_default_queue_type}
    for queue in conf.task_queues:
        kind = (queue.queue_arguments or {}).get("x-queue-type")
        if kind:
            found[queue.name] = str(kind)
    return found


def transport_options(conf: Conf) -> dict:
    """``broker_transport_options`` (unset ones left out: each broker has its defaults),
    with the ``broker_connection_*`` settings that say how brokers and backends connect
    (see runner.reconnect)."""
    options = conf.broker_transport_options
    if hasattr(options, "model_dump"):
        options.warn_unknown()
        options = options.model_dump(exclude_none=True)
    else:
        options = dict(options or {})
    options.update(broker_connection_timeout=conf.broker_connection_timeout,
                   broker_connection_retry=conf.broker_connection_retry,
                   broker_connection_retry_on_startup=conf.broker_connection_retry_on_startup,
                   broker_connection_max_retries=conf.broker_connection_max_retries,
                   failover_strategy=conf.broker_failover_strategy)
    return options

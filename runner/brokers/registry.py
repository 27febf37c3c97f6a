"""URL scheme -> broker class, imported lazily so the interface never imports transports."""

from __future__ import annotations

import importlib

from runner.brokers.base import Broker
from runner.config.urls import BROKER_CLASSES, not_supported_message, parse_url
from runner.exceptions import NotSupportedYet


def broker_class(scheme: str) -> type[Broker]:
    target = BROKER_CLASSES.get(scheme)
    if target is None:
        raise NotSupportedYet(not_supported_message("broker", f"{scheme}://"))
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def open_broker(url: str, transport_options: dict | None = None) -> Broker:
    """A new broker connection for ``url`` (a clear error for unknown or unsupported schemes)."""
    parsed = parse_url(url)
    cls = broker_class(parsed.scheme)
    return cls(parsed, transport_options)

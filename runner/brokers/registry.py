"""URL scheme -> broker class, imported lazily so the interface never imports transports."""

from __future__ import annotations

from runner.brokers.base import Broker
from runner.config.urls import load_class, parse_url


def broker_class(scheme: str) -> type[Broker]:
    return load_class("broker", scheme)


def open_broker(url: str, transport_options: dict | None = None) -> Broker:
    """A new broker connection for ``url`` (a clear error for unknown or unsupported schemes)."""
    parsed = parse_url(url)
    return broker_class(parsed.scheme)(parsed, transport_options)

"""URL scheme -> result backend class, imported lazily."""

from __future__ import annotations

from runner.backends.base import ResultBackend
from runner.config.urls import load_class, parse_url


def backend_class(scheme: str) -> type[ResultBackend]:
    return load_class("result backend", scheme)


def open_backend(url: str, expires: float | None = None, transport_options: dict | None = None,
                 broker_url: str | None = None) -> ResultBackend:
    parsed = parse_url(url)
    return backend_class(parsed.scheme).from_url(parsed, expires, transport_options, broker_url)

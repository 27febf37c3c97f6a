"""URL scheme -> result backend class, imported lazily."""

from __future__ import annotations

import importlib

from runner.backends.base import ResultBackend
from runner.config.urls import BACKEND_CLASSES, not_supported_message, parse_url
from runner.exceptions import NotSupportedYet


def backend_class(scheme: str) -> type[ResultBackend]:
    target = BACKEND_CLASSES.get(scheme)
    if target is None:
        raise NotSupportedYet(not_supported_message("result backend", f"{scheme}://"))
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def open_backend(url: str, expires: float | None = None, transport_options: dict | None = None,
                 broker_url: str | None = None) -> ResultBackend:
    parsed = parse_url(url)
    return backend_class(parsed.scheme).from_url(parsed, expires, transport_options, broker_url)

"""Stamping: labels (headers) put on every task of a canvas, as Celery's ``stamp()``.

A stamp travels in the message headers of each task (``stamped_headers`` names them, as
Celery's protocol), so a task reads it in ``self.request.headers`` / ``self.request.stamps``,
and ``app.control.revoke_by_stamped_headers`` can revoke every task carrying one.
A visitor (:class:`StampingVisitor`) chooses the stamps per signature, group, chain or chord.
"""

from __future__ import annotations

import json
from typing import Any

REVOKED_STAMPS = "revoked-stamps"  # keyed data: {header: [values]}


class StampingVisitor:
    """Celery's visitor: each hook returns the headers to stamp on what it visits."""

    def on_group_start(self, group: Any, **headers: Any) -> dict:
        return {}

    def on_group_end(self, group: Any, **headers: Any) -> None:
        pass

    def on_chain_start(self, chain: Any, **headers: Any) -> dict:
        return {}

    def on_chain_end(self, chain: Any, **headers: Any) -> None:
        pass

    def on_signature(self, sig: Any, **headers: Any) -> dict:
        raise NotImplementedError

    def on_chord_header_start(self, sig: Any, **header: Any) -> dict:
        return self.on_group_start(sig, **header)

    def on_chord_header_end(self, sig: Any, **header: Any) -> None:
        pass

    def on_chord_body(self, sig: Any, **header: Any) -> dict:
        return {}

    def on_callback(self, callback: Any, **header: Any) -> dict:
        return {}

    def on_errback(self, errback: Any, **header: Any) -> dict:
        return {}


def _put(sig: Any, stamps: dict, append: bool) -> None:
    """Write ``stamps`` into the headers of one task signature."""
    options = sig["options"]
    headers = options.setdefault("headers", {})
    names = list(headers.get("stamped_headers") or [])
    for key, value in stamps.items():
        if append and key in headers:
            old = headers[key] if isinstance(headers[key], list) else [headers[key]]
            new = value if isinstance(value, list) else [value]
            headers[key] = old + [v for v in new if v not in old]
        else:
            headers[key] = value
        if key not in names:
            names.append(key)
    headers["stamped_headers"] = names


def stamp(sig: Any, visitor: Any, append: bool, headers: dict,
          inherited: dict | None = None) -> None:
    """Stamp ``sig`` and everything in it (links and errbacks included) with ``headers`` and
    what ``visitor`` returns."""
    from runner.canvas.chord import chord
    from runner.canvas.primitives import chain, group

    stamps = {**(inherited or {}), **headers}
    if isinstance(sig, (chain, group)):  # noqa: UP038
        kind = "chain" if isinstance(sig, chain) else "group"
        if visitor is not None:
            stamps.update(getattr(visitor, f"on_{kind}_start")(sig, **stamps) or {})
        for task in sig.tasks:
            stamp(task, visitor, append, {}, stamps)
        if visitor is not None:
            getattr(visitor, f"on_{kind}_end")(sig, **stamps)
        return
    if isinstance(sig, chord):
        header_stamps = dict(stamps)
        if visitor is not None:
            header_stamps.update(visitor.on_chord_header_start(sig, **stamps) or {})
        for task in sig.tasks:
            stamp(task, visitor, append, {}, header_stamps)
        if visitor is not None:
            visitor.on_chord_header_end(sig, **stamps)
        if sig.body is not None:
            body_stamps = dict(stamps)
            if visitor is not None:
                body_stamps.update(visitor.on_chord_body(sig, **stamps) or {})
            stamp(sig.body, visitor, append, {}, body_stamps)
        return
    own = dict(stamps)
    if visitor is not None:
        own.update(visitor.on_signature(sig, **stamps) or {})
    _put(sig, own, append)
    for key, hook in (("link", "on_callback"), ("link_error", "on_errback")):
        for linked in sig["options"].get(key) or ():
            extra = getattr(visitor, hook)(linked, **own) if visitor is not None else {}
            _put(linked, {**own, **(extra or {})}, append)


def revoke_by_stamped_headers(app: Any, headers: dict, terminate: bool = False,
                              signal: str = "SIGTERM") -> None:
    """Revoke every task stamped with one of ``headers`` (``{"mystamp": "value"}``, a value
    may be a list): kept in the result backend, so a worker refuses such a task (REVOKED)
    when it is about to run it, wherever it was sent from."""
    wanted = {k: v if isinstance(v, list) else [v] for k, v in headers.items()}

    def add(raw: bytes | None) -> bytes:
        known = json.loads(raw) if raw else {}
        for key, values in wanted.items():
            known[key] = sorted({*known.get(key, []), *map(str, values)})
        return json.dumps(known).encode()

    app.backend.update_data(REVOKED_STAMPS, add)


def revoked_by_stamp(app: Any, headers: dict) -> str | None:
    """The stamp (``header=value``) by which a task with ``headers`` is revoked, or None."""
    names = headers.get("stamped_headers") if headers else None
    if not names:
        return None
    raw = app.backend.get_data(REVOKED_STAMPS)
    if not raw:
        return None
    revoked = json.loads(raw)
    for name in names:
        values = headers.get(name)
        for value in values if isinstance(values, list) else [values]:
            if str(value) in revoked.get(name, ()):
                return f"{name}={value}"
    return None

"""What to paste into a bug report (``runner report``, and the ``report`` remote control
command): versions, the platform, broker and results (passwords masked), and the settings that
differ from the defaults (secrets masked)."""

from __future__ import annotations

import platform
import re
from importlib import metadata
from typing import Any

from runner.config.settings import URL_SETTINGS
from runner.config.urls import mask_url
from runner.version import __version__

#: keys whose values are never shown (Celery's list)
SECRET = re.compile(r"API|TOKEN|KEY|SECRET|PASS|SIGNATURE|DATABASE|CREDENTIAL", re.IGNORECASE)
MASK = "********"
CLIENTS = ("redis", "pika", "pydantic", "click")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _plain(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return _plain(value.model_dump(exclude_defaults=True))
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def masked(key: str, value: Any) -> Any:
    """``value`` of setting (or nested key) ``key`` as it may be shown."""
    if isinstance(value, dict):
        return {k: masked(str(k), v) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(key, v) for v in value]
    if isinstance(value, str) and "://" in value:
        return mask_url(value)
    if SECRET.search(key) and value not in (None, "", False):
        return MASK
    return value


def report_text(app) -> str:
    conf = app.conf
    libraries = " ".join(f"{name}:{v}" for name in CLIENTS if (v := _version(name)))
    follows = " (follows the broker)" if app.backend_follows_broker else ""
    lines = [
        f"software -> runner:{__version__} py:{platform.python_version()}",
        f"            {libraries}",
        f"platform -> system:{platform.system()} arch:{platform.machine()} "
        f"kernel version:{platform.release()} imp:{platform.python_implementation()}",
        f"app      -> {app.main or '__main__'}",
        f"settings -> transport:{mask_url(app.broker_url)} "
        f"results:{mask_url(app.backend_url)}{follows}",
        "",
    ]
    for key in conf.keys():
        source = conf.source_of(key)
        if source is None:
            continue
        value = masked(key, _plain(conf[key]))
        if key in URL_SETTINGS and isinstance(value, str):
            value = mask_url(value)
        lines.append(f"{key}: {value!r}  # {source}")
    if len(lines) == 6:
        lines.append("(every setting has its default)")
    return "\n".join(lines)

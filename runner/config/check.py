"""Check a configuration and describe it: what ``python -m celeryconfig`` prints.

A user's config module validates itself when it ends with::

    if __name__ == "__main__":
        from runner.config import check_module; raise SystemExit(check_module(__name__))

``check_module`` writes to stdout/stderr on purpose: it is the body of a command, not library
code that others call for a value (they call :func:`problems` and :func:`summary`).
"""

from __future__ import annotations

import os
import sys
import types
import warnings
from collections.abc import Callable, Mapping

from pydantic import ValidationError

from runner.config.conf import Conf, issues_from
from runner.config.loaders import read_environ, unknown_environ
from runner.config.parts import unknown_transport_options
from runner.config.settings import Settings
from runner.config.urls import (
    EMBEDDED_DEFAULT_URL,
    backend_following,
    is_supported,
    mask_url,
    not_supported_message,
)
from runner.exceptions import ConfigError, ConfigIssue


def _url_line(url: str | None) -> str:
    if url is None:
        return f"(embedded SQLite default: {EMBEDDED_DEFAULT_URL})"
    return mask_url(url)


def _backend_line(broker_url: str | None, backend_url: str | None) -> str:
    if backend_url is None:
        following = backend_following(broker_url or EMBEDDED_DEFAULT_URL)
        return f"(follows the broker: {mask_url(following)})"
    return mask_url(backend_url)


def _schedule_text(schedule: object) -> str:
    if isinstance(schedule, int | float):
        return f"every {schedule:g}s"
    if isinstance(schedule, str):
        return f"cron '{schedule}'"
    total = getattr(schedule, "total_seconds", None)
    return f"every {total():g}s" if callable(total) else repr(schedule)


def summary(conf: Conf) -> str:
    """A short, password-free description of the effective settings."""
    s: Settings = conf.settings
    queues = [f"{s.task_default_queue} (default)"]
    queues += [q.name for q in s.task_queues if q.name != s.task_default_queue]
    routes = s.task_routes
    route_count = len(routes) if isinstance(routes, dict | list | tuple) else int(bool(routes))
    accept = ", ".join(s.accept_content)
    result_accept = ", ".join(s.result_accept_content) if s.result_accept_content else "same"
    lines = [
        f"broker:          {_url_line(s.broker_url)}",
        f"result backend:  {_backend_line(s.broker_url, s.result_backend)}",
        f"serializers:     task={s.task_serializer} result={s.result_serializer}",
        f"accept_content:  {accept} (results: {result_accept})",
        f"timezone:        {s.timezone or 'UTC'} (enable_utc={s.enable_utc})",
        f"queues:          {', '.join(queues)}",
        f"routes:          {route_count}",
        f"beat schedule:   {len(s.beat_schedule)} entr{'y' if len(s.beat_schedule) == 1 else 'ies'}",
    ]
    lines += [f"  {name}: {entry.task}, {_schedule_text(entry.schedule)}"
              for name, entry in s.beat_schedule.items()]
    return "\n".join(lines)


def problems(conf: Conf) -> list[ConfigIssue]:
    """Every problem: invalid settings, and URLs this version of runner cannot serve yet."""
    try:
        settings = conf.settings
    except ConfigError as exc:
        return list(exc.issues)
    issues = []
    for key, kind in (("broker_url", "broker"), ("result_backend", "backend")):
        url = getattr(settings, key)
        if url is not None and not is_supported(kind, url):
            issues.append(ConfigIssue(key, not_supported_message(kind, url), conf.source_of(key)))
    return issues


def environ_issues(environ: Mapping[str, str]) -> list[ConfigIssue]:
    """What run time would find wrong in the ``RUNNER_*`` variables: names that are no setting
    (with the one meant) and values the setting refuses (naming the variable)."""
    layer = read_environ(environ)
    issues = unknown_environ(environ)
    try:
        Settings.model_validate(layer.values)
    except ValidationError as exc:
        issues += issues_from(exc, layer.sources)
    return issues


def transport_issues(conf: Conf) -> tuple[list[ConfigIssue], list[str]]:
    """broker_transport_options runner's brokers do not read: an issue when it is close to
    one they do (a typo), else a warning (it may be meant for a broker of your own)."""
    issues, notes = [], []
    options = conf.settings.broker_transport_options
    source = conf.source_of("broker_transport_options")
    for key, hint in unknown_transport_options(options):
        if hint:
            issues.append(ConfigIssue(f"broker_transport_options.{key}",
                                      f"unknown option; did you mean {hint!r}?", source))
        else:
            notes.append(f"{source + ': ' if source else ''}broker_transport_options.{key}: "
                         f"not an option runner's brokers read; passed to the broker as is")
    return issues, notes


def check_conf(load: Callable[[Conf], None], environ: Mapping[str, str] | None = None) -> int:
    """Build a Conf with ``load(conf)``, then print the summary and "configuration OK" (0), or
    every problem to stderr (1). Old-name deprecations are printed too: here they are the point.

    The configuration is checked as written (the environment does not change the summary);
    the ``RUNNER_*`` variables of ``environ`` (default: this process's) are checked on their
    own, as run time would read them.
    """
    conf = Conf(environ={})
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DeprecationWarning)
        try:
            load(conf)
            issues = problems(conf)
            if not issues:
                more, notes = transport_issues(conf)
                issues += more
        except ConfigError as exc:
            issues = list(exc.issues)
    issues += environ_issues(os.environ if environ is None else environ)
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    if issues:
        print("\n".join(format_issues(issues)), file=sys.stderr)
        return 1
    print(summary(conf))
    print("configuration OK")
    return 0


def check_module(module: str | types.ModuleType) -> int:
    """Validate a config module (a name or the module itself) and report; returns an exit code.

    Under ``python -m celeryconfig`` the module is ``__main__``: its own globals are read (and
    its file gives the line numbers), it is not imported a second time. The environment is not
    consulted: this checks the module as written.
    """
    if isinstance(module, str) and module == "__main__":
        module = sys.modules["__main__"]
    return check_conf(lambda conf: conf.load_object(module, force=True))


def format_issues(issues: list[ConfigIssue]) -> list[str]:
    """A heading and one line per problem, each with its source when known."""
    lines = [f"configuration invalid: {len(issues)} problem(s)"]
    for issue in issues:
        text = str(issue) if issue.key else (
            f"{issue.source}: {issue.message}" if issue.source else issue.message)
        lines.append(f"  {text}")
    return lines

"""``task_routes``: which queue a task goes to, as Celery decides it.

Accepted shapes (Celery's):

* a dict ``{key: route}``; exact task names are tried first, then patterns in the order given;
* a list/tuple of entries, first match wins; an entry is a dict, a list of ``(key, route)`` pairs
  (ordered patterns), a router function, or the dotted path of one (``"myapp.routers.route"``);
* a single router function ``fn(name, args, kwargs, options, task=None, **kw)`` returning a queue
  name, a dict, or ``None`` for "no opinion".

A key is an exact task name, a glob (``"feed.tasks.*"``, matched with :mod:`fnmatch` rules), a
compiled regex, or a string ``"re:<regex>"`` (for YAML). A route is a queue name or a dict such as
``{"queue": "media", "priority": 5}``. Regexes are matched with ``re.match`` (anchored at the
start only), as in Celery.

Patterns are compiled once; lookups are cached per task name unless a router function is involved.
"""

from __future__ import annotations

import fnmatch
import importlib
import re
from collections.abc import Callable, Mapping
from typing import Any

from runner.exceptions import ConfigError, ConfigIssue

__all__ = ["Router", "validate_routes"]

Route = dict[str, Any]
RouterFunction = Callable[..., Route | str | None]

_GLOB_CHARS = frozenset("*?[")
_CACHE_LIMIT = 4096  # task names are few; the bound only guards against send_task of random names
_MISSING = object()
_PAIRS_HINT = ("; to keep patterns in order write a list of pairs inside a list: "
               "task_routes = ([('feed.tasks.*', 'feeds'), ...],)")


class _MapRoute:
    """One dict (or list of pairs) of routes, compiled: exact names first, then patterns."""

    __slots__ = ("exact", "patterns")

    def __init__(self, exact: dict[str, Route], patterns: list[tuple[re.Pattern[str], Route]]):
        self.exact = exact
        self.patterns = patterns

    def __call__(self, name: str) -> Route | None:
        route = self.exact.get(name)
        if route is not None:
            return route
        for pattern, route in self.patterns:
            if pattern.match(name):
                return route
        return None


def _compile_key(key: Any, where: str, errors: list[str]) -> str | re.Pattern[str] | None:
    if isinstance(key, re.Pattern):
        return key
    if not isinstance(key, str) or not key:
        errors.append(f"{where}: a route key must be a task name, a glob or a regex, "
                      f"got {type(key).__name__} {key!r}")
        return None
    try:
        if key.startswith("re:"):
            return re.compile(key[3:])
        if _GLOB_CHARS.intersection(key):
            return re.compile(fnmatch.translate(key))
    except re.error as exc:
        errors.append(f"{where}: invalid {'regular expression' if key.startswith('re:') else 'glob'}"
                      f" {key!r}: {exc}")
        return None
    return key


def _normalize_route(value: Any, where: str, errors: list[str]) -> Route | None:
    if isinstance(value, str):
        if value:
            return {"queue": value}
        errors.append(f"{where}: the queue name is empty")
        return None
    if not isinstance(value, Mapping):
        errors.append(f"{where}: a route must be a queue name or a dict like "
                      f"{{'queue': 'name'}}, got {type(value).__name__} {value!r}")
        return None
    problems = _route_dict_problems(value)
    errors.extend(f"{where}: {problem}" for problem in problems)
    return None if problems else dict(value)


def _route_dict_problems(route: Mapping[Any, Any]) -> list[str]:
    problems = []
    if "queue" not in route:
        problems.append(f"the route dict has no 'queue' key (keys: {sorted(map(str, route))})")
    elif not isinstance(route["queue"], str) or not route["queue"]:
        problems.append(f"'queue' must be a non-empty string, got {route['queue']!r}")
    priority = route.get("priority")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)
                                 or not 0 <= priority <= 255):
        problems.append(f"'priority' must be an integer from 0 to 255, got {priority!r}")
    routing_key = route.get("routing_key")
    if routing_key is not None and not isinstance(routing_key, str):
        problems.append(f"'routing_key' must be a string, got {routing_key!r}")
    return problems


def _compile_map(pairs: Any, where: str, errors: list[str]) -> _MapRoute:
    exact: dict[str, Route] = {}
    patterns: list[tuple[re.Pattern[str], Route]] = []
    for index, pair in enumerate(pairs):
        if isinstance(pairs, Mapping):
            key, value = pair, pairs[pair]
            here = f"{where}[{key!r}]"
        elif isinstance(pair, list | tuple) and len(pair) == 2:
            key, value = pair
            here = f"{where}[{index}]"
        else:
            errors.append(f"{where}[{index}]: expected a (pattern, route) pair, "
                          f"got {type(pair).__name__} {pair!r}{_PAIRS_HINT}")
            continue
        compiled, route = _compile_key(key, here, errors), _normalize_route(value, here, errors)
        if compiled is None or route is None:
            continue
        if isinstance(compiled, str):
            exact.setdefault(compiled, route)
        else:
            patterns.append((compiled, route))
    return _MapRoute(exact, patterns)


def _import_router(path: str, where: str, errors: list[str]) -> RouterFunction | None:
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    try:
        router = getattr(importlib.import_module(module_name), attr)
    except Exception as exc:
        errors.append(f"{where}: cannot import router {path!r}: {type(exc).__name__}: {exc}")
        return None
    if not callable(router):
        errors.append(f"{where}: router {path!r} is not callable")
        return None
    return router


def _is_dotted_path(text: str) -> bool:
    module_name, sep, attr = text.partition(":")
    if not sep:
        module_name, _, attr = text.rpartition(".")
    return bool(module_name) and all(p.isidentifier() for p in [*module_name.split("."), attr])


def _compile(routes: Any, errors: list[str], import_routers: bool = True,
             ) -> list[_MapRoute | RouterFunction]:
    if routes is None:
        return []
    nested = isinstance(routes, list | tuple)
    entries: list[_MapRoute | RouterFunction] = []
    for index, entry in enumerate(routes if nested else [routes]):
        where = f"task_routes[{index}]" if nested else "task_routes"
        if isinstance(entry, Mapping | list | tuple):
            entries.append(_compile_map(entry, where, errors))
        elif isinstance(entry, str):
            if not _is_dotted_path(entry):
                errors.append(f"{where}: {entry!r} is not the dotted path of a router function; "
                              f"map task names to queues with a dict{_PAIRS_HINT}")
            elif import_routers and (router := _import_router(entry, where, errors)):
                entries.append(router)
        elif callable(entry):
            entries.append(entry)
        else:
            errors.append(f"{where}: expected a dict, a list of (pattern, route) pairs or a "
                          f"router function, got {type(entry).__name__} {entry!r}")
    return entries


def validate_routes(routes: Any) -> list[str]:
    """Human-readable problems in a ``task_routes`` value; empty when it is usable.

    Router paths given as strings are checked for shape only, not imported.
    """
    errors: list[str] = []
    _compile(routes, errors, import_routers=False)
    return errors


class Router:
    """Decides the queue (and priority, routing key) of each task sent.

    Explicit options given to ``apply_async`` win: a route fills in only what is missing, and
    when an explicit ``queue`` differs from the routed one, the route's ``routing_key`` and
    ``exchange`` are dropped (they belong to the routed queue).
    """

    def __init__(self, routes: Any, default_queue: str, queues: list[str] | None = None,
                 create_missing: bool = True):
        errors: list[str] = []
        self._entries = _compile(routes, errors)
        if errors:
            raise ConfigError([ConfigIssue(key="task_routes", message=e) for e in errors])
        self.default_queue = default_queue
        self.queues = frozenset(queues) if queues is not None else None
        self.create_missing = create_missing
        self._static = all(isinstance(entry, _MapRoute) for entry in self._entries)
        self._cache: dict[str, Route | None] = {}

    def route(self, task_name: str, options: Mapping[str, Any] | None = None,
              args: tuple[Any, ...] | list[Any] = (), kwargs: Mapping[str, Any] | None = None,
              task: Any = None) -> dict[str, Any]:
        """Return a new dict: ``options`` with ``queue`` (and the route's other keys) filled in."""
        options = options or {}
        if self._static:
            route = self._cache.get(task_name, _MISSING)
            if route is _MISSING:
                route = self._lookup_static(task_name)
        else:
            route = self._lookup(task_name, args, kwargs or {}, options, task)
        result = self._merge(route, options)
        self._check_queue(result["queue"], task_name)
        return result

    def _lookup_static(self, task_name: str) -> Route | None:
        route = None
        for entry in self._entries:
            route = entry(task_name)
            if route is not None:
                break
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[task_name] = route
        return route

    def _lookup(self, task_name: str, args: Any, kwargs: Mapping[str, Any],
                options: Mapping[str, Any], task: Any) -> Route | None:
        for entry in self._entries:
            if isinstance(entry, _MapRoute):
                route = entry(task_name)
            else:
                route = _from_function(entry, entry(task_name, args, kwargs, options, task=task),
                                       task_name)
            if route is not None:
                return route
        return None

    def _merge(self, route: Route | None, options: Mapping[str, Any]) -> dict[str, Any]:
        result = dict(route) if route else {}
        explicit_queue = options.get("queue")
        if explicit_queue and route and explicit_queue != route.get("queue"):
            result.pop("routing_key", None)
            result.pop("exchange", None)
        for key, value in options.items():
            if value is not None:
                result[key] = value
        if not result.get("queue"):
            result["queue"] = self.default_queue
        return result

    def _check_queue(self, queue: str, task_name: str) -> None:
        if self.create_missing or self.queues is None or queue in self.queues:
            return
        raise ConfigError(
            f"Task {task_name!r} is routed to queue {queue!r}, which is not in task_queues "
            f"({', '.join(sorted(self.queues)) or 'none'}) and task_create_missing_queues is off;"
            f" add the queue to task_queues or fix task_routes")


def _from_function(router: RouterFunction, value: Any, task_name: str) -> Route | None:
    if value is None:
        return None
    if isinstance(value, str) and value:
        return {"queue": value}
    if isinstance(value, Mapping):
        return dict(value)
    raise ConfigError(f"Router {getattr(router, '__qualname__', router)!r} returned "
                      f"{type(value).__name__} {value!r} for task {task_name!r}; "
                      f"a router must return a queue name, a dict or None")

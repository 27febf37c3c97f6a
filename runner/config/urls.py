"""Broker and result-backend URLs: parsing, checking, masking, and the scheme -> class tables.

The tables hold dotted *strings*, never imports: brokers and backends import ``runner.config``,
so config must not import them (no cycles). The app resolves ``BROKER_CLASSES[url.scheme]``
lazily; ``None`` means "recognized, not supported by this version yet", and the app raises
:class:`~runner.exceptions.NotSupportedYet` with :func:`not_supported_message`.

Passwords never leave this module unmasked in a message: every error shows :func:`mask_url`.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

from runner.exceptions import ConfigError, NotSupportedYet

#: What ``broker_url = None`` / ``result_backend = None`` resolve to (the app does the resolving).
EMBEDDED_DEFAULT_URL = "sqlite:///.runner/runner.db"

BROKER_CLASSES: dict[str, str | None] = {
    "sqlite": "runner.brokers.sqlite:SQLiteBroker",
    "memory": "runner.brokers.memory:MemoryBroker",
    "redis": "runner.brokers.redis:RedisBroker",
    "rediss": "runner.brokers.redis:RedisBroker",
    "redis+socket": "runner.brokers.redis:RedisBroker",
    "amqp": "runner.brokers.amqp:AMQPBroker",
    "pyamqp": "runner.brokers.amqp:AMQPBroker",
    "amqps": "runner.brokers.amqp:AMQPBroker",
    "sentinel": "runner.brokers.redis:RedisBroker",
}

BACKEND_CLASSES: dict[str, str | None] = {
    "sqlite": "runner.backends.sqlite:SQLiteBackend",
    "memory": "runner.backends.memory:MemoryBackend",
    "redis": "runner.backends.redis:RedisBackend",
    "rediss": "runner.backends.redis:RedisBackend",
    "redis+socket": "runner.backends.redis:RedisBackend",
    "rpc": "runner.backends.rpc:RPCBackend",
    "sentinel": "runner.backends.redis:RedisBackend",
}

SCHEMES: frozenset[str] = frozenset(BROKER_CLASSES) | frozenset(BACKEND_CLASSES)

_REDIS_SCHEMES = {"redis", "rediss", "redis+socket"}
_AMQP_SCHEMES = {"amqp", "pyamqp", "amqps"}
_SSL_CERT_REQS = {"required", "optional", "none", "cert_required", "cert_optional", "cert_none"}


def backend_following(broker_url: str) -> str:
    """The result backend of an app that names none: the broker's own store, so that every
    host that reaches the broker reaches the results (never a local file another host cannot
    see). The same Redis (same db) or SQLite file, ``memory://`` for ``memory://``, and
    ``rpc://`` for AMQP, as Celery's tutorial pairs them."""
    scheme = broker_url.partition("://")[0].lower()
    if scheme in _AMQP_SCHEMES:
        return "rpc://"
    return broker_url


@dataclass(frozen=True)
class URL:
    """A parsed broker/backend URL.

    ``path`` is the filesystem path for ``sqlite`` and ``redis+socket``, the virtual host for
    AMQP (``"/"`` when empty) and the raw URL path otherwise. ``db`` is set for Redis only.
    ``raw`` is the URL as given: do not log it, log :func:`mask_url` of it.
    """

    scheme: str
    username: str | None
    password: str | None = field(repr=False)
    host: str | None
    port: int | None
    path: str
    db: int | None
    query: dict[str, str]
    raw: str = field(repr=False)
    #: every URL of a failover list (``redis://a;redis://b``), this one first; () for one URL
    alternates: tuple[URL, ...] = field(default=(), repr=False)

    @property
    def masked(self) -> str:
        return mask_url(self.raw)

    @property
    def all(self) -> tuple[URL, ...]:
        """The URLs to try: the failover list, or this one alone."""
        return self.alternates or (self,)


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``**``; returns non-URL input unchanged. A
    failover list (``a;b``) has each of its URLs masked."""
    if not isinstance(url, str):
        return url
    if ";" in url:
        return ";".join(mask_url(part) for part in url.split(";"))
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = len(rest)
    for stop in "/?#":
        index = rest.find(stop)
        if index != -1:
            end = min(end, index)
    at = rest.rfind("@", 0, end)
    if at == -1:  # a password with an unescaped "/" still hides behind the last "@"
        at = rest.rfind("@")
    if at == -1:
        return url
    userinfo = rest[:at]
    user, colon, _password = userinfo.partition(":")
    if not colon:
        return url
    return f"{scheme}://{user}:**{rest[at:]}"


def _fail(url: str, problem: str) -> ConfigError:
    return ConfigError(f"invalid URL {mask_url(url)!r}: {problem}")


def _unknown_scheme(url: str, scheme: str) -> ConfigError:
    known = sorted(SCHEMES)
    base = scheme.rpartition("+")[2]  # Celery's "db+sqlite" / "sqla+sqlite" style prefixes
    guess = base if base in SCHEMES else next(
        iter(difflib.get_close_matches(scheme, known, n=1, cutoff=0.6)), None)
    hint = f"; did you mean {guess}://?" if guess else ""
    return _fail(url, f"unknown scheme {scheme!r}{hint} (known: "
                      + ", ".join(f"{s}://" for s in known) + ")")


def parse_url(url: str) -> URL:
    """Parse and check a broker or backend URL; :class:`ConfigError` names what is wrong. A
    failover list (Celery's ``redis://a:6379/0;redis://b:6379/0``) gives its first URL with
    all of them in ``alternates``; they must share a scheme family."""
    if isinstance(url, str) and ";" in url:
        return _parse_list(url)
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"invalid URL {url!r}: expected a string like 'redis://host:6379/0'")
    scheme, sep, _rest = url.partition("://")
    if not sep:
        raise _fail(url, "not a URL (expected scheme://..., e.g. 'sqlite:///.runner/runner.db')")
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise _unknown_scheme(url, scheme)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _fail(url, str(exc)) from None
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    host = parts.hostname or None
    path, db = parts.path, None
    if scheme == "sqlite":
        path = _sqlite_path(url, host, parts.path)
    elif scheme == "redis+socket":
        if not parts.path or parts.path == "/":
            raise _fail(url, "redis+socket:// needs a socket path, e.g. redis+socket:///run/redis.sock")
        db = _redis_db(url, query.get("db", query.get("virtual_host", "0")))
    elif scheme in _REDIS_SCHEMES or scheme == "sentinel":
        db = _redis_db(url, parts.path.strip("/") or "0")
        if scheme == "rediss":
            _check_ssl_options(url, query)
    elif scheme in _AMQP_SCHEMES:
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        path = unquote(path) or "/"
    return URL(scheme=scheme, username=username, password=password, host=host, port=port,
               path=path, db=db, query=query, raw=url)


def failover_string(urls: list | tuple) -> str:
    """A failover list given as a list of URLs (Celery accepts both) as one string."""
    return ";".join(str(u).strip() for u in urls)


def _parse_list(url: str) -> URL:
    parts = [part.strip() for part in url.split(";")]
    parsed = []
    for position, part in enumerate(parts, 1):
        if not part:
            continue  # (a trailing ";")
        try:
            parsed.append(parse_url(part))
        except ConfigError as exc:
            raise ConfigError(f"failover list {mask_url(url)!r}, URL {position} of "
                              f"{len(parts)}: {exc}") from None
    families = {_family(p.scheme) for p in parsed}
    if len(families) > 1 or not parsed:
        raise _fail(url, "the URLs of a failover list must all be Redis, all RabbitMQ or all "
                         "Sentinel (one transport, several servers)")
    if parsed[0].scheme not in _REDIS_SCHEMES | _AMQP_SCHEMES | {"sentinel"}:
        raise _fail(url, f"{parsed[0].scheme}:// has no failover list (Redis, Sentinel and "
                         f"RabbitMQ URLs do)")
    first = parsed[0]
    return URL(scheme=first.scheme, username=first.username, password=first.password,
               host=first.host, port=first.port, path=first.path, db=first.db,
               query=first.query, raw=url, alternates=tuple(parsed))


def _family(scheme: str) -> str:
    return ("redis" if scheme in _REDIS_SCHEMES else "amqp" if scheme in _AMQP_SCHEMES
            else scheme)


def _sqlite_path(url: str, host: str | None, path: str) -> str:
    if host:
        raise _fail(url, f"sqlite URLs have no host (got {host!r}); write sqlite:///relative.db "
                         "or sqlite:////absolute/path.db")
    if not path or path == "/":
        raise _fail(url, "sqlite:// needs a database path, e.g. sqlite:///.runner/runner.db")
    return unquote(path[1:])  # sqlite:///rel.db -> "rel.db", sqlite:////abs.db -> "/abs.db"


def _redis_db(url: str, text: str) -> int:
    try:
        db = int(text)
    except ValueError:
        raise _fail(url, f"the Redis database must be a number, like /0 (got {text!r})") from None
    if db < 0:
        raise _fail(url, f"the Redis database must be >= 0 (got {db})")
    return db


def _check_ssl_options(url: str, query: dict[str, str]) -> None:
    value = query.get("ssl_cert_reqs")
    if value is not None and value.lower() not in _SSL_CERT_REQS:
        raise _fail(url, f"ssl_cert_reqs={value!r}; allowed: required, optional, none")


def check_url(url: str, kind: str) -> URL:
    """Parse ``url`` and check it fits ``kind`` ("broker" or "backend")."""
    parsed = parse_url(url)
    table = BROKER_CLASSES if kind == "broker" else BACKEND_CLASSES
    if parsed.scheme not in table:
        other = "result backend" if kind == "broker" else "broker"
        raise _fail(url, f"{parsed.scheme}:// is a {other} scheme, not a {kind} one "
                         f"(use one of: {', '.join(s + '://' for s in sorted(table))})")
    if kind == "broker" and parsed.scheme == "sqlite" and parsed.path == ":memory:":
        raise _fail(url, "an in-memory SQLite database cannot be shared by producers and "
                         "workers; use a file (sqlite:///.runner/runner.db) or memory://")
    return parsed


def is_supported(kind: str, url: str) -> bool:
    """Whether this version of runner has a class for ``url``'s scheme."""
    table = BROKER_CLASSES if kind == "broker" else BACKEND_CLASSES
    return table.get(url.partition("://")[0].lower()) is not None


def load_class(kind: str, scheme: str) -> type:
    """The class serving ``scheme`` as a ``"broker"`` or ``"result backend"``, imported only
    now (so no interface imports its implementations); NotSupportedYet when there is none."""
    table = BROKER_CLASSES if kind == "broker" else BACKEND_CLASSES
    target = table.get(scheme)
    if target is None:
        raise NotSupportedYet(not_supported_message(kind, f"{scheme}://"))
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def not_supported_message(kind: str, url: str) -> str:
    """The message for a recognized scheme that has no implementation yet."""
    table = BROKER_CLASSES if kind == "broker" else BACKEND_CLASSES
    label = "broker" if kind == "broker" else "result backend"
    scheme = url.partition("://")[0].lower()
    supported = ", ".join(f"{s}://" for s, cls in table.items() if cls is not None)
    from runner.version import __version__

    return (f"{label} URL scheme {scheme!r} ({mask_url(url)}) is not supported yet by "
            f"runner {__version__}; supported now: {supported}")

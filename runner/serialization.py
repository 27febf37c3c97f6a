"""The serializer registry: names, content types, accept lists, and exceptions as results.

Every message body and every stored result passes through :func:`dumps` / :func:`loads`, so this
module is on the hot path: plain dict lookups, no pydantic, encoders built once at import.

Promises:

* ``json`` (the default) round-trips ``datetime`` (naive and aware), ``date``, ``time``, ``UUID``,
  ``Decimal`` and ``bytes`` through tagged dicts ``{"__type__": ..., "__value__": ...}``;
  tuples come back as lists, as with Celery.
* ``yaml`` and ``msgpack`` (the latter only when ``msgpack`` is installed) round-trip the same types.
* :func:`loads` refuses any content type outside ``accept`` *before* decoding a byte, so a worker
  that accepts only ``json`` never unpickles anything.
* Every encoding or decoding failure is a :class:`~runner.exceptions.SerializationError`.
"""

from __future__ import annotations

import base64
import bz2
import gzip
import importlib
import json
import lzma
import pickle
import sys
import uuid
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from functools import lru_cache
from typing import Any

import yaml

from runner.exceptions import ContentDisallowed, SerializationError

__all__ = [
    "Serializer", "register", "dumps", "loads", "content_type_of", "accept_set",
    "registered_names", "exception_to_dict", "dict_to_exception", "compress", "decompress",
]

DEFAULT_SERIALIZER = "json"


@dataclass(frozen=True, slots=True)
class Serializer:
    """One registered codec: its short name, its MIME content type, and the two functions."""

    name: str
    content_type: str
    dumps: Callable[[Any], bytes]
    loads: Callable[[bytes], Any]


_by_name: dict[str, Serializer] = {}
_by_content_type: dict[str, Serializer] = {}


def register(name: str, content_type: str, dumps: Callable[[Any], bytes],
             loads: Callable[[bytes], Any]) -> None:
    """Register (or replace) a serializer under ``name`` and ``content_type``."""
    previous = _by_name.pop(name, None)
    if previous is not None:
        _by_content_type.pop(previous.content_type, None)
    serializer = Serializer(name, content_type, dumps, loads)
    _by_name[name] = serializer
    _by_content_type[content_type] = serializer


def registered_names() -> list[str]:
    return list(_by_name)


def _known() -> str:
    return ", ".join(f"{s.name} ({s.content_type})" for s in _by_name.values()) or "none"


def _serializer_named(name: str) -> Serializer:
    serializer = _by_name.get(name) or _by_content_type.get(name)
    if serializer is None:
        raise SerializationError(f"Unknown serializer {name!r}; registered serializers: {_known()}")
    return serializer


def dumps(obj: Any, serializer: str = DEFAULT_SERIALIZER) -> tuple[str, bytes]:
    """Encode ``obj``; return ``(content_type, payload)``."""
    codec = _by_name.get(serializer) or _serializer_named(serializer)
    try:
        return codec.content_type, codec.dumps(obj)
    except SerializationError:
        raise
    except Exception as exc:
        raise SerializationError(
            f"Cannot serialize {type(obj).__name__} with {codec.name}: {exc}") from exc


def _describe(content_type: str) -> str:
    serializer = _by_content_type.get(content_type)
    return f"{serializer.name} ({content_type})" if serializer else content_type


def _refuse(content_type: str, accept: frozenset[str]) -> ContentDisallowed:
    names = sorted(_by_content_type[ct].name if ct in _by_content_type else ct for ct in accept)
    return ContentDisallowed(f"Refusing to deserialize content of type {_describe(content_type)}: "
                             f"not in accept_content {names}")


def loads(payload: bytes, content_type: str, accept: frozenset[str] | None = None) -> Any:
    """Decode ``payload``; refuse content types outside ``accept`` (a set of content types)."""
    if accept is not None and content_type not in accept:
        raise _refuse(content_type, accept)
    codec = _by_content_type.get(content_type)
    if codec is None:
        codec = _by_content_type.get(content_type.partition(";")[0].strip())
        if codec is None:
            raise SerializationError(f"No serializer registered for content type "
                                     f"{content_type!r}; registered serializers: {_known()}")
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    try:
        return codec.loads(payload)
    except SerializationError:
        raise
    except Exception as exc:
        raise SerializationError(f"Cannot decode {codec.name} payload ({codec.content_type}): "
                                 f"{type(exc).__name__}: {exc}") from exc


def content_type_of(name_or_type: str) -> str:
    """``'json'`` -> ``'application/json'``; a registered content type is returned unchanged."""
    return _serializer_named(name_or_type).content_type


def accept_set(names: Iterable[str]) -> frozenset[str]:
    """Turn ``accept_content`` (names and/or content types) into a set of content types."""
    if isinstance(names, str):
        names = [names]
    return frozenset(content_type_of(name) for name in names)


# --- json ------------------------------------------------------------------------------------

def _tag(kind: str, value: Any) -> dict[str, Any]:
    return {"__type__": kind, "__value__": value}


_JSON_ENCODERS: dict[type, Callable[[Any], dict[str, Any]]] = {
    datetime: lambda v: _tag("datetime", v.isoformat()),
    date: lambda v: _tag("date", v.isoformat()),
    time: lambda v: _tag("time", v.isoformat()),
    uuid.UUID: lambda v: _tag("uuid", str(v)),
    Decimal: lambda v: _tag("decimal", str(v)),
    bytes: lambda v: _tag("bytes", base64.b64encode(v).decode("ascii")),
}
_JSON_ENCODE_ORDER = (datetime, date, time, uuid.UUID, Decimal, bytes)  # datetime before date

_JSON_DECODERS: dict[str, Callable[[Any], Any]] = {
    "datetime": datetime.fromisoformat,
    "date": date.fromisoformat,
    "time": time.fromisoformat,
    "uuid": uuid.UUID,
    "decimal": Decimal,
    "bytes": lambda v: base64.b64decode(v.encode("ascii"), validate=True),
}


def _json_default(obj: Any) -> Any:
    encode = _JSON_ENCODERS.get(type(obj))
    if encode is not None:
        return encode(obj)
    for kind in _JSON_ENCODE_ORDER:  # subclasses (pendulum, bytes subclasses, ...)
        if isinstance(obj, kind):
            return _JSON_ENCODERS[kind](obj)
    if isinstance(obj, bytearray | memoryview):
        return _JSON_ENCODERS[bytes](bytes(obj))
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _json_object_hook(obj: dict[str, Any]) -> Any:
    kind = obj.get("__type__")
    if kind is None or len(obj) != 2 or "__value__" not in obj:
        return obj
    decode = _JSON_DECODERS.get(kind)
    return obj if decode is None else decode(obj["__value__"])


_json_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=_json_default)
_json_decoder = json.JSONDecoder(object_hook=_json_object_hook)


def _json_dumps(obj: Any) -> bytes:
    return _json_encoder.encode(obj).encode("utf-8")


def _json_loads(payload: bytes) -> Any:
    return _json_decoder.decode(payload.decode("utf-8"))


# --- yaml ------------------------------------------------------------------------------------

_YamlDumper = type("_YamlDumper", (getattr(yaml, "CSafeDumper", yaml.SafeDumper),), {})
_YamlLoader = type("_YamlLoader", (getattr(yaml, "CSafeLoader", yaml.SafeLoader),), {})
_YAML_TAGS: dict[type, tuple[str, Callable[[str], Any]]] = {
    time: ("!time", time.fromisoformat),
    uuid.UUID: ("!uuid", uuid.UUID),
    Decimal: ("!decimal", Decimal),
}
for _kind, (_tag_name, _parse) in _YAML_TAGS.items():
    _YamlDumper.add_multi_representer(
        _kind, lambda dumper, value, tag=_tag_name: dumper.represent_scalar(tag, str(value)))
    _YamlLoader.add_constructor(
        _tag_name, lambda loader, node, parse=_parse: parse(loader.construct_scalar(node)))


def _yaml_dumps(obj: Any) -> bytes:
    return yaml.dump(obj, Dumper=_YamlDumper, allow_unicode=True, encoding="utf-8")


YAML_MAX_NODES = 1_000_000  # nodes a payload stands for, aliases expanded ("billion laughs")
YAML_MAX_DEPTH = 100


def _yaml_loads(payload: bytes) -> Any:
    _check_yaml_shape(payload)
    return yaml.load(payload, Loader=_YamlLoader)  # noqa: S506 - a SafeLoader subclass


def _check_yaml_shape(payload: bytes) -> None:
    """Refuse an alias bomb or a nesting too deep before building anything: one pass over the
    parser's events (libyaml's where there is one), counting the nodes each anchor stands
    for, so an alias costs what it would expand to."""
    anchors: dict[str, int] = {}
    open_: list[list] = [[None, 0]]  # (anchor, nodes so far) of each open collection
    for event in yaml.parse(payload, Loader=_YamlLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            if len(open_) > YAML_MAX_DEPTH:
                raise SerializationError(f"YAML payload nests deeper than {YAML_MAX_DEPTH} "
                                         f"levels: refused")
            open_.append([event.anchor, 1])
            continue
        if isinstance(event, yaml.CollectionEndEvent):
            anchor, nodes = open_.pop()
        elif isinstance(event, yaml.ScalarEvent):
            anchor, nodes = event.anchor, 1
        elif isinstance(event, yaml.AliasEvent):
            anchor, nodes = None, anchors.get(event.anchor, 1)
        else:
            continue
        if anchor is not None:
            anchors[anchor] = nodes
        open_[-1][1] += nodes
        if open_[-1][1] > YAML_MAX_NODES:
            raise SerializationError(f"YAML payload stands for more than {YAML_MAX_NODES:,} "
                                     f"values once its aliases are expanded: refused")


# --- msgpack (optional) ----------------------------------------------------------------------

_MSGPACK_EXT = {datetime: 1, date: 2, time: 3, Decimal: 5}  # uuid.UUID is code 4 (16 raw bytes)
_MSGPACK_PARSE: dict[int, Callable[[bytes], Any]] = {
    1: lambda data: datetime.fromisoformat(data.decode()),
    2: lambda data: date.fromisoformat(data.decode()),
    3: lambda data: time.fromisoformat(data.decode()),
    4: lambda data: uuid.UUID(bytes=data),
    5: lambda data: Decimal(data.decode()),
}


def _register_msgpack() -> None:
    try:
        import msgpack
    except ImportError:
        return

    def default(obj: Any) -> Any:
        if isinstance(obj, uuid.UUID):
            return msgpack.ExtType(4, obj.bytes)
        for kind in (datetime, date, time, Decimal):
            if isinstance(obj, kind):
                text = obj.isoformat() if kind is not Decimal else str(obj)
                return msgpack.ExtType(_MSGPACK_EXT[kind], text.encode())
        raise TypeError(f"Object of type {type(obj).__name__} is not msgpack serializable")

    def ext_hook(code: int, data: bytes) -> Any:
        parse = _MSGPACK_PARSE.get(code)
        return msgpack.ExtType(code, data) if parse is None else parse(data)

    register("msgpack", "application/x-msgpack",
             lambda obj: msgpack.packb(obj, default=default, use_bin_type=True),
             lambda payload: msgpack.unpackb(payload, raw=False, ext_hook=ext_hook,
                                             strict_map_key=False))


register("json", "application/json", _json_dumps, _json_loads)
register("pickle", "application/x-python-serialize",
         lambda obj: pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), pickle.loads)
register("yaml", "application/x-yaml", _yaml_dumps, _yaml_loads)
_register_msgpack()


def _auth_not_set_up(_value: Any) -> Any:
    raise SerializationError("the auth serializer (message signing) is not set up in this "
                             "process: set security_key, security_certificate and "
                             "security_cert_store (see the README's Security section)")


# Celery's signing serializer; runner.security replaces it with one that signs and checks
register("auth", "application/data", _auth_not_set_up, _auth_not_set_up)


# --- exceptions as results -------------------------------------------------------------------

def _json_safe(value: Any) -> Any:
    try:
        _json_encoder.encode(value)
    except (TypeError, ValueError, OverflowError):
        return repr(value)
    return value


def exception_to_dict(exc: BaseException) -> dict[str, Any]:
    """Celery's result form of an exception; every argument json cannot take becomes its repr."""
    cls = type(exc)
    return {
        "exc_type": cls.__name__,
        "exc_qualname": cls.__qualname__,
        "exc_module": cls.__module__,
        "exc_message": [_json_safe(arg) for arg in exc.args],
    }


def _find_class(module_name: str, qualname: str) -> Any:
    """The object at ``module:qualname``, or None. Imports the module, runs nothing else."""
    parts = qualname.split(".")
    if not all(part.isidentifier() for part in parts):
        return None  # "<locals>" and friends: not reachable by name
    module = sys.modules.get(module_name)
    if module is None:
        try:
            module = importlib.import_module(module_name)
        except Exception:
            return None
    found: Any = module
    for part in parts:
        found = getattr(found, part, None)
        if found is None:
            return None
    return found


@lru_cache(maxsize=512)
def _stand_in(module_name: str, qualname: str, name: str) -> type[Exception]:
    """A class that looks like the original (same names) when the real one is not available.

    Cached so that two results of the same missing type share one class.
    """
    return type(name, (Exception,), {"__module__": module_name, "__qualname__": qualname,
                                     "__doc__": f"Stand-in for {module_name}.{qualname}."})


def _instantiate(cls: type[BaseException], args: tuple[Any, ...]) -> BaseException | None:
    try:
        return cls(*args)
    except Exception:
        pass
    try:
        exc = cls.__new__(cls)
        exc.args = args
        return exc
    except Exception:
        return None


def dict_to_exception(data: dict[str, Any]) -> BaseException:
    """Rebuild an exception from :func:`exception_to_dict` output (or Celery's)."""
    if not isinstance(data, dict) or not isinstance(data.get("exc_type"), str):
        raise SerializationError(f"Not an exception result (no 'exc_type'): {data!r:.200}")
    name: str = data["exc_type"]
    qualname = data.get("exc_qualname") or name
    module_name = data.get("exc_module") or "builtins"
    message = data.get("exc_message", ())
    args = tuple(message) if isinstance(message, list | tuple) else (message,)
    cls = _find_class(module_name, qualname)
    if isinstance(cls, type) and issubclass(cls, BaseException):
        exc = _instantiate(cls, args)
        if exc is not None:
            return exc
    return _stand_in(module_name, qualname, name)(*args)


# --- compression (task_compression) ----------------------------------------------------------

_COMPRESSORS: dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]] = {
    "gzip": (lambda data: gzip.compress(data, compresslevel=6, mtime=0), gzip.decompress),
    "zlib": (zlib.compress, zlib.decompress),
    "bzip2": (bz2.compress, bz2.decompress),
    "lzma": (lzma.compress, lzma.decompress),
}
_COMPRESSION_ALIASES = {"bz2": "bzip2", "xz": "lzma", "application/x-gzip": "gzip",
                        "application/x-bz2": "bzip2", "application/x-lzma": "lzma"}


def _codec(method: str) -> tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]:
    codec = _COMPRESSORS.get(_COMPRESSION_ALIASES.get(method, method))
    if codec is None:
        raise SerializationError(f"Unknown compression method {method!r}; "
                                 f"known methods: {', '.join(_COMPRESSORS)}")
    return codec


def compress(data: bytes, method: str | None) -> bytes:
    """Compress ``data`` with ``method`` (``None`` returns it unchanged)."""
    return data if method is None else _codec(method)[0](data)


def decompress(data: bytes, method: str | None) -> bytes:
    if method is None:
        return data
    decompress_fn = _codec(method)[1]
    try:
        return decompress_fn(data)
    except Exception as exc:
        raise SerializationError(f"Cannot decompress {method} data: {exc}") from exc

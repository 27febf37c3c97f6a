"""The one way runner reads YAML it did not write: pipeline files, settings files, ``-p`` values.

YAML from a user (or an attacker) must never hang, exhaust memory or end in a traceback, so the
reader here refuses, with the file, line and column:

- more than ``max_bytes`` (each caller names its limit) and bytes that are not UTF-8 (the
  message names the byte offset);
- nesting deeper than :data:`MAX_DEPTH`;
- aliases that together stand for more than :data:`MAX_ALIAS_NODES` nodes (a 434-byte
  "billion laughs" file stands for 10^9), and an alias inside its own anchor (a cycle).

Plain scalars are resolved as YAML 1.2 (core schema) resolves them, not as YAML 1.1 (PyYAML's
default): only ``true``/``false`` (``True``, ``TRUE``, ...) are booleans, so ``NO``, ``no``,
``on``, ``off``, ``yes``, ``y`` stay text, in keys and in values (``rates: {NO: 1.0}`` keeps its
country code); ``0755`` is the integer 755, ``0o755`` is octal, ``1:20`` and ``1_000`` are text.
Timestamps (``2026-11-24``) are read as dates, as before, and an impossible one stays text.
Merge keys (``<<: *defaults``) work.

The document is built in one pass over the parser's events (libyaml's where it is installed),
without recursion, recording the ``(line, column)`` of every mapping key and sequence item: the
time taken is linear in the size of the text.
"""

from __future__ import annotations

import gc
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import yaml
from yaml import events

from runner.exceptions import RunnerError

MAX_DEPTH = 100
MAX_ALIAS_NODES = 100_000
MAX_INT_DIGITS = 4000  # Python refuses to convert longer decimal text (sys.int_info)

Path = tuple[Any, ...]

_Parser = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False,
         "FALSE": False}
_NULL = {"", "~", "null", "Null", "NULL"}
_INT10 = re.compile(r"[-+]?[0-9]+\Z")
_INT8 = re.compile(r"0o[0-7]+\Z")
_INT16 = re.compile(r"0x[0-9a-fA-F]+\Z")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?\Z")
_INF = re.compile(r"[-+]?\.(inf|Inf|INF)\Z")
_NAN = re.compile(r"\.(nan|NaN|NAN)\Z")
_TIMESTAMP = re.compile(r"[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?"
                        r"(([Tt]|[ \t]+)[0-9][0-9]?:[0-9][0-9]:[0-9][0-9](\.[0-9]*)?"
                        r"(([ \t]*)Z|[-+][0-9][0-9]?(:[0-9][0-9])?)?)?\Z")
_TAG = "tag:yaml.org,2002:"
_MAYBE_NOT_TEXT = frozenset("0123456789+-.~nN")  # first characters of numbers, dates and null
_MERGE = "<<"


class YAMLError(RunnerError):
    """The text is not YAML runner will read; ``str()`` is ``file:line:col: what``."""

    def __init__(self, problem: str, file: str, line: int | None = None,
                 column: int | None = None):
        self.problem, self.file, self.line, self.column = problem, file, line, column
        where = file + (f":{line}" if line else "") + (f":{column}" if line and column else "")
        super().__init__(f"{where}: {problem}")


@dataclass
class Parsed:
    """A YAML document as Python data, with the ``(line, column)`` (1-based) of every mapping
    key and sequence item, by its path of keys and indexes (``('steps', 'a', 'args', 0)``)."""

    data: Any
    positions: dict[Path, tuple[int, int]] = field(default_factory=dict)


def read_text(path: str | os.PathLike, max_bytes: int, file: str | None = None) -> str:
    """The file's text; YAMLError past ``max_bytes`` or for bytes that are not UTF-8 (OSError
    as open() raises it)."""
    file = file if file is not None else os.fspath(path)
    with open(path, "rb") as stream:
        data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise YAMLError(f"file is larger than {_size(max_bytes)}; runner reads YAML files of "
                        f"at most {_size(max_bytes)}", file)
    return decode(data, file)


def decode(data: bytes, file: str) -> str:
    """``data`` as UTF-8 text (a leading byte order mark is dropped); YAMLError naming the
    offset of the first byte that is not UTF-8."""
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        start = exc.start
        line = data.count(b"\n", 0, start) + 1
        column = start - (data.rfind(b"\n", 0, start) + 1) + 1
        raise YAMLError(f"not UTF-8: byte 0x{data[start]:02x} at byte offset {start}; save "
                        f"the file as UTF-8", file, line, column) from None


def _size(count: int) -> str:
    return f"{count / 2**20:g} MiB" if count >= 2**20 else f"{count} bytes"


@contextmanager
def no_collection() -> Iterator[None]:
    """Python's cycle collector paused: building a million small containers (none in a
    cycle) otherwise spends a third of its time in collections that free nothing."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load(text: str, file: str = "<yaml>", max_bytes: int | None = None) -> Parsed:
    """Parse one YAML document within the limits above; YAMLError says what and where."""
    if max_bytes is not None and len(text) > max_bytes and len(text.encode()) > max_bytes:
        raise YAMLError(f"text is larger than {_size(max_bytes)}", file)
    try:
        with no_collection():
            return _Builder(file).build(_Parser(text))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "not valid YAML"
        raise YAMLError(f"not valid YAML: {problem}", file,
                        mark.line + 1 if mark else None,
                        mark.column + 1 if mark else None) from None
    except yaml.YAMLError as exc:  # a reader error: a character YAML does not allow
        position = getattr(exc, "position", None)
        where = text.count("\n", 0, position) + 1 if position is not None else None
        raise YAMLError(f"not valid YAML: {exc}".splitlines()[0], file, where) from None


def load_value(text: str, max_bytes: int = 2**16) -> Any:
    """A short value typed by a user (``-p limit=5``), read as YAML with the same limits;
    YAMLError when it is not YAML."""
    return load(text, "<value>", max_bytes).data


# --- building the document from the parser's events -------------------------------------------


@dataclass(slots=True)
class _Open:
    """A mapping or sequence being built."""

    value: dict | list
    path: Path | None  # None: inside merged content, which has no path of its own
    anchor: str | None
    size: int = 1  # nodes, with what aliases stand for
    key: Any = None
    has_key: bool = False
    key_mark: Any = None
    merging: bool = False  # the current key is '<<'
    merges: list = field(default_factory=list)


class _Builder:
    def __init__(self, file: str):
        self.file = file
        self.anchors: dict[str, tuple[Any, int]] = {}  # name -> (value, expanded size)
        self.pending: set[str] = set()  # anchors of nodes still open
        self.through_aliases = 0
        self.positions: dict[Path, tuple[int, int]] = {}

    def fail(self, problem: str, mark: Any) -> YAMLError:
        return YAMLError(problem, self.file, mark.line + 1, mark.column + 1)

    def build(self, parser: Any) -> Parsed:
        try:
            parser.get_event()  # StreamStart
            if parser.check_event(events.StreamEndEvent):
                return Parsed(None)
            parser.get_event()  # DocumentStart
            data = self._document(parser)
            parser.get_event()  # DocumentEnd
            if not parser.check_event(events.StreamEndEvent):
                raise self.fail("expected one document, found another (remove the '---' "
                                "line, or split the file)", parser.peek_event().start_mark)
        finally:
            parser.dispose()
        return Parsed(data, self.positions)

    def _document(self, parser: Any) -> Any:
        stack: list[_Open] = []
        root: list = []
        get_event, positions, scalar_event = parser.get_event, self.positions, events.ScalarEvent
        while True:
            event = get_event()
            if event.__class__ is scalar_event and stack and event.anchor is None and \
                    stack[-1].path is not None and event.value != _MERGE:
                parent = stack[-1]  # the common case, kept short: a scalar in a collection
                value = self._scalar(event)
                mark = event.start_mark
                if parent.value.__class__ is list:
                    positions[(*parent.path, len(parent.value))] = (mark.line + 1,
                                                                    mark.column + 1)
                    parent.value.append(value)
                    parent.size += 1
                    continue
                if not parent.has_key:
                    parent.key, parent.has_key, parent.key_mark = value, True, mark
                    parent.merging = False
                    positions[(*parent.path, value)] = (mark.line + 1, mark.column + 1)
                    parent.size += 1
                    continue
                if not parent.merging:
                    parent.value[parent.key] = value
                    parent.has_key = False
                    parent.size += 1
                    continue
                self._add(stack, root, value, 1, event)  # a merge of a scalar: refused there
                continue
            if isinstance(event, events.ScalarEvent | events.AliasEvent):
                self._child_path(stack[-1] if stack else None, event)
                if isinstance(event, events.AliasEvent):
                    value, size = self._alias(event)
                else:
                    value, size = self._scalar(event), 1
                    self._anchor(event, value, size)
                if not self._add(stack, root, value, size, event):
                    return root[0]
            elif isinstance(event, events.MappingStartEvent | events.SequenceStartEvent):
                if len(stack) >= MAX_DEPTH:
                    raise self.fail(f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
                path = self._child_path(stack[-1] if stack else None, event)
                self._check_tag(event, "map" if isinstance(event, events.MappingStartEvent)
                                else "seq")
                container: dict | list = {} if isinstance(event, events.MappingStartEvent) \
                    else []
                if path is not None:
                    self.positions.setdefault(path, (event.start_mark.line + 1,
                                                     event.start_mark.column + 1))
                if event.anchor is not None:
                    self.pending.add(event.anchor)
                stack.append(_Open(container, path, event.anchor))
            else:  # MappingEnd / SequenceEnd
                done = stack.pop()
                self._merge(done)
                if done.anchor is not None:
                    self.pending.discard(done.anchor)
                    self.anchors[done.anchor] = (done.value, done.size)
                if not self._add(stack, root, done.value, done.size, event):
                    return root[0]

    def _child_path(self, parent: _Open | None, event: Any) -> Path | None:
        """The path of the node ``event`` starts (None for a mapping key)."""
        if parent is None:
            return ()
        if parent.path is None:
            return None
        if isinstance(parent.value, list):
            path = (*parent.path, len(parent.value))
            self.positions[path] = (event.start_mark.line + 1, event.start_mark.column + 1)
            return path
        if not parent.has_key:
            return None
        if parent.merging:
            return None  # merged content has no path of its own
        return (*parent.path, parent.key)

    def _add(self, stack: list[_Open], root: list, value: Any, size: int, event: Any) -> bool:
        """Put a finished node into its parent; False when it was the document itself."""
        if not stack:
            root.append(value)
            return False
        parent = stack[-1]
        parent.size += size
        if isinstance(parent.value, list):
            parent.value.append(value)
        elif not parent.has_key:
            if isinstance(value, dict | list):
                raise self.fail("a mapping key must be a plain value, not a mapping or a list",
                                event.start_mark)
            mark = event.start_mark
            parent.key, parent.has_key, parent.key_mark = value, True, mark
            parent.merging = (value == _MERGE and isinstance(event, events.ScalarEvent)
                              and not event.style and event.tag is None)
            if not parent.merging and parent.path is not None:
                self.positions[(*parent.path, value)] = (mark.line + 1, mark.column + 1)
        else:
            if parent.merging:
                parent.merges.append((value, parent.key_mark))
            else:
                parent.value[parent.key] = value
            parent.has_key = False
        return True

    def _merge(self, done: _Open) -> None:
        """``<<: *base`` (or a list of them): the keys of ``base`` that are not set here; of
        two merged mappings with one key, the first listed wins."""
        for value, mark in done.merges:
            sources = value if isinstance(value, list) else [value]
            if not all(isinstance(source, dict) for source in sources):
                raise self.fail("'<<' merges a mapping (or a list of mappings) into this one",
                                mark)
            for source in sources:
                for key, item in source.items():
                    if key not in done.value:
                        done.value[key] = item
                        if done.path is not None:
                                self.positions.setdefault((*done.path, key),
                                                      (mark.line + 1, mark.column + 1))

    def _alias(self, event: Any) -> tuple[Any, int]:
        name = event.anchor
        if name in self.pending:
            raise self.fail(f"alias *{name} is inside its own anchor &{name} (a cycle)",
                            event.start_mark)
        if name not in self.anchors:
            raise self.fail(f"alias *{name} names no anchor defined before it",
                            event.start_mark)
        value, size = self.anchors[name]
        self.through_aliases += size
        if self.through_aliases > MAX_ALIAS_NODES:
            raise self.fail(f"aliases expand to more than {MAX_ALIAS_NODES:,} nodes (as a "
                            f"'billion laughs' file does); write the values out or use "
                            f"fewer aliases", event.start_mark)
        return value, size

    def _anchor(self, event: Any, value: Any, size: int) -> None:
        if event.anchor is not None:
            self.anchors[event.anchor] = (value, size)

    def _check_tag(self, event: Any, kind: str) -> None:
        tag = event.tag
        if tag not in (None, "!", _TAG + kind):
            raise self.fail(f"unsupported tag {tag} (runner reads plain YAML: mappings, "
                            f"lists, text, numbers, booleans, null and dates)",
                            event.start_mark)

    def _scalar(self, event: Any) -> Any:
        tag, text = event.tag, event.value
        if tag is None and not event.style and event.implicit[0]:
            if text and text[0] not in _MAYBE_NOT_TEXT and text not in _BOOL:
                return text  # a word: most scalars
            return self._plain(text, event)
        if tag in (None, "!", _TAG + "str"):
            return text
        kind = tag.removeprefix(_TAG)
        value = self._plain(text, event) if kind in ("int", "float", "bool", "null",
                                                     "timestamp") else _UNSET
        expected = {"int": int, "float": float, "bool": bool, "null": type(None),
                    "timestamp": date}.get(kind)
        if expected is None:
            raise self.fail(f"unsupported tag {tag} (runner reads plain YAML: mappings, "
                            f"lists, text, numbers, booleans, null and dates)",
                            event.start_mark)
        if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (kind == "int" and isinstance(value, bool)):
            raise self.fail(f"{text!r} is not a {kind}", event.start_mark)
        return value

    def _plain(self, text: str, event: Any) -> Any:
        """A plain scalar as the YAML 1.2 core schema reads it (plus dates)."""
        if text in _NULL:
            return None
        if text in _BOOL:
            return _BOOL[text]
        first = text[0]
        if first in "0123456789+-.":
            if _INT10.match(text):
                if len(text) > MAX_INT_DIGITS:
                    raise self.fail(f"integer of {len(text)} digits; runner reads at most "
                                    f"{MAX_INT_DIGITS} (quote it to keep it as text)",
                                    event.start_mark)
                return int(text, 10)
            if _INT8.match(text):
                return int(text[2:], 8)
            if _INT16.match(text):
                return int(text[2:], 16)
            if _FLOAT.match(text):
                return float(text)
            if _INF.match(text):
                return float("-inf") if first == "-" else float("inf")
            if _NAN.match(text):
                return float("nan")
            if _TIMESTAMP.match(text):
                return _timestamp(text)
        return text


_UNSET = object()
_CONSTRUCTOR = yaml.constructor.SafeConstructor()


def _timestamp(text: str) -> date | datetime | str:
    """PyYAML's reading of a date or time; an impossible one (2026-02-30) stays text, so that
    the check of its value reports it at its line."""
    try:
        return _CONSTRUCTOR.construct_yaml_timestamp(yaml.ScalarNode(_TAG + "timestamp", text))
    except (ValueError, OverflowError):
        return text

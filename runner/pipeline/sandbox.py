"""The Jinja2 sandbox pipeline templates run in, with limits on what one render may cost.

Jinja2's :class:`ImmutableSandboxedEnvironment` keeps templates away from Python internals and
from changing their inputs, but not from asking for a 4 GB string (``{{ 'x' * 10**9 }}``) or a
loop that never ends. Here a render also stops, with :class:`TemplateLimitError`:

- before computing ``*``, ``+``, ``**`` or ``%`` whose result would pass
  :data:`MAX_OUTPUT_CHARS` characters (or items), or :data:`MAX_INT_BITS` bits;
- before calling a filter or a method with a count or a width past that size
  (``'x' | center(10**9)``, ``'x'.ljust(10**9)``, ``'%999999999d' % 1``);
- when the text it writes passes :data:`MAX_OUTPUT_CHARS`;
- when it has run :data:`MAX_RENDER_SECONDS` (checked in every loop iteration, call, attribute
  look-up and operator: no signals, so it works in any thread).

Values a template passes along (``{{ steps.extract.result }}``) are not counted: only what it
makes. The deadline is per thread, set by :func:`limits`.
"""

from __future__ import annotations

import functools
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from jinja2 import StrictUndefined, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from runner.exceptions import RunnerError

MAX_OUTPUT_CHARS = 2**20
MAX_INT_BITS = 2**16  # 19,729 decimal digits
MAX_RENDER_SECONDS = 2.0
LOOP_FILTER = "runner_loop"  # wraps the iterable of each {% for %}: the deadline is checked

_BIG_WIDTH = re.compile(r"\d{7,}")  # a width or count of a million or more in a format


class TemplateLimitError(RunnerError):
    """A template asked for more than a render may cost (size or time)."""


_state = threading.local()


@contextmanager
def limits(seconds: float = MAX_RENDER_SECONDS) -> Iterator[None]:
    """Renders inside this block (in this thread) stop after ``seconds``."""
    outer = getattr(_state, "deadline", None)
    _state.deadline = time.monotonic() + seconds if outer is None else outer
    try:
        yield
    finally:
        _state.deadline = outer


def tick() -> None:
    deadline = getattr(_state, "deadline", None)
    if deadline is not None and time.monotonic() > deadline:
        raise TemplateLimitError(f"took longer than {MAX_RENDER_SECONDS:g} s to render")


def _too_big(what: str) -> TemplateLimitError:
    return TemplateLimitError(f"{what} would be longer than {MAX_OUTPUT_CHARS:,} characters "
                              f"(items); templates may not make values that big")


def _length(value: Any) -> int | None:
    return len(value) if isinstance(value, str | bytes | list | tuple) else None


def check_binop(op: str, left: Any, right: Any) -> None:
    """Refuse ``left op right`` when its result would be too big, before computing it."""
    if op == "*":
        for seq, count in ((left, right), (right, left)):
            size = _length(seq)
            if size is not None and isinstance(count, int) and size * count > MAX_OUTPUT_CHARS:
                raise _too_big(f"{type(seq).__name__} * {count}")
        if isinstance(left, int) and isinstance(right, int) and \
                left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise TemplateLimitError(f"a number of more than {MAX_INT_BITS} bits")
    elif op == "+":
        sizes = (_length(left), _length(right))
        if None not in sizes and sum(sizes) > MAX_OUTPUT_CHARS:
            raise _too_big("the sum")
    elif op == "**":
        if isinstance(left, int) and isinstance(right, int) and right > 0 and \
                abs(left) > 1 and left.bit_length() * right > MAX_INT_BITS:
            raise TemplateLimitError(f"{left} ** {right} has more than {MAX_INT_BITS} bits")
    elif op == "%" and isinstance(left, str) and _BIG_WIDTH.search(left):
        raise _too_big(f"the format {left[:40]!r}")


#: Filters whose numbers are sizes of what they make (``center(10**9)``, ``slice(10**9)``);
#: elsewhere a big number is only a value (``default(5000000)``).
SIZING_FILTERS = frozenset({"center", "indent", "wordwrap", "batch", "slice", "format"})


def check_growth(name: str, owner: Any, args: tuple) -> None:
    """Refuse ``s.replace(old, new)`` and ``sep.join(items)`` whose result would be too
    big, from the sizes of what they were given."""
    if name == "replace" and len(args) >= 2 and all(isinstance(a, str) for a in args[:2]) \
            and isinstance(owner, str) and len(args[1]) > len(args[0]):
        growth = (owner.count(args[0]) if args[0] else len(owner) + 1) * (
            len(args[1]) - len(args[0]))
        if len(owner) + growth > MAX_OUTPUT_CHARS:
            raise _too_big(f"replace(...) on {len(owner)} characters")
    elif name == "join" and isinstance(owner, str) and args and \
            isinstance(args[0], list | tuple):
        items = args[0]
        size = len(owner) * max(len(items) - 1, 0) + sum(
            len(item) if isinstance(item, str) else 1 for item in items)
        if size > MAX_OUTPUT_CHARS:
            raise _too_big(f"join(...) of {len(items)} items")


def check_arguments(name: str, args: Iterable[Any]) -> None:
    """Refuse a call whose counts or widths would make a huge value (``center(10**9)``)."""
    for value in args:
        if isinstance(value, int) and not isinstance(value, bool) and \
                abs(value) > MAX_OUTPUT_CHARS:
            raise _too_big(f"{name}(..., {value}, ...)")
        if isinstance(value, str) and ("%" in value or "{" in value) and \
                _BIG_WIDTH.search(value):
            raise _too_big(f"{name} with the format {value[:40]!r}")


def _guarded_filter(name: str, func: Callable) -> Callable:
    skip = 1 if getattr(func, "jinja_pass_arg", None) else 0  # the context Jinja passes first

    @functools.wraps(func)  # keeps jinja_pass_arg, so Jinja passes the context as before
    def guarded(*args: Any, **kwargs: Any) -> Any:
        tick()
        value, rest = (args[skip], args[skip + 1:]) if len(args) > skip else (None, ())
        if name in SIZING_FILTERS:
            check_arguments(f"filter {name}", [*rest, *kwargs.values()])
        if name == "replace":
            check_growth("replace", value, rest)
        elif name == "join" and isinstance(value, list | tuple):
            separator = rest[0] if rest else kwargs.get("d", "")
            check_growth("join", separator if isinstance(separator, str) else "", (value,))
        result = func(*args, **kwargs)
        size = _length(result)
        if size is not None and size > MAX_OUTPUT_CHARS:
            raise _too_big(f"the result of filter {name}")
        return result
    return guarded


def _guarded_lipsum(lipsum: Callable) -> Callable:
    """Jinja's ``lipsum(n, html, min, max)``: n paragraphs of up to max words, made in one go."""
    @functools.wraps(lipsum)
    def guarded(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> Any:  # noqa: A002
        if isinstance(n, int) and isinstance(max, int) and n * max * 12 > MAX_OUTPUT_CHARS:
            raise _too_big(f"lipsum({n}, ..., max={max})")
        return lipsum(n, html, min, max)
    return guarded


def _loop(iterable: Any) -> Iterator[Any]:
    for item in iterable:
        tick()
        yield item


class LimitedSandbox(ImmutableSandboxedEnvironment):
    """ImmutableSandboxedEnvironment plus the size and time limits of the module docstring."""

    intercepted_binops = frozenset(["*", "+", "**", "%"])

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.filters = {name: _guarded_filter(name, func) for name, func in self.filters.items()}
        self.filters[LOOP_FILTER] = _loop
        self.globals["lipsum"] = _guarded_lipsum(self.globals["lipsum"])

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        tick()
        check_binop(operator_, left, right)
        return super().call_binop(context, operator_, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        tick()
        method = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format
        owner, name = getattr(method, "__self__", None), getattr(method, "__name__", "")
        if isinstance(owner, str | bytes | list | tuple):  # a method of a value: sizes count
            check_arguments(name, [*args, *kwargs.values()])
            check_growth(name, owner, args)
            if name in ("format", "format_map"):
                check_arguments("str.format", [owner])
        return super().call(__context, __obj, *args, **kwargs)

    def getattr(self, obj: Any, attribute: str) -> Any:
        tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        tick()
        return super().getitem(obj, argument)

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        """Each ``{% for %}`` iterates through :data:`LOOP_FILTER`, which checks the
        deadline."""
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, LOOP_FILTER, [], [], None, None,
                                     lineno=loop.lineno)
        return tree


def render_text(template: Any, context: dict[str, Any]) -> str:
    """``template.render(context)``, stopping as soon as the text passes the size limit."""
    parts, size = [], 0
    for part in template.generate(**context):
        size += len(part)
        if size > MAX_OUTPUT_CHARS:
            raise _too_big("the rendered text")
        parts.append(part)
    return "".join(parts)


def new_environment() -> LimitedSandbox:
    return LimitedSandbox(undefined=StrictUndefined, autoescape=False,
                          keep_trailing_newline=True)


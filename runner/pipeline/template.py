"""Jinja2 templates in pipeline values: sandboxed, strict, and native where it makes sense.

A string that is one ``{{ expression }}`` renders to the expression's value (a list stays a
list, an int an int); any other string with template syntax renders to text. Undefined names
are errors, never empty strings. Rendering runs in :mod:`runner.pipeline.sandbox` (limits on size
and time); :func:`inspect` finds at validate time what the sandbox would refuse at run time.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateSyntaxError, Undefined, nodes

from runner.pipeline.sandbox import limits, new_environment, render_text

ENV = new_environment()
_SINGLE = re.compile(r"^\s*\{\{(?P<expr>.*?)\}\}\s*$", re.S)


def is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def _single_expression(text: str) -> str | None:
    match = _SINGLE.match(text)
    if match and "{{" not in match["expr"] and "}}" not in match["expr"]:
        return match["expr"]
    return None


@functools.lru_cache(maxsize=4096)
def _compiled(text: str):
    expr = _single_expression(text)
    if expr is not None:
        return ENV.compile_expression(expr, undefined_to_none=False), True
    return ENV.from_string(text), False


class RenderError(Exception):
    """A template failed at run time; the message names the template and the cause."""


def render(value: Any, context: dict[str, Any]) -> Any:
    """Render templates anywhere inside ``value`` (lists and dicts are walked); RenderError
    names the template that failed."""
    if isinstance(value, str):
        if not is_template(value):
            return value
        try:
            with limits():
                compiled, native = _compiled(value)
                if not native:
                    return render_text(compiled, context)
                result = compiled(**context)
            if isinstance(result, Undefined):
                result._fail_with_undefined_error()  # raises UndefinedError naming the name
            return result
        except Exception as exc:  # noqa: BLE001 - whatever the expression raised
            raise RenderError(f"template {value!r} failed: {type(exc).__name__}: {exc}"
                              ) from exc
    if isinstance(value, list):
        return [render(item, context) for item in value]
    if isinstance(value, dict):
        return {key: render(item, context) for key, item in value.items()}
    return value


#: strings a condition (``when:``) reads as false, whatever their case: what YAML, a CLI
#: parameter (``-p flag=false``) or a template's text gives where a boolean is meant
FALSE_WORDS = frozenset({"", "false", "no", "off", "0", "none", "null"})


def is_true(value: Any) -> bool:
    """A condition's rendered value as a boolean: a string is false when it reads as one of
    FALSE_WORDS (``when: "false"``, or ``{{ params.flag }}`` given ``-p flag=false``), anything
    else by Python's truth."""
    if isinstance(value, str):
        return value.strip().lower() not in FALSE_WORDS
    return bool(value)


def check_syntax(text: str) -> str | None:
    """None when ``text`` compiles, else the syntax error's message."""
    return inspect(text).error


@dataclass(frozen=True)
class Inspection:
    """What validation needs to know of one template, from one parse (no compiling: a
    pipeline of 10,000 templates validates in a second or two)."""

    error: str | None = None  # syntax error, unknown filter or test, refused attribute
    syntax: bool = False  # the error is a syntax error
    references: tuple[tuple[str, ...], ...] = ()


@functools.lru_cache(maxsize=4096)
def inspect(text: str) -> Inspection:
    """Parse ``text`` and find what compiling or the sandbox would refuse."""
    path = _dotted_path(text)
    if path is not None:  # {{ params.limit }}: most templates, and no parse needed
        return Inspection(references=(path,))
    expr = _single_expression(text)
    try:
        tree = ENV.parse(f"{{{{ {expr} }}}}" if expr is not None else text)
    except TemplateSyntaxError as exc:
        return Inspection(error=exc.message or str(exc), syntax=True)
    assigned = set(_SPECIAL_NAMES) | set(ENV.globals)  # range, dict, ...: always defined
    for node in tree.find_all(nodes.Node):
        error = _refused(node)
        if error:
            return Inspection(error=error)
        if isinstance(node, nodes.Name) and node.ctx in ("store", "param") or \
                isinstance(node, nodes.Macro):
            assigned.add(node.name)
    return Inspection(references=tuple(dict.fromkeys(_paths(tree, assigned))))


_DOTTED = re.compile(r"\s*\{\{\s*([A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)*)\s*\}\}\s*\Z")
_KEYWORDS = frozenset({"true", "false", "none", "True", "False", "None", "not", "and", "or",
                       "in", "is", "if", "else"})


def _dotted_path(text: str) -> tuple[str, ...] | None:
    """``('params', 'limit')`` for ``{{ params.limit }}``; None for anything else."""
    match = _DOTTED.match(text)
    if match is None:
        return None
    parts = tuple(match[1].split("."))
    head = parts[0]
    if head in _KEYWORDS or head in _SPECIAL_NAMES or head in ENV.globals or \
            any(part in _KEYWORDS for part in parts):
        return None
    return parts


def _refused(node: nodes.Node) -> str | None:
    """What compiling or the sandbox refuses in ``node``: an unknown filter or test, or an
    attribute the sandbox refuses whatever the value (``x._name``, ``x['__class__']``)."""
    if isinstance(node, nodes.Filter | nodes.Test):
        kind, known = ("filter", ENV.filters) if isinstance(node, nodes.Filter) else (
            "test", ENV.tests)
        if node.name not in known:
            hint = difflib.get_close_matches(node.name, list(known), n=1)
            return f"no {kind} named {node.name!r}" + (
                f"; did you mean {hint[0]!r}?" if hint else "")
        return None
    if isinstance(node, nodes.Getattr):
        name = node.attr
    elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) and \
            isinstance(node.arg.value, str):
        name = node.arg.value
    else:
        return None
    if name.startswith("__"):
        return f"the sandbox refuses {name!r}: Python internals are not readable from templates"
    if isinstance(node, nodes.Getattr) and name.startswith("_"):
        return (f"the sandbox refuses attribute {name!r}: names starting with '_' are not "
                f"readable as attributes (for a key of that name write [{name!r}])")
    return None


#: Names Jinja defines inside loops, macros and call blocks.
_SPECIAL_NAMES = frozenset({"loop", "caller", "varargs", "kwargs"})


def references(text: str) -> Iterator[tuple[str, ...]]:
    """Name paths a template reads: ``params.limit`` -> ('params', 'limit');
    ``steps.total.result`` -> ('steps', 'total', 'result'); ``item`` -> ('item',)."""
    yield from inspect(text).references


def _paths(node: nodes.Node, assigned: set[str]) -> Iterator[tuple[str, ...]]:
    if isinstance(node, nodes.Getattr | nodes.Getitem):
        path = _chain(node)
        if path is not None:
            if path[0] not in assigned:
                yield path
            return
    if isinstance(node, nodes.Name) and node.ctx == "load" and node.name not in assigned:
        yield (node.name,)
        return
    for child in node.iter_child_nodes():
        yield from _paths(child, assigned)


def _chain(node: nodes.Node) -> tuple[str, ...] | None:
    parts: list[str] = []
    while isinstance(node, nodes.Getattr | nodes.Getitem):
        if isinstance(node, nodes.Getattr):
            parts.append(node.attr)
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            parts.append(node.arg.value)
        else:
            return None
        node = node.node
    if isinstance(node, nodes.Name):
        return (node.name, *reversed(parts))
    return None


def walk_strings(value: Any, path: tuple = ()) -> Iterator[tuple[tuple, str]]:
    """Every template string inside ``value`` with its path."""
    if isinstance(value, str):
        if is_template(value):
            yield path, value
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from walk_strings(item, (*path, index))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from walk_strings(item, (*path, key))

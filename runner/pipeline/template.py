"""Jinja2 templates in pipeline values: sandboxed, strict, and native where it makes sense.

A string that is one ``{{ expression }}`` renders to the expression's value (a list stays a
list, an int an int); any other string with template syntax renders to text. Undefined names
are errors, never empty strings.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False,
                                    keep_trailing_newline=True)
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
            compiled, native = _compiled(value)
            if not native:
                return compiled.render(**context)
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


def check_syntax(text: str) -> str | None:
    """None when ``text`` compiles, else the syntax error's message."""
    try:
        _compiled(text)
    except TemplateSyntaxError as exc:
        return exc.message or str(exc)
    return None


def references(text: str) -> Iterator[tuple[str, ...]]:
    """Name paths a template reads: ``params.limit`` -> ('params', 'limit');
    ``steps.total.result`` -> ('steps', 'total', 'result'); ``item`` -> ('item',)."""
    expr = _single_expression(text)
    tree = ENV.parse(f"{{{{ {expr} }}}}" if expr is not None else text)
    assigned = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    assigned |= set(ENV.globals)  # range, dict, namespace, ...: Jinja's own, always defined
    yield from _paths(tree, assigned)


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

"""Reading YAML while remembering where each value was written (line and column)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

Path = tuple[Any, ...]


@dataclass
class Located:
    """Parsed YAML data plus the position of every mapping key and sequence item in it."""

    data: Any
    file: str
    positions: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def where(self, path: Path) -> str:
        """``file:line:col`` of the deepest known prefix of ``path``."""
        for end in range(len(path), -1, -1):
            pos = self.positions.get(tuple(path[:end]))
            if pos:
                return f"{self.file}:{pos[0]}:{pos[1]}"
        return self.file


class YAMLSyntaxError(Exception):
    def __init__(self, message: str, line: int | None, column: int | None):
        self.line, self.column = line, column
        super().__init__(message)


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps an impossible date (``2026-02-30``) as text, so that the param
    check reports it at its line instead of the parser failing without one."""

    def construct_yaml_timestamp(self, node: yaml.Node):
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError:
            return self.construct_scalar(node)


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_timestamp)


def load_located(text: str, file: str) -> Located:
    """Parse ``text``; raises YAMLSyntaxError with the line of a syntax error."""
    try:
        node = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise YAMLSyntaxError(f"not valid YAML: {problem}",
                              mark.line + 1 if mark else None,
                              mark.column + 1 if mark else None) from None
    located = Located(data, file)
    if node is not None:
        _walk(node, (), located.positions)
    return located


def _walk(node: yaml.Node, path: Path, out: dict[Path, tuple[int, int]]) -> None:
    out.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                child = (*path, key.value)
                out[child] = (key.start_mark.line + 1, key.start_mark.column + 1)
                _walk(value, child, out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), out)

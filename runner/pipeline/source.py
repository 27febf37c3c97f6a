"""Reading a pipeline file while remembering where each value was written (line and column).

The YAML itself is read by :mod:`runner.config.safe_yaml`, the reader settings files use too:
YAML 1.2 scalars, and limits on size, nesting and aliases.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from runner.config.safe_yaml import YAMLError, load

Path = tuple[Any, ...]

#: The largest pipeline file runner reads (a pipeline of thousands of steps is well below).
MAX_PIPELINE_BYTES = 10 * 2**20

YAMLSyntaxError = YAMLError  # the name this module gave it before safe_yaml existed


@dataclass
class Located:
    """Parsed YAML data plus the position of every mapping key and sequence item in it."""

    data: Any
    file: str
    positions: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def where(self, path: Path) -> str:
        """``file:line:col`` of the deepest known prefix of ``path``."""
        path = tuple(path)
        for end in range(len(path), -1, -1):
            pos = self.positions.get(path[:end])
            if pos:
                return f"{self.file}:{pos[0]}:{pos[1]}"
        return self.file


def load_located(text: str, file: str) -> Located:
    """Parse ``text``; raises YAMLError (``file:line:col: what``) for a syntax error or a
    limit passed."""
    parsed = load(text, file, MAX_PIPELINE_BYTES)
    return Located(parsed.data, file, parsed.positions)

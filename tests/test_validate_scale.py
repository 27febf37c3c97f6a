"""``runner validate`` takes time linear in the size of the file: a pipeline of a few MB (a
long chain of steps with templates, and a step with a long list) validates, where a quadratic
check would not finish within the test's time limit. No timing is asserted beyond that: the
figures are in the report of issue #14."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import run_runner


def write_big_pipeline(path: Path, steps: int, items: int) -> int:
    lines = ["name: big", "params:", "  n: {type: int, default: 3}", "steps:",
             "  items:", "    task: t.items", "    args:", "      - [" + ", ".join(
                 f"item-{i}" for i in range(items)) + "]"]
    for i in range(steps):
        needs = "items" if i == 0 else f"s{i - 1}"
        lines += [f"  s{i}:", f"    task: t.t{i % 10}", f"    needs: [{needs}]",
                  f"    args: [\"{{{{ params.n }}}}\", {i}, \"{{{{ steps.{needs}.result }}}}\"]",
                  f"    kwargs: {{a: 1, b: [1, 2, 3], label: \"step {{{{ params.n + {i} }}}}\"}}"]
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return len(text)


def test_a_pipeline_of_several_megabytes_validates(tmp_path):
    path = tmp_path / "big.yaml"
    size = write_big_pipeline(path, steps=15_000, items=100_000)
    assert size > 3_000_000
    result = run_runner("validate", path, cwd=tmp_path, timeout=100)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == ["pipeline big: 15001 steps, 1 params, 0 trigger(s)",
                                          "pipeline OK"]

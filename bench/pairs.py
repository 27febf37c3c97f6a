"""Paired rows (issues 18 and 21): a variant of runner against plain runner on the same redis-server,
measured in interleaved rounds so that a slow moment of the machine hits both alike.

One run of either system is noisy (±20 % between runs on a busy 2-core machine), far more
than the 5 % the Sentinel target allows. So each pair runs ``rounds`` rounds of both, in turn
(plain first in odd rounds, the variant first in even ones), each ``measure.py --quick``
(enqueue, drain, round trips); the report gives each system's median, and the median and
range of the per-round ratios (variant / plain), on which the targets are judged.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

#: what a paired row compares: (key, label, higher is better)
KEYS = [
    ("enqueue_rate", "enqueue, delay() (tasks/s)", True),
    ("drain_rate", "drain, start-up incl. (tasks/s)", True),
    ("rt_p50_ms", "round trip p50 (ms)", False),
]


@dataclass
class Pair:
    other: str  # the variant's system name (systems.py)
    title: str
    replica: bool = False  # a replica of the bench's redis-server attached during both
    #: (key, label, test of the median ratio variant / plain)
    targets: list[tuple[str, str, Callable[[float], bool]]] = field(default_factory=list)
    base: str = "runner"


PAIRS = [
    Pair("runner-sentinel", "runner through Redis Sentinel against direct (issue 21)",
         targets=[("drain_rate", "Sentinel drain within 5% of direct", lambda r: r >= 0.95),
                  ("rt_p50_ms", "Sentinel p50 within 5% of direct", lambda r: r <= 1.05)]),
    Pair("runner-wait", "runner with wait_for_replicas: 1 against without, a replica attached "
         "to the bench's redis-server for both (issue 21; no target: the cost)", replica=True),
]
PAIRS.append(Pair("runnerE", "runner with task events (-E) against without (issue 18)",
                  targets=[("drain_rate", "-E drain within 15% of without", lambda r: r >= 0.85),
                           ("rt_p50_ms", "-E p50 within 10% of without", lambda r: r <= 1.1)]))
PAIRED = {pair.other for pair in PAIRS}


def run_pair(pair: Pair, rounds: int, measure: Callable[[str, int], dict]) -> dict:
    """``measure(system, round)`` for both systems of ``pair``, ``rounds`` times, in turn."""
    runs: dict[str, list[dict]] = {pair.base: [], pair.other: []}
    for n in range(rounds):
        order = (pair.base, pair.other) if n % 2 == 0 else (pair.other, pair.base)
        for name in order:
            runs[name].append(measure(name, n))
    return runs


def _ratios(pair: Pair, runs: dict, key: str) -> list[float]:
    found = []
    for mine, theirs in zip(runs[pair.other], runs[pair.base], strict=True):
        if mine.get(key) is not None and theirs.get(key):
            found.append(mine[key] / theirs[key])
    return found


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def report(pair: Pair, runs: dict, labels: dict[str, str], fmt: Callable[[float | None], str]
           ) -> list[str]:
    """The pair's table (medians, ratio median [min-max]) and its targets, judged on the
    median ratio."""
    rounds = len(runs[pair.base])
    lines = [f"{pair.title}: {rounds} rounds, in turn; medians, and variant/plain per round "
             f"as median [min-max]"]
    header = ["metric", labels[pair.base], labels[pair.other], "ratio", "[min-max]"]
    rows = [header]
    for key, label, _ in KEYS:
        base = _median([r[key] for r in runs[pair.base] if r.get(key) is not None])
        other = _median([r[key] for r in runs[pair.other] if r.get(key) is not None])
        ratios = _ratios(pair, runs, key)
        spread = f"[{min(ratios):.3g}-{max(ratios):.3g}]" if ratios else ""
        ratio = f"{statistics.median(ratios):.3g}" if ratios else "-"
        rows.append([label, fmt(base), fmt(other), ratio, spread])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])]
        cells += [cell.ljust(w) if n == 0 else cell.rjust(w)
                  for cell, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  " + "  ".join(cells).rstrip())
    for name in (pair.base, pair.other):
        for n, r in enumerate(runs[name]):
            if "error" in r:
                lines.append(f"  round {n + 1} {labels[name]}: {r['error']}")
            elif "drain_note" in r:
                lines.append(f"  round {n + 1} {labels[name]}: drain incomplete: "
                             f"{r['drain_note']}")
    for key, label, test in pair.targets:
        ratio = _median(_ratios(pair, runs, key))
        verdict = "n/a" if ratio is None else ("PASS" if test(ratio) else "MISS")
        measured = "" if ratio is None else f"{ratio:.3g}x (median of {rounds} rounds)"
        lines.append(f"  {verdict:4}  {label:36} {measured}")
    return lines

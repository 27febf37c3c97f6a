"""Speed of runner's embedded SQLite default against Huey's SqliteHuey and Celery on SQLite.

    pip install -e '.[bench]' && python bench/run.py [--tasks 10000] [--roundtrips 300]
                                                     [--systems runner,huey,celery]

Every system runs on fresh files in one temporary folder (same disk), with 2 worker processes and
the noop task ``add(i, i)``, results stored. Each system is measured by ``measure.py`` in a
session of its own, killed with everything it started if it overruns or on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

BENCH = Path(__file__).resolve().parent
SYSTEM_TIMEOUT = 300.0  # seconds for one system, all phases; measure.py budgets each phase
PACKAGES = {"runner": ["runner"], "huey": ["huey"], "celery": ["celery", "kombu", "sqlalchemy"]}

#: (key, label, higher is better)
ROWS = [
    ("enqueue_rate", "enqueue, delay() (tasks/s)", True),
    ("bulk_enqueue_rate", "enqueue, bulk (tasks/s)", True),
    ("drain_rate", "drain, start-up incl. (tasks/s)", True),
    ("rt_p50_ms", "round trip p50 (ms)", False),
    ("rt_p99_ms", "round trip p99 (ms)", False),
    ("peak_rss_mib", "peak worker RSS (MiB)", False),
    ("idle_cpu_pct", "idle worker CPU (% of a core)", False),
]

#: the targets of issue 3, against Huey: (key, label, test of runner/huey)
TARGETS = [
    ("drain_rate", "drain >= 2x Huey", lambda r: r >= 2),
    ("enqueue_rate", "enqueue >= 2x Huey", lambda r: r >= 2),
    ("rt_p50_ms", "p50 round trip <= 1/10 of Huey's", lambda r: r <= 0.1),
]


class Interrupted(Exception):
    pass


def on_signal(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


# -- running one system --------------------------------------------------------------------


def measure(name: str, workdir: Path, args: argparse.Namespace) -> dict:
    """Run ``measure.py`` for one system; whatever happens, nothing it started survives."""
    workdir.mkdir()
    out = workdir / "result.json"
    command = [sys.executable, str(BENCH / "measure.py"), name, str(workdir), str(out),
               "--tasks", str(args.tasks), "--roundtrips", str(args.roundtrips)]
    print(f"{name}:", file=sys.stderr, flush=True)
    proc = subprocess.Popen(command, cwd=workdir, start_new_session=True,
                            stdin=subprocess.DEVNULL)
    try:
        proc.wait(SYSTEM_TIMEOUT)
    except subprocess.TimeoutExpired:
        return {"system": name, "error": f"timed out after {SYSTEM_TIMEOUT:.0f} s"}
    finally:
        stop(proc)
    if not out.exists():
        return {"system": name, "error": f"measure.py exited with {proc.returncode}"}
    return json.loads(out.read_text())


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM (measure.py then stops its worker), then SIGKILL its whole session."""
    handlers = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        _stop(proc)
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # a worker or child left behind
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


# -- the report ----------------------------------------------------------------------------


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def ratio(results: dict, key: str, other: str) -> float | None:
    mine, theirs = results["runner"].get(key), results[other].get(key)
    if mine is None or theirs is None or theirs == 0:
        return None
    return mine / theirs


def table(results: dict, names: list[str]) -> str:
    others = [n for n in names if n != "runner"] if "runner" in results else []
    header = ["metric", "better", *names, *[f"runner/{o}" for o in others]]
    lines = [header]
    for key, label, higher in ROWS:
        if not any(key in results[n] for n in names):
            continue
        row = [label, "higher" if higher else "lower"]
        row += [fmt(results[n].get(key)) for n in names]
        row += [f"{r:.3g}" if (r := ratio(results, key, o)) is not None else "-"
                for o in others]
        lines.append(row)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = []
    for line in lines:
        cells = [line[0].ljust(widths[0]), line[1].ljust(widths[1])]
        cells += [cell.rjust(width) for cell, width in zip(line[2:], widths[2:], strict=True)]
        text.append("  ".join(cells))
    text.insert(1, "-" * len(text[0]))
    return "\n".join(text)


def notes(results: dict, names: list[str], args: argparse.Namespace) -> list[str]:
    lines = []
    for name in names:
        r = results[name]
        if "error" in r:
            lines.append(f"{name}: {r['error']}")
        if r.get("enqueued", args.tasks) < args.tasks:
            lines.append(f"{name}: enqueue stopped at {r['enqueued']} tasks (time budget)")
        if "drain_note" in r:
            lines.append(f"{name}: drain incomplete: {r['drain_note']}; rate = stored/elapsed")
        if r.get("roundtrips", args.roundtrips) < args.roundtrips:
            lines.append(f"{name}: {r['roundtrips']} round trips of {args.roundtrips} "
                         f"(30 s budget)")
    return lines


def targets(results: dict) -> list[str]:
    if "runner" not in results or "huey" not in results:
        return []
    lines = ["Targets of issue 3 (runner against Huey, one run):"]
    for key, label, test in TARGETS:
        r = ratio(results, key, "huey")
        verdict = "n/a" if r is None else ("PASS" if test(r) else "MISS")
        measured = "" if r is None else f"{r:.3g}x"
        lines.append(f"  {verdict:4}  {label:34} {measured}")
    return lines


def versions(names: list[str]) -> str:
    found = []
    for name in names:
        for package in PACKAGES[name]:
            try:
                found.append(f"{package} {metadata.version(package)}")
            except metadata.PackageNotFoundError:
                found.append(f"{package} (not installed)")
    return ", ".join(found)


# -- main ------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks to enqueue and drain")
    parser.add_argument("--roundtrips", type=int, default=300,
                        help="sequential delay().get() calls")
    parser.add_argument("--systems", default="runner,huey,celery",
                        help="comma-separated: runner, huey, celery")
    parser.add_argument("--dir", default=None,
                        help="where the temporary folder goes (default: the system's temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the databases and worker logs")
    args = parser.parse_args()
    names = [n.strip() for n in args.systems.split(",") if n.strip()]
    unknown = [n for n in names if n not in PACKAGES]
    if unknown:
        parser.error(f"unknown system(s): {', '.join(unknown)} (choose from runner, huey, "
                     f"celery)")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    root = Path(tempfile.mkdtemp(prefix="runner-bench-", dir=args.dir))
    started = time.monotonic()
    results: dict = {}
    try:
        for name in names:
            results[name] = measure(name, root / name, args)
    except Interrupted as exc:
        print(f"interrupted ({exc}): every process started was stopped", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print(f"files kept in {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    print()
    print(f"{args.tasks} tasks, {args.roundtrips} round trips, 2 worker processes, add(i, i) "
          f"with results stored; {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"files in {root.parent}; {time.monotonic() - started:.0f} s in all, load average "
          f"{os.getloadavg()[0]:.2f} at the end")
    print(versions(names))
    print()
    print(table(results, names))
    print("runner/X = runner's value / X's: above 1 is better for runner where higher is "
          "better, below 1 where lower is.")
    if "huey" in results:
        print("Durability differs: runner commits with synchronous=NORMAL (WAL), SqliteHuey "
              "with SQLite's default FULL (an fsync per commit).")
    for line in notes(results, names, args) + [""] + targets(results):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

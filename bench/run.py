"""Speed of runner against Huey, Celery and Dramatiq: on SQLite (runner's embedded default), on
one redis-server the benchmark starts itself, and on the machine's RabbitMQ (AMQP).

    pip install -e '.[bench]' && python bench/run.py [--transports sqlite,redis,amqp]
        [--systems runner,huey,celery,dramatiq,dramatiq8] [--tasks N] [--roundtrips 300]
        [--items 1000] [--no-pipeline] [--rounds 5] [--repeat 1]

Every system runs with 2 worker processes and the noop task ``add(i, i)``, results stored: on
SQLite on fresh files in one temporary folder (same disk), on Redis on one redis-server
(127.0.0.1, a free port, no persistence, emptied before each system), on AMQP with a vhost of
the bench's own on RabbitMQ (127.0.0.1:5672, emptied before each system) as broker and results
on a redis-server like Redis's. Each system is measured by ``measure.py`` in a session of its
own, killed with everything it started if it overruns or on Ctrl-C; the pipeline row (issue 4)
by ``pipeline.py`` the same way; the paired rows (issue 21: Sentinel, wait_for_replicas) in
rounds by ``pairs.py``. The redis-servers are stopped, and the vhost and its user deleted, at
the end whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pairs
import rabbitmq
from rabbitmq import RabbitVhost
from redisserver import RedisServer
from systems import LABELS, SHORT, SYSTEMS

BENCH = Path(__file__).resolve().parent
SYSTEM_TIMEOUT = 300.0  # seconds for one system, all phases; measure.py budgets each phase
PACKAGES = {"runner": ["runner"], "runnerE": [], "runner-auth": ["cryptography"],
            "runner-sentinel": [], "runner-wait": [], "huey": ["huey"], "celery": ["celery", "kombu"],
            "dramatiq": ["dramatiq"], "dramatiq8": []}
EXTRA_PACKAGES = {"sqlite": {"celery": ["sqlalchemy"]}, "redis": {"runner": ["redis"]},
                  "amqp": {"runner": ["pika", "redis"], "celery": ["amqp", "redis"]}}
TRANSPORTS = ("sqlite", "redis", "amqp")
#: issue 3 asks for 10,000, issue 5 20,000; AMQP as Redis
DEFAULT_TASKS = {"sqlite": 10_000, "redis": 20_000, "amqp": 20_000}

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

#: the targets of issue 3 (SQLite, against Huey), issue 5 (Redis, against Celery and Dramatiq's
#: best) and issue 7 (AMQP, against Celery): (transport, key, label, other systems, test of
#: runner/best other)
TARGETS = [
    ("sqlite", "drain_rate", "drain >= 2x Huey", ["huey"], lambda r: r >= 2),
    ("sqlite", "enqueue_rate", "enqueue >= 2x Huey", ["huey"], lambda r: r >= 2),
    ("sqlite", "rt_p50_ms", "p50 round trip <= 1/10 of Huey's", ["huey"], lambda r: r <= 0.1),
    ("redis", "drain_rate", "drain >= 5x Celery", ["celery"], lambda r: r >= 5),
    ("redis", "drain_rate", "drain above Dramatiq's best", ["dramatiq", "dramatiq8"],
     lambda r: r > 1),
    ("redis", "enqueue_rate", "enqueue >= 5x Celery", ["celery"], lambda r: r >= 5),
    ("redis", "rt_p50_ms", "p50 round trip <= 1/3 of Celery's", ["celery"],
     lambda r: r <= 1 / 3),
    ("redis", "peak_rss_mib", "worker RSS no larger than Celery's", ["celery"],
     lambda r: r <= 1),
    ("redis", "drain_rate", "signed drain within 25% of unsigned", ["runner-auth"],
     lambda r: r <= 1 / 0.75),
    ("redis", "rt_p50_ms", "signed p50 within 25% of unsigned", ["runner-auth"],
     lambda r: r >= 1 / 1.25),
    ("amqp", "drain_rate", "drain >= 3x Celery", ["celery"], lambda r: r >= 3),
    ("amqp", "rt_p50_ms", "p50 round trip <= 1/2 of Celery's", ["celery"],
     lambda r: r <= 1 / 2),
    ("amqp", "drain_rate", "signed drain within 25% of unsigned", ["runner-auth"],
     lambda r: r <= 1 / 0.75),
    ("amqp", "rt_p50_ms", "signed p50 within 25% of unsigned", ["runner-auth"],
     lambda r: r >= 1 / 1.25),
]
ISSUES = {"sqlite": "3", "redis": "5, 20 and 21", "amqp": "7 and 20"}
PIPELINE_RATIO = 1.5  # issue 4: the pipeline within 1.5x of the bare tasks' time
CLI_SUBMIT_LIMIT = 1.0  # seconds


class Interrupted(Exception):
    pass


class Skipped(Exception):
    """A transport this machine cannot run: the others still do."""


@dataclass
class Servers:
    """What one transport runs on: the redis-server (Redis, and AMQP's results) and the
    RabbitMQ vhost (AMQP's broker); neither for SQLite."""

    redis: str | None = None
    vhost: RabbitVhost | None = None

    def args(self) -> list[str]:
        """The options of ``measure.py`` and ``pipeline.py`` that name them."""
        found = ["--redis", self.redis] if self.redis else []
        return found + (["--amqp", self.vhost.url] if self.vhost else [])

    def reset(self) -> None:
        """Before each system: an empty vhost (the scripts flush Redis themselves)."""
        if self.vhost:
            self.vhost.reset()


def on_signal(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


# -- running one system --------------------------------------------------------------------


def measure(name: str, workdir: Path, tasks: int, servers: Servers,
            args: argparse.Namespace, quick: bool = False) -> dict:
    """``measure.py`` for one system on one transport (``quick``: a paired round)."""
    command = [str(BENCH / "measure.py"), name, str(workdir), str(workdir / "result.json"),
               "--tasks", str(tasks), "--roundtrips", str(args.roundtrips)]
    return run_script(name, command + servers.args() + (["--quick"] if quick else []),
                      workdir)


def measure_pipeline(workdir: Path, servers: Servers, args: argparse.Namespace) -> dict:
    """``pipeline.py``: the pipeline row of one transport."""
    command = [str(BENCH / "pipeline.py"), str(workdir), str(workdir / "result.json"),
               "--items", str(args.items)]
    return run_script("pipeline", command + servers.args(), workdir)


def run_script(name: str, command: list[str], workdir: Path) -> dict:
    """Run a bench script that writes ``workdir/result.json``; whatever happens, nothing it
    started survives."""
    workdir.mkdir(parents=True)
    out = workdir / "result.json"
    print(f"{workdir.parent.name} {name}:", file=sys.stderr, flush=True)
    proc = subprocess.Popen([sys.executable, *command], cwd=workdir, start_new_session=True,
                            stdin=subprocess.DEVNULL)
    try:
        proc.wait(SYSTEM_TIMEOUT)
    except subprocess.TimeoutExpired:
        return {"system": name, "error": f"timed out after {SYSTEM_TIMEOUT:.0f} s"}
    finally:
        stop(proc)
    if not out.exists():
        return {"system": name, "error": f"{Path(command[0]).name} exited with "
                                         f"{proc.returncode}"}
    return json.loads(out.read_text())


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM (the script then stops its worker), then SIGKILL its whole session."""
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
    """runner's value / ``other``'s, on one transport's ``results``."""
    if "runner" not in results or other not in results:
        return None
    mine, theirs = results["runner"].get(key), results[other].get(key)
    if mine is None or theirs is None or theirs == 0:
        return None
    return mine / theirs


def table(results: dict) -> str:
    """One table: for each transport its systems, then runner's ratio to each of the others."""
    groups, names, cells = [], [], []  # per column: transport, header, (key -> text)
    for transport, found in results.items():
        others = [n for n in found if n != "runner"] if "runner" in found else []
        for name in found:
            groups.append(transport)
            names.append(LABELS[name])
            cells.append(lambda key, r=found[name]: fmt(r.get(key)))
        for other in others:
            groups.append(transport)
            names.append(f"r/{SHORT[other]}")
            cells.append(lambda key, f=found, o=other: f"{r:.3g}" if (
                r := ratio(f, key, o)) is not None else "-")
    lines = [["", "", *[g if i == 0 or groups[i - 1] != g else "" for i, g in
                        enumerate(groups)]],
             ["metric", "better", *names]]
    for key, label, higher in ROWS:
        if not any(key in r for found in results.values() for r in found.values()):
            continue
        lines.append([label, "higher" if higher else "lower", *[cell(key) for cell in cells]])
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    text = []
    for n, line in enumerate(lines):
        out = [line[0].ljust(widths[0]), line[1].ljust(widths[1])]
        out += [(cell.ljust(width) if n == 0 else cell.rjust(width))
                for cell, width in zip(line[2:], widths[2:], strict=True)]
        text.append("  ".join(out).rstrip())
    text.insert(2, "-" * max(len(line) for line in text))
    return "\n".join(text)


def notes(results: dict, tasks: dict[str, int], args: argparse.Namespace) -> list[str]:
    lines = []
    for transport, found in results.items():
        for name, r in found.items():
            who = f"{transport} {LABELS[name]}"
            if "error" in r:
                lines.append(f"{who}: {r['error']}")
            if r.get("enqueued", tasks[transport]) < tasks[transport]:
                lines.append(f"{who}: enqueue stopped at {r['enqueued']} tasks (time budget)")
            if "drain_note" in r:
                lines.append(f"{who}: drain incomplete: {r['drain_note']}; "
                             f"rate = stored/elapsed")
            if r.get("roundtrips", args.roundtrips) < args.roundtrips:
                lines.append(f"{who}: {r['roundtrips']} round trips of {args.roundtrips} "
                             f"(30 s budget)")
    return lines


def targets(results: dict, repeat: int = 1) -> list[str]:
    how_many = "one run" if repeat == 1 else f"of the medians of {repeat} runs each"
    lines = []
    for transport, found in results.items():
        rows = [t for t in TARGETS if t[0] == transport]
        if "runner" not in found or not rows:
            continue
        lines.append(f"Targets of issue {ISSUES[transport]} on {transport} (runner's ratio, "
                     f"{how_many}):")
        for _, key, label, others, test in rows:
            ratios = [r for o in others if (r := ratio(found, key, o)) is not None]
            # against the best of several: the smallest ratio where higher is better
            r = (min(ratios) if dict((k, h) for k, _, h in ROWS)[key] else max(ratios)) \
                if ratios else None
            verdict = "n/a" if r is None else ("PASS" if test(r) else "MISS")
            measured = "" if r is None else f"{r:.3g}x"
            lines.append(f"  {verdict:4}  {label:36} {measured}")
    return lines


def pipeline_table(rows: dict, items: int) -> list[str]:
    if not rows:
        return []
    lines = [f"Pipeline row (issue 4): numbers -> map double over {items:,} items -> collect, "
             f"on a warm runner worker with 2 processes, best of 2; bare = the same {items + 2:,} "
             f"tasks by delay()",
             f"{'transport':10} {'bare tasks (s)':>15} {'pipeline (s)':>13} "
             f"{'pipeline/bare':>14} {'runner submit (s)':>18}"]
    verdicts = []
    for transport, r in rows.items():
        if "error" in r:
            lines.append(f"{transport:10} failed: {r['error']}")
            continue
        share = r["pipeline_s"] / r["bare_s"]
        lines.append(f"{transport:10} {r['bare_s']:15.2f} {r['pipeline_s']:13.2f} "
                     f"{share:14.2f} {r['cli_submit_s']:18.2f}")
        label = f"{transport}: pipeline within {PIPELINE_RATIO}x of the bare tasks"
        verdicts.append(f"  {'PASS' if share <= PIPELINE_RATIO else 'MISS':4}  {label:50} "
                        f"{share:.2f}x")
        label = f"{transport}: runner submit returns in under {CLI_SUBMIT_LIMIT:.0f} s"
        verdicts.append(f"  {'PASS' if r['cli_submit_s'] < CLI_SUBMIT_LIMIT else 'MISS':4}  "
                        f"{label:50} {r['cli_submit_s']:.2f} s")
        if items >= 10_000 and transport == "redis":  # issue 16's row
            label = f"{transport}: a {items:,}-item map within 1.2x of the bare tasks"
            verdicts.append(f"  {'PASS' if share <= 1.2 else 'MISS':4}  {label:50} "
                            f"{share:.2f}x")
        if r.get("runs"):
            lines.append(f"{transport:10} {r['runs']} runs submitted at once with "
                         f"max_active_runs 10: all done in {r['runs_s']:.2f} s, at most "
                         f"{r['runs_most_active']} running at once")
            label = f"{transport}: {r['runs']} runs, never more than 10 active"
            verdicts.append(f"  {'PASS' if r['runs_most_active'] <= 10 else 'MISS':4}  "
                            f"{label:50} {r['runs_most_active']}")
    return [*lines, "Targets of issues 4 and 16:", *verdicts]


def redis_limit(server: RedisServer) -> dict:
    """The server's own limit: redis-benchmark with its default 50 clients, and with 1."""
    print("redis-benchmark:", file=sys.stderr, flush=True)
    return {"50 clients": server.benchmark(50, 100_000), "1 client": server.benchmark(1, 20_000)}


def limit_lines(limits: dict) -> list[str]:
    lines = []
    for clients, rates in limits.items():
        if rates:
            lines.append(f"redis-benchmark -q -t set,get,lpush,lpop, {clients}, unpipelined "
                         f"(requests/s): " + ", ".join(f"{k} {v:,.0f}" for k, v in rates.items()))
    return lines


def versions(names: list[str], transports: list[str]) -> str:
    found = []
    packages = [p for n in names for p in PACKAGES[n]]
    packages += [p for t in transports for n, extra in EXTRA_PACKAGES[t].items() if n in names
                 for p in extra]
    for package in dict.fromkeys(packages):
        try:
            found.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            found.append(f"{package} (not installed)")
    if {"redis", "amqp"} & set(transports) and shutil.which("redis-server"):
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
        found.append("redis-server " + out.stdout.split("v=")[-1].split()[0])
    if "amqp" in transports:
        found.append(rabbitmq.version())
    return ", ".join(found)


# -- main ------------------------------------------------------------------------------------


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transports", default=",".join(TRANSPORTS),
                        help=f"comma-separated: {', '.join(TRANSPORTS)}")
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help=f"comma-separated: {', '.join(SYSTEMS)} (dramatiq: 2 processes x 1 "
                             f"thread, dramatiq8: 2 x 8); each runs on the transports it has")
    parser.add_argument("--tasks", type=int, default=None,
                        help="tasks to enqueue and drain (default: 10000 on SQLite, 20000 on "
                             "Redis and on AMQP)")
    parser.add_argument("--roundtrips", type=int, default=300,
                        help="sequential delay().get() calls")
    parser.add_argument("--items", type=int, default=1000, help="items of the pipeline's map")
    parser.add_argument("--no-pipeline", dest="pipeline", action="store_false",
                        help="skip the pipeline row")
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds of each paired row (runner-sentinel, runner-wait against "
                             "runner, in turn)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="measure each system this many times, in turn (the order reversed "
                             "every other time); the table gives each figure's median")
    parser.add_argument("--dir", default=None,
                        help="where the temporary folder goes (default: the system's temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the databases and worker logs")
    args = parser.parse_args()
    args.transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    args.systems = [n.strip() for n in args.systems.split(",") if n.strip()]
    for kind, given, known in (("transport", args.transports, TRANSPORTS),
                               ("system", args.systems, SYSTEMS)):
        if unknown := [n for n in given if n not in known]:
            parser.error(f"unknown {kind}(s): {', '.join(unknown)} (choose from "
                         f"{', '.join(known)})")
    return args


@contextlib.contextmanager
def start_servers(transport: str, root: Path, limits: dict) -> Iterator[Servers]:
    """Start what ``transport`` needs, and stop it afterwards whatever happens: a redis-server
    of its own for Redis (its redis-benchmark limit measured first, alone, into ``limits``) and
    for AMQP's results; a vhost and user of the bench's own on RabbitMQ for AMQP (raises
    :class:`Skipped` where there is no RabbitMQ)."""
    if transport == "sqlite":
        yield Servers()
        return
    if transport == "amqp" and (reason := rabbitmq.unavailable()):
        raise Skipped(reason)
    with RedisServer(root / transport / "redis-server") as server:
        if transport == "redis":
            limits.update(redis_limit(server))
            yield Servers(server.url)
            return
        with RabbitVhost() as vhost:
            yield Servers(server.url, vhost)


@contextlib.contextmanager
def replica_of(redis_url: str, folder: Path) -> Iterator[None]:
    """A replica of the bench's redis-server (``--replicaof``, a free port), in sync, for the
    time of the block."""
    with RedisServer(folder, "--replicaof", "127.0.0.1", redis_url.rsplit(":", 1)[1]) as server:
        server.wait_synced()
        yield


def merged(runs: list[dict]) -> dict:
    """One system's runs (``--repeat``) as one: each figure the median of the runs' (anything
    else, an error or a note, as the last run said it)."""
    out = dict(runs[-1])
    for key in {k for run in runs for k, v in run.items()
                if isinstance(v, int | float) and not isinstance(v, bool)}:
        values = [run[key] for run in runs if isinstance(run.get(key), int | float)]
        out[key] = statistics.median(values)
    return out


def run_transport(transport: str, root: Path, servers: Servers, args: argparse.Namespace,
                  tasks: int, results: dict, pipelines: dict, paired: dict) -> None:
    names = [name for name in args.systems
             if transport in SYSTEMS[name].transports and name not in pairs.PAIRED]
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for n in range(args.repeat):
        for name in names if n % 2 == 0 else names[::-1]:
            servers.reset()
            folder = root / transport / (name if args.repeat == 1 else f"{name}-{n + 1}")
            runs[name].append(measure(name, folder, tasks, servers, args))
    results[transport] = {name: merged(found) for name, found in runs.items()}
    for pair in pairs.PAIRS:
        if pair.other not in args.systems or transport not in SYSTEMS[pair.other].transports:
            continue
        folder = root / transport / pair.other

        def one(name: str, n: int, folder: Path = folder) -> dict:
            servers.reset()
            return measure(name, folder / f"{n + 1}-{name}", tasks, servers, args, quick=True)

        with (replica_of(servers.redis, folder / "replica") if pair.replica and servers.redis
              else contextlib.nullcontext()):
            paired.setdefault(transport, {})[pair.other] = pairs.run_pair(pair, args.rounds, one)
    if args.pipeline and "runner" in args.systems:
        servers.reset()
        pipelines[transport] = measure_pipeline(root / transport / "pipeline", servers, args)


def main() -> int:
    args = parse()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    tasks = {t: args.tasks or DEFAULT_TASKS[t] for t in TRANSPORTS}
    root = Path(tempfile.mkdtemp(prefix="runner-bench-", dir=args.dir))
    started = time.monotonic()
    results: dict = {}
    pipelines: dict = {}
    paired: dict = {}
    limits: dict = {}
    skipped: dict = {}
    try:
        for transport in args.transports:
            try:
                with start_servers(transport, root, limits) as found:
                    run_transport(transport, root, found, args, tasks[transport], results,
                                  pipelines, paired)
            except Skipped as exc:
                skipped[transport] = str(exc)
                print(f"{transport}: skipped: {exc}", file=sys.stderr, flush=True)
    except Interrupted as exc:
        print(f"interrupted ({exc}): every process started was stopped", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print(f"files kept in {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    if not results:
        print("nothing measured: every transport asked for was skipped", file=sys.stderr)
        return 1
    counts = ", ".join(f"{tasks[t]:,} tasks on {t}" for t in results)
    print()
    print(f"{counts}, {args.roundtrips} round trips, 2 worker processes, add(i, i) with results "
          f"stored; {os.cpu_count()} CPUs, Python {platform.python_version()}, files in "
          f"{root.parent}; {time.monotonic() - started:.0f} s in all, load average "
          f"{os.getloadavg()[0]:.2f} at the end")
    measured = [n for n in args.systems if any(n in found for found in results.values())]
    print(versions(measured, list(results)))
    for line in limit_lines(limits):
        print(line)
    if any(results.values()):  # (not only paired rows)
        print()
        print(table(results))
        print("r/X = runner's value / X's on the same transport: above 1 is better for runner "
              "where higher is better, below 1 where lower is.")
    if "huey" in results.get("sqlite", {}):
        print("Durability differs: runner commits with synchronous=NORMAL (WAL), SqliteHuey "
              "with SQLite's default FULL (an fsync per commit).")
    if "amqp" in results:
        print("amqp: broker RabbitMQ (a vhost of the bench's own, emptied before each system), "
              "results in Redis db 1 for both systems, counted with DBSIZE.")
    skips = [f"{t}: skipped, {reason}" for t, reason in skipped.items()]
    for line in skips + notes(results, tasks, args) + [""] + targets(results, args.repeat):
        print(line)
    for transport, found in paired.items():
        for pair in pairs.PAIRS:
            if pair.other in found:
                print()
                print(f"{transport}: ", end="")
                for line in pairs.report(pair, found[pair.other], LABELS, fmt):
                    print(line)
    if pipelines:
        print()
        for line in pipeline_table(pipelines, args.items):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The I/O-bound row (issue 22): N tasks that each wait 100 ms, drained by runner's asyncio pool
(one worker, 2 processes, 1,000 tasks in flight in each), side by side in one run with its
no-op drain, runner's threads pool at ``-c 1000`` and Celery's gevent pool at ``-c 1000``.

    python bench/asyncio_io.py [--tasks 10000] [--variants sleep,http] [--rounds 3]
                               [--peer-rounds 1] [--keep]

On a redis-server of its own (broker db 0, results db 1). Two variants of the wait:
``asyncio.sleep(0.1)`` (``time.sleep`` on the threads pool, patched by gevent on Celery's), and
an HTTP GET (aiohttp in a coroutine, urllib3 in a plain task, kept-alive connections) to a
server the bench starts (``bench/slowhttp.py``, one event loop answering each request after
100 ms).

Each worker is started once and runs one task of each kind (warm); then, round after round, it
drains each of its rows once: N tasks queued at once (runner: one bulk ``broker.enqueue``;
Celery: N ``delay()`` calls, which its worker starts on as they come), the drain rate being N
over the time from queueing to the last result stored (DBSIZE of the emptied results database
every 10 ms). A row's rate is the median of its rounds. The asyncio worker drains its no-op,
sleep and HTTP rows in the same rounds, so "against its own no-op drain" is the median of the
per-round ratios, each from two drains a second apart. RSS is sampled every 50 ms: the largest
single process of the worker, and all of them together. The HTTP variant's ceiling
(``bench/httpceiling.py``: the same requests from 2 bare aiohttp processes, 1,000 at once each,
no task queue) is measured as many rounds, to tell the HTTP client's cost from the pool's.
Targets (issue 22), from the same run: the asyncio drain >= 70% of its no-op drain, >= 10x
Celery gevent, >= 1.5x the threads pool; the RSS of a process with 1,000 tasks in flight below
the threads pool's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from httpceiling import ceiling  # noqa: E402
from measure import Worker  # noqa: E402
from redisserver import RedisServer, free_port  # noqa: E402
from systems import APPS  # noqa: E402

BUDGET = float(os.environ.get("BENCH_IO_BUDGET", 180))  # seconds one drain may take
LEVEL = os.environ.get("BENCH_IO_LOGLEVEL", "warning")
RUNNER = [sys.executable, "-m", "runner", "worker", "-A", "iotasks", "-l", LEVEL, "--quiet"]
CELERY = [sys.executable, "-m", "celery", "-A", "celeryio", "worker", "-l", "warning"]
ASYNCIO = [*RUNNER, "-P", "asyncio", "--processes", "2", "-c", "1000"]
THREADS = [*RUNNER, "-P", "threads", "-c", "1000"]
GEVENT = [*CELERY, "-P", "gevent", "-c", "1000"]
PREFORK = [*RUNNER, "-P", "prefork", "-c", "2"]


@dataclass
class Row:
    key: str
    label: str
    task: str  # iotasks.X (runner) or celeryio.X (Celery)
    rates: list[float] = field(default_factory=list)  # one per round
    peak_one: int = 0  # bytes: the largest single process
    peak_all: int = 0  # bytes: all the worker's processes together
    loads: list[float] = field(default_factory=list)  # 1-minute load average before each
    note: str = ""

    @property
    def rate(self) -> float:
        return statistics.median(self.rates) if self.rates else 0.0


@dataclass
class Group:
    """Rows drained by one worker, one after the other in each round."""

    command: list[str]
    rows: list[Row]
    rounds: int


def groups(variants: list[str], rounds: int, peer_rounds: int) -> list[Group]:
    row = Row
    kinds = {"sleep": ("asleep", "sleep"), "http": ("afetch", "fetch")}
    mine = [row("asyncio-noop", "runner asyncio 2x1000, no-op", "iotasks.anoop")]
    mine += [row(f"asyncio-{v}", f"runner asyncio 2x1000, {v}", f"iotasks.{kinds[v][0]}")
             for v in variants]
    threads = [row(f"threads-{v}", f"runner threads -c 1000, {v}", f"iotasks.{kinds[v][1]}")
               for v in variants]
    gevent = [row(f"gevent-{v}", f"celery gevent -c 1000, {v}", f"celeryio.{kinds[v][1]}")
              for v in variants]
    prefork = [row("prefork-noop", "runner prefork -c 2, no-op (the main bench's set-up)",
                   "iotasks.noop")]
    return [Group(ASYNCIO, mine, rounds), Group(THREADS, threads, rounds),
            Group(GEVENT, gevent, peer_rounds), Group(PREFORK, prefork, rounds)]


class Sampler(threading.Thread):
    def __init__(self, worker: Worker):
        super().__init__(daemon=True)
        self.worker, self.one, self.all = worker, 0, 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            sizes = []
            for process in self.worker.processes():
                try:
                    sizes.append(process.memory_info().rss)
                except psutil.NoSuchProcess:
                    pass
            if sizes:
                self.one, self.all = max(self.one, max(sizes)), max(self.all, sum(sizes))
            self._done.wait(0.05)

    def finish(self) -> None:
        self._done.set()
        self.join()


def enqueue(row: Row, first: int, count: int) -> list:
    """Queue tasks ``row.task(i)`` for i in first..first+count; their handles."""
    if row.task.startswith("iotasks."):
        import iotasks

        app = iotasks.app
        messages = [app.build_message(row.task, (i,)) for i in range(first, first + count)]
        app.broker.enqueue(messages)  # (one call: runner's bulk enqueue)
        app.flush_broker()  # (it streams: its reply is read, and a retry sent, here)
        return [app.AsyncResult(m.id) for m in messages]
    import celeryio

    task = getattr(celeryio, row.task.split(".")[1])
    return [task.delay(i) for i in range(first, first + count)]


def measure(group: Group, count: int, results, env: dict, logs: Path) -> None:
    """Start the group's worker, run one task of each row on it (warm), then drain each row
    ``group.rounds`` times."""
    worker = Worker(group.command, env, APPS, logs / f"{group.rows[0].key}.log")
    try:
        for row in group.rows:
            enqueue(row, -1, 1)[0].get(timeout=60)
        for _ in range(group.rounds):
            for row in group.rows:
                drain(row, count, results, worker)
                time.sleep(0.5)  # (what the last drain left to do settles)
    finally:
        worker.stop()


def drain(row: Row, count: int, results, worker: Worker) -> None:
    """Queue ``count`` tasks of ``row`` at once; time until their results are stored."""
    results.flushdb()
    row.loads.append(os.getloadavg()[0])
    sampler = Sampler(worker)
    sampler.start()
    start = time.perf_counter()
    handles = enqueue(row, 0, count)
    done = 0
    try:
        while True:
            done = results.dbsize()
            if done >= count:
                break
            if not worker.alive():
                raise RuntimeError(f"{row.label}: the worker exited: {worker.log_tail()}")
            if time.perf_counter() - start > BUDGET:
                row.note = f"{done}/{count} within {BUDGET:.0f} s"
                break
            time.sleep(0.01)
        end = time.perf_counter()
    finally:
        sampler.finish()
    step = max(1, len(handles) // 20)
    wrong = [i for i in range(0, min(done, len(handles)), step)
             if handles[i].ready() and handles[i].get(timeout=10) != i]
    if wrong:
        row.note += f" wrong values for {wrong[:5]}"
    row.rates.append(done / (end - start))
    row.peak_one, row.peak_all = max(row.peak_one, sampler.one), max(row.peak_all, sampler.all)
    print(f"  {row.label}: {row.rates[-1]:,.0f} tasks/s ({done} in {end - start:.2f} s), "
          f"load {row.loads[-1]:.1f}", file=sys.stderr, flush=True)


def report(found: list[Row], count: int, variants: list[str], ceilings: list[float]) -> None:
    by = {row.key: row for row in found}
    print(f"\n{count:,} tasks on Redis, each waiting 100 ms unless no-op; 2 cores; drain/s is "
          f"the median of the rounds (their range after it); load average (1 min) before each")
    print(f"{'':<52} {'drain/s':>9} {'rounds':>15} {'RSS MiB':>8} {'all MiB':>8}  load")
    for row in found:
        spread = (f"{min(row.rates):,.0f}-{max(row.rates):,.0f}" if len(row.rates) > 1
                  else "")
        loads = "-".join(f"{x:.1f}" for x in (min(row.loads), max(row.loads))) if row.loads \
            else ""
        print(f"{row.label:<52} {row.rate:>9,.0f} {spread:>15} {row.peak_one / 2**20:>8.1f} "
              f"{row.peak_all / 2**20:>8.1f}  {loads}{'  ' + row.note if row.note else ''}")
    if ceilings:
        print(f"{'bare aiohttp 2x1000, http (no task queue)':<52} "
              f"{statistics.median(ceilings):>9,.0f} "
              f"{f'{min(ceilings):,.0f}-{max(ceilings):,.0f}':>15}")
    print("(RSS: the largest single process of the worker; all: every process of it)")
    noop = by["asyncio-noop"]
    for variant in variants:
        mine = by[f"asyncio-{variant}"]
        ratios = [a / b for a, b in zip(mine.rates, noop.rates, strict=True) if b]
        own = statistics.median(ratios) if ratios else 0.0
        checks = [
            (f"vs its own no-op drain [{min(ratios, default=0):.2f}-"
             f"{max(ratios, default=0):.2f}]", own, 0.70),
            ("vs celery gevent -c 1000", _ratio(mine.rate, by[f"gevent-{variant}"].rate), 10.0),
            ("vs runner threads -c 1000", _ratio(mine.rate, by[f"threads-{variant}"].rate), 1.5),
        ]
        print(f"asyncio, {variant}:")
        for name, value, target in checks:
            print(f"  drain {name:<34} {value:6.2f}x  target >= {target}x: "
                  f"{'PASS' if value >= target else 'MISS'}")
        if variant == "http" and ceilings and noop.rate:
            # Both use the same 2 cores: a task costs the pool's no-op cost plus the request's,
            # so at best 1 / (1/no-op + 1/bare) tasks/s
            top = statistics.median(ceilings)
            bound = 1 / (1 / noop.rate + 1 / top)
            print(f"  (bare aiohttp alone, no task queue: {top:,.0f} requests/s. Where the "
                  f"request's CPU adds to the pool's on the same cores, a drain of at most "
                  f"{bound:,.0f}/s, {bound / noop.rate:.2f}x the no-op drain; asyncio reaches "
                  f"{mine.rate / bound:.2f} of that bound)")
        threads = by[f"threads-{variant}"]
        print(f"  RSS of a process at 1,000 in flight {mine.peak_one / 2**20:6.1f} MiB vs "
              f"threads {threads.peak_one / 2**20:.1f} MiB: "
              f"{'PASS' if mine.peak_one < threads.peak_one else 'MISS'} (whole worker: "
              f"{mine.peak_all / 2**20:.1f} vs {threads.peak_all / 2**20:.1f} MiB)")


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("inf")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--variants", default="sleep,http")
    parser.add_argument("--rounds", type=int, default=3, help="drains of each runner row")
    parser.add_argument("--peer-rounds", type=int, default=1,
                        help="drains of each Celery row (20-40 s each)")
    parser.add_argument("--keep", action="store_true", help="keep the workers' logs")
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    tmp = tempfile.mkdtemp(prefix="runner-io-bench-")
    port = free_port()
    http = subprocess.Popen([sys.executable, str(Path(__file__).with_name("slowhttp.py")),
                             str(port)])
    try:
        with RedisServer(Path(tmp) / "redis") as server:
            broker, results_url = f"{server.url}/0", f"{server.url}/1"
            url = f"http://127.0.0.1:{port}/"
            os.environ.update(BENCH_BROKER_URL=broker, BENCH_RESULT_URL=results_url,
                              RUNNER_BROKER_URL=broker, RUNNER_RESULT_BACKEND=results_url,
                              BENCH_HTTP_URL=url)
            sys.path.insert(0, str(APPS))
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(
                [str(APPS), os.environ.get("PYTHONPATH", "")])}
            import redis

            results = redis.Redis.from_url(results_url)
            found = groups(variants, args.rounds, args.peer_rounds)
            for group in found:
                measure(group, args.tasks, results, env, Path(tmp))
            ceilings = []
            if "http" in variants:
                for _ in range(args.rounds):
                    ceilings.append(ceiling(url, args.tasks, 2, 1000))
                    print(f"  bare aiohttp 2x1000: {ceilings[-1]:,.0f} requests/s",
                          file=sys.stderr, flush=True)
            report([row for group in found for row in group.rows], args.tasks, variants,
                   ceilings)
    finally:
        http.kill()
        http.wait()
        if args.keep:
            print(f"logs kept in {tmp}", file=sys.stderr)
        else:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

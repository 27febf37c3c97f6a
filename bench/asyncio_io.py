"""The I/O-bound row (issue 22): N tasks that each wait 100 ms, drained by runner's asyncio pool
(one worker, 2 processes, 1,000 tasks in flight in each), side by side in one run with its
no-op drain, runner's threads pool at ``-c 1000`` and Celery's gevent pool at ``-c 1000``.

    python bench/asyncio_io.py [--tasks 10000] [--variants sleep,http] [--keep]

On a redis-server of its own (broker db 0, results db 1, flushed before each row). Two variants
of the wait: ``asyncio.sleep(0.1)`` (``time.sleep`` on the threads pool, patched by gevent on
Celery's), and an HTTP GET (aiohttp in a coroutine, urllib3 in a plain task, kept-alive
connections) to a server the bench starts
(``bench/slowhttp.py``, one asyncio loop answering each request after 100 ms).

Per row: the worker starts and runs one task (warm), then the N tasks are queued at once
(runner: one bulk ``broker.enqueue``; Celery: N ``delay()`` calls, which its worker starts on
as they come); the drain rate is N over the time from queueing to the last result stored,
results counted with DBSIZE every 10 ms. RSS is sampled every 50 ms:
the largest single process of the worker, and all of them together. Targets (issue 22), from
the same run: the asyncio drain >= 70% of its no-op drain, >= 10x Celery gevent, >= 1.5x the
threads pool; the RSS of a process with 1,000 tasks in flight below the threads pool's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

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
    command: list[str]
    task: str  # iotasks.X (runner) or celeryio.X (Celery)
    rate: float = 0.0
    total: float = 0.0  # seconds from the worker's start to the last result
    peak_one: int = 0  # bytes: the largest single process
    peak_all: int = 0  # bytes: all the worker's processes together
    load: str = ""
    note: str = ""


def rows(variants: list[str]) -> list[Row]:
    found = [Row("asyncio-noop", "runner asyncio 2x1000, no-op", ASYNCIO, "iotasks.anoop")]
    for variant in variants:
        coro, plain = ("asleep", "sleep") if variant == "sleep" else ("afetch", "fetch")
        found += [
            Row(f"asyncio-{variant}", f"runner asyncio 2x1000, {variant}", ASYNCIO,
                f"iotasks.{coro}"),
            Row(f"threads-{variant}", f"runner threads -c 1000, {variant}", THREADS,
                f"iotasks.{plain}"),
            Row(f"gevent-{variant}", f"celery gevent -c 1000, {variant}", GEVENT,
                f"celeryio.{plain}"),
        ]
    found.append(Row("prefork-noop", "runner prefork -c 2, no-op (the main bench's set-up)",
                     PREFORK, "iotasks.noop"))
    return found


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


def measure(row: Row, count: int, results, env: dict, logs: Path) -> None:
    """Start the worker and run one task on it (warm), then queue ``count`` at once and time
    until their results are stored."""
    results.flushall()
    worker = Worker(row.command, env, APPS, logs / f"{row.key}.log")
    try:
        enqueue(row, -1, 1)[0].get(timeout=60)
        baseline = results.dbsize()
        loads = os.getloadavg()
        sampler = Sampler(worker)
        sampler.start()
        start = time.perf_counter()
        handles = enqueue(row, 0, count)
        done = 0
        try:
            while True:
                done = results.dbsize() - baseline
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
    finally:
        worker.stop()
    if wrong:
        row.note += f" wrong values for {wrong[:5]}"
    row.total = end - start
    row.rate = done / row.total
    row.peak_one, row.peak_all = sampler.one, sampler.all
    after = os.getloadavg()
    row.load = f"{loads[0]:.1f} -> {after[0]:.1f}"
    print(f"  {row.label}: {row.rate:,.0f} tasks/s ({done} in {row.total:.2f} s), load "
          f"{row.load}", file=sys.stderr, flush=True)


def report(found: list[Row], count: int, variants: list[str]) -> None:
    by = {row.key: row for row in found}
    print(f"\n{count:,} tasks on Redis, each waiting 100 ms unless no-op; 2 cores; load "
          f"average (1 min) before -> after each row")
    print(f"{'':<52} {'drain/s':>9} {'time s':>8} {'RSS MiB':>8} {'all MiB':>8}  load")
    for row in found:
        print(f"{row.label:<52} {row.rate:>9,.0f} {row.total:>8.2f} "
              f"{row.peak_one / 2**20:>8.1f} {row.peak_all / 2**20:>8.1f}  {row.load}"
              f"{'  ' + row.note if row.note else ''}")
    print("(RSS: the largest single process of the worker; all: every process of it)")
    noop = by["asyncio-noop"].rate
    for variant in variants:
        mine = by[f"asyncio-{variant}"]
        checks = [
            ("vs its own no-op drain", mine.rate / noop if noop else 0, 0.70, "x"),
            ("vs celery gevent -c 1000", _ratio(mine.rate, by[f"gevent-{variant}"].rate), 10.0,
             "x"),
            ("vs runner threads -c 1000", _ratio(mine.rate, by[f"threads-{variant}"].rate),
             1.5, "x"),
        ]
        print(f"asyncio, {variant}:")
        for name, value, target, unit in checks:
            print(f"  drain {name:<28} {value:6.2f}{unit}  target >= {target}{unit}: "
                  f"{'PASS' if value >= target else 'MISS'}")
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
            os.environ.update(BENCH_BROKER_URL=broker, BENCH_RESULT_URL=results_url,
                              RUNNER_BROKER_URL=broker, RUNNER_RESULT_BACKEND=results_url,
                              BENCH_HTTP_URL=f"http://127.0.0.1:{port}/")
            sys.path.insert(0, str(APPS))
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(
                [str(APPS), os.environ.get("PYTHONPATH", "")])}
            import redis

            results = redis.Redis.from_url(results_url)
            found = rows(variants)
            for row in found:
                measure(row, args.tasks, results, env, Path(tmp))
            report(found, args.tasks, variants)
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

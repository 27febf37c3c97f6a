"""Measure one system: ``python bench/measure.py SYSTEM WORKDIR OUT.json --tasks N --roundtrips N
[--redis redis://127.0.0.1:PORT [--amqp amqp://USER:PW@127.0.0.1:5672/VHOST]]``.

``run.py`` starts this once per system and transport, in a session of its own, so that a system
that hangs can be killed with everything it started. The phases, in order, on fresh SQLite files
in WORKDIR, or on the given redis-server (emptied first with FLUSHALL), or with ``--amqp`` on
that RabbitMQ vhost as broker (``run.py`` empties it first) and the redis-server for results:

1. enqueue: N ``delay()`` calls into an empty queue, no worker running;
2. drain: start a worker with 2 processes, time until N results are stored (start-up included),
   sampling the RSS of each of its processes every 50 ms;
3. round trip: sequential ``delay().get()`` calls to the warm worker;
4. idle CPU: CPU time of all the worker's processes over 5 s with an empty queue;
5. (runner only) bulk enqueue of N tasks in one ``broker.enqueue`` call, worker stopped.

With ``--quick`` (the paired rounds of ``pairs.py``) only phases 1 to 3 run.

Each phase has a time budget; a phase cut short reports what it measured and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
from systems import SYSTEMS, System

ENQUEUE_BUDGET = 60.0  # seconds
DRAIN_BUDGET = 90.0
ROUNDTRIP_BUDGET = 30.0
ROUNDTRIP_TIMEOUT = 10.0  # one get()
WARMUP_ROUNDTRIPS = 3
IDLE_SETTLE = 1.0  # seconds after the last round trip before idle CPU is measured
IDLE_SECONDS = 5.0
RSS_SAMPLE_INTERVAL = 0.05
VERIFY_SAMPLE = 100  # results read back through the system's API after the drain


def log(system: System, text: str) -> None:
    print(f"  {system.name}: {text}", file=sys.stderr, flush=True)


# -- the worker's processes ------------------------------------------------------------------


class Worker:
    """A worker process (and the children it forks), its output in ``log_path``."""

    def __init__(self, command: list[str], env: dict[str, str], cwd: Path, log_path: Path):
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.main = psutil.Process(self.proc.pid)

    def processes(self) -> list[psutil.Process]:
        try:
            return [self.main, *self.main.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        text = self.log_path.read_text(errors="replace").strip().splitlines()
        return "\n".join(text[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (warm shutdown), then SIGKILL for every process still there."""
        processes = self.processes()
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        for process in processes:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        self.proc.wait()
        self._log.close()


class PeakRSS(threading.Thread):
    """Samples the RSS of every process of the worker; keeps the largest single value."""

    def __init__(self, worker: Worker):
        super().__init__(daemon=True)
        self.worker = worker
        self.peak = 0
        self.samples = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            for process in self.worker.processes():
                try:
                    self.peak = max(self.peak, process.memory_info().rss)
                except psutil.NoSuchProcess:
                    pass
            self.samples += 1
            self._done.wait(RSS_SAMPLE_INTERVAL)

    def finish(self) -> int:
        self._done.set()
        self.join()
        return self.peak


def cpu_seconds(processes: list[psutil.Process]) -> dict[int, float]:
    seconds = {}
    for process in processes:
        try:
            times = process.cpu_times()
            seconds[process.pid] = times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return seconds


# -- the phases --------------------------------------------------------------------------------


def enqueue(system: System, count: int, result: dict) -> list:
    handles = []
    start = time.perf_counter()
    deadline = start + ENQUEUE_BUDGET
    for i in range(count):
        handles.append(system.send(i))
        if i % 100 == 99 and time.perf_counter() > deadline:
            break
    elapsed = time.perf_counter() - start
    result["enqueued"] = len(handles)
    result["enqueue_rate"] = len(handles) / elapsed
    note = "" if len(handles) == count else f" (budget of {ENQUEUE_BUDGET:.0f} s reached)"
    log(system, f"enqueued {len(handles)} in {elapsed:.2f} s{note}")
    return handles


def drain(system: System, worker: Worker, start: float, expected: int, result: dict) -> None:
    """Wait for ``expected`` stored results of ``worker``, started at ``start``."""
    sampler = PeakRSS(worker)
    sampler.start()
    deadline = start + DRAIN_BUDGET
    done = 0
    try:
        while True:
            done = system.stored()
            if done >= expected:
                break
            if not worker.alive():
                raise RuntimeError(f"the worker exited ({worker.proc.returncode}) during the "
                                   f"drain")
            if time.perf_counter() > deadline:
                result["drain_note"] = f"{done}/{expected} in {DRAIN_BUDGET:.0f} s budget"
                break
            time.sleep(0.01)
        elapsed = time.perf_counter() - start
    finally:
        result["peak_rss_mib"] = sampler.finish() / 2**20
    result["drained"] = done
    result["drain_rate"] = done / elapsed
    log(system, f"drained {done} in {elapsed:.2f} s, peak RSS "
                f"{result['peak_rss_mib']:.1f} MiB ({sampler.samples} samples)")


def verify(system: System, handles: list) -> None:
    step = max(1, len(handles) // VERIFY_SAMPLE)
    for i in range(0, len(handles), step):
        value = system.get(handles[i], ROUNDTRIP_TIMEOUT)
        if value != 2 * i:
            raise RuntimeError(f"add({i}, {i}) returned {value!r}")


def roundtrips(system: System, count: int, result: dict) -> None:
    for i in range(WARMUP_ROUNDTRIPS):
        system.get(system.send(i), ROUNDTRIP_TIMEOUT)
    latencies = []
    deadline = time.perf_counter() + ROUNDTRIP_BUDGET
    for i in range(count):
        start = time.perf_counter()
        value = system.get(system.send(i), ROUNDTRIP_TIMEOUT)
        latencies.append(time.perf_counter() - start)
        if value != 2 * i:
            raise RuntimeError(f"add({i}, {i}) returned {value!r}")
        if time.perf_counter() > deadline:
            break
    latencies.sort()
    result["roundtrips"] = len(latencies)
    result["rt_p50_ms"] = statistics.median(latencies) * 1000
    result["rt_p99_ms"] = latencies[min(len(latencies) - 1,
                                        round(0.99 * (len(latencies) - 1)))] * 1000
    note = "" if len(latencies) == count else f" (budget of {ROUNDTRIP_BUDGET:.0f} s reached)"
    log(system, f"{len(latencies)} round trips: p50 {result['rt_p50_ms']:.1f} ms, "
                f"p99 {result['rt_p99_ms']:.1f} ms{note}")


def idle_cpu(system: System, worker: Worker, result: dict) -> None:
    time.sleep(IDLE_SETTLE)
    processes = worker.processes()
    before = cpu_seconds(processes)
    start = time.perf_counter()
    time.sleep(IDLE_SECONDS)
    after = cpu_seconds(processes)
    elapsed = time.perf_counter() - start
    used = sum(after[pid] - before[pid] for pid in after if pid in before)
    result["idle_cpu_pct"] = 100 * used / elapsed
    log(system, f"idle CPU {result['idle_cpu_pct']:.2f} % of a core "
                f"({len(processes)} processes)")


def bulk(system: System, count: int, result: dict) -> None:
    start = time.perf_counter()
    try:
        system.bulk_send(count)
    except NotImplementedError:
        return
    result["bulk_enqueue_rate"] = count / (time.perf_counter() - start)
    log(system, f"bulk-enqueued {count} at {result['bulk_enqueue_rate']:.0f}/s")


def flush(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    client.flushall()
    client.close()


def measure(system: System, tasks: int, count: int, result: dict, quick: bool = False) -> None:
    if system.redis:
        flush(system.redis)
    env = {**os.environ, **system.env()}
    os.environ.update(system.env())
    system.load()
    handles = enqueue(system, tasks, result)
    start = time.perf_counter()  # worker start-up is part of the drain
    worker = Worker(system.worker_command(), env, system.workdir,
                    system.workdir / f"{system.name}-worker.log")
    try:
        drain(system, worker, start, len(handles), result)
        if "drain_note" not in result:
            verify(system, handles)
        roundtrips(system, count, result)
        if not quick:
            idle_cpu(system, worker, result)
    except BaseException:
        if tail := worker.log_tail():
            print(f"--- {system.name} worker log (tail) ---\n{tail}", file=sys.stderr)
        raise
    finally:
        worker.stop()
    if not quick:
        bulk(system, tasks, result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("system", choices=sorted(SYSTEMS))
    parser.add_argument("workdir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--roundtrips", type=int, default=300)
    parser.add_argument("--redis", default=None, metavar="URL",
                        help="redis://127.0.0.1:PORT (without a database); default: SQLite")
    parser.add_argument("--amqp", default=None, metavar="URL",
                        help="amqp://USER:PW@HOST:PORT/VHOST: the broker, results on --redis")
    parser.add_argument("--quick", action="store_true",
                        help="phases 1-3 only (no idle CPU, no bulk enqueue): a paired round")
    args = parser.parse_args()
    # run.py stops us with SIGTERM: leave through the finally blocks that stop the worker
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result: dict = {"system": args.system}
    try:
        system = SYSTEMS[args.system](args.workdir, args.redis, args.amqp)
        measure(system, args.tasks, args.roundtrips, result, args.quick)
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        print(f"  {args.system}: failed: {exc}", file=sys.stderr)
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()

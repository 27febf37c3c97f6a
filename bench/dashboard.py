"""The dashboard row (issue 19): ``python bench/dashboard.py [--tasks 100000] [--workers 50]
[--drain 10000]``, on SQLite files in a temporary folder (runner's default), printing one table.

1. **Pages under load.** A dashboard (``--max-tasks`` = ``--tasks``) is served by uvicorn in
   this process; the bench generates the events of ``--workers`` workers (online, then a
   heartbeat each) and of ``--tasks`` tasks (sent, received, started, then succeeded, or
   failed with a traceback for 1 in 20), and hands them to the dashboard's event store, the
   call its receiver makes for each event (how fast it takes them is printed). A real worker
   then runs the 1,000-item pipeline ``apps/benchpipeline.yaml``. Each page is loaded
   ``--loads`` times over HTTP: the tasks page (the newest 50; filtered by state and by a
   part of an id, both a scan of every task; 500 in JSON), a task page, the workers page,
   and the run's page (DAG, the 1,000 results of its map). Target: median under 300 ms.
2. **Memory bound.** The process's RSS with ``--tasks`` tasks kept, then after as many again
   (the oldest forgotten): it must not grow with the history.
3. **Drain with the dashboard open.** A worker (``-c 2 -E``: task events on) drains
   ``--drain`` queued ``add`` tasks with no dashboard, then with a ``runner dashboard``
   process receiving its events and a client loading its tasks and workers pages every
   second (an open browser tab), then with a bare events receiver (what the event channel
   costs by itself), in turn, three times each (medians). Target: the drain rate with the
   dashboard open within 10% of the rate without.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psutil

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
TRACEBACK = ("Traceback (most recent call last):\n  File \"tasks.py\", line 12, in work\n"
             "    raise ValueError(value)\nValueError: bad input\n")


def log(text: str) -> None:
    print(f"  dashboard: {text}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mib() -> float:
    return psutil.Process().memory_info().rss / 2**20


# -- events -----------------------------------------------------------------------------------


def worker_events(count: int) -> list[dict]:
    now = time.time()
    events = []
    for i in range(count):
        host = f"w{i}@bench-host-{i % 7}"
        base = {"hostname": host, "freq": 2.0, "sw_ident": "runner", "sw_ver": "0.1.0",
                "pid": 1000 + i, "loadavg": [0.5, 0.4, 0.3]}
        events.append({**base, "type": "worker-online", "timestamp": now, "active": 0,
                       "processed": 0})
        events.append({**base, "type": "worker-heartbeat", "timestamp": now + 1, "active": 2,
                       "processed": 1000 + i})
    return events


def task_events(count: int, workers: int, start: int = 0):
    """The 4 events of each task, as workers send them."""
    names = [f"proj.tasks.job_{n}" for n in range(20)]
    now = time.time()
    for i in range(start, start + count):
        task_id = str(uuid.UUID(int=random.getrandbits(128)))
        name = names[i % len(names)]
        host = f"w{i % workers}@bench-host-{i % workers % 7}"
        when = now + i * 0.001
        yield {"type": "task-sent", "uuid": task_id, "name": name, "args": f"[{i}, 'x']",
               "kwargs": "{'flag': True}", "queue": "celery", "timestamp": when,
               "hostname": "producer@bench", "retries": 0}
        yield {"type": "task-received", "uuid": task_id, "name": name, "args": f"[{i}, 'x']",
               "kwargs": "{'flag': True}", "hostname": host, "timestamp": when + 0.0001,
               "routing_key": "celery"}
        yield {"type": "task-started", "uuid": task_id, "hostname": host,
               "timestamp": when + 0.0002}
        if i % 20 == 7:
            yield {"type": "task-failed", "uuid": task_id, "hostname": host,
                   "exception": "ValueError('bad input')", "traceback": TRACEBACK,
                   "timestamp": when + 0.0003}
        else:
            yield {"type": "task-succeeded", "uuid": task_id, "hostname": host,
                   "result": str(i * 2), "runtime": 0.0003, "timestamp": when + 0.0003}


def feed(store, events) -> tuple[int, float]:
    count = 0
    began = time.perf_counter()
    for event in events:
        store.event(event)
        count += 1
    return count, time.perf_counter() - began


# -- page loads -------------------------------------------------------------------------------


def timed_loads(client, path: str, loads: int) -> tuple[float, float]:
    """(median, worst) milliseconds of ``loads`` GETs of ``path``, each checked 200."""
    client.get(path)  # (warm: templates compiled)
    times = []
    for _ in range(loads):
        began = time.perf_counter()
        answer = client.get(path)
        times.append((time.perf_counter() - began) * 1000)
        if answer.status_code != 200:
            raise RuntimeError(f"GET {path}: {answer.status_code} {answer.text[:200]}")
    return statistics.median(times), max(times)


def start_worker(env: dict, folder: Path, *args: str) -> subprocess.Popen:
    log_file = open(folder / f"worker-{time.monotonic_ns()}.log", "wb")
    return subprocess.Popen([sys.executable, "-m", "runner", "worker", "-A", "benchtasks",
                             "-c", "2", "-P", "prefork", "-l", "warning", "--quiet", *args],
                            cwd=folder, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def pages(args, folder: Path, env: dict, rows: list) -> None:
    import benchtasks
    import httpx

    from runner.dashboard.context import Options
    from runner.dashboard.server import Dashboard
    from runner.pipeline import engine
    from runner.pipeline.runs import RUN_DONE, load_run
    from runner.pipeline.validate import load_pipeline

    app = benchtasks.app
    board = Dashboard(app, Options(port=free_port(), max_tasks=args.tasks))
    base = board.start_in_thread()
    client = httpx.Client(base_url=base, timeout=60)
    store = board.ctx.store
    try:
        before = rss_mib()
        count, took = feed(store, worker_events(args.workers))
        count, took = feed(store, task_events(args.tasks, args.workers))
        rows.append(("events taken by the store", f"{count / took:,.0f} /s",
                     f"{count:,} events of {args.tasks:,} tasks in {took:.1f} s"))
        kept_rss = rss_mib()
        log(f"{count:,} events in {took:.1f} s; RSS {before:.0f} -> {kept_rss:.0f} MiB")

        worker = start_worker(env, folder)
        try:
            run = engine.submit(app, load_pipeline(BENCH / "apps" / "benchpipeline.yaml"), {})
            deadline = time.monotonic() + 180
            while load_run(app.backend, run.id).state not in RUN_DONE:
                if time.monotonic() > deadline:
                    raise RuntimeError("the pipeline run did not finish in 180 s")
                time.sleep(0.2)
        finally:
            stop(worker)
        some_id = next(reversed(store.state.tasks))  # (for the task page)
        for label, path in (
                ("tasks page (newest 50)", "/tasks"),
                ("tasks page, state=FAILURE", "/tasks?state=FAILURE"),
                ("tasks page, search a part of an id", f"/tasks?search={some_id[9:18]}"),
                ("API tasks, 500 in JSON", "/api/tasks?limit=500"),
                ("a task page", f"/tasks/{some_id}"),
                (f"workers page ({args.workers} workers)", "/workers"),
                ("run page (1,000-item map)", f"/runs/{run.id}"),
                ("API run (1,000-item map)", f"/api/runs/{run.id}")):
            median, worst = timed_loads(client, path, args.loads)
            verdict = "PASS" if median < 300 else "MISS"
            rows.append((label, f"{median:.0f} ms", f"worst {worst:.0f} ms of {args.loads}; "
                                                    f"target < 300 ms: {verdict}"))
            log(f"{label}: median {median:.0f} ms, worst {worst:.0f} ms")

        count, took = feed(store, task_events(args.tasks, args.workers, start=args.tasks))
        doubled_rss = rss_mib()
        kept = len(store.state.tasks)
        grew = doubled_rss - kept_rss
        verdict = "PASS" if grew < 0.1 * (kept_rss - before) + 20 and kept == args.tasks \
            else "MISS"
        rows.append(("RSS with --max-tasks kept", f"{kept_rss:.0f} MiB",
                     f"{kept_rss - before:.0f} MiB for {args.tasks:,} tasks"))
        rows.append(("RSS after as many again", f"{doubled_rss:.0f} MiB",
                     f"{kept:,} tasks kept of {store.state.task_count:,} seen; grew "
                     f"{grew:+.0f} MiB; bounded: {verdict}"))
    finally:
        client.close()
        board.stop()


# -- drain with the dashboard open --------------------------------------------------------------


def stored(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
            return conn.execute("SELECT count(*) FROM runner_results WHERE state = 'SUCCESS'"
                                ).fetchone()[0]
    except sqlite3.OperationalError:  # (no results table before the worker's first)
        return 0


class OpenTab(threading.Thread):
    """A browser tab on the dashboard: the tasks and workers pages' live parts each second."""

    def __init__(self, base: str):
        super().__init__(daemon=True)
        self.base, self.loads, self.stopped = base, 0, threading.Event()

    def run(self) -> None:
        import httpx

        with httpx.Client(base_url=self.base, timeout=30,
                          headers={"X-Partial": "1"}) as client:
            while not self.stopped.wait(1.0):
                for path in ("/tasks", "/workers"):
                    try:
                        client.get(path)
                        self.loads += 1
                    except httpx.HTTPError:
                        pass


RECEIVER = ("import benchtasks\nr = benchtasks.app.events.Receiver(handlers={'*': lambda e: None})"
            "\nr.capture()")


def drain_once(args, env: dict, root: Path, with_dashboard: bool,
               bare_receiver: bool = False) -> float:
    import shutil

    folder = root / f"drain-{time.monotonic_ns()}"
    folder.mkdir()
    db = folder / "bench.db"
    run_env = {**env, "BENCH_DB": str(db), "RUNNER_BROKER_URL": f"sqlite:///{db}",
               "RUNNER_RESULT_BACKEND": f"sqlite:///{db}"}
    subprocess.run([sys.executable, "-c", f"import benchtasks\n"
                    f"app = benchtasks.app\napp.broker.enqueue([app.build_message("
                    f"'benchtasks.add', (i, i)) for i in range({args.drain})])\n"
                    f"app.flush_broker()"], cwd=folder, env=run_env, check=True)
    board = tab = None
    if bare_receiver:  # an events receiver that does nothing: what the channel costs alone
        board = subprocess.Popen([sys.executable, "-c", RECEIVER], cwd=folder, env=run_env,
                                 start_new_session=True)
        time.sleep(3)
    if with_dashboard:
        port = free_port()
        board = subprocess.Popen([sys.executable, "-m", "runner", "dashboard", "-A",
                                  "benchtasks", "--port", str(port)], cwd=folder, env=run_env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 start_new_session=True)
        import httpx

        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/overview").json()[
                        "events_connected"]:
                    break
            except (httpx.HTTPError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the dashboard did not start")
            time.sleep(0.1)
        tab = OpenTab(f"http://127.0.0.1:{port}")
        tab.start()
    began = time.perf_counter()
    worker = start_worker(run_env, folder, "-E")
    try:
        deadline = began + 180
        while stored(db) < args.drain:
            if time.perf_counter() > deadline or worker.poll() is not None:
                raise RuntimeError(f"drain: {stored(db)}/{args.drain}")
            time.sleep(0.01)
        rate = args.drain / (time.perf_counter() - began)
    finally:
        stop(worker)
        if tab is not None:
            tab.stopped.set()
            tab.join(5)
        if board is not None:
            stop(board)
        shutil.rmtree(folder, ignore_errors=True)
    log(f"drain {'with' if with_dashboard else 'without'} the dashboard"
        f"{' (a bare receiver)' if bare_receiver else ''}: {rate:,.0f} tasks/s"
        + (f" ({tab.loads} page loads)" if tab else ""))
    return rate


def drains(args, env: dict, root: Path, rows: list) -> None:
    without, with_board, bare = [], [], []
    for _ in range(3):
        without.append(drain_once(args, env, root, False))
        with_board.append(drain_once(args, env, root, True))
        bare.append(drain_once(args, env, root, False, bare_receiver=True))
    closed, opened = statistics.median(without), statistics.median(with_board)
    receiving = statistics.median(bare)
    verdict = "PASS" if opened >= 0.9 * closed else "MISS"
    rows.append(("drain, no dashboard (-E)", f"{closed:,.0f} tasks/s",
                 f"{args.drain:,} tasks, median of 3"))
    rows.append(("drain, a bare events receiver", f"{receiving:,.0f} tasks/s",
                 f"{receiving / closed:.2f}x: what receiving the events costs by itself"))
    rows.append(("drain, dashboard open", f"{opened:,.0f} tasks/s",
                 f"{opened / closed:.2f}x of the rate without; target >= 0.9x: {verdict}"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--loads", type=int, default=20)
    parser.add_argument("--drain", type=int, default=10_000)
    parser.add_argument("--skip-drain", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="runner-bench-dashboard-"))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(BENCH / "apps"), str(ROOT),
                                         env.get("PYTHONPATH", "")])
    env["BENCH_DB"] = str(root / "pages.db")
    os.environ["BENCH_DB"] = env["BENCH_DB"]
    sys.path[:0] = [str(BENCH / "apps"), str(ROOT)]
    rows: list[tuple[str, str, str]] = []
    try:
        pages(args, root, env, rows)
        if not args.skip_drain:
            drains(args, env, root, rows)
    finally:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    width = max(len(r[0]) for r in rows)
    print(f"\nrunner dashboard ({args.tasks:,} tasks in the history, {args.workers} workers' "
          f"heartbeats; SQLite; {os.cpu_count()} CPUs)\n")
    for label, value, note in rows:
        print(f"  {label:<{width}}  {value:>14}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

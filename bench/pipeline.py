"""The pipeline row (issue 4): ``python bench/pipeline.py WORKDIR OUT.json --items N
[--redis redis://127.0.0.1:PORT [--amqp amqp://USER:PW@127.0.0.1:5672/VHOST]]``.

On one warm runner worker with 2 processes (SQLite files in WORKDIR, or the given redis-server,
emptied first, or the RabbitMQ vhost as broker with results on that redis-server), the same work
twice:

1. bare tasks: ``numbers.delay(N).get()``, N ``double.delay(x)`` calls, wait for their N results,
   then the fan-in ``collect.delay(results).get()``;
2. the pipeline ``apps/benchpipeline.yaml`` (numbers -> map double over N items -> collect),
   submitted in this process with ``engine.submit`` and waited for until its run record says
   it is done.

Both wait by polling the result backend every 5 ms. Then ``runner submit benchpipeline.yaml``
(the CLI, a new process) is timed until it returns, and its run waited for.

Then (issue 16) ``--runs`` runs (200) of the same pipeline with a 10-item map and
``max_active_runs: 10`` are submitted at once from 8 threads: the time until all are done, and
the most runs seen ``running`` at once (sampled every 5 ms from the run records).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from measure import Worker, flush
from systems import APPS, Runner

PIPELINE = APPS / "benchpipeline.yaml"
POLL = 0.005  # seconds
WARM_TIMEOUT = 60.0
BUDGET = 120.0  # one bare or pipeline round, and the CLI's run


def log(text: str) -> None:
    print(f"  pipeline: {text}", file=sys.stderr, flush=True)


def bare(tasks, items: int) -> float:
    """N bare tasks and one fan-in call: seconds until the fan-in's result is back."""
    backend = tasks.app.backend
    start = time.perf_counter()
    values = tasks.numbers.delay(items).get(timeout=BUDGET)
    ids = [tasks.double.delay(x).id for x in values]
    deadline = start + BUDGET
    found: dict = {}
    while len(found) < len(ids):
        if time.perf_counter() > deadline:
            raise RuntimeError(f"bare tasks: {len(found)}/{len(ids)} results in {BUDGET:.0f} s")
        time.sleep(POLL)
        found.update(backend.get_many([i for i in ids if i not in found]))
    doubled = [tasks.app.AsyncResult(i).get(timeout=BUDGET) for i in ids]  # read back, decoded
    total = tasks.collect.delay(doubled).get(timeout=BUDGET)
    elapsed = time.perf_counter() - start
    if total != items * (items - 1):
        raise RuntimeError(f"bare tasks: collect returned {total!r}")
    return elapsed


def wait_run(app, run_id: str, start: float) -> None:
    from runner.pipeline.runs import RUN_DONE, load_run

    while True:
        record = load_run(app.backend, run_id)
        if record.state in RUN_DONE:
            break
        if time.perf_counter() > start + BUDGET:
            raise RuntimeError(f"run {run_id} still {record.state} after {BUDGET:.0f} s: "
                               + ", ".join(f"{n} {s.state}" for n, s in record.steps.items()))
        time.sleep(POLL)
    if record.state != "success":
        raise RuntimeError(f"run {run_id} ended {record.state}: "
                           + "; ".join(f"{n}: {s.error or s.reason}"
                                       for n, s in record.steps.items() if s.error or s.reason))


def pipeline(app, items: int) -> tuple[float, float]:
    """Seconds for the whole run, and for ``engine.submit`` alone."""
    from runner.pipeline.engine import submit
    from runner.pipeline.validate import load_pipeline

    start = time.perf_counter()
    record = submit(app, load_pipeline(PIPELINE), {"n": items})
    submitted = time.perf_counter() - start
    wait_run(app, record.id, start)
    return time.perf_counter() - start, submitted


def cli_submit(app, items: int, env: dict[str, str], cwd: Path) -> float:
    """Seconds until ``runner submit`` returns (its run is then waited for, not timed)."""
    script = Path(sys.executable).with_name("runner")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "runner"]
    start = time.perf_counter()
    done = subprocess.run([*command, "submit", str(PIPELINE), "-p", f"n={items}"], env=env,
                          cwd=cwd, capture_output=True, text=True, timeout=BUDGET,
                          stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"runner submit exited {done.returncode}: {done.stderr.strip()}")
    wait_run(app, done.stdout.strip().splitlines()[-1], time.perf_counter())
    return elapsed


LIMITED = """\
name: bench-limited
app: benchtasks
max_active_runs: 10
steps:
  numbers: {task: benchtasks.numbers, args: [10]}
  double: {task: benchtasks.double, needs: [numbers], map: "{{ steps.numbers.result }}",
           args: ["{{ item }}"]}
  collect: {task: benchtasks.collect, needs: [double], args: ["{{ steps.double.result }}"]}
"""


def many_runs(app, runs: int, workdir: Path) -> tuple[float, int]:
    """Seconds until ``runs`` runs submitted at once are all done, and the most running."""
    from concurrent.futures import ThreadPoolExecutor

    from runner.pipeline.engine import submit
    from runner.pipeline.runs import RUN_DONE, list_runs
    from runner.pipeline.validate import load_pipeline

    path = workdir / "bench-limited.yaml"
    path.write_text(LIMITED)
    loaded = load_pipeline(path)
    start = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        ids = set(r.id for r in pool.map(lambda _: submit(app, loaded, {}), range(runs)))
    most = 0
    while True:
        records = [r for r in list_runs(app.backend) if r.id in ids]
        most = max(most, sum(r.state == "running" for r in records))
        if len(records) == len(ids) and all(r.state in RUN_DONE for r in records):
            break
        if time.perf_counter() > start + 3 * BUDGET:
            raise RuntimeError(f"{runs} runs: {sum(r.state in RUN_DONE for r in records)} "
                               f"done after {3 * BUDGET:.0f} s")
        time.sleep(POLL)
    failed = [r.id for r in records if r.state != "success"]
    if failed:
        raise RuntimeError(f"{len(failed)} of {runs} runs did not succeed: {failed[:3]}")
    return time.perf_counter() - start, most


def measure(system: Runner, items: int, rounds: int, result: dict, runs: int = 0) -> None:
    if system.redis:
        flush(system.redis)
    env = {**os.environ, **system.env()}
    os.environ.update(system.env())
    system.load()
    tasks = system.tasks
    worker = Worker(system.worker_command(), env, system.workdir,
                    system.workdir / "pipeline-worker.log")
    try:
        tasks.add.delay(1, 1).get(timeout=WARM_TIMEOUT)  # both rows on a warm worker
        bare_times, pipeline_times, submit_times = [], [], []
        for _ in range(rounds):
            bare_times.append(bare(tasks, items))
            took, submitted = pipeline(tasks.app, items)
            pipeline_times.append(took)
            submit_times.append(submitted)
            log(f"bare {bare_times[-1]:.2f} s, pipeline {took:.2f} s "
                f"(engine.submit {submitted * 1000:.0f} ms)")
        result["bare_s"], result["pipeline_s"] = min(bare_times), min(pipeline_times)
        result["submit_s"] = min(submit_times)
        result["cli_submit_s"] = cli_submit(tasks.app, items, env, system.workdir)
        log(f"runner submit returned in {result['cli_submit_s']:.2f} s")
        if runs:
            took, most = many_runs(tasks.app, runs, system.workdir)
            result["runs"], result["runs_s"], result["runs_most_active"] = runs, took, most
            log(f"{runs} runs with max_active_runs 10: all done in {took:.2f} s, "
                f"at most {most} running at once")
    except BaseException:
        if tail := worker.log_tail():
            print(f"--- pipeline worker log (tail) ---\n{tail}", file=sys.stderr)
        raise
    finally:
        worker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2, help="best of this many rounds")
    parser.add_argument("--redis", default=None, metavar="URL")
    parser.add_argument("--amqp", default=None, metavar="URL", help="broker; results on --redis")
    parser.add_argument("--runs", type=int, default=200,
                        help="runs submitted at once with max_active_runs 10 (0: none)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result: dict = {"system": "pipeline", "items": args.items}
    try:
        measure(Runner(args.workdir, args.redis, args.amqp), args.items, args.rounds, result,
                args.runs)
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        print(f"  pipeline: failed: {exc}", file=sys.stderr)
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()

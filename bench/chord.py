"""The canvas row (issue 17): a chord of N parts inside a chain against the same chord sent
flat, on Redis (broker db 0, results db 1, a redis-server of its own), one warm runner worker
with 2 processes. ``python bench/chord.py [--parts 1000] [--rounds 3]``.

- flat: ``chord([add.si(0, i) for i in range(N)], collect.s())()``
- in a chain: ``chain(add.si(0, 0), chord([add.s(i) for i in range(N)], collect.s()))()``:
  the header is sent by the worker that finishes the first step, with its value.

Each is timed from sending until the body's result is back (best of ``--rounds``, after one
warm-up round each). Target (issue 17): the chord in a chain within 1.2x of the flat chord.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure import Worker  # noqa: E402
from redisserver import RedisServer  # noqa: E402
from systems import APPS  # noqa: E402

TIMEOUT = 120.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="runner-chord-bench-") as tmp, \
            RedisServer(Path(tmp) / "redis") as server:
        broker, results = f"{server.url}/0", f"{server.url}/1"
        os.environ.update(BENCH_BROKER_URL=broker, BENCH_RESULT_URL=results,
                          RUNNER_BROKER_URL=broker, RUNNER_RESULT_BACKEND=results)
        sys.path.insert(0, str(APPS))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(APPS), os.environ.get("PYTHONPATH", "")])}
        worker = Worker([sys.executable, "-m", "runner", "worker", "-A", "benchtasks", "-c",
                         "2", "-P", "prefork", "-l", "warning", "--quiet"], env, APPS,
                        Path(tmp) / "worker.log")
        try:
            return run(args)
        finally:
            worker.stop()


def run(args: argparse.Namespace) -> int:
    import benchtasks as tasks

    from runner import chain, chord

    n = args.parts
    expected = n * (n - 1) // 2
    tasks.add.delay(1, 1).get(timeout=60)  # the worker is up

    def flat() -> float:
        start = time.perf_counter()
        value = chord([tasks.add.si(0, i) for i in range(n)], tasks.collect.s())().get(
            timeout=TIMEOUT)
        assert value == expected, value
        return time.perf_counter() - start

    def chained() -> float:
        start = time.perf_counter()
        value = chain(tasks.add.si(0, 0),
                      chord([tasks.add.s(i) for i in range(n)], tasks.collect.s()))().get(
            timeout=TIMEOUT)
        assert value == expected, value
        return time.perf_counter() - start

    flat()
    chained()
    flat_best = min(flat() for _ in range(args.rounds))
    chained_best = min(chained() for _ in range(args.rounds))
    ratio = chained_best / flat_best
    print(f"chord of {n:,} on Redis (runner, 2 worker processes, best of {args.rounds})")
    print(f"  flat chord        {flat_best:8.3f} s  ({n / flat_best:,.0f} parts/s)")
    print(f"  chord in a chain  {chained_best:8.3f} s  ({n / chained_best:,.0f} parts/s)")
    print(f"  in a chain / flat {ratio:8.2f}x   target <= 1.2x: "
          f"{'PASS' if ratio <= 1.2 else 'MISS'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

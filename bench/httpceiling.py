"""The HTTP variant's ceiling (issue 22's I/O row): the same GETs to the bench's slow server,
made by bare aiohttp with no task queue at all, so the row can tell the client's own cost from
the pool's. ``python bench/httpceiling.py URL [--tasks N] [--processes P] [-c C]`` prints the
rate (requests/s).

P processes (default 2) each run one event loop (uvloop's where installed, as the worker's
``--loop auto``) and open one session as ``iotasks.afetch`` does (a connector without a limit,
kept-alive connections), make C requests first to open their connections (warm, as a
worker's are after its first round), wait for each other, then make N/P requests with at most C
(default 1,000) at once. The rate is N over the time from the first start to the last end.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time

import aiohttp


async def _requests(url: str, count: int, concurrency: int, barrier) -> tuple[float, float]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=aiohttp.ClientTimeout(total=30)) as session:
        async def one() -> None:
            async with session.get(url) as response:
                await response.read()

        async def many(n: int) -> None:
            sem = asyncio.Semaphore(concurrency)

            async def bounded() -> None:
                async with sem:
                    await one()

            await asyncio.gather(*(bounded() for _ in range(n)))

        await many(concurrency)  # (the connections are open)
        await asyncio.get_running_loop().run_in_executor(None, barrier.wait)
        start = time.time()
        await many(count)
        return start, time.time()


def _child(url: str, count: int, concurrency: int, barrier, out) -> None:
    from runner.utils.aio import new_event_loop

    loop = new_event_loop("auto")
    try:
        out.put(loop.run_until_complete(_requests(url, count, concurrency, barrier)))
    finally:
        loop.close()


def ceiling(url: str, tasks: int, processes: int, concurrency: int) -> float:
    """Requests per second of ``processes`` bare aiohttp processes (see the docstring)."""
    context = multiprocessing.get_context("spawn")
    barrier, out = context.Barrier(processes), context.Queue()
    children = [context.Process(target=_child, args=(url, tasks // processes, concurrency,
                                                     barrier, out))
                for _ in range(processes)]
    for child in children:
        child.start()
    spans = [out.get(timeout=300) for _ in children]
    for child in children:
        child.join()
    return tasks // processes * processes / (max(e for _, e in spans) - min(s for s, _ in spans))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url")
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("-c", "--concurrency", type=int, default=1000)
    args = parser.parse_args()
    print(f"{ceiling(args.url, args.tasks, args.processes, args.concurrency):.0f}")


if __name__ == "__main__":
    main()

"""Async tasks: an ``async def`` task calling an async HTTP client (httpx), and an async caller.

Start a worker whose event loop runs up to 200 fetches at once, then send some URLs:

    runner -A async_fetch worker -P asyncio -c 200 -l info
    python async_fetch.py https://example.com https://www.python.org

As in the quickstart, no broker configured means the embedded SQLite file in the working
directory; pass ``broker=`` / ``backend=`` (or RUNNER_BROKER_URL) for Redis or RabbitMQ.
"""

import asyncio
import sys

import httpx

from runner import Celery

app = Celery("async_fetch")


@app.task(autoretry_for=(httpx.TransportError,), retry_backoff=True, max_retries=3,
          soft_time_limit=30)
async def fetch(url: str) -> dict:
    """Fetch ``url``; while it waits for the server, the worker's loop runs the other tasks."""
    async with httpx.AsyncClient(timeout=10, follow_redirects=True) as client:
        response = await client.get(url)
    return {"url": url, "status": response.status_code, "bytes": len(response.content)}


async def main(urls: list[str]) -> None:
    """An async caller (a FastAPI endpoint would do the same): enqueue, then await results."""
    results = [await fetch.adelay(url) for url in urls]
    for result in results:
        print(await result.aget(timeout=60))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:] or ["https://example.com"]))

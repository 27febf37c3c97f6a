"""The I/O row's HTTP server: answers every GET after 100 ms (``python bench/slowhttp.py
PORT``), HTTP/1.1 with keep-alive, on one event loop: thousands of requests wait at once.

It is an :class:`asyncio.Protocol` with a timer per request, on uvloop's loop where installed,
so that its own CPU cost per request stays small beside the clients' on a shared machine (a
streams server took about as much CPU as the client it answered). Every variant of the row, and
the peers, ask the same server.
"""

from __future__ import annotations

import asyncio
import sys

WAIT = 0.1
BODY = b"ok"
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
            + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)
END = b"\r\n\r\n"


class SlowAnswers(asyncio.Protocol):
    """Each request head (a GET has no body) is answered WAIT seconds after it arrived; as
    every answer waits as long, they leave in the order the requests came (pipelining works)."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.pending = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.pending += data
        heads = self.pending.count(END)
        if heads:
            self.pending = self.pending[self.pending.rindex(END) + len(END):]
            for _ in range(heads):
                self.loop.call_later(WAIT, self._answer)

    def _answer(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(RESPONSE)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(SlowAnswers, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


def _loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=_loop) as runner:
        runner.run(main(int(sys.argv[1])))

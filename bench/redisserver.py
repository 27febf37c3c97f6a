"""The benchmark's own redis-server: 127.0.0.1, a free port, no persistence, its own folder.

Every Redis row of one run is measured on this one server, so that only ratios from the same
server count; ``redis-benchmark`` against it gives the server's own limit on this machine.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

START_TIMEOUT = 10.0  # seconds


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """``with RedisServer(folder) as server: ... server.url``; stopped on the way out, even on
    failure or Ctrl-C."""

    def __init__(self, folder: Path, *args: str):
        self.folder = folder
        self.port = free_port()
        self.args = list(args)  # more redis-server options (``--replicaof HOST PORT``)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """Without a database number: each system picks its own (see ``systems.py``)."""
        return f"redis://127.0.0.1:{self.port}"

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        import redis

        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder),
             "--logfile", str(self.folder / "redis.log"), *self.args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if time.monotonic() > deadline or self.proc.poll() is not None:
                        self.stop()
                        raise RuntimeError(f"redis-server did not start; see "
                                           f"{self.folder / 'redis.log'}") from None
                    time.sleep(0.02)
        finally:
            client.close()

    def wait_synced(self, timeout: float = START_TIMEOUT) -> None:
        """A replica (``--replicaof``): until its link to the master is up."""
        import redis

        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + timeout
        try:
            while client.info("replication").get("master_link_status") != "up":
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the replica did not sync; see "
                                       f"{self.folder / 'redis.log'}")
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def benchmark(self, clients: int, requests: int, tests: str = "set,get,lpush,lpop"
                  ) -> dict[str, float]:
        """``redis-benchmark -q``: requests per second of each command, or {} without it."""
        if shutil.which("redis-benchmark") is None:
            return {}
        out = subprocess.run(
            ["redis-benchmark", "-h", "127.0.0.1", "-p", str(self.port), "-q", "-n",
             str(requests), "-c", str(clients), "-t", tests],
            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL).stdout
        rates = {}
        for line in out.replace("\r", "\n").splitlines():
            if m := re.match(r"\s*(\w+): ([\d.]+) requests per second", line):
                rates[m.group(1)] = float(m.group(2))
        return rates

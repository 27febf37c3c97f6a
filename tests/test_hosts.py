"""Hosts that lose each other (issue 21), made of network namespaces (``ip netns``, veth; as
root, skipped elsewhere): Redis on host r, a worker with embedded beat (``-B``) on each of hosts
a and b. Host a's link is cut while it runs long ``acks_late`` tasks: host b runs them after the
visibility timeout, each once more at most, and every result is stored; the beat leader moves
to b and, once the link is back, no fire is sent twice."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import APPS, ROOT

N = os.getpid() % 200 + 20  # this session's subnets: 10.N.1.0/24 and 10.N.2.0/24


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), check=check, capture_output=True, text=True, timeout=30)


class Hosts:
    """Namespaces r (Redis), a and b, a veth link between r and each of a and b."""

    def __init__(self, folder: Path):
        self.folder = folder
        tag = f"rt{os.getpid() % 100000}"
        self.r, self.a, self.b = f"{tag}r", f"{tag}a", f"{tag}b"
        self.links = {self.a: (f"{tag}ra", f"{tag}ar", 1), self.b: (f"{tag}rb", f"{tag}br", 2)}
        self.procs: list[subprocess.Popen] = []
        self.port = 6390

    def address(self, host: str) -> str:
        """Redis as host ``host`` reaches it."""
        return f"10.{N}.{self.links[host][2]}.1"

    def up(self) -> None:
        for ns in (self.r, self.a, self.b):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        for host, (near, far, subnet) in self.links.items():
            sh("ip", "link", "add", near, "netns", self.r, "type", "veth", "peer", "name", far,
               "netns", host)
            sh("ip", "-n", self.r, "addr", "add", f"10.{N}.{subnet}.1/24", "dev", near)
            sh("ip", "-n", host, "addr", "add", f"10.{N}.{subnet}.2/24", "dev", far)
            sh("ip", "-n", self.r, "link", "set", near, "up")
            sh("ip", "-n", host, "link", "set", far, "up")

    def cut(self, host: str, up: bool = False) -> None:
        sh("ip", "-n", host, "link", "set", self.links[host][1], "up" if up else "down")

    def run(self, ns: str, args: list[str], env: dict, log: str) -> subprocess.Popen:
        out = (self.folder / log).open("wb")
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT, cwd=self.folder,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def down(self) -> None:
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(10)
        for ns in (self.r, self.a, self.b):
            sh("ip", "netns", "del", ns, check=False)


@pytest.fixture
def hosts(tmp_path):
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2 (ip netns)")
    found = Hosts(tmp_path)
    try:
        found.up()
    except subprocess.CalledProcessError as exc:
        found.down()
        pytest.skip(f"cannot make network namespaces here: {exc.stderr.strip()}")
    yield found
    found.down()


def test_a_host_cut_off_gives_its_tasks_and_its_beat_lead_to_the_other(hosts, tmp_path):
    marks = tmp_path / "marks.log"
    addresses = f"--bind {hosts.address(hosts.a)} {hosts.address(hosts.b)}"
    hosts.run(hosts.r, ["redis-server", "--port", str(hosts.port), *addresses.split(),
                        "--save", "", "--appendonly", "no", "--protected-mode", "no"],
              dict(os.environ), "redis.log")
    env = {**os.environ, "PYTHONPATH": f"{APPS}:{ROOT}", "HOSTS_MARKS": str(marks)}

    def url(host: str) -> str:
        return f"redis://{hosts.address(host)}:{hosts.port}/0"

    def client(host: str, code: str, timeout: float = 60) -> str:
        done = subprocess.run(["ip", "netns", "exec", host, sys.executable, "-c", code],
                              env={**env, "RUNNER_BROKER_URL": url(host)}, cwd=tmp_path,
                              capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, done.stderr
        return done.stdout

    deadline = time.monotonic() + 10
    while "PONG" not in client(hosts.a, "import redis,os; print(redis.Redis.from_url("
                               "os.environ['RUNNER_BROKER_URL']).ping() and 'PONG')"):
        assert time.monotonic() < deadline

    for host in (hosts.a, hosts.b):
        hosts.run(host, [sys.executable, "-m", "runner", "worker", "-A", "hosts_tasks", "-c",
                         "2", "--prefetch-multiplier", "1", "-B", "-l", "info"],
                  {**env, "RUNNER_BROKER_URL": url(host), "RUNNER_TEST_HOST": host},
                  f"worker-{host}.log")
        time.sleep(2)  # a first, so it leads beat
    ids = client(hosts.a, "import hosts_tasks; print(' '.join(hosts_tasks.work.delay(i, 6).id "
                          "for i in range(4))); hosts_tasks.app.broker.flush()").split()
    deadline = time.monotonic() + 20
    while not any(f"{hosts.a}" in line and line.startswith("start")
                  for line in (marks.read_text().splitlines() if marks.exists() else [])):
        assert time.monotonic() < deadline, "host a started no task"
        time.sleep(0.1)
    started_on_a = {line.split()[1] for line in marks.read_text().splitlines()
                    if line.startswith("start") and line.endswith(hosts.a)}
    hosts.cut(hosts.a)
    time.sleep(15)  # visibility timeout (4 s) + the tasks (6 s) + the beat lease (4 s)
    hosts.cut(hosts.a, up=True)
    time.sleep(8)  # a reconnects; its late results and acks arrive

    values = client(hosts.b, f"import hosts_tasks; print([hosts_tasks.app.AsyncResult(i)"
                             f".get(timeout=30) for i in {ids!r}])")
    assert values.strip() == "[0, 1, 2, 3]"  # every result stored
    lines = marks.read_text().splitlines()
    starts = Counter(line.split()[1] for line in lines if line.startswith("start"))
    ends_on_b = {line.split()[1] for line in lines
                 if line.startswith("end") and line.endswith(hosts.b)}
    assert set(starts) == {"0", "1", "2", "3"}
    assert started_on_a <= ends_on_b, (lines, "b ran what a held when it was cut")
    assert max(starts.values()) <= 2, lines  # once on a, once more on b at most
    ticks = [line.split()[1] for line in lines if line.startswith("tick")]
    tick_hosts = {line.split()[2] for line in lines if line.startswith("tick")}
    assert Counter(ticks).most_common(1)[0][1] == 1, "a beat fire was sent twice"
    assert hosts.b in tick_hosts  # b took the lead while a was cut off
    log_a = (tmp_path / f"worker-{hosts.a}.log").read_text(errors="replace")
    assert "Traceback" not in log_a.replace("RecursionError", "")

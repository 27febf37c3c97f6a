"""Hosts that lose each other (issue 21), made of network namespaces (``ip netns``, veth; as
root, skipped elsewhere): the broker on host r, a worker with embedded beat (``-B``) on each of
hosts a and b. Host a's link is cut while it runs long ``acks_late`` tasks: host b runs them
(Redis: after the visibility timeout; RabbitMQ: once the node drops a's connection for missed
heartbeats), each once more at most, and every result is stored; the beat leader moves to b
and, once the link is back, no fire is sent twice.

The RabbitMQ variant runs a RabbitMQ node of its own inside host r (the machine's node listens
on 127.0.0.1 of the machine's own network, which the namespaces cannot reach): started as the
``rabbitmq`` user as tests/test_amqp_tls.py does, listening on r's two addresses, with
Redis on r as the result backend (where beat keeps its lease)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
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

    def rabbitmq(self) -> None:
        """Start a RabbitMQ node in host r, on both of r's addresses (port 5672 of r's own
        network; its epmd too), guest allowed from the other hosts. Its boot takes seconds:
        the caller waits for it."""
        # (pytest's own folders are root's alone: the node runs as the rabbitmq user)
        self.rabbit_folder = folder = Path(tempfile.mkdtemp(prefix="runner-rabbitmq-hosts-"))
        (folder / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = {self.address(self.a)}:5672\n"
            f"listeners.tcp.2 = {self.address(self.b)}:5672\nloopback_users = none\n")
        for path in [folder, *folder.iterdir()]:
            shutil.chown(path, "rabbitmq")
            path.chmod(0o755 if path.is_dir() else 0o644)
        self.run(self.r, ["rabbitmq-server"], {
            **os.environ, "RABBITMQ_NODENAME": f"hosts{os.getpid()}@localhost",
            "RABBITMQ_CONFIG_FILE": str(folder / "rabbitmq.conf"),
            "RABBITMQ_MNESIA_BASE": str(folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(folder / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(folder / "plugins"),
            "RABBITMQ_PID_FILE": str(folder / "pid")}, "rabbitmq.log")

    def reachable(self, host: str, port: int) -> bool:
        return sh("ip", "netns", "exec", host, sys.executable, "-c",
                  f"import socket; socket.create_connection(({self.address(host)!r}, {port}), "
                  f"timeout=1).close()", check=False).returncode == 0

    def down(self) -> None:
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(10)
        # what left its process group (RabbitMQ's node under su, its epmd daemon): every
        # process still in one of these namespaces is this test's
        for ns in (self.r, self.a, self.b):
            deadline = time.monotonic() + 10
            while (pids := sh("ip", "netns", "pids", ns, check=False).stdout.split()) and \
                    time.monotonic() < deadline:
                for pid in pids:
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.1)
            sh("ip", "netns", "del", ns, check=False)
        if getattr(self, "rabbit_folder", None):
            shutil.rmtree(self.rabbit_folder, ignore_errors=True)


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


def check_beat(lines: list[str], logs: dict[str, str], cut: str, other: str) -> None:
    """No fire sent twice: beat logs each fire it sends, on either host. ``other`` led (and
    fired) while ``cut`` was cut off. Each fire ran once, or twice where the cut host ran it
    first: its (early) ack lost with the link, the broker delivers it again, as any message
    whose ack never arrived; that is no second fire."""
    fired = Counter(re.findall(r"beat: fired tick for (\S+):", "".join(logs.values())))
    assert fired and max(fired.values()) == 1, ("a beat fire was sent twice", fired)
    assert "beat: fired tick" in logs[other], ("the other host never led beat", lines)
    runs = Counter(line.split()[1] for line in lines if line.startswith("tick"))
    on_cut = {line.split()[1] for line in lines if line.startswith("tick") and line.endswith(cut)}
    assert all(n == 1 or (n == 2 and fire in on_cut) for fire, n in runs.items()), (
        "a fire ran twice", lines, [line for text in logs.values() for line in
                                    text.splitlines() if "beat" in line])


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def wait_until(check, timeout: float, what) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what() if callable(what) else what
        time.sleep(0.2)


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
    logs = {host: (tmp_path / f"worker-{host}.log").read_text(errors="replace")
            for host in (hosts.a, hosts.b)}
    check_beat(lines, logs, hosts.a, hosts.b)
    log_a = logs[hosts.a]
    assert "Traceback" not in log_a.replace("RecursionError", "")


def test_on_rabbitmq_a_host_cut_off_gives_its_tasks_and_its_beat_lead_to_the_other(hosts,
                                                                                   tmp_path):
    if shutil.which("rabbitmq-server") is None:
        pytest.skip("RabbitMQ is not installed (no rabbitmq-server)")
    hosts.rabbitmq()
    hosts.run(hosts.r, ["redis-server", "--port", str(hosts.port), "--bind",
                        hosts.address(hosts.a), hosts.address(hosts.b), "--save", "",
                        "--appendonly", "no", "--protected-mode", "no"],
              dict(os.environ), "redis.log")
    marks = tmp_path / "marks.log"
    env = {**os.environ, "PYTHONPATH": f"{APPS}:{ROOT}", "HOSTS_MARKS": str(marks)}

    def on(host: str) -> dict[str, str]:
        """The environment of a process on ``host``: RabbitMQ and Redis at r's address there
        (heartbeats every 2 s, set in hosts_tasks: RabbitMQ drops a silent host's connection
        within seconds and gives its unacked messages to the other)."""
        address = hosts.address(host)
        return {**env, "RUNNER_TEST_HOST": host,
                "RUNNER_BROKER_URL": f"amqp://guest:guest@{address}:5672//",
                "RUNNER_RESULT_BACKEND": f"redis://{address}:{hosts.port}/0"}

    def client(host: str, code: str) -> str:
        done = subprocess.run(["ip", "netns", "exec", host, sys.executable, "-c", code],
                              env=on(host), cwd=tmp_path, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def log(name: str) -> str:
        path = tmp_path / name
        return path.read_text(errors="replace") if path.exists() else ""

    # (its boot takes seconds: read its log, then reach it from a)
    wait_until(lambda: "Starting broker... completed" in log("rabbitmq.log"), 120,
               lambda: f"the RabbitMQ node on r did not start:\n{log('rabbitmq.log')[-2000:]}")
    wait_until(lambda: hosts.reachable(hosts.a, 5672), 10, "a cannot reach RabbitMQ on r")
    worker = [sys.executable, "-m", "runner", "worker", "-A", "hosts_tasks", "-c", "2",
              "--prefetch-multiplier", "1", "-B", "-l", "info"]
    hosts.run(hosts.a, worker, on(hosts.a), f"worker-{hosts.a}.log")
    wait_until(lambda: "leading" in log(f"worker-{hosts.a}.log"), 60,
               lambda: log(f"worker-{hosts.a}.log"))  # a leads beat
    hosts.run(hosts.b, worker, on(hosts.b), f"worker-{hosts.b}.log")
    wait_until(lambda: "ready." in log(f"worker-{hosts.b}.log"), 60,
               lambda: log(f"worker-{hosts.b}.log"))
    ids = client(hosts.a, "import hosts_tasks; print(' '.join(hosts_tasks.work.delay(i, 6).id "
                          "for i in range(4))); hosts_tasks.app.broker.flush()").split()
    wait_until(lambda: any(line.startswith("start") and line.endswith(hosts.a)
                           for line in lines_of(marks)), 30, "host a started no task")
    started_on_a = {line.split()[1] for line in lines_of(marks)
                    if line.startswith("start") and line.endswith(hosts.a)}
    hosts.cut(hosts.a)

    def b_took_over() -> bool:
        lines = lines_of(marks)
        return all(f"start {i} {hosts.b}" in lines for i in started_on_a) and any(
            line.startswith("tick") and line.endswith(hosts.b) for line in lines)

    wait_until(b_took_over, 40, lambda: ("b did not take a's tasks and beat", lines_of(marks)))
    hosts.cut(hosts.a, up=True)
    values = client(hosts.b, f"import hosts_tasks; print([hosts_tasks.app.AsyncResult(i)"
                             f".get(timeout=40) for i in {ids!r}])")
    assert values.strip() == "[0, 1, 2, 3]", values  # every result stored
    # (a's own runs may have stored them first, once back: b's runs end up to 6 s later)
    wait_until(lambda: all(f"end {i} {hosts.b}" in lines_of(marks) for i in started_on_a),
               30, lambda: ("b did not finish what a held when it was cut", lines_of(marks)))
    # a is back: it sees b's lease, and whatever fire it held when cut is not sent again
    wait_until(lambda: "lost the lease" in log(f"worker-{hosts.a}.log"), 30,
               lambda: log(f"worker-{hosts.a}.log")[-3000:])
    time.sleep(3)

    lines = lines_of(marks)
    starts = Counter(line.split()[1] for line in lines if line.startswith("start"))
    ends_on_b = {line.split()[1] for line in lines
                 if line.startswith("end") and line.endswith(hosts.b)}
    assert set(starts) == {"0", "1", "2", "3"}, lines
    assert started_on_a <= ends_on_b, (lines, "b ran what a held when it was cut")
    assert max(starts.values()) <= 2, lines  # once on a, once more on b at most
    check_beat(lines, {host: log(f"worker-{host}.log") for host in (hosts.a, hosts.b)},
               hosts.a, hosts.b)
    log_a = log(f"worker-{hosts.a}.log")
    assert "Traceback" not in log_a, log_a[-3000:]

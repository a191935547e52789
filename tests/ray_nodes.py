"""A real multi-node Ray cluster on this machine for the tests: a head (no CPUs, so runs
never go there) and worker nodes, each started with `ray start --block` in its own process
group on its own ports, with a resource named after it and its own slot folder
(`AGENTX_NODE_SLOTS`), so a test can see what a node received and kill one node alone.
Every wait is bounded; `stop()` kills every group it started, even after a failure."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

RAY = str(Path(sys.executable).parent / "ray")
# fast node-death detection: a killed node is noticed in ~2 s instead of Ray's ~15-30 s
FAST_HEALTH = {"health_check_period_ms": 500, "health_check_failure_threshold": 4, "health_check_initial_delay_ms": 0,
               "health_check_timeout_ms": 500}


# No usage reports, and no token authentication whatever ~/.ray holds (Ray 2.60 turns it on for a
# head that finds a token there, and a worker started next to it does not): the same for every
# node and for the test process, which sets these too (`hermetic`).
HERMETIC = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def hermetic() -> dict[str, str | None]:
    """Set HERMETIC in this process's environment; returns what to restore."""
    before = {k: os.environ.get(k) for k in HERMETIC}
    os.environ.update(HERMETIC)
    return before


def restore(before: dict[str, str | None]) -> None:
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout_s: float, what: str, every: float = 0.2):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if value := predicate():
            return value
        time.sleep(every)
    raise TimeoutError(f"{what}: not within {timeout_s:g} s")


@dataclass
class Node:
    name: str
    proc: subprocess.Popen
    slots: Path
    log: Path

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)


class Cluster:
    def __init__(self, root: Path, health: dict | None = None):
        """`health`: the head's health-check settings (default FAST_HEALTH; {} for Ray's own)."""
        self.root = root
        self.health = FAST_HEALTH if health is None else health
        # Ray's sockets live under its temp dir: keep the path short (unix sockets: 107 bytes)
        self.temp = Path(tempfile.mkdtemp(prefix="axray-", dir="/tmp"))
        self.port = free_port()
        self.client_port = free_port()
        self.nodes: list[Node] = []
        self.head: Node | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _start(self, name: str, args: list[str]) -> Node:
        slots = self.root / f"{name}-slots"
        slots.mkdir(parents=True, exist_ok=True)
        log = self.root / f"{name}.log"
        low = free_port()
        env = {**os.environ, **HERMETIC, "AGENTX_NODE_SLOTS": str(slots)}
        proc = subprocess.Popen([RAY, "start", "--block", "--disable-usage-stats", "--node-ip-address", "127.0.0.1",
                                 "--min-worker-port", str(low), "--max-worker-port", str(low + 200), *args],
                                stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
        node = Node(name, proc, slots, log)
        self.nodes.append(node)
        wait_for(lambda: "Ray runtime started" in log.read_text() or proc.poll() is not None, 90, f"ray node {name}")
        if proc.poll() is not None:
            raise RuntimeError(f"ray node {name} did not start:\n{log.read_text()[-3000:]}")
        return node

    def start_head(self) -> Node:
        self.head = self._start("head", ["--head", "--port", str(self.port), "--num-cpus", "0",
                                         "--ray-client-server-port", str(self.client_port),
                                         "--include-dashboard=false", "--temp-dir", str(self.temp),
                                         *(["--system-config", json.dumps(self.health)] if self.health else [])])
        return self.head

    def add_worker(self, name: str, cpus: int = 1) -> Node:
        return self._start(name, ["--address", self.address, "--num-cpus", str(cpus),
                                  "--resources", json.dumps({name: 1})])

    def node_id(self, name: str) -> str | None:
        """The Ray node id of the live worker `name` (None until it has registered)."""
        import ray

        return next((n["NodeID"] for n in ray.nodes() if n["Alive"] and name in n["Resources"]), None)

    def wait_alive(self, *names: str, timeout_s: float = 60) -> None:
        wait_for(lambda: all(self.node_id(n) for n in names), timeout_s, f"ray nodes {names} registered")

    def stop(self) -> None:
        for node in reversed(self.nodes):
            try:
                node.kill()
            except Exception:  # noqa: BLE001 - teardown goes on to the next node whatever this one did
                pass
        shutil.rmtree(self.temp, ignore_errors=True)

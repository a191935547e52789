"""The Ray executor: runs go to a Ray cluster's nodes; scoring stays here.

`--executor ray` connects to the cluster this machine is a node of (`$RAY_ADDRESS`, or the
one `ray start` last started here) and otherwise starts a local Ray instance for the
command (stopped when it ends); `ray://HOST:PORT` connects to an existing cluster's Ray
Client server (port 10001 by default); `ray:HOST:PORT` to its GCS address, from a node of
it. An address that does not answer is one line of error, said within seconds.

Lanes. The executor counts them when it opens: one per GPU when the cluster has GPUs
(each run's actor holds `num_gpus=1`), else one per `cpus_per_run` CPUs of each node
(default 1); `default_parallel` is the GPUs, or one per CPU-only node. A lane is a
`NodeRunner` actor (tools/executors/ray_node.py), made once, on the node Ray places it
(spread over the nodes), with warm kernels of its own; a run takes a free lane and sends
its inputs as bytes through the object store.

Lost nodes. A runner whose node dies mid-run fails its call (`RayActorError`) as soon as
Ray notices: 3.0 s after the node's processes were killed, with Ray's default health
checks, on this project's machine. The run is then retried on another lane whose runner is
placed on a live node, when one is free, else on this lane's runner made again wherever
the cluster has room (`AGENTX_RAY_RETRIES`, default 1 retry). A run that no node takes within
`AGENTX_RAY_PLACEMENT_S` (default 300 s), or whose retries are spent, comes back `lost`
(RunResult.lost), never as a failure of the code, and never hangs: every wait is bounded
(the tier's timeout plus fixed margins for start-up and transfers). A run that finished is
unpacked here as soon as its bytes arrive; a node lost after that changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agentx.errors import UserError
from tools.executors import ExecutorSpec, KernelConfig, KernelJob, RunResult, RunSpec
from tools.executors.node import REPORT_TIMEOUT_S
from tools.executors.ray_node import NodeRunner, code_hash
from tools.executors.transfer import pack_code, pack_rows, unpack_run

INSTALL = "pip install 'agentx[ray]'"
RECEIVED = "node-received.json"   # in the run directory: every file the node was sent (path, size, sha256, header)
SENT_KEPT = 16              # code and row tars kept in the object store for reuse
MARGIN_S = 600              # on top of a tier's timeout: kernel start, the harness cells, transfers


def _ray():
    try:
        import ray
    except ImportError:
        raise UserError(f"--executor ray needs Ray, which is not installed here: {INSTALL} (or pip install "
                        "'ray[default]>=2.40'), and the same on every node of the cluster") from None
    return ray


@dataclass(frozen=True)
class RaySettings:
    """Knobs of the Ray executor, from the environment (documented in the README)."""

    retries: int = 1                  # AGENTX_RAY_RETRIES: attempts after a lost node
    placement_s: float = 300.0        # AGENTX_RAY_PLACEMENT_S: wait for a node to take a run
    cpus_per_run: float = 1.0         # AGENTX_RAY_CPUS_PER_RUN

    @classmethod
    def from_env(cls) -> RaySettings:
        env = os.environ
        try:
            return cls(int(env.get("AGENTX_RAY_RETRIES", cls.retries)),
                       float(env.get("AGENTX_RAY_PLACEMENT_S", cls.placement_s)),
                       float(env.get("AGENTX_RAY_CPUS_PER_RUN", cls.cpus_per_run)))
        except ValueError as exc:
            raise UserError(f"bad AGENTX_RAY_* setting: {exc}") from None


# -- the connection (one per process, shared by executors opened in it) --------------

_lock = threading.Lock()
_connection: dict[str, Any] = {"refs": 0, "spec": None}


def _reachable(hostport: str, what: str) -> None:
    host, _, port = hostport.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise UserError(f"--executor {what}: nothing answers at {hostport} ({exc.strerror or exc}); start the "
                        "cluster (`ray start --head` on its head node) or fix the address") from None


def _local_cluster_address() -> str | None:
    """The cluster `ray start` last started on this machine, when it still answers."""
    recorded = Path(os.environ.get("RAY_TMPDIR") or "/tmp") / "ray" / "ray_current_cluster"
    try:
        address = recorded.read_text().strip()
    except OSError:
        return None
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except (OSError, ValueError):
        return None                    # a stale record of a cluster that is gone
    return address


def connect(spec: ExecutorSpec) -> None:
    """Connect this process to the cluster `spec` names (once; later calls share it)."""
    ray = _ray()
    with _lock:
        if _connection["refs"]:
            if str(_connection["spec"]) != str(spec):
                raise UserError(f"this process is already connected to Ray at {_connection['spec']}; "
                                f"one cluster per process (asked for {spec})")
            _connection["refs"] += 1
            return
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        quiet = {"namespace": "agentx", "logging_level": logging.WARNING, "log_to_driver": False}
        address = spec.address or os.environ.get("RAY_ADDRESS") or _local_cluster_address()
        try:
            if address is None:
                ray.init(address="local", include_dashboard=False, **quiet)
            else:
                _reachable(address.removeprefix("ray://"), str(spec))
                ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError, TimeoutError) as exc:
            raise UserError(f"--executor {spec}: could not connect to Ray at {address or 'a new local instance'}: "
                            f"{' '.join(str(exc).split())[:300]}") from None
        _connection.update(refs=1, spec=spec)


def disconnect() -> None:
    ray = _ray()
    with _lock:
        _connection["refs"] = max(0, _connection["refs"] - 1)
        if not _connection["refs"] and ray.is_initialized():
            ray.shutdown()
            _connection["spec"] = None


@dataclass(frozen=True)
class ClusterLanes:
    lanes: int
    default_parallel: int
    gpus_per_run: int
    cpus_per_run: float
    nodes: int


def cluster_lanes(cpus_per_run: float = 1.0) -> ClusterLanes:
    """The cluster's lanes now (see the module docstring); a UserError when it has none."""
    ray = _ray()
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    gpus = sum(int(r.get("GPU", 0)) for r in nodes)
    if gpus:
        return ClusterLanes(gpus, gpus, 1, cpus_per_run, len(nodes))
    cpu_nodes = [int(r.get("CPU", 0) // cpus_per_run) for r in nodes]
    if not sum(cpu_nodes):
        raise UserError(f"the Ray cluster has no node with {cpus_per_run:g} CPU(s) for a run (its nodes: "
                        f"{len(nodes)}); add a worker (`ray start --address ...`) or lower AGENTX_RAY_CPUS_PER_RUN")
    return ClusterLanes(sum(cpu_nodes), sum(1 for n in cpu_nodes if n), 0, cpus_per_run, len(nodes))


# -- the executor --------------------------------------------------------------------


@dataclass
class _Lane:
    index: int
    actor: Any = None
    hello: Any = None                  # the ObjectRef of actor.hello()
    info: dict | None = None

    @property
    def rank(self) -> int:             # which free lane a run takes first: placed, placing, vacant
        return 0 if self.info is not None else 1 if self.actor is not None else 2


class _FreeLanes:
    """The lanes no run holds; `take` blocks while there is none, and prefers a lane whose
    runner is placed (a lane whose node died is vacant until a node has room again)."""

    def __init__(self) -> None:
        self._free: list[_Lane] = []
        self._cond = threading.Condition()

    def take(self) -> _Lane:
        with self._cond:
            while not self._free:
                self._cond.wait()
            lane = min(self._free, key=lambda lane: (lane.rank, lane.index))
            self._free.remove(lane)
            return lane

    def give_back(self, lane: _Lane) -> None:
        with self._cond:
            self._free.append(lane)
            self._cond.notify()


class RayExecutor:
    """Runs on a Ray cluster (see the module docstring)."""

    name = "ray"

    def __init__(self, spec: ExecutorSpec, config: KernelConfig, *, progress=lambda _: None,
                 settings: RaySettings | None = None):
        self.spec, self.config, self.progress = spec, config, progress
        self.settings = settings or RaySettings.from_env()
        connect(spec)
        try:
            self.ray = _ray()
            self.cluster = cluster_lanes(self.settings.cpus_per_run)
            self._runner = self.ray.remote(NodeRunner)
            self._hash = code_hash()
            self._refs: OrderedDict[str, Any] = OrderedDict()      # what was put, by content
            self._refs_lock = threading.Lock()
            self._lanes = [_Lane(i) for i in range(self.cluster.lanes)]
            self._free = _FreeLanes()
            for lane in self._lanes:
                self._start(lane)      # placed now, in the background: warm kernels get going
                self._free.give_back(lane)
        except BaseException:
            disconnect()
            raise

    @property
    def lanes(self) -> int:
        return self.cluster.lanes

    @property
    def default_parallel(self) -> int:
        return self.cluster.default_parallel

    def describe(self) -> str:
        kind = f"{self.cluster.lanes} GPU lane(s)" if self.cluster.gpus_per_run else \
            f"{self.cluster.lanes} CPU lane(s) of {self.cluster.cpus_per_run:g} CPU"
        return f"ray ({self.spec}): {self.cluster.nodes} node(s), {kind}"

    def _start(self, lane: _Lane) -> None:
        lane.actor = self._runner.options(num_cpus=self.cluster.cpus_per_run, num_gpus=self.cluster.gpus_per_run,
                                          max_restarts=0, max_task_retries=0, scheduling_strategy="SPREAD"
                                          ).remote(self.config, self._hash)
        lane.hello, lane.info = lane.actor.hello.remote(), None

    def _drop(self, lane: _Lane) -> None:
        try:
            self.ray.kill(lane.actor, no_restart=True)
        except Exception:  # noqa: BLE001 - an actor on a dead node cannot be killed twice; it is gone
            pass
        lane.actor = lane.hello = lane.info = None

    def _placed(self, lane: _Lane) -> tuple[str, bool] | None:
        """Wait for the lane's runner (bounded). None when it is there; else why not, and
        whether another attempt may find a node (not when none took it in time)."""
        ray = self.ray
        if lane.actor is None:
            self._start(lane)
        if lane.info is not None:
            return None
        try:
            info = ray.get(lane.hello, timeout=self.settings.placement_s)
        except ray.exceptions.GetTimeoutError:
            self._drop(lane)
            needs = f"{self.cluster.cpus_per_run:g} CPU" + (", 1 GPU" if self.cluster.gpus_per_run else "")
            return f"no node of the Ray cluster took the run within {self.settings.placement_s:g} s (it needs " \
                   f"{needs})", False
        except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError) as exc:
            self._drop(lane)
            return f"the node died before the run started ({_first_line(exc)})", True
        if info["problem"]:
            self._drop(lane)
            raise UserError(f"Ray node {info['host']} ({info['ip']}) cannot run agentx kernels: {info['problem']}")
        lane.info = info
        return None

    def warm_up(self, timeout_s: float = 300) -> None:
        for lane in self._lanes:
            if lane.actor is not None and lane.info is None:
                try:
                    lane.info = self.ray.get(lane.hello, timeout=timeout_s)
                except self.ray.exceptions.RayError:
                    self._drop(lane)

    def execute(self, spec: RunSpec) -> RunResult:
        ray = self.ray
        t0 = time.perf_counter()
        code, rows = self._sent(pack_code(spec.code)), self._sent_rows(spec)
        sent_s = time.perf_counter() - t0
        lane = self._free.take()
        reasons: list[str] = []
        attempts = 0
        try:
            while attempts <= self.settings.retries:
                attempts += 1
                if (unplaced := self._placed(lane)) is not None:
                    why, again = unplaced
                    reasons.append(f"attempt {attempts}: {why}")
                    if not again:          # the cluster has no room: waiting again would wait as long again
                        break
                    lane = self._swap(lane)
                    continue
                where = f"{lane.info['ip']}/{lane.info['node_id'][:8]}"
                self.progress(f"{spec.job.run_id}: on Ray node {where}"
                              + (f", GPU {','.join(lane.info['gpus'])}" if lane.info["gpus"] else ""))
                try:
                    started = time.perf_counter()
                    call = lane.actor.run.remote(spec.job, code, rows, spec.config)
                    meta, outputs = ray.get(call, timeout=self.backstop(spec.job))
                    remote_s = time.perf_counter() - started
                except ray.exceptions.RayTaskError as exc:      # the node code itself raised: a bug, not a lost node
                    raise exc.as_instanceof_cause() from None
                except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError,
                        ray.exceptions.GetTimeoutError, ray.exceptions.NodeDiedError,
                        ray.exceptions.WorkerCrashedError) as exc:
                    reasons.append(f"attempt {attempts} on node {where}: {_first_line(exc)}")
                    self.progress(f"{spec.job.run_id}: node {where} lost mid-run; "
                                  + ("retrying" if attempts <= self.settings.retries else "giving up"))
                    self._drop(lane)
                    lane = self._swap(lane)   # another lane's runner, placed on a live node, if one is free
                    continue
                return self._result(spec, meta, outputs, attempts, sent_s, remote_s)
            return RunResult(None, {"kernel_start_s": 0.0, "exec_s": 0.0}, [], {}, None, node="ray",
                             attempts=attempts, lost="; ".join(reasons))
        finally:
            self._free.give_back(lane)

    def _swap(self, lane: _Lane) -> _Lane:
        self._free.give_back(lane)
        return self._free.take()

    def _sent(self, data: bytes, key: str | None = None):
        """An object-store reference to `data`, put once per content (or per `key`): a node
        that fetched it for an earlier run of this executor has it already."""
        key = key or hashlib.sha256(data).hexdigest()
        with self._refs_lock:
            if key in self._refs:
                self._refs.move_to_end(key)
                return self._refs[key]
        ref = self.ray.put(data)
        with self._refs_lock:
            self._refs[key] = ref
            while len(self._refs) > SENT_KEPT:
                self._refs.popitem(last=False)
        return ref

    def _sent_rows(self, spec: RunSpec):
        """The rows folder is written once per splits version and tier (tools/splits.tier_rows,
        tools/derived.py) and never changed after: its path names its content."""
        key = f"rows:{Path(spec.rows).resolve()}"
        with self._refs_lock:
            known = self._refs.get(key)
        return known if known is not None else self._sent(pack_rows(spec.rows, spec.label_column), key)

    def backstop(self, job: KernelJob) -> float:
        """The longest a run may take before it counts as lost (the sandbox stops it sooner)."""
        return job.timeout_s + REPORT_TIMEOUT_S + MARGIN_S

    def _result(self, spec: RunSpec, meta: dict, outputs: bytes, attempts: int, sent_s: float,
                remote_s: float) -> RunResult:
        t0 = time.perf_counter()
        if outputs:
            unpack_run(outputs, spec.dest)
            # what left this machine for the run, as the node recorded it on arrival
            (spec.dest / RECEIVED).write_text(json.dumps([asdict(f) for f in meta["received"]], indent=1))
        report = dict(meta["report"])
        kernel_s = report.get("kernel_start_s", 0.0) + report.get("exec_s", 0.0)
        # bytes there and back, and the runner's own bookkeeping around the kernel
        report["transfer_s"] = round(sent_s + max(0.0, remote_s - kernel_s) + time.perf_counter() - t0, 4)
        device = report.get("device", "cpu")
        if meta["disk"] is not None:
            return RunResult(None, report, [], {}, spec.dest if spec.dest.exists() else None, device, meta["node"],
                             attempts, disk=meta["disk"], received=tuple(meta["received"]))
        return RunResult(meta["result"], report, meta["touched"], meta["after"], spec.dest, device, meta["node"],
                         attempts, received=tuple(meta["received"]))

    def close(self) -> None:
        """Shut the runners' warm kernels down (placed ones; a runner still waiting for a
        node is just dropped), then disconnect."""
        ray = self.ray
        closing = [(lane, lane.actor.close.remote()) for lane in self._lanes if lane.info is not None]
        for lane, ref in closing:
            try:
                ray.get(ref, timeout=30)
            except ray.exceptions.RayError:
                pass
        for lane in self._lanes:
            if lane.actor is not None:
                self._drop(lane)
        disconnect()


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]

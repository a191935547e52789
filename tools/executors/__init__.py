"""Where a run executes: one typed seam between the harness and the kernels.

The harness (tools/harness.py) decides everything that makes a run count: which rows the
kernel gets, whether protected files changed, whether the predictions are complete, and
the metrics. An `Executor` only executes: it takes a `RunSpec` (the code of one commit,
the label-free rows of the run directory, the kernel job) and gives back a `RunResult`
(the kernel's `ExecutionResult`, the harness cells' report, the audit hits, and the run
directory the kernel wrote, in place at `spec.dest` on this machine). Two of them:

- `local` (tools/executors/local.py, the default): sandboxed kernels on this machine, one
  lane per free GPU (each kernel sees only its GPU through `CUDA_VISIBLE_DEVICES`) or one
  shared CPU lane on a machine without one; warm kernels per lane (tools/pool.py).
- `ray`, `ray://HOST:PORT`, `ray:HOST:PORT` (tools/executors/ray_cluster.py, the `ray`
  extra): one Ray actor per lane (a GPU, or `cpus_per_run` CPUs) on a node of a Ray
  cluster, running the same sandboxed kernel and the same harness cells there. Code and
  rows travel as bytes through Ray's object store; no shared file system is assumed.

What leaves this machine, whatever the executor: the files of the commit's checkout
(without `.git` or `.agentx`), the run directory's rows (train rows with labels, valid and
test rows without), run.json, and the job (module, function, timeouts, the audit hook's
watch list). What never leaves it: the labelled splits, the KB, the main checkout, and
scoring. What comes back: the run directory (predictions, kernel log, audit log, anything
else the entrypoint wrote), the kernel's output and the report; the harness then judges
it here as it judges a local run.

Not protected by the seam: a Ray cluster's own access control (Ray's token authentication,
`RAY_AUTH_MODE=token`, is the cluster's to turn on; without it anyone who can reach the
cluster can submit work and read what is sent to it: code and label-free rows); a worker
node's operator, who sees the same; a run's predictions and logs in transit (Ray's
object transfers are not encrypted unless the cluster enables TLS).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from agentx.errors import UserError
from tools.sandbox import ExecutionResult

SPEC_HELP = ("local (this machine, the default), ray (a Ray cluster this machine is a node of, else a new local "
             "one), ray://HOST:PORT (an existing cluster's Ray Client server) or ray:HOST:PORT (its GCS address, "
             "from a node of that cluster)")


@dataclass(frozen=True)
class KernelConfig:
    """How every kernel of a workspace is made, wherever it runs."""

    python: str | None = None                    # None: the executing node's own interpreter
    env: Mapping[str, str] = field(default_factory=dict)   # added to the kernel's environment
    memory_limit_mb: int | None = 8192
    preload: tuple[str, ...] = ()                # libraries a warm kernel imports before its run
    warm: bool = False                           # keep kernels warming (tools/pool.py)
    sandboxed: bool = True                       # bubblewrap (tools/confine.py); False: --unsandboxed
    network: bool = False
    run_mb: int = 2048
    tmp_mb: int = 1024


@dataclass(frozen=True)
class KernelJob:
    """What the kernel runs, independent of the node: plain data, no labels, no paths of
    this machine but the audit hook's watch list (which only names them)."""

    run_id: str
    module: str
    function: str
    id_column: str
    protected: tuple[str, ...]                   # paths whose digest is taken after the run
    timeout_s: float
    memory_mb: int | None = None                 # a tier's lower cap, when it has one
    watched: tuple[str, ...] = ()                # harness-owned paths the audit hook names
    needles: tuple[str, ...] = ()                # command-line words that name them


@dataclass(frozen=True)
class RunSpec:
    """One run as the harness hands it to an executor."""

    job: KernelJob
    code: Path                                   # the checkout at the commit (read, never written)
    rows: Path                                   # train.csv (with labels), valid.csv, test.csv (without)
    config: dict                                 # run.json
    dest: Path                                   # where the run directory must end up on this machine
    label_column: str = ""                       # refused in valid/test by executors that send rows away


@dataclass(frozen=True)
class ReceivedFile:
    """One file a node was sent (remote executors record what they unpacked)."""

    path: str                                    # work/... (code) or run/... (the run directory)
    size: int
    sha256: str
    header: tuple[str, ...] | None = None        # the first line's columns, for a run/*.csv


@dataclass(frozen=True)
class RunResult:
    """What came back. `result` is None when no kernel finished: then `disk` (a run that
    could not be written) or `lost` (the node died or never took it) says why."""

    result: ExecutionResult | None
    report: dict
    touched: list[dict]
    after: dict[str, str]                        # protected digest of the code after the run
    run_dir: Path | None
    device: str = "cpu"                          # cuda:<n> when the run held a GPU
    node: str = "local"
    attempts: int = 1
    disk: str | None = None
    lost: str | None = None
    received: tuple[ReceivedFile, ...] = ()


class Executor(Protocol):
    """Runs kernels for a harness. Thread-safe: the loop's parallel experiments call
    `execute` at once; it blocks while every lane is busy."""

    name: str                                    # "local" | "ray"

    @property
    def lanes(self) -> int:
        """How many runs can execute at once (GPUs, or CPU slots)."""

    @property
    def default_parallel(self) -> int:
        """Experiments in flight by default: free GPUs, else one per CPU-only machine."""

    def execute(self, spec: RunSpec) -> RunResult: ...

    def warm_up(self, timeout_s: float = 300) -> None:
        """Block until the lanes' warm kernels (if any) have started (benchmarks time warm runs)."""

    def describe(self) -> str: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ExecutorSpec:
    kind: Literal["local", "ray"]
    address: str | None = None                   # ray: None, "ray://HOST:PORT" or "HOST:PORT"

    def __str__(self) -> str:
        if self.kind == "local" or self.address is None:
            return self.kind
        return self.address if self.address.startswith("ray://") else f"ray:{self.address}"


def parse_executor(text: str | ExecutorSpec) -> ExecutorSpec:
    """`--executor`'s value, checked; a UserError in one line for anything else."""
    if isinstance(text, ExecutorSpec):
        return text
    value = (text or "local").strip()
    if value == "local":
        return ExecutorSpec("local")
    if value == "ray":
        return ExecutorSpec("ray")
    for prefix in ("ray://", "ray:"):
        if value.startswith(prefix):
            hostport = value[len(prefix):]
            host, _, port = hostport.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise UserError(f"--executor {value!r}: expected {prefix}HOST:PORT, e.g. {prefix}10.0.0.5:"
                                f"{'10001' if prefix == 'ray://' else '6379'}")
            return ExecutorSpec("ray", value if prefix == "ray://" else hostport)
    raise UserError(f"unknown --executor {value!r}: use {SPEC_HELP}")


def open_executor(spec: str | ExecutorSpec, config: KernelConfig, *, slots: Path,
                  hidden: Mapping[str, Path] | None = None, progress=lambda _: None) -> Executor:
    """The executor `spec` names. `slots`: this machine's folder for kernel slots (local);
    `hidden`: folders a local kernel must not see (the workspace, the cache). Ray is
    imported only here, and only for a ray spec."""
    parsed = parse_executor(spec)
    if parsed.kind == "local":
        from tools.executors.local import LocalExecutor

        return LocalExecutor(config, slots=slots, hidden=hidden or {})
    from tools.executors.ray_cluster import RayExecutor

    return RayExecutor(parsed, config, progress=progress)


def default_parallel(executor_spec: str) -> int:
    """`--parallel`'s default for `--executor executor_spec`: this machine's free GPUs (1
    without one) for local; for Ray, the cluster's GPUs, else one per CPU-only node. A
    UserError (one line) when Ray is missing or the cluster cannot be reached."""
    parsed = parse_executor(executor_spec)
    if parsed.kind == "local":
        from tools.executors.devices import free_gpus

        return max(1, len(free_gpus()))
    from tools.executors.ray_cluster import cluster_lanes, connect, disconnect

    connect(parsed)
    try:
        return cluster_lanes().default_parallel
    finally:
        disconnect()

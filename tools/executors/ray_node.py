"""The node side of the Ray executor: one `NodeRunner` actor per lane, on whichever node of
the cluster Ray placed it (a GPU there, or `cpus_per_run` of its CPUs).

A runner is made by the agentx machine's RayExecutor (tools/executors/ray_cluster.py) and
lives until that executor closes or its node dies. `hello()` says where it is and whether
it can run kernels there (the same agentx code as the agentx machine, bubblewrap working,
unless --unsandboxed) and starts its warm kernels. `run()` takes one run's tars of
code and label-free rows (tools/executors/transfer.py), unpacks them into a fresh slot under the
node's own folder (`$AGENTX_NODE_SLOTS`, else `<tmp>/agentx-node-<uid>`), runs the same
harness cells in the same sandboxed kernel as a local run (tools/executors/node.py), and
returns the report, the audit hits, the digest of the code's protected files, a record of
every file it received, and a tar of the run directory. The slot is removed afterwards;
nothing of the run stays on the node.

The kernel sees the runner's GPU only: Ray sets `CUDA_VISIBLE_DEVICES` for an actor that
holds `num_gpus=1`, and the runner passes that (or "" on a CPU lane) to its kernels.

Requirements on a node: agentx installed with the same code as the agentx machine (checked:
`code_hash`), the workspace's libraries in the node's Python, and bubblewrap. Not protected:
the node's operator sees the code and the label-free rows it was sent.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import socket
import sys
import tempfile
import time
from functools import lru_cache
from pathlib import Path

from agentx.errors import UserError
from tools.executors import KernelConfig, KernelJob
from tools.executors.devices import device_name
from tools.executors.node import Kernels, run_kernel
from tools.executors.transfer import pack_dir, unpack_inputs
from tools.sandbox import free_space
from tools.staging import is_disk_full

# The modules whose code runs on a node: the agentx machine and the node must agree on them.
NODE_MODULES = ("tools.executors", "tools.executors.node", "tools.executors.ray_node", "tools.executors.transfer",
                "tools.executors.devices", "tools.sandbox", "tools.confine", "tools.cells", "tools.pool",
                "tools.staging")


@lru_cache(maxsize=1)
def code_hash() -> str:
    """A digest of the source of NODE_MODULES as installed here."""
    digest = hashlib.sha256()
    for name in NODE_MODULES:
        digest.update(name.encode() + b"\0" + Path(importlib.import_module(name).__file__).read_bytes())
    return digest.hexdigest()[:16]


def node_slots() -> Path:
    return Path(os.environ.get("AGENTX_NODE_SLOTS") or Path(tempfile.gettempdir()) / f"agentx-node-{os.getuid()}")


class NodeRunner:
    """One lane's runner on a Ray node (wrapped by `ray.remote` on the agentx machine)."""

    def __init__(self, config: KernelConfig, expected_hash: str):
        self.config, self.expected_hash = config, expected_hash
        self.kernels: Kernels | None = None
        self.gpus: list[str] = []
        self.info: dict = {}

    def hello(self) -> dict:
        """Where this runner is and what it can do; starts its kernels. `problem` is set
        (and no kernel is started) when this node cannot run the agentx machine's kernels."""
        import ray

        context = ray.get_runtime_context()
        self.gpus = [str(g) for g in context.get_accelerator_ids().get("GPU", [])]
        self.info = {"node_id": context.get_node_id(), "host": socket.gethostname(),
                     "ip": ray.util.get_node_ip_address(), "gpus": self.gpus, "pid": os.getpid(), "problem": None}
        if code_hash() != self.expected_hash:
            self.info["problem"] = (f"its agentx code ({code_hash()}) differs from the agentx machine's "
                                    f"({self.expected_hash}); install the same agentx version on every node")
            return self.info
        python = self.config.python or sys.executable
        try:
            if self.config.sandboxed:
                from tools.confine import probe

                probe()
            self.kernels = Kernels(self.config, node_slots(), python, {"CUDA_VISIBLE_DEVICES": ",".join(self.gpus)})
        except UserError as exc:
            self.info["problem"] = str(exc)
        return self.info

    def run(self, job: KernelJob, code: bytes, rows: bytes, config: dict) -> tuple[dict, bytes]:
        """One run (see the module docstring): (what happened, the run directory's tar)."""
        assert self.kernels is not None, "hello() first"
        box, slot, kernel_start_s = self.kernels.take()
        t0 = time.perf_counter()
        meta: dict = {"node": self.where(), "received": (), "disk": None}
        outputs = b""
        try:
            with box:
                meta["received"] = unpack_inputs(code, rows, config, slot.root)
                meta["unpack_s"] = time.perf_counter() - t0
                ran = run_kernel(box, slot, job, kernel_start_s)
            t1 = time.perf_counter()
            outputs = pack_dir(slot.run)
            meta["pack_s"] = time.perf_counter() - t1
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            meta["disk"] = f"node {self.where()} could not write the run's files ({exc.strerror}); {free_space(slot.root)}"
            meta["report"] = {"kernel_start_s": kernel_start_s, "exec_s": 0.0}
            return meta, outputs
        finally:
            box.shutdown()
            slot.remove()
        gpu = ",".join(self.gpus) or None
        meta.update(result=ran.result, touched=ran.touched, after=ran.after,
                    report={**ran.report, "device": device_name(gpu, ran.report.get("device")),
                            "model_device": ran.report.get("device")})
        return meta, outputs

    def where(self) -> str:
        return f"{self.info.get('ip', '?')}/{str(self.info.get('node_id', '?'))[:8]}"

    def close(self) -> None:
        if self.kernels is not None:
            self.kernels.close()

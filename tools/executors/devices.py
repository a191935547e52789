"""This machine's GPUs, which of them are free, and the lanes runs take.

A lane is where one run executes at a time: a GPU (the kernel is started with
`CUDA_VISIBLE_DEVICES` set to that GPU alone, so it sees one device, as `cuda:0`) or, on a
machine without GPUs, the CPU, which is one lane shared by every run in flight (runs then
share the cores, as they always have). `--parallel` defaults to the number of lanes: free
GPUs, or 1.

Which GPUs: `nvidia-smi` (index, uuid, and the compute processes already on each); a GPU
with a compute process of another program is busy and left out. `CUDA_VISIBLE_DEVICES`,
when set in agentx's environment, limits the GPUs to those it names (indices or UUIDs).
Without `nvidia-smi`, the `/dev/nvidiaN` device files are counted. Not protected: a GPU's
memory (a kernel may fill its own GPU's), and a program that starts on a GPU after agentx
looked.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

QUERY_GPUS = ["nvidia-smi", "--query-gpu=index,uuid", "--format=csv,noheader,nounits"]
QUERY_APPS = ["nvidia-smi", "--query-compute-apps=gpu_uuid,pid", "--format=csv,noheader,nounits"]


@dataclass(frozen=True)
class Gpu:
    index: str
    uuid: str | None = None


def parse_gpus(text: str) -> list[Gpu]:
    """`nvidia-smi --query-gpu=index,uuid --format=csv,noheader,nounits` output."""
    gpus = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if parts and parts[0].isdigit():
            gpus.append(Gpu(parts[0], parts[1] if len(parts) > 1 and parts[1] else None))
    return gpus


def parse_busy(text: str) -> set[str]:
    """The GPU uuids that `nvidia-smi --query-compute-apps=gpu_uuid,pid` lists a process on."""
    return {line.split(",")[0].strip() for line in text.splitlines() if line.strip().startswith("GPU-")}


def _smi(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def visible_gpus() -> list[Gpu]:
    """The GPUs of this machine that agentx may use (see the module docstring)."""
    listed = _smi(QUERY_GPUS)
    gpus = parse_gpus(listed) if listed is not None else \
        [Gpu(m.group(1)) for p in sorted(Path("/dev").glob("nvidia*")) if (m := re.fullmatch(r"nvidia(\d+)", p.name))]
    allowed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if allowed is not None:
        names = [n.strip() for n in allowed.split(",") if n.strip() and n.strip() != "-1"]
        gpus = [g for g in gpus if g.index in names or (g.uuid and g.uuid in names)]
    return gpus


def free_gpus() -> list[str]:
    """Indices of the visible GPUs no other program computes on."""
    gpus = visible_gpus()
    if not gpus:
        return []
    apps = _smi(QUERY_APPS)
    busy = parse_busy(apps) if apps is not None else set()
    return [g.index for g in gpus if g.uuid not in busy]


class Lanes:
    """Hands out lanes: one GPU at a time to one run (blocking while all are taken), or the
    shared CPU lane (never blocks) when `gpus` is empty."""

    def __init__(self, gpus: Sequence[str]):
        self.gpus = list(gpus)
        self._free = list(self.gpus)
        self._cond = threading.Condition()

    def __len__(self) -> int:
        return max(1, len(self.gpus))

    def take(self) -> str | None:
        """A GPU index, or None for the CPU lane."""
        if not self.gpus:
            return None
        with self._cond:
            while not self._free:
                self._cond.wait()
            return self._free.pop(0)

    def give_back(self, gpu: str | None) -> None:
        if gpu is None:
            return
        with self._cond:
            self._free.append(gpu)
            self._cond.notify()


def device_name(gpu: str | None, model_device: object) -> str:
    """What a run's `device` column says: `cuda:<host index>` when it held a GPU (what GPU
    minutes count), else what the model reported (`cpu`)."""
    if gpu is not None:
        return f"cuda:{gpu}"
    text = str(model_device or "cpu")
    return text if text else "cpu"

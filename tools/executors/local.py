"""The local executor: sandboxed kernels on this machine, one lane per free GPU.

What exists since the sandbox landed, behind the executor seam: each run gets a fresh
kernel (warm from a pool when asked) in a new slot under the workspace's
`.agentx/slots/`, its code staged (hard links for a confined kernel, which sees them
read-only; copies otherwise) and its run directory laid out from the label-free rows;
after the run the slot's run directory is moved to `spec.dest` on the same disk.

Devices (tools/executors/devices.py): with GPUs, each lane is one GPU and has its own warm
kernels, started with `CUDA_VISIBLE_DEVICES` naming that GPU alone; a run takes a free
lane and waits while every GPU is busy. Without GPUs there is one CPU lane, shared by
every run in flight (as before: `--parallel` runs share the cores); where every GPU is
busy with another program, that CPU lane's kernels see none (`CUDA_VISIBLE_DEVICES=""`). The sandbox binds the
GPU device files for every kernel; `CUDA_VISIBLE_DEVICES` is what keeps one run to its
GPU, so code that ignores it (a raw driver call naming another device) is not stopped.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from tools.executors import KernelConfig, RunResult, RunSpec
from tools.executors.devices import Lanes, device_name, free_gpus, visible_gpus
from tools.executors.node import Kernels, run_kernel
from tools.sandbox import free_space
from tools.splits import lay_out
from tools.staging import is_disk_full, stage_code


class LocalExecutor:
    """Kernels on this machine (see the module docstring)."""

    name = "local"

    def __init__(self, config: KernelConfig, *, slots: Path, hidden: Mapping[str, Path] | None = None,
                 gpus: Sequence[str] | None = None):
        """`gpus`: the GPU indices to use (default: this machine's free ones, `free_gpus()`)."""
        self.config = config
        self.python = config.python or sys.executable
        self.slots = Path(slots)
        self.gpus = list(free_gpus() if gpus is None else gpus)
        self._lanes = Lanes(self.gpus)
        # one set of (warm) kernels per GPU, each started seeing that GPU only; one for the CPU lane,
        # which sees no GPU at all where this machine has some but another program holds them
        hide = {"CUDA_VISIBLE_DEVICES": ""} if gpus is None and not self.gpus and visible_gpus() else {}
        self._kernels = {gpu: Kernels(config, self.slots, self.python, {"CUDA_VISIBLE_DEVICES": gpu}, hidden,
                                      spares=1 if len(self.gpus) > 2 else None)
                         for gpu in self.gpus} if self.gpus else {None: Kernels(config, self.slots, self.python,
                                                                                 hide, hidden)}

    @property
    def lanes(self) -> int:
        return len(self._lanes)

    @property
    def default_parallel(self) -> int:
        return self.lanes

    def describe(self) -> str:
        where = f"{len(self.gpus)} GPU lane(s) ({', '.join(f'cuda:{g}' for g in self.gpus)})" if self.gpus \
            else "one CPU lane"
        return f"local: {where}, {'sandboxed' if self.config.sandboxed else 'UNSANDBOXED'} kernels"

    def warm_up(self, timeout_s: float = 300) -> None:
        for kernels in self._kernels.values():
            kernels.wait_ready(timeout_s)

    def execute(self, spec: RunSpec) -> RunResult:
        gpu = self._lanes.take()
        try:
            return self._execute(spec, gpu)
        finally:
            self._lanes.give_back(gpu)

    def _execute(self, spec: RunSpec, gpu: str | None) -> RunResult:
        box, slot, kernel_start_s = self._kernels[gpu].take()
        confined = box.confinement is not None
        try:
            with box:
                stage_code(spec.code, slot.work, link=confined)
                lay_out(spec.rows, slot.run, spec.config)
                ran = run_kernel(box, slot, spec.job, kernel_start_s)
            spec.dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(slot.run, spec.dest)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            why = f"the harness could not write the run's files ({exc.strerror}); {free_space(slot.root)}"
            return RunResult(None, {"kernel_start_s": kernel_start_s, "exec_s": 0.0}, [], {},
                             spec.dest if spec.dest.exists() else None, device_name(gpu, "cpu"), disk=why)
        finally:
            box.shutdown()
            if slot.run.exists() and not spec.dest.exists():
                try:
                    spec.dest.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(slot.run, spec.dest)
                except OSError:
                    pass
            slot.remove()
        report = {**ran.report, "device": device_name(gpu, ran.report.get("device")),
                  "model_device": ran.report.get("device")}
        return RunResult(ran.result, report, ran.touched, ran.after, spec.dest, report["device"])

    def close(self) -> None:
        for kernels in self._kernels.values():
            kernels.close()

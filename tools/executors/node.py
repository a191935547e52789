"""The part of a run that happens where the kernel is: the same on this machine and on a
Ray node.

A run's slot (tools/pool.py) holds its staged code (`slot.work`, read-only to a confined
kernel) and its run directory (`slot.run`). `run_kernel` runs the harness's cells in the
slot's kernel (tools/cells.py: the audit hook and the entrypoint, then the REPORT cell,
then the hook's hits), writes the kernel's output to `kernel.log` in the run directory,
shuts the kernel down and takes the digest of the protected files in the code it ran.
Nothing here scores or judges: the harness does, on its own machine, from the files and
the report that come back.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tools.cells import AUDIT_HOOK, AUDIT_LOG, BOOT, REPORT, AuditSpec, kernel_json, read_audit
from tools.confine import RUN, WORK, Confinement, probe
from tools.executors import KernelConfig, KernelJob
from tools.pool import KernelPool, Slot, start_kernel
from tools.sandbox import ExecutionResult, Sandbox
from tools.staging import protected_digest

REPORT_TIMEOUT_S = 60


@dataclass(frozen=True)
class KernelRun:
    """What one kernel did: its result, the harness cells' report, the audit hits, and the
    digest of the protected files in the code after the run."""

    result: ExecutionResult
    report: dict
    touched: list[dict]
    after: dict[str, str]


def confinement_for(config: KernelConfig, slot: Slot, python: str,
                    hidden: Mapping[str, Path] | None = None) -> Confinement | None:
    """The sandbox of a kernel working in `slot` (None when unsandboxed). `hidden`: folders
    the kernel must not see; refused when a read-only bind would show one."""
    if not config.sandboxed:
        return None
    confinement = Confinement(probe(), slot.work, slot.run, network=config.network, run_mb=config.run_mb,
                              tmp_mb=config.tmp_mb)
    if hidden:
        confinement.check_hidden(python, dict(hidden))
    return confinement


class Kernels:
    """Fresh kernels for one lane: from a warm pool when `config.warm`, else started on the
    spot. `env` is added to the config's (a lane's CUDA_VISIBLE_DEVICES)."""

    def __init__(self, config: KernelConfig, slots: Path, python: str, env: Mapping[str, str] | None = None,
                 hidden: Mapping[str, Path] | None = None, spares: int | None = None):
        self.config, self.slots, self.python = config, Path(slots), python
        self.env = {**config.env, **(env or {})}
        self.hidden = dict(hidden or {})
        self.pool = KernelPool(python=python, slots=self.slots, confine=self.confine, extra_env=self.env,
                               memory_limit_mb=config.memory_limit_mb, preload=config.preload,
                               spares=spares) if config.warm else None

    def confine(self, slot: Slot) -> Confinement | None:
        return confinement_for(self.config, slot, self.python, self.hidden)

    def take(self) -> tuple[Sandbox, Slot, float]:
        """A started kernel, its empty slot, and the seconds spent waiting for them."""
        if self.pool is not None:
            return self.pool.take()
        box, slot = start_kernel(self.slots, self.confine, python=self.python, extra_env=self.env,
                                 memory_limit_mb=self.config.memory_limit_mb)
        return box, slot, box.kernel_start_s or 0.0

    def wait_ready(self, timeout_s: float = 300) -> None:
        if self.pool is not None:
            self.pool.wait_ready(timeout_s)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()


def audit_spec(job: KernelJob, slot: Slot, confined: bool) -> AuditSpec:
    """The audit hook's settings in this slot. Confined, the run and the code are at fixed
    paths and none of the watched ones exists in the kernel's view."""
    if confined:
        return AuditSpec(Path(RUN) / AUDIT_LOG, list(job.watched), [RUN, WORK], list(job.needles))
    allowed = sorted({form for p in (slot.run, slot.work) for form in (os.path.abspath(p), os.path.realpath(p))})
    return AuditSpec(slot.run / AUDIT_LOG, list(job.watched), allowed, list(job.needles))


def run_kernel(box: Sandbox, slot: Slot, job: KernelJob, kernel_start_s: float) -> KernelRun:
    """Run the job in `box`, whose slot already holds the code and the run directory; the
    kernel is shut down on return. Raises OSError only for the slot's own files (a full disk)."""
    confined = box.confinement is not None
    report: dict = {"kernel_start_s": kernel_start_s, "exec_s": 0.0}
    try:
        audit = audit_spec(job, slot, confined)
        seen_run = RUN if confined else str(slot.run)
        # The tier's timeout is for the workspace's code: waiting for a kernel (a warm one
        # still importing its libraries on a busy machine) must not eat into it.
        boot = AUDIT_HOOK + BOOT.format(log=str(audit.log), watched=audit.watched, allowed=audit.allowed,
                                        needles=audit.needles, module=job.module, function=job.function,
                                        run_dir=seen_run, cwd=WORK if confined else str(slot.work))
        if job.memory_mb is not None and (box.memory_limit_mb is None or job.memory_mb < box.memory_limit_mb):
            box.memory_limit_mb = job.memory_mb          # a calibrated tier may cap memory lower
        result = box.execute(boot, timeout_s=job.timeout_s)
        report["exec_s"] = result.duration_s
        report["peak_rss_mb"] = result.peak_rss_mb
        if result.ok:
            measured = box.execute(REPORT.format(batch_csv=f"{seen_run}/test.csv", id_column=job.id_column),
                                   timeout_s=REPORT_TIMEOUT_S)
            report["exec_s"] += measured.duration_s
            if measured.ok and isinstance(measured_json := kernel_json(measured.result_text), dict):
                report.update(measured_json)
        touched = read_audit(box, slot.run / AUDIT_LOG, report)
    finally:
        box.shutdown()
    after = protected_digest(slot.work, list(job.protected))
    (slot.run / "kernel.log").write_text(result.stdout + result.stderr + (result.traceback or ""))
    return KernelRun(result, report, touched, after)

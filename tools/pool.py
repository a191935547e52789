"""Warm kernels: fresh Jupyter kernels started, with their libraries imported, before a run needs one.

A run still gets a kernel that nothing else has used: the pool only moves the kernel's
start-up (about 1 s) and the import of heavy libraries the manifest names in
`[train] preload` (torch and pandas: several seconds) off the run's critical path, by
starting the next kernel in a background thread while the current run executes. No
workspace code runs before the run: the preload imports installed libraries only, in a
neutral directory (its empty slot, below); `take()` hands it and its slot to a run.

How many kernels warm at once: `default_spares()` (two, three on machines with 12+ cores).

Confined kernels (tools/confine.py) are started in bubblewrap before their run is known,
so each comes with a `Slot`: two empty host folders bound at start, `work` read-only and
`run` read-write. A bind shows a folder's live contents, so when `take()` hands the kernel
to a run, the harness fills `slot.work` with the run's code and `slot.run` with its rows,
and the kernel sees them at /ax/work and /ax/run. The kernel's preload runs before any of
that exists, in the empty `work`.

What a warm kernel does not change: one kernel serves one run and is shut down after it;
the environment and the sandbox are the same; timeouts and the caps apply as before.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tools.confine import Confinement
from tools.sandbox import Sandbox


@dataclass(frozen=True)
class Slot:
    """A kernel's two host folders: `work` (its code, read-only when confined) and `run`."""

    root: Path

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @classmethod
    def create(cls, parent: Path) -> Slot:
        parent.mkdir(parents=True, exist_ok=True)
        slot = cls(Path(tempfile.mkdtemp(prefix="slot-", dir=parent)))
        slot.work.mkdir()
        slot.run.mkdir()
        return slot

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


# Builds a slot's confinement (None: an unconfined kernel working in the slot's folders).
Confine = Callable[[Slot], Confinement | None]


def start_kernel(slots: Path, confine: Confine, *, python: str, extra_env: dict[str, str],
                 memory_limit_mb: int | None) -> tuple[Sandbox, Slot]:
    """A started kernel in a new slot under `slots` (confined as `confine` says); the slot
    is removed again when the kernel cannot start."""
    slot = Slot.create(slots)
    try:
        box = Sandbox(slot.work, python=python, extra_env=extra_env, memory_limit_mb=memory_limit_mb,
                      confinement=confine(slot))
        box.start()
    except BaseException:
        slot.remove()
        raise
    return box, slot


def default_spares() -> int:
    """Kernels kept warming: two (the full-tier run right after a short micro run would
    otherwise wait for the kernel that started warming only when the micro run took its
    own), three on machines with 12+ cores, where GPU runs of a few seconds are shorter than
    a kernel's torch import."""
    return max(2, min(3, (os.cpu_count() or 2) // 4))


class KernelPool:
    def __init__(self, *, python: str, slots: Path, confine: Confine = lambda _: None,
                 extra_env: dict[str, str] | None = None, memory_limit_mb: int | None = None,
                 preload: Sequence[str] = (), spares: int | None = None):
        self.python = python
        self.slots, self.confine = Path(slots), confine
        self.extra_env = dict(extra_env or {})
        self.memory_limit_mb = memory_limit_mb
        self.preload = list(preload)
        self.spares = default_spares() if spares is None else spares
        self._lock = threading.Lock()
        self._ready: list[Future[tuple[Sandbox, Slot]]] = []
        self._executor = ThreadPoolExecutor(max_workers=max(1, self.spares), thread_name_prefix="kernel-pool")
        self._closed = False
        with self._lock:
            self._refill()                     # the first spare starts now

    def _start_one(self) -> tuple[Sandbox, Slot]:
        box, slot = start_kernel(self.slots, self.confine, python=self.python, extra_env=self.extra_env,
                                 memory_limit_mb=self.memory_limit_mb)
        if self.preload:
            # A preload that fails (a library missing) is not this kernel's problem to report:
            # the run's own import will fail with the real traceback.
            box.execute("\n".join(f"try:\n    import {name}\nexcept Exception:\n    pass" for name in self.preload),
                        timeout_s=180)
        return box, slot

    def _refill(self) -> None:
        while not self._closed and len(self._ready) < self.spares:
            self._ready.append(self._executor.submit(self._start_one))

    def wait_ready(self, timeout_s: float = 300) -> None:
        """Block until the spares have started (benchmarks use it to time a warm run)."""
        with self._lock:
            ready = list(self._ready)
        for future in ready:
            future.result(timeout=timeout_s)

    def take(self) -> tuple[Sandbox, Slot, float]:
        """A started kernel, its (empty) slot, and the seconds this call waited for them."""
        import time

        t0 = time.perf_counter()
        with self._lock:
            future = self._ready.pop(0) if self._ready else None
            self._refill()
        box, slot = future.result() if future is not None else self._start_one()
        if not box.alive:                      # died while it waited: start one on the spot
            box.shutdown()
            slot.remove()
            box, slot = self._start_one()
        return box, slot, time.perf_counter() - t0

    def close(self) -> None:
        with self._lock:
            self._closed = True
            ready, self._ready = self._ready, []
        for future in ready:
            try:
                box, slot = future.result(timeout=200)
                box.shutdown()
                slot.remove()
            except Exception:  # noqa: BLE001 - a spare that failed to start has nothing to shut down
                pass
        self._executor.shutdown(wait=True)

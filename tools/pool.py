"""Warm kernels: fresh Jupyter kernels started, with their libraries imported, before a run needs one.

A run still gets a kernel that nothing else has used: the pool only moves the kernel's
start-up (about 1 s) and the import of heavy libraries the manifest names in
`[train] preload` (torch and pandas: several seconds) off the run's critical path, by
starting the next kernel in a background thread while the current run executes. No
workspace code runs before the run: the preload imports installed libraries only, in a
neutral directory; `take(cwd)` then moves the kernel into the run's checkout.

How many kernels warm at once: `default_spares()` (two, three on machines with 12+ cores).

What a warm kernel does not change: one kernel serves one run and is shut down after it;
the environment is scrubbed the same way; timeouts and the memory cap apply as before.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from tools.sandbox import Sandbox


def default_spares() -> int:
    """Kernels kept warming: two (the full-tier run right after a short micro run would
    otherwise wait for the kernel that started warming only when the micro run took its
    own), three on machines with 12+ cores, where GPU runs of a few seconds are shorter than
    a kernel's torch import."""
    return max(2, min(3, (os.cpu_count() or 2) // 4))


class KernelPool:
    def __init__(self, *, python: str, extra_env: dict[str, str] | None = None, memory_limit_mb: int | None = None,
                 preload: Sequence[str] = (), spares: int | None = None):
        self.python = python
        self.extra_env = dict(extra_env or {})
        self.memory_limit_mb = memory_limit_mb
        self.preload = list(preload)
        self.spares = default_spares() if spares is None else spares
        self._home = Path(tempfile.mkdtemp(prefix="axpool-"))   # neutral cwd until a run claims the kernel
        self._lock = threading.Lock()
        self._ready: list[Future[Sandbox]] = []
        self._executor = ThreadPoolExecutor(max_workers=max(1, self.spares), thread_name_prefix="kernel-pool")
        self._closed = False
        with self._lock:
            self._refill()                     # the first spare starts now

    def _start_one(self) -> Sandbox:
        box = Sandbox(self._home, python=self.python, extra_env=self.extra_env, memory_limit_mb=self.memory_limit_mb)
        box.start()
        if self.preload:
            # A preload that fails (a library missing) is not this kernel's problem to report:
            # the run's own import will fail with the real traceback.
            box.execute("\n".join(f"try:\n    import {name}\nexcept Exception:\n    pass" for name in self.preload),
                        timeout_s=180)
        return box

    def _refill(self) -> None:
        while not self._closed and len(self._ready) < self.spares:
            self._ready.append(self._executor.submit(self._start_one))

    def wait_ready(self, timeout_s: float = 300) -> None:
        """Block until the spares have started (benchmarks use it to time a warm run)."""
        with self._lock:
            ready = list(self._ready)
        for future in ready:
            future.result(timeout=timeout_s)

    def take(self, cwd: Path) -> tuple[Sandbox, float]:
        """A started kernel now working in `cwd`, and the seconds this call waited for it."""
        import time

        t0 = time.perf_counter()
        with self._lock:
            future = self._ready.pop(0) if self._ready else None
            self._refill()
        box = future.result() if future is not None else self._start_one()
        if not box.alive:                      # died while it waited: start one on the spot
            box.shutdown()
            box = self._start_one()
        box.execute(f"import os, sys\nos.chdir({str(cwd)!r})", timeout_s=30)
        return box, time.perf_counter() - t0

    def close(self) -> None:
        with self._lock:
            self._closed = True
            ready, self._ready = self._ready, []
        for future in ready:
            try:
                future.result(timeout=200).shutdown()
            except Exception:  # noqa: BLE001 - a spare that failed to start has nothing to shut down
                pass
        self._executor.shutdown(wait=True)
        shutil.rmtree(self._home, ignore_errors=True)

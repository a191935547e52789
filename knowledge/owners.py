"""Which process owns a `running` run row, and whether that process still exists.

A run row is written as `running` by the agentx process that trains it and finished by the
same process. If that process dies first (kill -9, out of memory, a reboot) the row would
stay `running` for good, so every row records its owner: the pid, the process's start time
(psutil's `create_time()`, which tells a reused pid from the original) and the host name.
`KnowledgeBase.abandon_orphans()` uses `orphan_reason` to find rows whose owner is gone.

A process on another host cannot be checked from here, so its rows are never judged.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import socket
from dataclasses import dataclass

import psutil

# create_time() is the boot time plus the start tick count (1/100 s); allow for the boot
# time being recomputed slightly differently in another process.
START_TOLERANCE_S = 1.0


@dataclass(frozen=True)
class Owner:
    """The process that owns a run row (any field may be unknown on an old row)."""

    pid: int | None
    started: float | None
    host: str | None

    @classmethod
    def current(cls) -> Owner:
        return cls(os.getpid(), _start_time(os.getpid()), socket.gethostname())

    def fields(self) -> dict[str, object]:
        """The runs-table columns for this owner."""
        return {"owner_pid": self.pid, "owner_started": self.started, "owner_host": self.host}

    def describe(self) -> str:
        if self.pid is None:
            return "no recorded process"
        since = "" if self.started is None else f", started {_local(self.started)}"
        return f"process {self.pid}{since} on {self.host or 'an unrecorded host'}"


@functools.cache
def _start_time(pid: int) -> float:
    """The start time of `pid` (cached: the current process's never changes)."""
    return psutil.Process(pid).create_time()


def _local(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def process_state(pid: int, started: float | None) -> str:
    """'alive' when `pid` is a live process that started at `started` (any start time when
    that is unknown), 'reused' when the pid now belongs to another process, else 'gone'
    (no such process, or a zombie waiting to be reaped)."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return "gone"
        if started is not None and abs(process.create_time() - started) > START_TOLERANCE_S:
            return "reused"
        return "alive"
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return "gone"
    except psutil.AccessDenied:
        return "alive"       # it exists; we may not look closer


def orphan_reason(owner: Owner, host: str | None = None) -> str | None:
    """Why a `running` row owned by `owner` is an orphan, or None when it is not one (its
    process lives, or it runs on another host and cannot be checked from here)."""
    host = host or socket.gethostname()
    if owner.pid is None:
        return ("no owning process was recorded for it, and it was still running when this "
                "workspace was next opened for writing; it ended without finishing the run")
    if owner.host is not None and owner.host != host:
        return None
    state = process_state(owner.pid, owner.started)
    if state == "alive":
        return None
    reused = " (its pid now belongs to another process)" if state == "reused" else ""
    return f"owned by {owner.describe()}, which ended without finishing the run{reused}"

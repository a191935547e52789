"""One writer per workspace: an exclusive lock held by every command that trains or changes it.

Two `agentx run` on one workspace would otherwise both see the same unfinished LangGraph
thread, "resume" it twice and train the same seeds twice. So `baseline`, `run`, `ask`,
`demo`, `select-features --run` and `pr approve|reject` take an exclusive `fcntl.flock`
on `<workspace>/.agentx/lock` for their whole life; read-only commands take none.

The lock belongs to an open file description, so it ends with the process however the
process ends (exit, exception, kill -9): there is no stale lock to clean up. The file itself
stays; while held it holds the holder's pid, command line and the time it took the lock
(JSON), which is what a refused command prints. The descriptor is not inheritable, so
kernels and other children started with exec do not keep the lock alive; a child forked
without exec would (agentx starts none).

Once a command holds the lock no other agentx process can be writing runs, so any row still
`running` belongs to a process that died: `lock_workspace` marks those abandoned.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

from agentx.errors import UserError
from agentx.paths import state_dir


class WorkspaceBusyError(UserError):
    """Another agentx process holds the workspace lock."""


def command_line() -> str:
    """This process's command, as a person would type it (`agentx run ...`)."""
    argv = list(sys.argv) or ["?"]
    name = Path(argv[0]).name
    if name in ("cli.py", "__main__.py", "agentx"):
        name = "agentx"
    return shlex.join([name, *argv[1:]])


class WorkspaceLock:
    """An exclusive flock on `<workspace>/.agentx/lock`; `acquire`, then `release` (or exit)."""

    def __init__(self, workspace: Path | str):
        self.workspace = Path(workspace)
        self.path = state_dir(self.workspace) / "lock"
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, *, wait: bool = False, say: Callable[[str], None] = lambda _: None) -> None:
        """Take the lock. If another process holds it: with `wait`, say once who and block
        until it is free; otherwise raise WorkspaceBusyError naming the holder."""
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            if not _try_lock(fd):
                holder = self.holder()
                if not wait:
                    raise WorkspaceBusyError(self._busy_message(holder))
                say(f"waiting for {self.workspace}: {describe(holder)} is using it")
                fcntl.flock(fd, fcntl.LOCK_EX)
            record = {"pid": os.getpid(), "command": command_line(), "started": time.time()}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        """Let go of the lock (idempotent). The file stays; its record is cleared."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def holder(self) -> dict | None:
        """The record the holder wrote ({pid, command, started}), or None if unreadable (it
        may be between taking the lock and writing it: read again for a moment)."""
        for _ in range(10):
            try:
                record = json.loads(self.path.read_text() or "null")
            except (OSError, ValueError):
                record = None
            if isinstance(record, dict) and "pid" in record:
                return record
            time.sleep(0.02)
        return None

    def _busy_message(self, holder: dict | None) -> str:
        kill = f"kill {holder['pid']}" if holder else "kill its process"
        return (f"workspace {self.workspace} is busy: {describe(holder)} is using it; "
                f"wait for it, pass --wait, or stop it: {kill}")

    def __enter__(self) -> WorkspaceLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def describe(holder: dict | None) -> str:
    """'pid 123 (`agentx run ...`, since 2026-11-22 10:31:05)', for messages."""
    if not holder:
        return "another process (it did not say which)"
    since = dt.datetime.fromtimestamp(float(holder.get("started") or 0)).strftime("%Y-%m-%d %H:%M:%S")
    return f"pid {holder['pid']} (`{holder.get('command', '?')}`, since {since})"


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise


def lock_workspace(workspace: Path, kb, *, wait: bool = False,
                   say: Callable[[str], None] = lambda _: None) -> WorkspaceLock:
    """Take the workspace lock, then mark the runs that dead processes left `running` as
    abandoned (safe now: no other writer lives) and say how many."""
    lock = WorkspaceLock(workspace)
    lock.acquire(wait=wait, say=say)
    try:
        abandoned = kb.abandon_orphans()
    except BaseException:
        lock.release()
        raise
    if abandoned:
        say(f"marked {len(abandoned)} run(s) that an ended process left running as abandoned: "
            f"{', '.join(abandoned)}")
    return lock

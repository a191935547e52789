"""Open a DuckDB file, waiting politely while another process holds it.

DuckDB lets one process at a time open a database file read-write; a second process gets
``duckdb.IOException: IO Error: Could not set lock on file "<path>": Conflicting lock is
held in <program> (PID <n>)`` at once (it does not wait). ``connect_with_retry`` retries
that error, and only that error, with jittered exponential backoff until a deadline, then
raises ``KnowledgeBaseLocked`` naming the file and the holder DuckDB reported.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable

import duckdb

FIRST_DELAY_S = 0.005
MAX_DELAY_S = 0.1
_LOCK_MESSAGE = "Could not set lock on file"
_HOLDER = re.compile(r"Conflicting lock is held in (.+?)(?:\. See also|$)")


class KnowledgeBaseLocked(TimeoutError):
    """Another process kept the knowledge base file locked past our deadline."""

    def __init__(self, path: str, holder: str | None, waited_s: float):
        self.path = path
        self.holder = holder
        self.waited_s = waited_s
        by = f" by {holder}" if holder else " by another process"
        super().__init__(f"knowledge base {path} is locked{by}; gave up after {waited_s:.1f} s. "
                         "Another agentx process (scheduler, CLI, server) is using it; retry "
                         "when it finishes or raise lock_timeout_s.")


def is_lock_conflict(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.IOException) and _LOCK_MESSAGE in str(exc)


def is_handle_race(exc: BaseException) -> bool:
    """Two threads of one process opening and closing the same file at once: DuckDB's
    instance cache briefly refuses to attach it again ('Unique file handle conflict')."""
    return isinstance(exc, duckdb.Error) and "Unique file handle conflict" in str(exc)


def lock_holder(exc: BaseException) -> str | None:
    """'<program> (PID <n>)' from DuckDB's lock error, or None when it does not say."""
    match = _HOLDER.search(str(exc))
    return match.group(1) if match else None


def connect_with_retry(path: str, timeout_s: float, *,
                       sleep: Callable[[float], None] = time.sleep,
                       clock: Callable[[], float] = time.monotonic) -> duckdb.DuckDBPyConnection:
    """``duckdb.connect(path)``, retrying lock conflicts for up to ``timeout_s`` seconds."""
    start = clock()
    delay = FIRST_DELAY_S
    while True:
        try:
            return duckdb.connect(path)
        except duckdb.Error as exc:
            if not (is_lock_conflict(exc) or is_handle_race(exc)):
                raise
            waited = clock() - start
            if waited >= timeout_s:
                raise KnowledgeBaseLocked(path, lock_holder(exc), waited) from exc
            # "equal jitter": half the delay fixed, half random, so two waiters desynchronise
            sleep(min(delay / 2 + random.uniform(0, delay / 2), timeout_s - waited))
            delay = min(delay * 2, MAX_DELAY_S)

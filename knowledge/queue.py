"""The request queue: what people and the scheduler ask a workspace to do, taken in order.

Every run, chat request, approval and rejection is a `requests` row (knowledge/migrations.py
m010). The web app and the scheduler `submit` rows as `queued`; the workspace's worker
(agentx/app.py `Worker`) `claim_next`s the oldest in one transaction, so two workers never
take the same row; a CLI command submits its own row already `running` (it is its own
worker). Progress lines go to `request_progress`, which the web app streams. A row still
`running` whose worker process is gone was killed: `requeue_orphans` puts it back in the
queue, and the loop resumes it (its thread key is the request's).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from dataclasses import dataclass
from typing import Any

KINDS = ("run", "ask", "approve", "reject")
SOURCES = ("cli", "web", "chat", "schedule")
OPEN = ("queued", "running")


def this_worker() -> str:
    return f"{os.getpid()}@{socket.gethostname()}"


@dataclass(frozen=True)
class Request:
    id: int
    kind: str
    payload: dict[str, Any]
    source: str
    status: str                       # queued | running | done | failed | cancelled
    worker: str | None
    result: dict[str, Any] | None
    error: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None

    @property
    def open(self) -> bool:
        return self.status in OPEN

    @property
    def elapsed_s(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at or dt.datetime.now(dt.UTC).replace(tzinfo=None)
        return (end - self.started_at).total_seconds()

    @property
    def summary(self) -> str:
        """One line a person reads: what was asked."""
        p = self.payload
        if self.kind == "run":
            limits = [f"{p['experiments']} experiments" if p.get("experiments") else None,
                      f"until {p['until']}" if p.get("until") else None,
                      f"{p['budget_minutes']:g} min" if p.get("budget_minutes") else None]
            return "run: " + (", ".join(filter(None, limits)) or "no limit") + f" ({p.get('tier', 'full')} tier)"
        if self.kind == "ask":
            return f"ask: {p.get('request') or (p.get('proposal') or {}).get('title')}"
        if self.kind == "approve":
            return f"approve PR #{p['pr']}" + (" (--force)" if p.get("force") else "")
        return f"reject PR #{p['pr']}: {p.get('reason')}"


@dataclass(frozen=True)
class ProgressLine:
    id: int
    request_id: int
    at: dt.datetime
    line: str


class RequestQueue:
    """The queue of one workspace's KB (`knowledge.KnowledgeBase`)."""

    def __init__(self, kb):
        self.kb = kb

    def submit(self, kind: str, payload: dict[str, Any], *, source: str, running: bool = False) -> int:
        """A new request; `running` claims it for this process at once (a CLI command)."""
        if kind not in KINDS:
            raise ValueError(f"unknown request kind {kind!r}; kinds are {', '.join(KINDS)}")
        if source not in SOURCES:
            raise ValueError(f"unknown request source {source!r}; sources are {', '.join(SOURCES)}")
        fields = {"kind": kind, "payload": payload, "source": source}
        if running:
            fields |= {"status": "running", "worker": this_worker(), "started_at": _now()}
        with self.kb._tx() as con:
            request_id = self.kb._insert(con, "requests", fields, returning="id")
        self.kb.log_event("request_submitted", {"request": request_id, "kind": kind, "source": source})
        return request_id

    def claim_next(self, worker: str | None = None) -> Request | None:
        """The oldest queued request, now `running` for `worker`; None when the queue is empty."""
        rows = self.kb.query(
            "UPDATE requests SET status = 'running', worker = ?, started_at = ? "
            "WHERE id = (SELECT min(id) FROM requests WHERE status = 'queued') AND status = 'queued' RETURNING *",
            [worker or this_worker(), _now()])
        return _request(rows[0]) if rows else None

    def finish(self, request_id: int, *, status: str, result: dict[str, Any] | None = None,
               error: str | None = None) -> None:
        if status not in ("done", "failed", "cancelled"):
            raise ValueError(f"a request ends done, failed or cancelled, not {status!r}")
        self.kb._update("requests", "id", request_id,
                        {"status": status, "result": result, "error": error, "finished_at": _now()})

    def cancel(self, request_id: int) -> bool:
        """Cancel a request that has not started; False when it already has (or ended)."""
        return bool(self.kb.query("UPDATE requests SET status = 'cancelled', finished_at = ? "
                                  "WHERE id = ? AND status = 'queued' RETURNING id", [_now(), request_id]))

    def requeue_orphans(self) -> list[int]:
        """Requests left `running` by a process of this host that is gone (killed mid-run):
        queued again, so the next worker resumes them. Call while holding the workspace lock."""
        host = socket.gethostname()
        orphans = [r for r in self.open() if r.status == "running" and r.worker
                   and r.worker.endswith(f"@{host}") and not _alive(int(r.worker.split("@")[0]))]
        for r in orphans:
            self.kb.query("UPDATE requests SET status = 'queued', worker = NULL WHERE id = ? AND status = 'running'",
                          [r.id])
            self.kb.log_event("request_requeued", {"request": r.id, "worker": r.worker})
        return [r.id for r in orphans]

    def get(self, request_id: int) -> Request | None:
        rows = self.kb.query("SELECT * FROM requests WHERE id = ?", [request_id])
        return _request(rows[0]) if rows else None

    def open(self) -> list[Request]:
        return [_request(r) for r in self.kb.query(
            "SELECT * FROM requests WHERE status IN ('queued', 'running') ORDER BY id")]

    def recent(self, limit: int = 20) -> list[Request]:
        return [_request(r) for r in self.kb.query("SELECT * FROM requests ORDER BY id DESC LIMIT ?", [limit])]

    def say(self, request_id: int, line: str) -> None:
        with self.kb._tx() as con:
            self.kb._insert(con, "request_progress", {"request_id": request_id, "line": line})

    def progress(self, request_id: int, after: int = 0, limit: int = 500) -> list[ProgressLine]:
        """Progress lines of a request with an id above `after` (what a stream has not sent yet)."""
        return [_line(r) for r in self.kb.query(
            "SELECT * FROM request_progress WHERE request_id = ? AND id > ? ORDER BY id LIMIT ?",
            [request_id, after, limit])]

    def tail(self, request_id: int, n: int = 12) -> list[ProgressLine]:
        """The latest `n` progress lines of a request, oldest first."""
        rows = self.kb.query("SELECT * FROM (SELECT * FROM request_progress WHERE request_id = ? ORDER BY id DESC "
                             "LIMIT ?) ORDER BY id", [request_id, n])
        return [_line(r) for r in rows]


def _request(row: dict[str, Any]) -> Request:
    return Request(**{name: row[name] for name in Request.__dataclass_fields__})


def _line(row: dict[str, Any]) -> ProgressLine:
    return ProgressLine(row["id"], row["request_id"], row["ts"], row["line"])


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

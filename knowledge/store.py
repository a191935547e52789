"""KnowledgeBase: the one class through which agentx writes to (and reads from) its DuckDB.

Concurrency model: short-lived connections, retry on lock.
    DuckDB allows only one process at a time to open a database file read-write, and a
    second process is refused at once rather than queued. agentx has several processes
    that touch the same workspace KB (the scheduler's run, a CLI command, the web server),
    so no process may keep the file open. Every public method therefore opens a
    connection, does its work in one transaction, commits and closes. If another process
    holds the file, opening is retried with jittered exponential backoff (5 ms doubling to
    100 ms) until ``lock_timeout_s`` (default 30 s), then ``KnowledgeBaseLocked`` is raised
    naming the file and the holding program/PID that DuckDB reports.
    ``with kb.session() as s:`` batches many operations on one connection and one
    transaction (committed on exit, rolled back on an exception); keep sessions short,
    since other processes wait while one is open.

    Cost: opening a DuckDB instance builds its catalog (~30 ms of CPU, even in memory),
    so every call pays it. Measured on the shared 2-core dev box (duckdb 2.0.0):
    connect+insert+close (``kb.log_event``) 40-65 ms, a small ``kb.query`` 40-50 ms,
    versus ~2 ms per insert inside a session. A connect refused by the lock costs ~9 ms.
    That suits agentx's write rate (a few rows per training run of seconds to minutes);
    use ``session()`` for bulk writes. Within one process, a call made while another
    connection to the file is open reuses DuckDB's cached instance and connects in ~1 ms,
    so after a call its connection stays open, unused, as an "anchor" until the KB has
    been idle for ``WARM_S`` (0.2 s): a burst of calls (a judgement, a run's records)
    pays one catalog build, not one per call. So that a busy or polling process cannot
    starve the others, an anchor lives at most ``WARM_MAX_S`` (1 s), and after any anchor
    closes the process connects call by call for ``COOL_S`` (0.3 s), the window in which a
    waiting process's retry gets the file. ``release()`` closes the anchor at once.

``KnowledgeBase(":memory:")`` keeps a single connection (tests). JSON columns take Python
values (dicts, lists, ...) and come back parsed. Unknown column names raise ValueError.
Timestamps are naive UTC.
"""

from __future__ import annotations

import atexit
import copy
import datetime as dt
import json
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import duckdb

from knowledge.connect import connect_with_retry
from knowledge.migrations import MIGRATIONS, Migration, migrate
from knowledge.owners import Owner, orphan_reason
from knowledge.reads import key_columns

RUN_ARMS = ("baseline", "control", "treatment")
RUN_STATUSES = ("running", "ok", "invalid", "error", "timeout", "memory", "died", "disk", "abandoned", "lost")
MEMORY = ":memory:"
_ID_CONFLICT_ATTEMPTS = 10
WARM_S = 0.2         # an idle KB closes its last connection after this long
WARM_MAX_S = 1.0     # ... and a busy one after this long; after either, it connects call by
COOL_S = 0.3         # call for COOL_S (a poller at any interval leaves other processes gaps)


# KBs holding an anchor: closed at interpreter exit (a connection left to the garbage
# collector at shutdown makes duckdb's bindings report leaks)
_ANCHORED: weakref.WeakSet = weakref.WeakSet()


_REAPERS: set[threading.Thread] = set()     # reaper threads still running (one may be mid-close)


@atexit.register
def _release_all() -> None:
    # a daemon thread still inside duckdb's C++ when the interpreter exits aborts the process
    for kb in list(_ANCHORED):
        kb.release()
    for thread in list(_REAPERS):
        thread.join(timeout=5)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class KnowledgeBase:
    """Store for experiments, runs, metrics, verdicts, lessons, cards, features, harness
    versions, LLM calls and events. See the module docstring for the concurrency model."""

    def __init__(self, path: str | os.PathLike[str] = MEMORY, *, lock_timeout_s: float = 30.0,
                 migrations: Sequence[Migration] = MIGRATIONS):
        self.path = MEMORY if str(path) == MEMORY else str(Path(path))
        self.lock_timeout_s = lock_timeout_s
        self._mutex = threading.RLock()
        self._id_lock = threading.Lock()
        self._con: duckdb.DuckDBPyConnection | None = (
            duckdb.connect(MEMORY) if self.path == MEMORY else None)
        self._in_session = False
        self._closed = False
        self._anchor: duckdb.DuckDBPyConnection | None = None   # kept open while busy: cheap connects
        self._anchor_lock = threading.Lock()
        self._last_used = self._anchor_born = self._cool_until = 0.0
        self._reaper: threading.Thread | None = None
        self._stop_reaper = threading.Event()
        self._columns: dict[str, dict[str, str]] = {}
        self.migrate(migrations)

    @classmethod
    def for_workspace(cls, workspace: str | os.PathLike[str], **kwargs: Any) -> KnowledgeBase:
        """The KB of a workspace: ``<workspace>/.agentx/kb.duckdb`` (folder created)."""
        folder = Path(workspace) / ".agentx"
        folder.mkdir(parents=True, exist_ok=True)
        return cls(folder / "kb.duckdb", **kwargs)

    def __repr__(self) -> str:
        return f"KnowledgeBase({self.path!r})"

    # -- connections -------------------------------------------------------------------

    @contextmanager
    def _connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        if self._closed:
            raise RuntimeError("this KnowledgeBase session has ended; use the KnowledgeBase")
        if self._con is not None:  # in-memory KB, or a session's pinned connection
            with self._mutex:
                yield self._con
            return
        con = connect_with_retry(self.path, self.lock_timeout_s)
        try:
            yield con
        finally:
            self._release(con)

    def _release(self, con: duckdb.DuckDBPyConnection) -> None:
        """Close `con`, or keep it as the warm anchor (see WARM_S in the module docstring)."""
        retired = None
        with self._anchor_lock:
            now = self._last_used = time.monotonic()
            if self._anchor is not None and now - self._anchor_born > WARM_MAX_S:
                # fairness: a process that never goes idle still lets go of the file regularly
                retired, self._anchor, self._cool_until = self._anchor, None, now + COOL_S
            elif self._anchor is None and not self._closed and now >= self._cool_until:
                self._anchor, self._anchor_born = con, now
                _ANCHORED.add(self)
                if self._reaper is None:
                    self._reaper = threading.Thread(target=self._reap, args=(weakref.ref(self),),
                                                    name="kb-anchor", daemon=True)
                    _REAPERS.add(self._reaper)
                    self._reaper.start()
                return
        con.close()
        if retired is not None:
            retired.close()

    def release(self) -> None:
        """Close the warm anchor now (before handing the file to another process, or at exit)."""
        with self._anchor_lock:
            anchor, self._anchor = self._anchor, None
            reaper, self._reaper = self._reaper, None
        if reaper is not None:
            self._stop_reaper.set()
            reaper.join()
            self._stop_reaper.clear()
        if anchor is not None:
            anchor.close()

    @staticmethod
    def _reap(ref: weakref.ref) -> None:
        """Close the anchor once the KB has been idle for WARM_S, then end. Holds the KB only
        weakly between checks, so a KB dropped (or the interpreter exiting) is not kept alive."""
        try:
            while True:
                kb = ref()
                stop = kb._stop_reaper if kb is not None else None
                del kb
                if stop is None or stop.wait(WARM_S / 2):
                    return
                kb = ref()
                if kb is None:
                    return
                with kb._anchor_lock:
                    if kb._anchor is not None and time.monotonic() - kb._last_used < WARM_S:
                        del kb
                        continue
                    anchor, kb._anchor, kb._reaper = kb._anchor, None, None
                    kb._cool_until = time.monotonic() + COOL_S
                if anchor is not None:
                    anchor.close()
                return
        finally:
            _REAPERS.discard(threading.current_thread())

    @contextmanager
    def _tx(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection inside a transaction (the session's, when in a session)."""
        with self._connection() as con:
            if self._in_session:
                yield con
                return
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                _rollback(con)
                raise

    @contextmanager
    def session(self) -> Iterator[KnowledgeBase]:
        """``with kb.session() as s:`` -- ``s`` has every method of ``kb``, all on one
        connection and one transaction, committed on exit (rolled back on an exception)."""
        if self._in_session:
            yield self
            return
        with self._connection() as con:
            bound = copy.copy(self)
            bound._con, bound._in_session = con, True
            con.execute("BEGIN TRANSACTION")
            try:
                yield bound
                con.execute("COMMIT")
            except BaseException:
                _rollback(con)
                raise
            finally:
                bound._con, bound._closed = None, True

    def migrate(self, migrations: Sequence[Migration] = MIGRATIONS) -> list[str]:
        """Apply missing migrations (done at construction); return the names applied now."""
        if self._in_session:
            raise RuntimeError("migrate() cannot run inside a session")
        with self._connection() as con:
            names = migrate(con, migrations)
            rows = con.execute("SELECT table_name, column_name, data_type FROM duckdb_columns() "
                               "WHERE schema_name = 'main'").fetchall()
        columns: dict[str, dict[str, str]] = {}
        for table, column, data_type in rows:
            columns.setdefault(table, {})[column] = data_type
        self._columns = columns
        return names

    # -- generic helpers ---------------------------------------------------------------

    def columns(self, table: str) -> dict[str, str]:
        """Column name -> DuckDB type of a table."""
        if table not in self._columns:
            raise ValueError(f"knowledge base has no table {table!r}")
        return dict(self._columns[table])

    def _encode(self, table: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Check column names and serialise JSON columns."""
        known = self.columns(table)
        out = {}
        for name, value in fields.items():
            if name not in known:
                raise ValueError(f"{table} has no column {name!r}; columns are: "
                                 f"{', '.join(known)}")
            if known[name] == "JSON" and value is not None:
                try:
                    value = json.dumps(value)
                except TypeError as exc:
                    raise ValueError(f"{table}.{name} must be JSON-serialisable: {exc}") from exc
            out[name] = value
        return out

    def _insert(self, con: duckdb.DuckDBPyConnection, table: str, fields: Mapping[str, Any],
                returning: str | None = None, on_conflict: str | None = None) -> Any:
        row = self._encode(table, fields)
        cols = ", ".join(f'"{c}"' for c in row)
        values = f"({cols}) VALUES ({', '.join('?' * len(row))})" if row else "DEFAULT VALUES"
        sql = f"INSERT INTO {table} {values}"
        if on_conflict:
            updates = [f'"{c}" = excluded."{c}"' for c in row if c != on_conflict]
            action = f"UPDATE SET {', '.join(updates)}" if updates else "NOTHING"
            sql += f' ON CONFLICT ("{on_conflict}") DO {action}'
        if returning:
            sql += f" RETURNING {returning}"
            return con.execute(sql, list(row.values())).fetchone()[0]
        con.execute(sql, list(row.values()))
        return None

    def _update(self, table: str, key: str, key_value: Any, fields: Mapping[str, Any],
                then: Callable[[duckdb.DuckDBPyConnection], None] | None = None) -> None:
        row = self._encode(table, fields)
        if key in row:
            raise ValueError(f"{table}.{key} cannot be changed")
        if not row:
            raise ValueError(f"nothing to update in {table} {key_value!r}")
        sets = ", ".join(f'"{c}" = ?' for c in row)
        with self._tx() as con:
            found = con.execute(f'UPDATE {table} SET {sets} WHERE "{key}" = ? RETURNING "{key}"',
                                [*row.values(), key_value]).fetchall()
            if found and then is not None:
                then(con)
        if not found:
            raise KeyError(f"no {table} row with {key} = {key_value!r}")

    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None
              ) -> list[dict[str, Any]]:
        """Run SQL and return rows as dicts; JSON-typed result columns come back parsed."""
        with self._tx() as con:
            cursor = con.execute(sql, params) if params is not None else con.execute(sql)
            if cursor.description is None:
                return []
            names = [d[0] for d in cursor.description]
            is_json = [str(d[1]) == "JSON" for d in cursor.description]
            rows = cursor.fetchall()
        return [{n: (json.loads(v) if j and v is not None else v)
                 for n, j, v in zip(names, is_json, row)} for row in rows]

    def _select(self, table: str, order_by: str, **filters: Any) -> list[dict[str, Any]]:
        where = {k: v for k, v in filters.items() if v is not None}
        self._encode(table, {k: None for k in where})  # validates names
        clause = " AND ".join(f'"{k}" = ?' for k in where)
        sql = f"SELECT * FROM {table}" + (f" WHERE {clause}" if clause else "")
        return self.query(f"{sql} ORDER BY {order_by}", list(where.values()))

    # -- experiments -------------------------------------------------------------------

    def next_experiment_id(self) -> str:
        """The id the next add_experiment would get (a preview; allocation happens there)."""
        with self._tx() as con:
            return _next_experiment_id(con)

    def add_experiment(self, **fields: Any) -> str:
        """Insert an experiment; returns its id ('E0001', ... unless ``id`` is given)."""
        self._encode("experiments", fields)
        fields = self._with_keys(fields)
        # Threads sharing this object take turns; other objects on the same file in this
        # process can still race for an id (the loser's commit fails), so retry that too.
        serial = self._id_lock if self._con is None else nullcontext()
        for attempt in range(_ID_CONFLICT_ATTEMPTS):
            try:
                with serial, self._tx() as con:
                    row = {"id": _next_experiment_id(con), **fields}
                    return self._insert(con, "experiments", row, returning="id")
            except (duckdb.TransactionException, duckdb.ConstraintException):
                if "id" in fields or self._in_session or attempt == _ID_CONFLICT_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def update_experiment(self, experiment_id: str, **fields: Any) -> None:
        fields.setdefault("updated_at", utcnow())
        if ("params" in fields or "recipe" in fields) and not {"params", "recipe"} <= fields.keys():
            old = self.get_experiment(experiment_id) or {}
            fields = self._with_keys({"params": old.get("params"), "recipe": old.get("recipe"), **fields})
        elif "params" in fields:
            fields = self._with_keys(fields)
        self._update("experiments", "id", experiment_id, fields)

    def _with_keys(self, fields: dict[str, Any]) -> dict[str, Any]:
        """`fields` with the identity columns of its recipe and params (knowledge/reads.py:
        params_key, config_hash, ...; absent params count as {}), when the KB has them (m007)."""
        known = self._columns.get("experiments", {})
        if "params_key" not in known:
            return fields
        keys = key_columns(fields.get("recipe"), fields.get("params"))
        return {**fields, **{name: value for name, value in keys.items() if name in known}}

    def get_experiment(self, experiment_id: str) -> dict[str, Any] | None:
        rows = self._select("experiments", "id", id=experiment_id)
        return rows[0] if rows else None

    def experiments(self, status: str | None = None) -> list[dict[str, Any]]:
        return self._select("experiments", "id", status=status)

    # -- runs and metrics --------------------------------------------------------------

    def add_run(self, **fields: Any) -> str:
        """Insert a run (status 'running' unless given); returns its id ('R-<uuid8>'). The
        owner fields (``owner_pid``, ``owner_started``, ``owner_host``) default to the
        current process, so ``abandon_orphans`` can tell when it died mid-run."""
        fields.setdefault("id", f"R-{uuid.uuid4().hex[:8]}")
        if "owner_pid" in self._columns.get("runs", {}):        # absent before m004_sandbox
            for name, value in Owner.current().fields().items():
                fields.setdefault(name, value)
        if fields.get("arm") not in RUN_ARMS:
            raise ValueError(f"run arm must be one of {RUN_ARMS}, got {fields.get('arm')!r}")
        _check_status(fields.get("status", "running"))
        with self._tx() as con:
            experiment_id = fields.get("experiment_id")
            if experiment_id is not None and not _exists(con, "experiments", "id", experiment_id):
                raise ValueError(f"run refers to unknown experiment {experiment_id!r}")
            return self._insert(con, "runs", fields, returning="id")

    def finish_run(self, run_id: str, *, status: str, **fields: Any) -> None:
        """Record a run's outcome; ``finished_at`` defaults to now."""
        _check_status(status)
        if status == "running":
            raise ValueError("finish_run needs a final status, not 'running'")
        fields.setdefault("finished_at", utcnow())
        self._update("runs", "id", run_id, {"status": status, **fields})

    def abandon_orphans(self) -> list[str]:
        """Mark every ``running`` row whose owner on this host is gone (no such process, or
        the pid now belongs to another one) or that has no owner recorded as ``abandoned``
        (failure_kind 'abandoned', a failure_detail naming the owner, finished now); log a
        ``runs_abandoned`` event; return the ids. Rows of live owners and of other hosts are
        left alone. Call it only while no other writer can be starting runs (agentx holds
        the workspace lock, ``agentx/lock.py``)."""
        rows = self.query("SELECT id, owner_pid, owner_started, owner_host FROM runs "
                          "WHERE status = 'running' ORDER BY started_at, id")
        reasons = {r["id"]: reason for r in rows
                   if (reason := orphan_reason(Owner(r["owner_pid"], r["owner_started"], r["owner_host"])))}
        if not reasons:
            return []
        now = utcnow()
        with self._tx() as con:
            for run_id, reason in reasons.items():
                con.execute("UPDATE runs SET status = 'abandoned', failure_kind = 'abandoned', "
                            "failure_detail = ?, finished_at = ? WHERE id = ? AND status = 'running'",
                            [f"abandoned: {reason}", now, run_id])
            self._insert(con, "events", {"kind": "runs_abandoned",
                                         "payload": {"runs": list(reasons), "reasons": reasons}})
        return list(reasons)

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        rows = self._select("runs", "id", id=run_id)
        return rows[0] if rows else None

    def runs(self, experiment_id: str | None = None, *, arm: str | None = None,
             status: str | None = None, tier: str | None = None) -> list[dict[str, Any]]:
        return self._select("runs", "started_at, id", experiment_id=experiment_id, arm=arm,
                            status=status, tier=tier)

    def add_metrics(self, run_id: str, split: str, values: Mapping[str, float]) -> None:
        """Store metric values of one run and split (replacing same-named ones)."""
        rows = []
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"metric {name!r} must be a number, got {value!r}")
            rows.append([run_id, split, name, float(value)])
        with self._tx() as con:
            if not _exists(con, "runs", "id", run_id):
                raise ValueError(f"metrics for unknown run {run_id!r}")
            if rows:
                con.executemany("INSERT OR REPLACE INTO metrics VALUES (?, ?, ?, ?)", rows)

    def metrics_for(self, run_id: str) -> dict[tuple[str, str], float]:
        rows = self.query("SELECT split, name, value FROM metrics WHERE run_id = ?", [run_id])
        return {(r["split"], r["name"]): r["value"] for r in rows}

    # -- verdicts and lessons ----------------------------------------------------------

    def add_verdict(self, **fields: Any) -> int:
        """Insert a verdict; its experiment's latest-verdict columns (m007) follow it."""
        with self._tx() as con:
            verdict_id = self._insert(con, "verdicts", fields, returning="id")
            if "verdict_id" in self._columns.get("experiments", {}):
                con.execute("""
                    UPDATE experiments SET verdict_id = v.id, verdict_decision = v.decision,
                                           verdict_valid_delta = v.valid_delta
                    FROM verdicts v
                    WHERE v.id = ? AND experiments.id = v.experiment_id
                      AND (experiments.verdict_id IS NULL OR experiments.verdict_id < v.id)""", [verdict_id])
            return verdict_id

    def verdicts(self, experiment_id: str | None = None) -> list[dict[str, Any]]:
        return self._select("verdicts", "id", experiment_id=experiment_id)

    def add_lesson(self, **fields: Any) -> int:
        with self._tx() as con:
            return self._insert(con, "lessons", fields, returning="id")

    def lessons(self, experiment_id: str | None = None, *,
                recipe_family: str | None = None) -> list[dict[str, Any]]:
        return self._select("lessons", "id", experiment_id=experiment_id,
                            recipe_family=recipe_family)

    # -- rollouts ----------------------------------------------------------------------

    def set_rollout_stages(self, experiment_id: str, backend: str,
                           stages: Iterable[Mapping[str, Any]]) -> int:
        """Record an experiment's rollout, replacing any earlier record of it (a resumed
        run repeats its rollout); returns the number of stages stored."""
        stages = list(stages)
        with self._tx() as con:
            if not _exists(con, "experiments", "id", experiment_id):
                raise ValueError(f"rollout of unknown experiment {experiment_id!r}")
            con.execute("DELETE FROM rollout_stages WHERE experiment_id = ?", [experiment_id])
            for stage in stages:
                self._insert(con, "rollout_stages", {**stage, "experiment_id": experiment_id,
                                                     "backend": backend})
        return len(stages)

    def rollout_stages(self, experiment_id: str | None = None) -> list[dict[str, Any]]:
        return self._select("rollout_stages", "experiment_id, stage", experiment_id=experiment_id)

    # -- pull requests -----------------------------------------------------------------

    def upsert_pull_request(self, **fields: Any) -> int:
        """One pull request per experiment: insert, or update the one it already has."""
        if not fields.get("experiment_id"):
            raise ValueError("a pull request needs an experiment_id")
        with self._tx() as con:
            self._insert(con, "pull_requests", {**fields, "updated_at": utcnow()},
                         on_conflict="experiment_id")
            pr_id = con.execute("SELECT id FROM pull_requests WHERE experiment_id = ?",
                                [fields["experiment_id"]]).fetchone()[0]
            self._sync_pr_state(con, pr_id)
            return pr_id

    def update_pull_request(self, pr_id: int, **fields: Any) -> None:
        self._update("pull_requests", "id", pr_id, {**fields, "updated_at": utcnow()},
                     then=lambda con: self._sync_pr_state(con, pr_id))

    def _sync_pr_state(self, con: duckdb.DuckDBPyConnection, pr_id: int) -> None:
        """Copy a pull request's state to its experiment's ``pr_state`` (m007)."""
        if "pr_state" in self._columns.get("experiments", {}):
            con.execute("UPDATE experiments SET pr_state = p.state FROM pull_requests p "
                        "WHERE p.id = ? AND experiments.id = p.experiment_id", [pr_id])

    def pull_requests(self, state: str | None = None) -> list[dict[str, Any]]:
        return self._select("pull_requests", "id", state=state)

    def get_pull_request(self, pr_id: int) -> dict[str, Any] | None:
        rows = self._select("pull_requests", "id", id=pr_id)
        return rows[0] if rows else None

    def pull_request_for(self, experiment_id: str) -> dict[str, Any] | None:
        rows = self._select("pull_requests", "id", experiment_id=experiment_id)
        return rows[0] if rows else None

    # -- research cards and features ---------------------------------------------------

    def upsert_research_card(self, **fields: Any) -> None:
        """Insert a card, or update the given fields of the card with this ``id``."""
        if not fields.get("id"):
            raise ValueError("a research card needs an id")
        with self._tx() as con:
            self._insert(con, "research_cards", fields, on_conflict="id")

    def research_cards(self) -> list[dict[str, Any]]:
        return self._select("research_cards", "id")

    def upsert_feature(self, **fields: Any) -> None:
        """Insert a catalog feature, or update the given fields of the one with this name."""
        if not fields.get("name"):
            raise ValueError("a feature needs a name")
        with self._tx() as con:
            self._insert(con, "features", fields, on_conflict="name")

    def features(self) -> list[dict[str, Any]]:
        return self._select("features", "name")

    def add_feature_stats(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Append feature statistics rows (name, stat, value, detail, computed_at)."""
        rows = list(rows)
        with self._tx() as con:
            for row in rows:
                self._insert(con, "feature_stats", row)
        return len(rows)

    def feature_stats(self, name: str | None = None) -> list[dict[str, Any]]:
        return self._select("feature_stats", "computed_at, name, stat", name=name)

    # -- harness versions, LLM calls, events -------------------------------------------

    def add_harness_version(self, **fields: Any) -> int:
        with self._tx() as con:
            return self._insert(con, "harness_versions", fields, returning="id")

    def harness_versions(self, agent: str | None = None) -> list[dict[str, Any]]:
        return self._select("harness_versions", "id", agent=agent)

    def log_llm_call(self, *, agent: str, experiment_id: str | None, provider: str, model: str,
                     prompt: str, response: str | None, input_tokens: int | None,
                     output_tokens: int | None, dollars: float | None, latency_s: float | None,
                     error: str | None = None, method: str | None = None) -> int:
        fields = dict(agent=agent, experiment_id=experiment_id, provider=provider, model=model,
                      prompt=prompt, response=response, input_tokens=input_tokens,
                      output_tokens=output_tokens, dollars=dollars, latency_s=latency_s,
                      error=error, method=method)
        with self._tx() as con:
            return self._insert(con, "llm_calls", fields, returning="id")

    def llm_calls(self, experiment_id: str | None = None) -> list[dict[str, Any]]:
        return self._select("llm_calls", "id", experiment_id=experiment_id)

    def llm_dollars(self, experiment_id: str | None = None) -> float:
        """Total LLM spend, overall or for one experiment."""
        sql = "SELECT coalesce(sum(dollars), 0) AS d FROM llm_calls"
        if experiment_id is None:
            return float(self.query(sql)[0]["d"])
        return float(self.query(sql + " WHERE experiment_id = ?", [experiment_id])[0]["d"])

    def log_event(self, kind: str, payload: Mapping[str, Any] | None = None,
                  experiment_id: str | None = None) -> int:
        with self._tx() as con:
            return self._insert(con, "events", {"kind": kind, "payload": payload,
                                                "experiment_id": experiment_id},
                                returning="id")

    def events(self, kind: str | None = None, *,
               experiment_id: str | None = None) -> list[dict[str, Any]]:
        return self._select("events", "id", kind=kind, experiment_id=experiment_id)

    # -- trusted protected files (tools/trust.py) ---------------------------------------

    def trusted_protected(self) -> list[dict[str, Any]]:
        """The ledger: the protected files' blobs a person trusted, one row per path."""
        return self._select("trusted_protected", "path")

    def trust_protected(self, rows: Mapping[str, str], commit: str, by: str) -> None:
        """Replace the ledger with `rows` (path -> blob sha or 'absent') as of main's `commit`."""
        with self._tx() as con:
            con.execute("DELETE FROM trusted_protected")
            for path, blob in rows.items():
                self._insert(con, "trusted_protected", {"path": path, "blob": blob, "commit_sha": commit,
                                                        "trusted_by": by, "trusted_at": utcnow()})


def _next_experiment_id(con: duckdb.DuckDBPyConnection) -> str:
    (last,) = con.execute("SELECT max(CAST(substr(id, 2) AS INTEGER)) FROM experiments "
                          "WHERE regexp_full_match(id, 'E[0-9]+')").fetchone()
    return f"E{(last or 0) + 1:04d}"


def _exists(con: duckdb.DuckDBPyConnection, table: str, key: str, value: Any) -> bool:
    return con.execute(f'SELECT 1 FROM {table} WHERE "{key}" = ?', [value]).fetchone() is not None


def _check_status(status: Any) -> None:
    if status not in RUN_STATUSES:
        raise ValueError(f"run status must be one of {RUN_STATUSES}, got {status!r}")


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    try:
        con.execute("ROLLBACK")
    except duckdb.TransactionException:
        pass  # the failed statement or COMMIT already ended the transaction

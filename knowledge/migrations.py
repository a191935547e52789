"""Schema migrations for the knowledge base: an ordered list of small named functions.

Each migration is ``def mNNN_what(con): ...`` taking an open DuckDB connection and running
DDL on it. ``migrate(con)`` applies the ones not yet recorded in ``_migrations``, in list
order, each in its own transaction together with its ``_migrations`` row, so a crash
half-way leaves the database at a clean migration boundary.

To add a migration: write the next ``m00N_name(con)`` function at the bottom and append it
to ``MIGRATIONS``. Never edit or reorder one that has shipped; databases in the wild have it
recorded as applied.

Conventions for tables:
- timestamps are naive UTC ``TIMESTAMP`` (``DEFAULT`` ``_NOW``); TIMESTAMPTZ would make the
  Python client import pytz;
- JSON columns are declared ``JSON``; the store serialises on write and parses on read by
  looking at the column type, so a new JSON column needs no store change;
- integer ids come from a sequence named ``<table>_id_seq``;
- no FOREIGN KEY constraints: DuckDB refuses updates of rows that other rows reference, and
  runs/experiments are updated all the time. Referential checks live in the store.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import duckdb

Migration = Callable[[duckdb.DuckDBPyConnection], None]

_NOW = "(now() AT TIME ZONE 'UTC')"
_NAME = re.compile(r"^m(\d{3})_[a-z0-9_]+$")


def m001_initial(con: duckdb.DuckDBPyConnection) -> None:
    for seq in ("verdicts", "lessons", "harness_versions", "llm_calls", "events"):
        con.execute(f"CREATE SEQUENCE {seq}_id_seq START 1")
    con.execute(f"""
        CREATE TABLE experiments (
            id TEXT PRIMARY KEY,            -- 'E0001', allocated by the store
            title TEXT, slug TEXT, recipe TEXT, params JSON, hypothesis TEXT,
            proposal JSON,
            source TEXT,                    -- 'chat' | 'schedule' | 'cli' | 'brainstorm' ...
            status TEXT NOT NULL DEFAULT 'proposed',
            branch TEXT, base_commit TEXT, head_commit TEXT, harness_version BIGINT,
            created_at TIMESTAMP NOT NULL DEFAULT {_NOW},
            updated_at TIMESTAMP NOT NULL DEFAULT {_NOW})""")
    con.execute(f"""
        CREATE TABLE runs (
            id TEXT PRIMARY KEY,            -- 'R-<uuid8>'
            experiment_id TEXT,             -- NULL for baseline runs outside an experiment
            arm TEXT NOT NULL,              -- baseline | control | treatment
            commit_sha TEXT, seed INTEGER, tier TEXT, device TEXT,
            status TEXT NOT NULL DEFAULT 'running',
            failure_kind TEXT, failure_detail TEXT,
            kernel_start_s DOUBLE, exec_s DOUBLE, wall_s DOUBLE,
            started_at TIMESTAMP NOT NULL DEFAULT {_NOW}, finished_at TIMESTAMP,
            run_dir TEXT)""")
    con.execute("""
        CREATE TABLE metrics (
            run_id TEXT NOT NULL, split TEXT NOT NULL, name TEXT NOT NULL, value DOUBLE,
            PRIMARY KEY (run_id, split, name))""")
    con.execute(f"""
        CREATE TABLE verdicts (
            id BIGINT PRIMARY KEY DEFAULT nextval('verdicts_id_seq'),
            experiment_id TEXT NOT NULL,
            decision TEXT NOT NULL,         -- ship | reject | inconclusive | veto ...
            metric TEXT, control DOUBLE, treatment DOUBLE, delta DOUBLE,
            ci_low DOUBLE, ci_high DOUBLE, n_seeds INTEGER,
            guardrails JSON, rationale TEXT,
            created_at TIMESTAMP NOT NULL DEFAULT {_NOW})""")
    con.execute(f"""
        CREATE TABLE lessons (
            id BIGINT PRIMARY KEY DEFAULT nextval('lessons_id_seq'),
            experiment_id TEXT, recipe_family TEXT, params JSON,
            outcome TEXT,                   -- win | loss | neutral | failure
            failure_kind TEXT, effect DOUBLE, ci_low DOUBLE, ci_high DOUBLE,
            conditions JSON, text TEXT,
            created_at TIMESTAMP NOT NULL DEFAULT {_NOW})""")
    con.execute("""
        CREATE TABLE research_cards (
            id TEXT PRIMARY KEY, title TEXT, source TEXT, summary TEXT, tags JSON,
            body TEXT)""")
    con.execute("""
        CREATE TABLE features (
            name TEXT PRIMARY KEY, definition TEXT, grp TEXT, type TEXT,
            serving_cost DOUBLE, leaky BOOLEAN NOT NULL DEFAULT false)""")
    con.execute(f"""
        CREATE TABLE feature_stats (
            name TEXT NOT NULL, stat TEXT NOT NULL, value DOUBLE, detail JSON,
            computed_at TIMESTAMP NOT NULL DEFAULT {_NOW})""")
    con.execute(f"""
        CREATE TABLE harness_versions (
            id BIGINT PRIMARY KEY DEFAULT nextval('harness_versions_id_seq'),
            agent TEXT NOT NULL, version TEXT, sections JSON, playbook JSON,
            parent_id BIGINT, accepted BOOLEAN NOT NULL DEFAULT false, score DOUBLE,
            created_at TIMESTAMP NOT NULL DEFAULT {_NOW})""")
    con.execute(f"""
        CREATE TABLE llm_calls (
            id BIGINT PRIMARY KEY DEFAULT nextval('llm_calls_id_seq'),
            agent TEXT NOT NULL, experiment_id TEXT, provider TEXT, model TEXT,
            prompt TEXT, response TEXT, input_tokens INTEGER, output_tokens INTEGER,
            dollars DOUBLE, latency_s DOUBLE, error TEXT,
            created_at TIMESTAMP NOT NULL DEFAULT {_NOW})""")
    con.execute(f"""
        CREATE TABLE events (
            id BIGINT PRIMARY KEY DEFAULT nextval('events_id_seq'),
            ts TIMESTAMP NOT NULL DEFAULT {_NOW},
            kind TEXT NOT NULL, experiment_id TEXT, payload JSON)""")


def m002_loop(con: duckdb.DuckDBPyConnection) -> None:
    """What the experiment loop adds: pull requests, per-seed evidence, validation effects."""
    con.execute("CREATE SEQUENCE pull_requests_id_seq START 1")
    con.execute(f"""
        CREATE TABLE pull_requests (
            id BIGINT PRIMARY KEY DEFAULT nextval('pull_requests_id_seq'),
            experiment_id TEXT NOT NULL UNIQUE,
            branch TEXT NOT NULL, base_commit TEXT, head_commit TEXT,
            title TEXT NOT NULL, body TEXT,
            state TEXT NOT NULL DEFAULT 'open',   -- open | draft | merged | rejected
            merge_commit TEXT, review_reason TEXT,
            created_at TIMESTAMP NOT NULL DEFAULT {_NOW},
            updated_at TIMESTAMP NOT NULL DEFAULT {_NOW})""")
    con.execute("ALTER TABLE verdicts ADD COLUMN per_seed JSON")
    con.execute("ALTER TABLE verdicts ADD COLUMN valid_delta DOUBLE")
    con.execute("ALTER TABLE verdicts ADD COLUMN tier TEXT")


def m003_rollouts(con: duckdb.DuckDBPyConnection) -> None:
    """Staged rollout stages, the offline decision behind a rollout veto, richer lessons."""
    con.execute("CREATE SEQUENCE rollout_stages_id_seq START 1")
    con.execute(f"""
        CREATE TABLE rollout_stages (
            id BIGINT PRIMARY KEY DEFAULT nextval('rollout_stages_id_seq'),
            experiment_id TEXT NOT NULL,
            backend TEXT NOT NULL,          -- replay | the name of an A/B platform backend
            stage INTEGER NOT NULL,         -- 1, 2, 3 ...
            share DOUBLE NOT NULL,          -- share of users served the treatment
            n_users INTEGER, n_rows INTEGER,             -- the treatment group
            control_users INTEGER, control_rows INTEGER,
            control JSON, treatment JSON,   -- metric -> value in each group
            checks JSON,                    -- per guard: metric, harm, harm_low, limit, ok, note
            ok BOOLEAN NOT NULL, reason TEXT,
            created_at TIMESTAMP NOT NULL DEFAULT {_NOW})""")
    con.execute("ALTER TABLE verdicts ADD COLUMN offline_decision TEXT")   # before the rollout
    con.execute("ALTER TABLE lessons ADD COLUMN decision TEXT")
    con.execute("ALTER TABLE lessons ADD COLUMN evidence JSON")             # breached guards, rollout, ...


def m004_sandbox(con: duckdb.DuckDBPyConnection) -> None:
    """The OS sandbox and its faults: how each run was confined, which process owns a
    running row (so a killed one is marked abandoned), and the protected files a person
    trusted (the harness refuses a main whose protected files changed behind its back)."""
    con.execute("ALTER TABLE runs ADD COLUMN sandbox TEXT")          # 'bwrap' | 'none'
    con.execute("ALTER TABLE runs ADD COLUMN network BOOLEAN")       # the manifest let it use the network
    con.execute("ALTER TABLE runs ADD COLUMN owner_pid BIGINT")      # the agentx process running it
    con.execute("ALTER TABLE runs ADD COLUMN owner_started DOUBLE")  # that process's start time (epoch s)
    con.execute("ALTER TABLE runs ADD COLUMN owner_host TEXT")
    con.execute("ALTER TABLE verdicts ADD COLUMN sandbox TEXT")      # 'bwrap' | 'none' | 'mixed'
    con.execute(f"""
        CREATE TABLE trusted_protected (
            path TEXT PRIMARY KEY,          -- a protected file, relative to the workspace root
            blob TEXT NOT NULL,             -- its git blob sha ('absent' when it does not exist)
            commit_sha TEXT NOT NULL,       -- main's commit when it was trusted
            trusted_by TEXT NOT NULL,       -- the command that trusted it: 'agentx init', 'agentx trust', ...
            trusted_at TIMESTAMP NOT NULL DEFAULT {_NOW})""")


def m005_llm_method(con: duckdb.DuckDBPyConnection) -> None:
    """How each LLM call asked for structured output: 'json_schema', 'function_calling' or
    'json_object' (agentx/llm/client.py picks the one a provider supports)."""
    con.execute("ALTER TABLE llm_calls ADD COLUMN method TEXT")


def m006_harness_evolution(con: duckdb.DuckDBPyConnection) -> None:
    """Versioned harnesses (agents/harness_spec.py) and what the evolution reads per experiment:
    a harness version's whole content, its status and the gate's evidence; per experiment the
    brainstorm's arm, its choice probability and the posterior inputs of every candidate arm."""
    for column, kind in (("hash", "TEXT"), ("content", "JSON"), ("status", "TEXT"), ("reason", "TEXT"),
                         ("evidence", "JSON"), ("proposer", "TEXT"), ("delta", "JSON")):
        con.execute(f"ALTER TABLE harness_versions ADD COLUMN {column} {kind}")
    con.execute("ALTER TABLE experiments ADD COLUMN arm TEXT")              # the bandit arm the brainstorm chose
    con.execute("ALTER TABLE experiments ADD COLUMN propensity DOUBLE")     # its choice probability (Monte Carlo)
    con.execute("ALTER TABLE experiments ADD COLUMN decision_context JSON")  # every candidate arm's posterior inputs
    con.execute("ALTER TABLE runs ADD COLUMN peak_rss_mb DOUBLE")            # the kernel's peak memory (calibration)


def m007_read_columns(con: duckdb.DuckDBPyConnection) -> None:
    """What the brains' reads need per experiment without reading every experiment or
    joining every verdict (knowledge/reads.py): the params' identity (``params_key``,
    canonical JSON; ``params_set_key``, lists of strings sorted) and its indexed 64-bit hash
    with the recipe (``config_hash``, ``config_set_hash``); the latest verdict's id, decision
    and validation effect and the pull request's state. The store keeps them; existing rows
    are filled here (the keys by Python's json: about a minute per million experiments on a
    2-core machine). m008 indexes the hashes."""
    import json

    from knowledge.reads import key_columns

    for column, kind in (("params_key", "TEXT"), ("params_set_key", "TEXT"), ("config_hash", "BIGINT"),
                         ("config_set_hash", "BIGINT"), ("verdict_id", "BIGINT"), ("verdict_decision", "TEXT"),
                         ("verdict_valid_delta", "DOUBLE"), ("pr_state", "TEXT")):
        con.execute(f"ALTER TABLE experiments ADD COLUMN IF NOT EXISTS {column} {kind}")
    # a KB made while m007 was a draft (m007_params_keys) has two of the columns and these
    for index in ("experiments_recipe_params_key", "experiments_recipe_params_set_key"):
        con.execute(f"DROP INDEX IF EXISTS {index}")

    def keys(recipe: str | None, params: str | None) -> dict:
        return key_columns(recipe, None if params is None else json.loads(params), stored=True)

    con.create_function("_agentx_keys", keys, ["VARCHAR", "VARCHAR"],
                        "STRUCT(params_key VARCHAR, params_set_key VARCHAR, config_hash BIGINT, "
                        "config_set_hash BIGINT)", null_handling="special", side_effects=False)
    try:
        con.execute("""
            UPDATE experiments SET params_key = k.params_key, params_set_key = k.params_set_key,
                                   config_hash = k.config_hash, config_set_hash = k.config_set_hash
            FROM (SELECT id, _agentx_keys(recipe, CAST(params AS VARCHAR)) AS k FROM experiments) s
            WHERE s.id = experiments.id""")
    finally:
        con.remove_function("_agentx_keys")
    con.execute("""
        UPDATE experiments SET verdict_id = v.id, verdict_decision = v.decision, verdict_valid_delta = v.valid_delta
        FROM verdicts v
        WHERE v.experiment_id = experiments.id
          AND v.id = (SELECT max(w.id) FROM verdicts w WHERE w.experiment_id = v.experiment_id)""")
    con.execute("UPDATE experiments SET pr_state = p.state FROM pull_requests p WHERE p.experiment_id = experiments.id")


def m008_read_indexes(con: duckdb.DuckDBPyConnection) -> None:
    """The indexes of m007's configuration hashes: "was this tried?" looks up only the keys
    asked about. (Their own migration: DuckDB refuses to create an index in the transaction
    that filled the column, and indexing first makes every row of that fill an index update.)"""
    con.execute("CREATE INDEX IF NOT EXISTS experiments_config_hash ON experiments (config_hash)")
    con.execute("CREATE INDEX IF NOT EXISTS experiments_config_set_hash ON experiments (config_set_hash)")


def m009_recipe_index(con: duckdb.DuckDBPyConnection) -> None:
    """An index on the experiments' recipe: a read of a rare recipe's experiments (the
    interactions', knowledge/reads.py `tried_items`) fetches those rows instead of scanning
    every experiment's params (~30 ms at 1M experiments, ~9 ms with it)."""
    con.execute("CREATE INDEX IF NOT EXISTS experiments_recipe ON experiments (recipe)")


def m010_application(con: duckdb.DuckDBPyConnection) -> None:
    """The application layer (agentx/app.py): the request queue one worker per workspace
    takes in order, each request's progress lines (what the web app streams), the loop's
    thread registry (was `.agentx/threads.json`), chat history, and who reviewed a PR."""
    for seq in ("requests", "request_progress", "chat_messages"):
        con.execute(f"CREATE SEQUENCE {seq}_id_seq START 1")
    con.execute(f"""
        CREATE TABLE requests (
            id BIGINT PRIMARY KEY DEFAULT nextval('requests_id_seq'),
            kind TEXT NOT NULL,                -- run | ask | approve | reject
            payload JSON NOT NULL,             -- the request's options (agentx/app.py RunOptions, ...)
            source TEXT NOT NULL,              -- cli | web | chat | schedule
            status TEXT NOT NULL DEFAULT 'queued',   -- queued | running | done | failed | cancelled
            worker TEXT,                       -- 'pid@host' of the process that took it
            result JSON, error TEXT,
            created_at TIMESTAMP NOT NULL DEFAULT {_NOW},
            started_at TIMESTAMP, finished_at TIMESTAMP)""")
    con.execute("CREATE INDEX requests_status ON requests (status)")
    con.execute(f"""
        CREATE TABLE request_progress (
            id BIGINT PRIMARY KEY DEFAULT nextval('request_progress_id_seq'),
            request_id BIGINT NOT NULL, line TEXT NOT NULL,
            ts TIMESTAMP NOT NULL DEFAULT {_NOW})""")
    con.execute("CREATE INDEX request_progress_request ON request_progress (request_id)")
    con.execute(f"""
        CREATE TABLE loop_threads (
            key TEXT PRIMARY KEY, thread_id TEXT NOT NULL,
            updated_at TIMESTAMP NOT NULL DEFAULT {_NOW})""")
    con.execute(f"""
        CREATE TABLE chat_messages (
            id BIGINT PRIMARY KEY DEFAULT nextval('chat_messages_id_seq'),
            conversation TEXT NOT NULL, role TEXT NOT NULL,   -- user | agentx
            kind TEXT NOT NULL,      -- text | answer | proposal | queued | refusal
            text TEXT NOT NULL, payload JSON,
            created_at TIMESTAMP NOT NULL DEFAULT {_NOW})""")
    con.execute("ALTER TABLE pull_requests ADD COLUMN reviewed_by TEXT")
    con.execute("ALTER TABLE experiments ADD COLUMN brain TEXT")          # the brainstorm's name, as shown
    con.execute("ALTER TABLE experiments ADD COLUMN request_id BIGINT")   # the request whose loop made it


MIGRATIONS: list[Migration] = [
    m001_initial,
    m002_loop,
    m003_rollouts,
    m004_sandbox,
    m005_llm_method,
    m006_harness_evolution,
    m007_read_columns,
    m008_read_indexes,
    m009_recipe_index,
    m010_application,
]


def check_order(migrations: Sequence[Migration]) -> None:
    """Raise ValueError unless names look like ``mNNN_x`` and numbers strictly increase."""
    last = 0
    for fn in migrations:
        match = _NAME.match(fn.__name__)
        if match is None:
            raise ValueError(f"migration {fn.__name__!r} is not named like 'm001_initial'")
        number = int(match.group(1))
        if number <= last:
            raise ValueError(f"migration {fn.__name__!r} is out of order (after m{last:03d})")
        last = number


def applied(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Names of the migrations recorded in this database, in the order they were applied."""
    con.execute("CREATE TABLE IF NOT EXISTS _migrations ("
                f"name TEXT PRIMARY KEY, applied_at TIMESTAMP NOT NULL DEFAULT {_NOW})")
    rows = con.execute("SELECT name FROM _migrations ORDER BY applied_at, name").fetchall()
    return [name for (name,) in rows]


def migrate(con: duckdb.DuckDBPyConnection,
            migrations: Sequence[Migration] = MIGRATIONS) -> list[str]:
    """Apply the missing migrations in order; return the names applied now (idempotent).

    ``con`` must not be inside a transaction: each migration gets its own.
    """
    check_order(migrations)
    done = set(applied(con))
    now_applied = []
    for fn in migrations:
        if fn.__name__ in done:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            fn(con)
            con.execute("INSERT INTO _migrations (name) VALUES (?)", [fn.__name__])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        now_applied.append(fn.__name__)
    return now_applied

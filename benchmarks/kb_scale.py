"""How the brains' KB reads scale: synthetic KBs of 10k, 100k and 1M experiments.

    python benchmarks/kb_scale.py [--sizes 10k,100k,1m] [--repeats 9] [--old-up-to 100k] [--cache DIR]

Builds each KB once (cached in the temp dir; ~40 s for 1M) with the schema before m007,
filled in bulk by SQL: ~20 recipes (a fifth of the experiments are knob experiments with
a features list, 1 in 2,000 an interaction experiment -- each cross is proposed once, so
there are never many -- and some have no recipe), statuses failed / evaluated / merged /
rejected / proposed / running, a verdict per judged experiment and a second, later one
for a tenth of them, pull requests for merged, rejected and some evaluated experiments, a
micro and a full run per finished experiment, lessons. The store's own migrations then
bring it up to date (m007 backfills the read columns, as for a KB that grew before it).

Then times every read the brainstorm, the knob search and the harness evolution (and its
gate, which reads the same trajectories) make, through a `KnowledgeBase` on the file:
per read the first call (a fresh connection) and the median of the next `--repeats`
(a burst of reads shares one warm connection, knowledge/store.py). Rows named "old" are the reads knowledge/reads.py replaces (only
up to `--old-up-to` experiments: seconds each at 1M), "stress" a case the brains cannot
produce (a configuration with thousands of experiments). Prints a table and, last, one
JSON line. Target (the KB-scale issue): every new read under 50 ms median at 1M.

Medians (ms) on the 2-core dev box, idle (load 1.1), duckdb 2.0.1, 2026-11-30:

    read                                     10k    100k      1M
    recipe_outcomes                          3.3     5.8    30.0
    tried_params (1 recipe, 11 keys)         1.3     1.9     2.5
    tried_by_recipe (17 recipes, 187 keys)   3.4     3.9    12.3
    is_tried                                 0.8     0.9     1.8
    tried_params knobs as sets (30 keys)     2.1     2.0     2.2
    finished_count knobs                     1.0     1.7     6.4
    prior_trials (latest 500 knob trials)   10.5    11.1    11.9
    recent_experiments (500)                10.7    11.5    13.4
    recent_experiments (30) + 10 lessons     8.3     8.1    14.2
    trajectory_rows (500)                   20.0    19.6    22.2
    tried_items (21 crosses)                 1.4    24.3    10.0
    brainstorm experiment_count              0.7     0.9     0.8
    harness active_version                   2.1     1.9     2.1
    brainstorm history_table (LLM prompt)    8.5     8.8    13.8
    trajectories.load (evolution step)      23.2    24.1    29.6
    stress tried_params (9 keys x ~4,600)    6.4     7.0    28.1
    old outcomes()                          17.8   186.9       -
    old tried_configurations()              67.4   991.6       -
    old prior_trials (every knob exp.)      15.2   217.5       -

Before the SQL reads, `history_table` took 131 ms and `trajectories.load` 887 ms at 1M.
A first call, which opens the connection, adds 15-40 ms. With another process keeping both
cores busy (load 3-4) every figure about doubles; recipe_outcomes, one scan of every
experiment, is then 45-70 ms at 1M.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import duckdb  # noqa: E402

from agents import interactions, trajectories  # noqa: E402
from agents.applicability import tried_configurations  # noqa: E402
from agents.brainstorm import FAILURE_REWARD, experiment_count, history_table, outcomes  # noqa: E402
from agents.harness_spec import active_version  # noqa: E402
from agents.knob_search import KNOB_RECIPE, prior_trials  # noqa: E402
from knowledge import reads  # noqa: E402
from knowledge.migrations import MIGRATIONS  # noqa: E402
from knowledge.store import KnowledgeBase  # noqa: E402

SIZES = {"10k": 10_000, "100k": 100_000, "1m": 1_000_000}
SCHEMA_VERSION = 4           # bump when the synthetic data changes (a new cache file)
FEATURES = 20                # f00..f19: the knob experiments' features candidates
RECIPES = 18                 # recipe_00..recipe_17, besides knobs and interaction

# One experiment per i in 1..N; h(i, salt) in [0, 100) is its deterministic dice.
EXPERIMENTS_SQL = """
WITH base AS (
    SELECT i,
           'E' || CASE WHEN i < 10000 THEN lpad(i::VARCHAR, 4, '0') ELSE i::VARCHAR END AS id,
           hash(i * 7 + 1) % 100 AS u_recipe, hash(i * 7 + 2) % 100 AS u_status,
           hash(i * 7 + 3) % 18 AS which, hash(i * 7 + 4) % 9 AS grid,
           ((hash(i * 7 + 5) % 10000) / 10000.0)::DOUBLE AS c,
           list_transform(list_filter(range(20), lambda x: hash(i * 31 + x) % 2 = 0),
                          lambda x: '"f' || lpad(x::VARCHAR, 2, '0') || '"') AS feats
    FROM range(1, $n + 1) t(i)),
shaped AS (
    SELECT *,
           CASE WHEN hash(i * 7 + 7) % 2000 = 0 THEN 'interaction'
                WHEN u_recipe < 2 THEN NULL WHEN u_recipe < 22 THEN 'knobs'
                ELSE 'recipe_' || lpad(which::VARCHAR, 2, '0') END AS recipe,
           CASE WHEN u_status < 68 THEN 'evaluated' WHEN u_status < 78 THEN 'failed' WHEN u_status < 86 THEN 'merged'
                WHEN u_status < 93 THEN 'rejected' WHEN u_status < 96 THEN 'proposed' ELSE 'running' END AS status
    FROM base),
params AS (
    SELECT *,
           CASE WHEN recipe = 'knobs' THEN
                     '{"C": ' || c::VARCHAR || ', "feats": ['
                     || array_to_string(CASE WHEN i % 2 = 0 THEN list_reverse(feats) ELSE feats END, ', ')
                     || '], "model": "logreg"}'
                WHEN recipe = 'interaction' THEN
                     '{"feats": [' || array_to_string(feats, ', ') || ', "product(f' || lpad((i % 20)::VARCHAR, 2, '0')
                     || ',f' || lpad(((i + 1) % 20)::VARCHAR, 2, '0') || ')"]}'
                WHEN recipe IS NULL THEN NULL
                WHEN which = 0 THEN '{"value": ' || grid::VARCHAR || '}'
                WHEN which % 3 = 0 THEN '{"a": ' || (grid % 3)::VARCHAR || ', "b": "' || (grid // 3)::VARCHAR
                                        || '", "seed": ' || (hash(i * 7 + 6) % 2000)::VARCHAR || '}'
                ELSE '{"seed": ' || (hash(i * 7 + 6) % 2000)::VARCHAR || ', "value": ' || grid::VARCHAR || '}'
                END AS p
    FROM shaped)
INSERT INTO experiments (id, title, slug, recipe, params, source, status, created_at, updated_at)
SELECT id, 'experiment ' || id, 'x' || i, recipe, p::JSON,
       CASE WHEN recipe IS NULL THEN 'chat' ELSE 'brainstorm' END, status,
       TIMESTAMP '2024-01-01' + i * INTERVAL 1 SECOND, TIMESTAMP '2024-01-01' + i * INTERVAL 1 SECOND
FROM params ORDER BY i
"""

# judged experiments get a verdict; a tenth of them a second, later one (a re-run)
VERDICTS_SQL = """
INSERT INTO verdicts (experiment_id, decision, metric, control, treatment, delta, ci_low, ci_high, n_seeds,
                      valid_delta, tier, rationale)
SELECT id,
       CASE WHEN u < 30 THEN 'ship' WHEN u < 70 THEN 'reject' WHEN u < 92 THEN 'inconclusive' ELSE 'vetoed' END,
       'auc', 0.8, 0.8 + d, d, d - 0.002, d + 0.002, 3,
       CASE WHEN u % 33 = 0 THEN NULL ELSE d END, 'full', 'synthetic'
FROM (SELECT id, hash(i * 11 + $salt) % 100 AS u, ((hash(i * 11 + $salt + 1) % 2001)::DOUBLE - 1000) / 100000 AS d, i
      FROM (SELECT id, CAST(substr(id, 2) AS BIGINT) AS i, status FROM experiments ORDER BY i)
      WHERE status IN ('evaluated', 'merged', 'rejected', 'failed') AND ($salt = 0 OR hash(i * 13) % 10 = 0)
        AND (status <> 'failed' OR hash(i * 17) % 5 = 0))
ORDER BY i
"""

PULL_REQUESTS_SQL = """
INSERT INTO pull_requests (experiment_id, branch, title, state)
SELECT id, 'exp/' || id, title,
       CASE status WHEN 'merged' THEN 'merged' WHEN 'rejected' THEN 'rejected' ELSE 'open' END
FROM experiments
WHERE status IN ('merged', 'rejected') OR (status = 'evaluated' AND hash(CAST(substr(id, 2) AS BIGINT) * 19) % 20 = 0)
"""

# a micro run and a full run per judged experiment (what the evolution's trajectories aggregate)
RUNS_SQL = """
INSERT INTO runs (id, experiment_id, arm, commit_sha, seed, tier, status, wall_s, started_at, finished_at{peak})
SELECT 'R-' || id || '-' || tier, id, 'treatment', 'c0ffee', 0, tier, 'ok', 12.5,
       created_at + INTERVAL 1 MINUTE, created_at + INTERVAL 2 MINUTE{peak_value}
FROM experiments, (VALUES ('micro'), ('full')) t(tier)
WHERE status IN ('evaluated', 'merged', 'rejected', 'failed')
"""

LESSONS_SQL = """
INSERT INTO lessons (experiment_id, recipe_family, outcome, text)
SELECT id, recipe, 'neutral', 'lesson of ' || id FROM experiments
WHERE hash(CAST(substr(id, 2) AS BIGINT) * 23) % 20 = 0
"""

# what the reads replace, kept here for reference: the old prior_trials (every knob experiment)
# and the knob search's taken set (every knob configuration), and the evolution step's plain read
OLD_PRIOR_TRIALS_SQL = """
SELECT e.id, e.status, e.params, v.decision, v.valid_delta, p.state AS pr_state
FROM experiments e
LEFT JOIN verdicts v ON v.experiment_id = e.id
     AND v.id = (SELECT max(w.id) FROM verdicts w WHERE w.experiment_id = e.id)
LEFT JOIN pull_requests p ON p.experiment_id = e.id
WHERE e.recipe = ? AND e.status IN ('failed', 'evaluated', 'merged', 'rejected')
ORDER BY e.id"""
OLD_TRAJECTORIES_SQL = """
SELECT e.id, e.title, e.recipe, e.params, e.status, v.decision, v.delta, v.valid_delta
FROM experiments e LEFT JOIN verdicts v ON v.experiment_id = e.id
ORDER BY e.id DESC LIMIT 500"""


def build(path: Path, n: int) -> float:
    """A KB at `path` with `n` synthetic experiments: the schema before m007 filled in bulk,
    then the store's own migrations bring it up to date (m007 backfills the read columns,
    as it would for a KB that grew before it). Returns the seconds the migration took."""
    tmp = path.with_suffix(".building")
    tmp.unlink(missing_ok=True)
    KnowledgeBase(tmp, migrations=[m for m in MIGRATIONS if m.__name__ < "m007"]).release()
    con = duckdb.connect(str(tmp))
    try:
        con.execute(EXPERIMENTS_SQL, {"n": n})
        if {"arm", "propensity"} <= columns(con, "experiments"):
            con.execute("UPDATE experiments SET arm = recipe, "
                        "propensity = 0.05 + (hash(CAST(substr(id, 2) AS BIGINT) * 7 + 6) % 90) / 100.0")
        con.execute(VERDICTS_SQL, {"salt": 0})
        con.execute(VERDICTS_SQL, {"salt": 1})
        con.execute(PULL_REQUESTS_SQL)
        peak = "peak_rss_mb" in columns(con, "runs")
        con.execute(RUNS_SQL.format(peak=", peak_rss_mb" if peak else "", peak_value=", 300.0" if peak else ""))
        con.execute(LESSONS_SQL)
        con.execute("CHECKPOINT")
    finally:
        con.close()
    t0 = time.perf_counter()
    kb = KnowledgeBase(tmp)
    migrated = time.perf_counter() - t0
    kb.release()
    check_columns(tmp)
    tmp.rename(path)
    return migrated


def columns(con: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    return {c for (c,) in con.execute("SELECT column_name FROM duckdb_columns() WHERE table_name = ?",
                                      [table]).fetchall()}


def check_columns(path: Path, sample: int = 2000) -> None:
    """The migrated read columns agree with Python's keys and the latest verdicts."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        rows = con.execute("SELECT recipe, params, params_key, params_set_key, config_hash, config_set_hash "
                           f"FROM experiments USING SAMPLE {int(sample)} ROWS").fetchall()
        (stale,) = con.execute("""
            SELECT count(*) FROM experiments e
            LEFT JOIN (SELECT experiment_id, max(id) AS id FROM verdicts GROUP BY experiment_id) lv
                   ON lv.experiment_id = e.id
            WHERE e.verdict_id IS DISTINCT FROM lv.id""").fetchone()
    finally:
        con.close()
    for recipe, params, *stored in rows:
        want = reads.key_columns(recipe, None if params is None else json.loads(params))
        if tuple(stored) != tuple(want.values()):
            raise AssertionError(f"m007 keys differ from the store's for {recipe} {params}: {stored} != {want}")
    if stale:
        raise AssertionError(f"{stale} experiments' verdict_id is not their latest verdict")


def kb_for(cache: Path, label: str) -> KnowledgeBase:
    path = cache / f"kb_scale_v{SCHEMA_VERSION}_{label}.duckdb"
    if not path.exists():
        t0 = time.perf_counter()
        migrated = build(path, SIZES[label])
        print(f"built {path} in {time.perf_counter() - t0:.1f} s (m007's backfill: {migrated:.1f} s)", flush=True)
    return KnowledgeBase(path)


def timed(kb: KnowledgeBase, fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(first call, median of the next `repeats` calls), milliseconds. The first call opens a
    connection (the KB's warm one is closed before it); the next ones reuse it, as a burst of
    reads does (knowledge/store.py: an anchor lives up to 1 s, then calls connect one by one
    for 0.3 s -- timing a read across that gap would time connections, not the read)."""
    kb.release()
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return times[0], statistics.median(times[1:])


def grid_keys() -> dict[str, list[str]]:
    """Per recipe the 11 keys a grid would ask about: recipe_00 has a 9-point grid tried over
    and over (the worst case: each point matches thousands of rows at 1M), the others a seed
    as well, so a point is tried about once."""
    keys = {}
    for r in range(RECIPES):
        points = ([{"value": g} for g in range(11)] if r == 0
                  else [{"a": g % 3, "b": str(g // 3), "seed": g} for g in range(11)] if r % 3 == 0
                  else [{"seed": g, "value": g % 9} for g in range(11)])
        keys[f"recipe_{r:02d}"] = [reads.params_key(p) for p in points]
    return keys


def knob_keys(kb: KnowledgeBase) -> list[str]:
    """30 set keys like the knob search's checks of its draws: 15 tried, 15 not."""
    rows = kb.query("SELECT params FROM experiments WHERE recipe = ? ORDER BY created_at DESC LIMIT 15",
                    [KNOB_RECIPE])
    feats = [f"f{x:02d}" for x in range(FEATURES)]
    fresh = [{"C": 1.5 + j, "feats": feats[: 5 + j % 10], "model": "logreg"} for j in range(15)]
    return [reads.set_key(r["params"]) for r in rows] + [reads.set_key(p) for p in fresh]


def reads_of(kb: KnowledgeBase) -> dict[str, Callable[[], object]]:
    """The reads the brainstorm, the knob search and the harness evolution make, by the table's
    names: the brains' reads (most in knowledge/reads.py) and, "stress", a case the brains
    cannot produce (the brainstorm never proposes a tried configuration again, so no
    configuration has thousands of experiments)."""
    grids = grid_keys()
    knobs = knob_keys(kb)
    crosses = [f"product(f{a:02d},f{(a + 1) % 20:02d})" for a in range(20)] + ["product(f00,f05)"]
    realistic = {recipe: keys for recipe, keys in grids.items() if recipe != "recipe_00"}
    return {
        "recipe_outcomes": lambda: reads.recipe_outcomes(kb, -1, FAILURE_REWARD),
        "tried_params (1 recipe, 11 keys)": lambda: reads.tried_params(kb, "recipe_01", grids["recipe_01"]),
        "tried_by_recipe (17 recipes, 187 keys)": lambda: reads.tried_by_recipe(kb, realistic),
        "is_tried": lambda: reads.is_tried(kb, "recipe_02", {"seed": 3, "value": 3}),
        "tried_params knobs as sets (30 keys)": lambda: reads.tried_params(kb, KNOB_RECIPE, knobs, as_sets=True),
        "finished_count knobs": lambda: reads.finished_count(kb, KNOB_RECIPE),
        "prior_trials (latest 500 knob trials)": lambda: prior_trials(kb, -1),
        "recent_experiments (500)": lambda: reads.recent_experiments(kb, 500),
        "recent_experiments (30) + 10 lessons": lambda: (reads.recent_experiments(kb, 30),
                                                         kb.query("SELECT text FROM lessons ORDER BY id DESC LIMIT 10")),
        "trajectory_rows (500)": lambda: reads.trajectory_rows(kb, trajectories.WINDOW),
        "tried_items (21 crosses)": lambda: reads.tried_items(kb, interactions.INTERACTION_RECIPE, "feats", crosses),
        "brainstorm experiment_count": lambda: experiment_count(kb),
        "harness active_version": lambda: active_version(kb),
        "brainstorm history_table (LLM prompt)": lambda: history_table(kb),
        "trajectories.load (evolution step)": lambda: trajectories.load(kb, -1),
        "stress tried_params (9 keys x ~4,600 rows)": lambda: reads.tried_params(kb, "recipe_00", grids["recipe_00"]),
    }


def old_reads_of(kb: KnowledgeBase) -> dict[str, Callable[[], object]]:
    return {
        "old outcomes()": lambda: outcomes(kb, -1),
        "old tried_configurations()": lambda: tried_configurations(kb),
        "old prior_trials (every knob exp.)": lambda: kb.query(OLD_PRIOR_TRIALS_SQL, [KNOB_RECIPE]),
        "old all knob params": lambda: kb.query("SELECT params FROM experiments WHERE recipe = ?", [KNOB_RECIPE]),
        "old trajectories (ORDER BY id)": lambda: kb.query(OLD_TRAJECTORIES_SQL),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10k,100k,1m", help="comma-separated: 10k, 100k, 1m")
    parser.add_argument("--repeats", type=int, default=9, help="timed calls per read (median)")
    parser.add_argument("--old-up-to", default="100k", help="time the replaced reads up to this size (0: never)")
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "agentx-kb-scale"),
                        help="where the synthetic KBs are kept between runs")
    args = parser.parse_args()
    labels = [s.strip().lower() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in labels if s not in SIZES]
    if unknown:
        parser.error(f"unknown size {', '.join(unknown)}; choose from {', '.join(SIZES)}")
    old_limit = SIZES.get(args.old_up_to.lower(), 0)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)

    results: dict[str, dict[str, float]] = {}
    firsts: dict[str, dict[str, float]] = {}
    started = time.perf_counter()
    for label in labels:
        kb = kb_for(cache, label)
        suite = reads_of(kb)
        if SIZES[label] <= old_limit:
            suite.update(old_reads_of(kb))
        results[label], firsts[label] = {}, {}
        for name, fn in suite.items():
            try:
                first, median = timed(kb, fn, args.repeats if not name.startswith("old") else max(3, args.repeats // 3))
            except Exception as exc:          # a read of another module that this schema does not fit
                print(f"  {label:>5} {name:<44} failed: {type(exc).__name__}: {exc}".splitlines()[0], flush=True)
                continue
            results[label][name], firsts[label][name] = round(median, 2), round(first, 2)
            print(f"  {label:>5} {name:<44} median {median:9.2f} ms   first {first:9.2f} ms", flush=True)
        kb.release()

    names = list(dict.fromkeys(name for per in results.values() for name in per))
    width = max(len(n) for n in names)
    print()
    print(f"{'read (median ms)':<{width}} " + " ".join(f"{label:>10}" for label in labels))
    for name in names:
        print(f"{name:<{width}} " + " ".join(f"{results[label][name]:>10.2f}" if name in results[label]
                                             else f"{'-':>10}" for label in labels))
    new = [n for n in names if not n.startswith(("old", "stress"))]
    worst = {label: max((results[label][n], n) for n in new if n in results[label]) for label in labels}
    print("\nslowest new read per size: " + "; ".join(f"{label} {ms:.1f} ms ({name})"
                                                     for label, (ms, name) in worst.items())
          + f"; target < 50 ms at 1m; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
          f"total {time.perf_counter() - started:.0f} s")
    worst = {label: ms for label, (ms, _) in worst.items()}
    print(json.dumps({"median_ms": results, "first_call_ms": firsts, "slowest_new_ms": worst}))


if __name__ == "__main__":
    main()

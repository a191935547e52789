"""The brains' reads of the KB, aggregated in SQL so that they stay fast as the KB grows.

The brainstorm, the knob search and the harness evolution read the history on every
proposal. Reading every experiment into Python made those reads grow with the KB
(`benchmarks/kb_scale.py`: seconds at 1M experiments); the functions here return only what
the caller needs -- one row per recipe, the keys asked about, a bounded window of the
latest experiments -- and each is a few milliseconds to a few tens at 1M experiments
(figures in the benchmark's docstring).

What makes that possible is a few columns of ``experiments`` the store keeps (migration
m007, `KnowledgeBase.add_experiment` / `add_verdict` / `upsert_pull_request`):

- ``params_key``: the params' identity, ``json.dumps(params, sort_keys=True)`` of the params
  as the KB returns them (empty or NULL params count as ``{}``); ``params_set_key``: the
  same with every top-level list of strings sorted (a features list is a set: the knob
  search never proposes the same features in another order);
- ``config_hash`` / ``config_set_hash``: a 64-bit hash of recipe and key, indexed, so "was
  this tried?" looks up the keys asked about instead of scanning (a match is confirmed on
  the key text, so a hash collision cannot report an untried configuration as tried);
- ``verdict_id``, ``verdict_decision``, ``verdict_valid_delta``: the experiment's latest
  verdict (the largest verdict id), and ``pr_state``: its pull request's state. Joining
  1M experiments to 1M verdicts costs ~150-350 ms on a 2-core machine; one scan of
  ``experiments`` ~20 ms.

Changing `params_key`, `set_key` or `config_hash` needs a migration that recomputes the
columns. Every function takes anything with the store's ``query(sql, params) -> list[dict]``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

FINISHED = ("failed", "evaluated", "merged", "rejected")
_FINISHED_SQL = "('failed', 'evaluated', 'merged', 'rejected')"
TRAJECTORY_LIMIT = 500       # what the evolution step reflects on: the latest experiments
# "The latest" is by creation time, ties by allocation order (length, then text: as text alone
# E9999 > E10000, so ordering by id would stop at E9999). A top-N over whole rows costs ~10 ms
# per 100k rows, so the windows first find a creation time from which enough rows were
# created (`_since`: counts over a span back from the latest, each reading only the row
# groups in the span, as rows are stored in creation order), then read the rows from there.
RECENT_FIRST = "created_at DESC, length(id) DESC, id DESC"


def _since(kb, where: str, params: list, limit: int) -> dt.datetime | None:
    """A creation time from which at least `limit` experiments matching `where` (SQL over
    ``experiments``, `params` its parameters) were created; None when no span short of all
    of them holds that many (read them all)."""
    span = kb.query("SELECT min(created_at) AS lo, max(created_at) AS hi, count(*) AS n FROM experiments")[0]
    if not span["n"] or span["n"] <= limit:
        return None
    lo, hi = span["lo"], span["hi"]
    # the span `limit` rows take at the average rate, twice over; widened 8-fold until it holds them
    width = max((hi - lo) * (2 * limit / span["n"]), dt.timedelta(seconds=1))
    while hi - width > lo:
        n = kb.query(f"SELECT count(*) AS n FROM experiments WHERE created_at >= ? AND ({where})",
                     [hi - width, *params])[0]["n"]
        if n >= limit:
            return hi - width
        width *= 8
    return None


def _window(since: dt.datetime | None) -> tuple[str, list]:
    """SQL condition and parameters: created at or after `since` (true when None)."""
    return ("created_at >= ?", [since]) if since is not None else ("true", [])


# -- identities ------------------------------------------------------------------------------

def params_key(params: Any) -> str:
    """A parameter dict's identity in the KB: canonical JSON of the value the KB returns."""
    return json.dumps(_stored(params), sort_keys=True)


def set_key(params: Any) -> str:
    """`params_key` with every top-level list of strings sorted (lists that are sets)."""
    return _set_key(_stored(params))


def config_hash(recipe: str | None, key: str) -> int | None:
    """The indexed 64-bit identity of (recipe, key) (None without a recipe)."""
    if recipe is None:
        return None
    digest = hashlib.blake2b(f"{recipe}\x1f{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def key_columns(recipe: str | None, params: Any, *, stored: bool = False) -> dict[str, Any]:
    """The identity columns the store writes next to an experiment's recipe and params
    (``stored``: `params` was just read from the KB's JSON, so is already in its form)."""
    value = (params or {}) if stored else _stored(params)
    key, sets = json.dumps(value, sort_keys=True), _set_key(value)
    return {"params_key": key, "params_set_key": sets,
            "config_hash": config_hash(recipe, key), "config_set_hash": config_hash(recipe, sets)}


def _stored(params: Any) -> Any:
    """`params` as the brains read it back from the KB's JSON column (tuples as lists, keys as
    strings), an empty value (None, SQL NULL, [], "") as {}."""
    return (json.loads(json.dumps(params)) if params is not None else None) or {}


def _set_key(value: Any) -> str:
    if isinstance(value, dict):
        value = {name: sorted(item) if isinstance(item, list) and all(isinstance(x, str) for x in item) else item
                 for name, item in value.items()}
    return json.dumps(value, sort_keys=True)


# -- outcomes --------------------------------------------------------------------------------

@dataclass(frozen=True)
class ArmOutcome:
    """The finished experiments of one recipe: how many, and the sum of their rewards."""

    n: int
    total: float

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else 0.0


# the brainstorm's reward of a finished experiment before its pull request: a crash, a veto or
# no validation effect is a small loss, else the signed effect (a rejected PR caps it at that loss)
_RAW = """
    CASE WHEN status = 'failed' OR verdict_decision = 'vetoed' OR verdict_valid_delta IS NULL THEN $failure
         ELSE $sign * verdict_valid_delta END"""


def recipe_outcomes(kb, sign: int, failure_reward: float) -> dict[str, ArmOutcome]:
    """Per recipe, its finished experiments (failed, evaluated, merged, rejected) and the sum
    of their rewards, each judged by its latest verdict: `failure_reward` for a failure, a
    veto or no validation effect; at most `failure_reward` when its pull request was
    rejected; else `sign` times the validation effect. Experiments without a recipe are left
    out. One scan of ``experiments``; a row per recipe comes back."""
    rows = kb.query(f"""
        SELECT recipe, count(*) AS n,
               sum(CASE WHEN pr_state = 'rejected' THEN least({_RAW}, $failure) ELSE {_RAW} END) AS total
        FROM experiments
        WHERE recipe IS NOT NULL AND status IN {_FINISHED_SQL}
        GROUP BY recipe""", {"sign": float(sign), "failure": float(failure_reward)})
    return {r["recipe"]: ArmOutcome(int(r["n"]), float(r["total"])) for r in rows}


# -- what was tried --------------------------------------------------------------------------

def tried_params(kb, recipe: str, keys: Iterable[str], *, as_sets: bool = False) -> set[str]:
    """Which of `keys` (each a `params_key`, or with ``as_sets`` a `set_key`) an experiment
    of `recipe` has, finished or not. Looks up only the keys asked about."""
    return tried_by_recipe(kb, {recipe: keys}, as_sets=as_sets)[recipe]


def tried_by_recipe(kb, wanted: Mapping[str, Iterable[str]], *, as_sets: bool = False) -> dict[str, set[str]]:
    """`tried_params` of many recipes in one query: recipe -> those of its keys that were
    tried (every recipe of `wanted` is in the answer)."""
    pairs = {(recipe, key) for recipe, keys in wanted.items() for key in keys}
    found: dict[str, set[str]] = {recipe: set() for recipe in wanted}
    if not pairs:
        return found
    key, hashed = ("params_set_key", "config_set_hash") if as_sets else ("params_key", "config_hash")
    hashes = sorted({config_hash(recipe, k) for recipe, k in pairs})
    # constants, not a join: DuckDB answers an IN list of constants from the index, reading only
    # the rows with those hashes; their key text confirms each (a hash collision is no match)
    rows = kb.query(f"SELECT DISTINCT recipe, {key} AS k FROM experiments "
                    f"WHERE {hashed} IN ({', '.join('?' * len(hashes))})", hashes)
    for row in rows:
        if (row["recipe"], row["k"]) in pairs:
            found[row["recipe"]].add(row["k"])
    return found


def is_tried(kb, recipe: str, params: Mapping[str, Any] | None) -> bool:
    """Whether an experiment of `recipe` with exactly these params is in the KB."""
    key = params_key(params)
    return key in tried_params(kb, recipe, [key])


def tried_items(kb, recipe: str, name: str, items: Iterable[str]) -> set[str]:
    """Which of `items` are in the list param `name` of some experiment of `recipe` (e.g.
    which derived features an interaction experiment already added to the features knob).
    Reads the params of that recipe's experiments, in SQL: meant for a recipe with few
    experiments (an interaction is proposed once per cross, so there are never many)."""
    items = list(dict.fromkeys(items))
    if not items:
        return set()
    pointer = "/" + name.replace("~", "~0").replace("/", "~1")      # a JSON pointer to the key
    rows = kb.query("""
        SELECT DISTINCT unnest(list_intersect(TRY_CAST(json_extract(params, ?) AS VARCHAR[]), ?::VARCHAR[])) AS item
        FROM experiments WHERE recipe = ?""", [pointer, items, recipe])
    return {r["item"] for r in rows if r["item"] is not None}


# -- bounded windows -------------------------------------------------------------------------

@dataclass(frozen=True)
class Trial:
    """A finished experiment and its latest verdict (none: decision and effect None)."""

    experiment_id: str
    status: str
    params: dict[str, Any]
    decision: str | None
    valid_delta: float | None
    pr_state: str | None


def recent_trials(kb, recipe: str, limit: int = TRAJECTORY_LIMIT) -> list[Trial]:
    """The latest `limit` finished experiments of `recipe`, oldest first, each judged by its
    latest verdict and carrying its pull request's state."""
    if limit <= 0:
        return []
    where = f"recipe = ? AND status IN {_FINISHED_SQL}"
    recent, since = _window(_since(kb, where, [recipe], limit))
    rows = kb.query(f"""
        SELECT * FROM (
            SELECT id, status, params, verdict_decision, verdict_valid_delta, pr_state, created_at
            FROM experiments WHERE {where} AND {recent}
            ORDER BY {RECENT_FIRST} LIMIT ?)
        ORDER BY created_at, length(id), id""", [recipe, *since, limit])
    return [Trial(r["id"], r["status"], r["params"] or {}, r["verdict_decision"], r["verdict_valid_delta"],
                  r["pr_state"]) for r in rows]


def finished_count(kb, recipe: str) -> int:
    """How many finished experiments `recipe` has (the whole history, not a window)."""
    return int(kb.query(f"SELECT count(*) AS n FROM experiments WHERE recipe = ? AND status IN {_FINISHED_SQL}",
                        [recipe])[0]["n"])


@dataclass(frozen=True)
class RecentExperiment:
    """One of the latest experiments, as the LLM brainstorm's history table shows it: what was
    proposed (and, when the heuristic brainstorm chose it, from which arm and with what
    probability), what happened, and its latest verdict. (The evolution's richer record is
    agents/trajectories.Trajectory, read by `trajectory_rows`.)"""

    experiment_id: str
    title: str | None
    recipe: str | None
    params: dict[str, Any]
    source: str | None
    status: str
    arm: str | None
    propensity: float | None
    decision: str | None
    delta: float | None
    ci_low: float | None
    ci_high: float | None
    valid_delta: float | None
    pr_state: str | None


def recent_experiments(kb, limit: int = TRAJECTORY_LIMIT) -> list[RecentExperiment]:
    """The latest `limit` experiments (any status), newest first, each with its latest verdict
    and its pull request's state. Reads `limit` rows whatever the KB's size (the verdicts
    are looked up by id)."""
    if limit <= 0:
        return []
    has_arm = "arm" in kb.columns("experiments") if hasattr(kb, "columns") else True   # m006
    arm = "arm, propensity" if has_arm else "NULL AS arm, NULL AS propensity"
    recent, since = _window(_since(kb, "true", [], limit))
    rows = kb.query(f"""
        SELECT e.*, v.decision, v.delta, v.ci_low, v.ci_high, v.valid_delta
        FROM (SELECT id, title, recipe, params, source, status, {arm}, pr_state, verdict_id, created_at
              FROM experiments WHERE {recent}
              ORDER BY {RECENT_FIRST} LIMIT ?) e
        LEFT JOIN verdicts v ON v.id = e.verdict_id
        ORDER BY e.created_at DESC, length(e.id) DESC, e.id DESC""", [*since, limit])
    return [RecentExperiment(r["id"], r["title"], r["recipe"], r["params"] or {}, r["source"], r["status"], r["arm"],
                       r["propensity"], r["decision"], r["delta"], r["ci_low"], r["ci_high"], r["valid_delta"],
                       r["pr_state"]) for r in rows]


# The harness evolution's trajectories (agents/trajectories.py's SQL, same columns and rows):
# the window is found first, then each table is read only from the window's first creation
# time on (an experiment's runs, lessons and pull request are written after it; its verdict
# is found by id), so the read costs about the same at 1M experiments as at 1k.
TRAJECTORY_SQL = """
    WITH e AS MATERIALIZED (
        SELECT * FROM experiments WHERE created_at >= $since
        ORDER BY created_at DESC, length(id) DESC, id DESC LIMIT $window),
    since AS MATERIALIZED (SELECT min(created_at) AS t FROM e)
    SELECT e.id, e.title, e.recipe, e.params, e.source, e.status, e.arm, e.propensity, e.decision_context,
           e.harness_version, e.branch, e.base_commit, e.head_commit, e.proposal,
           v.decision, v.delta, v.ci_low, v.ci_high, v.valid_delta, v.n_seeds, v.per_seed, v.guardrails,
           l.failure_kind, l.recipe_family,
           p.state AS pr_state, p.review_reason,
           r.micro_ok_s, r.micro_ok_mb, r.micro_status, r.full_runs
    FROM e
    LEFT JOIN verdicts v ON v.id = e.verdict_id
    LEFT JOIN (SELECT * FROM lessons
               WHERE created_at >= (SELECT t FROM since) AND experiment_id IN (SELECT id FROM e)
               QUALIFY row_number() OVER (PARTITION BY experiment_id ORDER BY id DESC) = 1) l
           ON l.experiment_id = e.id
    LEFT JOIN (SELECT * FROM pull_requests
               WHERE created_at >= (SELECT t FROM since) AND experiment_id IN (SELECT id FROM e)) p
           ON p.experiment_id = e.id
    LEFT JOIN (SELECT experiment_id,
                      list(exec_s ORDER BY started_at) FILTER (WHERE tier = 'micro' AND status = 'ok') AS micro_ok_s,
                      list({peak} ORDER BY started_at) FILTER (WHERE tier = 'micro' AND status = 'ok')
                          AS micro_ok_mb,
                      list(status ORDER BY started_at) FILTER (WHERE tier = 'micro') AS micro_status,
                      count(*) FILTER (WHERE tier <> 'micro') AS full_runs
               FROM runs
               WHERE started_at >= (SELECT t FROM since) AND experiment_id IN (SELECT id FROM e)
               GROUP BY experiment_id) r
           ON r.experiment_id = e.id
    WHERE e.status IN ('failed', 'evaluated', 'merged', 'rejected')
    ORDER BY e.created_at, length(e.id), e.id"""


def trajectory_rows(kb, window: int = TRAJECTORY_LIMIT) -> list[dict[str, Any]]:
    """The finished experiments among the `window` latest, oldest first, as rows of
    agents/trajectories.py's SQL (a drop-in for ``kb.query(SQL, [window])`` there)."""
    if window <= 0:
        return []
    peak = "peak_rss_mb" if "peak_rss_mb" in kb.columns("runs") else "NULL::DOUBLE"   # m006
    since = _since(kb, "true", [], window) or dt.datetime.min
    return kb.query(TRAJECTORY_SQL.format(peak=peak), {"window": window, "since": since})


__all__ = [
    "FINISHED",
    "RECENT_FIRST",
    "TRAJECTORY_LIMIT",
    "ArmOutcome",
    "RecentExperiment",
    "Trial",
    "config_hash",
    "finished_count",
    "is_tried",
    "key_columns",
    "params_key",
    "recent_experiments",
    "recent_trials",
    "recipe_outcomes",
    "set_key",
    "trajectory_rows",
    "tried_by_recipe",
    "tried_items",
    "tried_params",
]

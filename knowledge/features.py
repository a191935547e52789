"""The feature catalog and its statistics in the knowledge base (tables `features`, `feature_stats`).

Statistics are expensive (a LightGBM fit, permutations, every pairwise association) and
depend only on the data and the catalog, so they are computed once per *version*: a key
naming the prepared splits, the catalog's content and the statistics' definition
(`tools.feature_stats.STATS_VERSION`). Every row's `detail` JSON carries that key; a
selection finds its rows by it, and a new version simply adds rows beside the old ones (the
history of what the data looked like stays queryable).

Takes a `KnowledgeBase` and uses only its public methods, so the store keeps one writer path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def save_catalog(kb, entries: Iterable[Mapping[str, Any]]) -> int:
    """Upsert catalog entries (name, definition, group, type, serving_cost, leaky) in one transaction."""
    entries = list(entries)
    with kb.session() as s:
        for e in entries:
            s.upsert_feature(name=e["name"], definition=e["definition"], grp=e["group"], type=e["type"],
                             serving_cost=e["serving_cost"], leaky=bool(e["leaky"]))
    return len(entries)


def save_stats(kb, version: str, rows: Iterable[Mapping[str, Any]]) -> int:
    """Store statistics rows under `version` (replacing rows of the same version)."""
    rows = [dict(r) for r in rows]
    for r in rows:
        if (r.get("detail") or {}).get("version") != version:
            raise ValueError(f"feature_stats row {r.get('name')}/{r.get('stat')} is not of version {version!r}")
    with kb.session() as s:
        s.query("DELETE FROM feature_stats WHERE detail->>'version' = ?", [version])
        s.add_feature_stats(rows)
    return len(rows)


def load_stats(kb, version: str) -> list[dict[str, Any]]:
    """The rows stored under `version` (empty when it was never computed)."""
    return kb.query("SELECT name, stat, value, detail, computed_at FROM feature_stats "
                    "WHERE detail->>'version' = ? ORDER BY name, stat", [version])


def versions(kb) -> list[dict[str, Any]]:
    """Every statistics version computed in this KB, newest first, with when and how long it took."""
    return kb.query("SELECT detail->>'version' AS version, value AS model_auc, computed_at, "
                    "CAST(detail->>'seconds' AS DOUBLE) AS seconds FROM feature_stats "
                    "WHERE stat = 'stats_run' ORDER BY computed_at DESC")

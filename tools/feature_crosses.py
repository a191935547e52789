"""Interaction discovery: which pairs of features are worth more together than apart.

MoFA's value-model case: the agent proposes high-order terms, not only subsets. Here a
candidate cross of features a and b is scored by fitting two small LightGBM models on the
pair alone (train, early-stopped on validation): an *additive* one whose trees may each
use only one of the two features (`interaction_constraints`), and a *joint* one with no
such limit. The cross's gain is the validation logloss of the additive model minus that of
the joint model: what the pair explains only through its interaction. Pairs are taken
among the strongest non-leaky features (by validation permutation drop, which credits a
feature that acts only through an interaction), every pair among the top 12: a planted
cross between the 7th and 8th strongest was missed when only the top 6 were paired. A
positive cross of two numeric features becomes the derived entry `product(a,b)`, which the
harness computes for a run whose features knob lists it (tools/derived.py,
agents/interactions.py); agentx never edits the protected catalog itself.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import combinations

import numpy as np

import pandas as pd

from tools.feature_catalog import CatalogFeature
from tools.scoring import auc, logloss
from tools.feature_stats import (MAX_ROWS, Column, StatsTable, encode, fit_lgbm, labels, sample_rows,
                                 stats_from_columns)

TOP_FEATURES = 12      # crosses are sought among this many strongest features (66 pairs)
KEEP = 5               # crosses reported
CROSS_ROWS = 30_000    # train rows the pair models use (a fixed sample above this): 2 fits per pair


@dataclass(frozen=True)
class Cross:
    parts: tuple[str, str]
    gain: float             # valid logloss(additive) - logloss(joint); > 0 means the cross adds
    auc_additive: float
    auc_joint: float
    entry: dict             # the catalog entry it would become

    @property
    def name(self) -> str:
        return f"{self.parts[0]}_x_{self.parts[1]}"


def analyse(train: pd.DataFrame, valid: pd.DataFrame, catalog: list[CatalogFeature], label: str, *,
            version: str, seed: int = 0, max_rows: int = MAX_ROWS, crosses: bool = True
            ) -> tuple[StatsTable, list[Cross]]:
    """Statistics for every catalog feature and the best crosses, from train and validation."""
    train = sample_rows(train, max_rows, seed)
    columns = encode(train, valid, catalog)
    y_train, y_valid = labels(train, label), labels(valid, label)
    table = stats_from_columns(columns, y_train, y_valid, version=version, seed=seed)
    found = discover_crosses(columns, y_train, y_valid, table, seed=seed) if crosses else []
    return table, found


def candidate_parts(stats: StatsTable, top: int = TOP_FEATURES) -> list[str]:
    """The `top` features with the largest permutation drops, skipping near-copies of one already
    taken (a copy's crosses repeat its original's). A near-copy has association >= 0.9 *and* a
    similar number of values (within a factor of 2): an id determines its own attributes
    (Cramér's V near 1) without being a copy of them, and id x attribute crosses are worth trying."""
    modelled = [s for s in stats.stats.values() if s.permutation is not None]

    def copy_of(a, b) -> bool:
        ratio = max(a.cardinality, b.cardinality) / max(1, min(a.cardinality, b.cardinality))
        return stats.assoc(a.name, b.name) >= 0.9 and ratio <= 2

    parts: list = []
    for s in sorted(modelled, key=lambda s: (-(s.permutation or 0.0), s.name)):
        if len(parts) < top and not any(copy_of(s, p) for p in parts):
            parts.append(s)
    return [s.name for s in parts]


def score_pair(a: Column, b: Column, y_train: np.ndarray, y_valid: np.ndarray, seed: int) -> tuple[float, float, float]:
    """(gain, additive AUC, joint AUC) on validation for the pair (a, b)."""
    x_valid = np.column_stack([a.valid, b.valid])
    fits = {}
    for kind, constraint in (("additive", [[0], [1]]), ("joint", None)):
        booster = fit_lgbm([a, b], y_train, y_valid, seed=seed, rounds=150, learning_rate=0.15,
                           num_leaves=15, interaction_constraints=constraint)
        p = booster.predict(x_valid)
        fits[kind] = (logloss(y_valid, p), auc(y_valid, p))
    return fits["additive"][0] - fits["joint"][0], fits["additive"][1], fits["joint"][1]


def discover_crosses(columns: dict[str, Column], y_train: np.ndarray, y_valid: np.ndarray, stats: StatsTable,
                     *, seed: int = 0, top: int = TOP_FEATURES, keep: int = KEEP) -> list[Cross]:
    """The best `keep` pairs among the `top` strongest features, by gain, positive gains only."""
    if len(y_train) > CROSS_ROWS:
        rows = np.sort(np.random.default_rng(seed).choice(len(y_train), CROSS_ROWS, replace=False))
        columns = {n: replace(c, train=c.train[rows], bins=c.bins[rows]) for n, c in columns.items()}
        y_train = y_train[rows]
    found = []
    for a, b in combinations(candidate_parts(stats, top), 2):
        gain, auc_add, auc_joint = score_pair(columns[a], columns[b], y_train, y_valid, seed)
        if gain > 0:
            found.append(Cross((a, b), gain, auc_add, auc_joint, _entry(columns[a], columns[b], gain)))
    return sorted(found, key=lambda c: -c.gain)[:keep]


def _entry(a: Column, b: Column, gain: float) -> dict:
    fa, fb = a.feature, b.feature
    binned = [f.name for f in (fa, fb) if f.type == "numeric"]
    note = f" ({', '.join(binned)} in quantile buckets)" if binned else ""
    return {"name": f"{fa.name}_x_{fb.name}",
            "definition": f"cross of {fa.name} and {fb.name}: their joint value as one categorical{note}; "
                          f"found by agentx interaction discovery (valid logloss {gain:+.4f} over the "
                          f"additive pair)",
            "group": "interaction", "type": "categorical",
            "serving_cost": round(fa.serving_cost + fb.serving_cost, 4), "leaky": fa.leaky or fb.leaky}


def cross_rows(crosses: list[Cross], version: str) -> list[dict]:
    return [{"name": c.name, "stat": "cross_gain", "value": c.gain,
             "detail": {"version": version, "parts": list(c.parts), "auc_additive": c.auc_additive,
                        "auc_joint": c.auc_joint, "entry": c.entry}} for c in crosses]


def crosses_from_rows(rows: list[dict]) -> list[Cross]:
    found = [Cross(tuple(r["detail"]["parts"]), r["value"], r["detail"]["auc_additive"], r["detail"]["auc_joint"],
                   r["detail"]["entry"]) for r in rows if r["stat"] == "cross_gain"]
    return sorted(found, key=lambda c: -c.gain)

"""Per-user ranking metrics for recommenders: ndcg@K, recall@K and mrr.

A recommender's team measures how well each user's rows are ranked, not only how well all
rows are separated. Each metric ranks the rows of one user by score (highest first),
computes a value for that user from the binary labels, and averages over the users who
have at least one positive row (for the others the metric is undefined: they are left out,
and say so by their weight 0):

- ``ndcg@K``: DCG of the top K (gain 1 / log2(rank + 1) for each positive) over the DCG of
  the ideal order (all positives first);
- ``recall@K``: positives in the top K over the user's positives;
- ``mrr``: 1 / rank of the user's first positive.

Ties are broken against the model: among rows with the same score, negatives rank first,
so a model cannot gain by giving many rows one score. Scores only matter within a user.

Everything the statistics need is per user: a user's value and its weight (1 when it
counts, 0 otherwise). Under bootstrap counts ``c`` (replicates x users) the metric is
``(c @ (weight * value)) / (c @ weight)``: linear, like logloss, so paired deltas and
rollout draws are matrix products (tools/stats.py, tools/rollout.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

PATTERN = re.compile(r"^(?:(ndcg|recall)@([1-9][0-9]{0,3})|mrr)$")


def is_ranking(metric: str) -> bool:
    """Whether `metric` is one of the per-user ranking metrics (ndcg@K, recall@K, mrr)."""
    return bool(PATTERN.match(metric))


@dataclass(frozen=True)
class PerUser:
    """One run's metric per user: `value[u]` counts only where `weight[u]` is 1."""

    value: np.ndarray
    weight: np.ndarray

    def mean(self, counts: np.ndarray | None = None) -> float:
        c = np.ones(len(self.value)) if counts is None else np.asarray(counts, dtype=float)
        return float(self.mean_many(c[None, :])[0])

    def mean_many(self, counts: np.ndarray) -> np.ndarray:
        """The metric under each row of user counts (replicates x users); NaN where no user counts."""
        total = counts @ self.weight
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, (counts @ (self.weight * self.value)) / total, np.nan)


def per_user(metric: str, labels: np.ndarray, scores: np.ndarray, user_index: np.ndarray,
             n_users: int | None = None) -> PerUser:
    """`metric` for each user; `user_index` maps every row to 0..n_users-1."""
    match = PATTERN.match(metric)
    if match is None:
        raise ValueError(f"not a ranking metric: {metric!r} (ndcg@K, recall@K or mrr)")
    kind, k = match.group(1) or "mrr", int(match.group(2) or 0)
    labels = np.asarray(labels, dtype=float) > 0.5
    scores = np.asarray(scores, dtype=float)
    user_index = np.asarray(user_index)
    n_users = int(user_index.max()) + 1 if n_users is None else n_users
    # rows ordered by user, then score descending, then negatives before positives (ties against the model)
    order = np.lexsort((labels, -scores, user_index))
    users, positive = user_index[order], labels[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else np.empty(0, int)
    sizes = np.diff(np.r_[starts, len(users)])
    rank = np.arange(len(users)) - np.repeat(starts, sizes) + 1          # 1-based rank within the user
    positives = np.bincount(user_index, weights=labels.astype(float), minlength=n_users)
    weight = (positives > 0).astype(float)
    if kind == "mrr":
        first = np.full(n_users, np.inf)
        np.minimum.at(first, users[positive], rank[positive])
        value = np.where(np.isfinite(first), 1.0 / first, 0.0)
    elif kind == "recall":
        hits = np.bincount(users, weights=(positive & (rank <= k)).astype(float), minlength=n_users)
        with np.errstate(invalid="ignore", divide="ignore"):
            value = np.where(positives > 0, hits / positives, 0.0)
    else:
        discount = 1.0 / np.log2(np.arange(1, k + 1) + 1.0)
        gains = np.where(positive & (rank <= k), discount[np.minimum(rank, k) - 1], 0.0)
        dcg = np.bincount(users, weights=gains, minlength=n_users)
        ideal_cum = np.r_[0.0, np.cumsum(discount)]
        idcg = ideal_cum[np.minimum(positives, k).astype(int)]
        with np.errstate(invalid="ignore", divide="ignore"):
            value = np.where(idcg > 0, dcg / idcg, 0.0)
    return PerUser(value, weight)


def ranking_metric(metric: str, labels: np.ndarray, scores: np.ndarray, users: np.ndarray) -> float:
    """The mean over users with a positive row of `metric` (NaN when no user has one)."""
    _, user_index = np.unique(np.asarray(users), return_inverse=True)
    return per_user(metric, labels, scores, user_index).mean()


def row_shares(table: PerUser, user_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's share of its user's weighted value and weight (both / the user's row count):
    summed over a user's rows with a weight that is the same for all of them, they give the
    user's term, so row-weighted code (the rollout's groups) can use per-user metrics."""
    rows = np.bincount(user_index, minlength=len(table.value)).astype(float)
    share = 1.0 / rows[user_index]
    return (table.weight * table.value)[user_index] * share, table.weight[user_index] * share

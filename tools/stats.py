"""Statistics for control vs treatment: paired seeds plus a user-level bootstrap.

The effect of a treatment is the mean over seeds of (treatment metric - control metric),
both arms trained with the same seeds and scored on the same test rows. Its 95 % interval
comes from a two-level bootstrap: each replicate resamples seeds (paired: a seed's control
and treatment stay together) and test users (all rows of a drawn user, in both arms), so
the interval reflects both training noise and which users happened to be in the slice.

Scores are sorted once per run; a replicate only changes row weights, so each metric
evaluation is a weighted cumulative sum, O(rows).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class SortedScores:
    """One run's test scores, pre-sorted so that weighted AUC is O(rows) per replicate."""

    def __init__(self, scores: np.ndarray, labels: np.ndarray):
        order = np.argsort(scores, kind="mergesort")
        _, self.group = np.unique(scores[order], return_inverse=True)
        self.order = order
        self.labels = np.asarray(labels, dtype=float)[order]
        self.n_groups = int(self.group.max()) + 1 if len(order) else 0

    def auc(self, weights: np.ndarray | None = None) -> float:
        w = np.ones(len(self.order)) if weights is None else np.asarray(weights, dtype=float)[self.order]
        pos = np.bincount(self.group, weights=w * self.labels, minlength=self.n_groups)
        neg = np.bincount(self.group, weights=w * (1 - self.labels), minlength=self.n_groups)
        total_pos, total_neg = pos.sum(), neg.sum()
        if total_pos == 0 or total_neg == 0:
            return float("nan")
        below = np.cumsum(neg) - neg
        return float((pos * (below + 0.5 * neg)).sum() / (total_pos * total_neg))


def weighted_logloss(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> float:
    p = np.clip(scores, 1e-7, 1 - 1e-7)
    losses = -(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    return float(np.average(losses, weights=weights))


@dataclass(frozen=True)
class Effect:
    """A paired effect estimate: per-seed deltas, their mean, and a bootstrap interval."""

    control: float            # mean over seeds
    treatment: float
    per_seed: list[float]     # treatment - control, seed by seed
    ci_low: float
    ci_high: float
    n_seeds: int
    n_users: int
    replicates: int

    @property
    def delta(self) -> float:
        return float(np.mean(self.per_seed))


def paired_effect(control: list[np.ndarray], treatment: list[np.ndarray], labels: np.ndarray,
                  users: np.ndarray, *, metric: str = "auc", replicates: int = 1000,
                  level: float = 0.95, seed: int = 0) -> Effect:
    """control[i] and treatment[i] are seed i's test scores, aligned with labels and users."""
    if len(control) != len(treatment) or not control:
        raise ValueError("need the same seeds, at least one, in both arms")
    labels = np.asarray(labels, dtype=float)
    _, user_index = np.unique(users, return_inverse=True)
    n_users = int(user_index.max()) + 1
    rng = np.random.default_rng(seed)

    if metric == "auc":
        arms = [[SortedScores(np.asarray(s, float), labels) for s in arm] for arm in (control, treatment)]
        measure = lambda arm, i, w: arms[arm][i].auc(w)  # noqa: E731
    elif metric == "logloss":
        arms = [[np.asarray(s, float) for s in arm] for arm in (control, treatment)]
        measure = lambda arm, i, w: weighted_logloss(arms[arm][i], labels, w)  # noqa: E731
    else:
        raise ValueError(f"no paired statistics for metric {metric!r}")

    n = len(control)
    c_values = [measure(0, i, None) for i in range(n)]
    t_values = [measure(1, i, None) for i in range(n)]
    per_seed = [t - c for t, c in zip(t_values, c_values)]

    draws = np.empty(replicates)
    for b in range(replicates):
        seeds = rng.integers(0, n, n) if n > 1 else np.zeros(1, dtype=int)
        weights = np.bincount(rng.integers(0, n_users, n_users), minlength=n_users)[user_index]
        draws[b] = np.mean([measure(1, i, weights) - measure(0, i, weights) for i in seeds])
    tail = (1 - level) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    return Effect(float(np.mean(c_values)), float(np.mean(t_values)), per_seed, float(low), float(high),
                  n, n_users, replicates)

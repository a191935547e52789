"""Statistics for control vs treatment: paired seeds plus a user-level bootstrap.

The effect of a treatment is the mean over seeds of (treatment metric - control metric),
both arms trained with the same seeds and scored on the same test rows. Its 95 % interval
comes from a two-level bootstrap: each replicate resamples seeds (paired: a seed's control
and treatment stay together) and test users (all rows of a drawn user, in both arms), so
the interval reflects both training noise and which users happened to be in the slice.

A replicate only changes how many times each user counts, so both metrics are computed
from per-user summaries once per run and every replicate is a small matrix product:

- logloss: the sum of a user's row losses and its row count; a replicate's logloss is
  (counts @ user_loss) / (counts @ user_rows).
- ndcg@K, recall@K, mrr: a mean of per-user values over the users with a positive row
  (tools/ranking.py), so (counts @ (weight * value)) / (counts @ weight), linear too; the
  unit must then be the user (the manifest requires a user column for them).
- AUC: its numerator is a sum over (positive, negative) row pairs, so under user counts c
  it is the quadratic form c' M c, with M[u, v] the pairs of u's positives over v's
  negatives (ties count half) and the denominator (c @ positives)(c @ negatives). M is
  built once per run by one sort (`UserPairs`). Both arms share the denominator, so a
  seed's delta is c' (M_treatment - M_control) c over it: one product per seed. A
  replicate then costs about users^2, where the row-level `SortedScores.auc_many` (a
  weighted cumulative sum per replicate) costs about rows: `use_pairs` picks M only while
  it fits (`MAX_PAIR_USERS`) and pays (users^2 <= `PAIR_COST_RATIO` x rows).

The unit need not be a user: a workspace without a user column resamples a cluster
column, or rows (each row its own unit; the row-level path: about 2 s for 1000 replicates
x 3 seeds over 10k rows on a busy 2-core box).

1000 replicates x 3 seeds x 2 arms over MovieLens's 10k test rows and 943 users take
about half a second this way, where a Python loop over replicates took several seconds.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from tools.memo import Recent
from tools.ranking import is_ranking, per_user


class SortedScores:
    """One run's test scores, pre-sorted so that weighted AUC is O(rows) per replicate."""

    def __init__(self, scores: np.ndarray, labels: np.ndarray):
        order = np.argsort(scores, kind="mergesort")
        _, self.group = np.unique(scores[order], return_inverse=True)
        self.order = order
        self.labels = np.asarray(labels, dtype=float)[order]
        self.n_groups = int(self.group.max()) + 1 if len(order) else 0
        # tied scores form contiguous runs in sorted order: where each run starts
        self.starts = np.flatnonzero(np.r_[True, np.diff(self.group) != 0]) if len(order) else np.empty(0, int)

    def auc(self, weights: np.ndarray | None = None) -> float:
        w = np.ones(len(self.order)) if weights is None else np.asarray(weights, dtype=float)[self.order]
        pos = np.bincount(self.group, weights=w * self.labels, minlength=self.n_groups)
        neg = np.bincount(self.group, weights=w * (1 - self.labels), minlength=self.n_groups)
        total_pos, total_neg = pos.sum(), neg.sum()
        if total_pos == 0 or total_neg == 0:
            return float("nan")
        below = np.cumsum(neg) - neg
        return float((pos * (below + 0.5 * neg)).sum() / (total_pos * total_neg))


    def auc_many(self, weights: np.ndarray) -> np.ndarray:
        """AUC under each row of `weights` (replicates x rows, rows in the original order); NaN
        where a row of weights leaves one class only. Equal to `auc(row)` row by row."""
        w = np.asarray(weights, dtype=float)[:, self.order]
        if not len(self.order):
            return np.full(len(w), np.nan)
        pos = np.add.reduceat(w * self.labels, self.starts, axis=1)
        neg = np.add.reduceat(w * (1 - self.labels), self.starts, axis=1)
        below = np.cumsum(neg, axis=1) - neg
        denominator = pos.sum(axis=1) * neg.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denominator > 0, (pos * (below + 0.5 * neg)).sum(axis=1) / denominator, np.nan)


def row_losses(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-row log loss (scores clipped to [1e-7, 1 - 1e-7]): linear in row weights."""
    p = np.clip(scores, 1e-7, 1 - 1e-7)
    return -(labels * np.log(p) + (1 - labels) * np.log(1 - p))



# Above this many users the per-run pair matrix (users x users doubles) is too large.
MAX_PAIR_USERS = 4000
# The pair matrix pays while users^2 <= this x rows (measured on 2 cores: 943 users over 10k
# rows 0.5 s vs 1.9 s row-level; 4000 one-row units 2.4 s vs 0.7 s row-level).
PAIR_COST_RATIO = 400


def use_pairs(n_users: int, n_rows: int) -> bool:
    """Whether the quadratic form in user counts (`UserPairs`) is the cheaper exact path."""
    return n_users <= MAX_PAIR_USERS and n_users * n_users <= PAIR_COST_RATIO * n_rows


def user_pairs(scores: np.ndarray, labels: np.ndarray, user_index: np.ndarray, n_users: int) -> "UserPairs":
    """UserPairs, remembered for the last few runs: a judgement with one more seed, and the
    next experiment's reused control runs, do not rebuild the ones already built."""
    key = hashlib.sha1(b"".join(np.ascontiguousarray(a).tobytes() for a in (scores, labels, user_index))).hexdigest()
    return _PAIRS.get(key, lambda: UserPairs(scores, labels, user_index, n_users))


_PAIRS: Recent[UserPairs] = Recent(keep=16)      # 16 x (943 users)^2 doubles ~ 110 MB on MovieLens


class UserPairs:
    """AUC as a quadratic form in user counts: exact, and one matrix product per replicate block."""

    def __init__(self, scores: np.ndarray, labels: np.ndarray, user_index: np.ndarray, n_users: int):
        positive = np.asarray(labels, dtype=float) > 0.5
        _, group = np.unique(np.asarray(scores, dtype=float), return_inverse=True)   # tie groups, ascending
        self.positives = np.bincount(user_index[positive], minlength=n_users).astype(float)
        self.negatives = np.bincount(user_index[~positive], minlength=n_users).astype(float)
        # through[k + 1, v]: v's negatives in the first k + 1 groups that hold a negative
        # (float32 counts are exact far beyond a test slice's size; half the memory traffic)
        neg_groups, neg_slot = np.unique(group[~positive], return_inverse=True)
        through = np.zeros((len(neg_groups) + 1, n_users), dtype=np.float32)
        np.add.at(through, (neg_slot + 1, user_index[~positive]), 1.0)
        np.cumsum(through, axis=0, out=through)
        # a positive in group g beats the negatives below g and ties with those in g (half each):
        # 0.5 * (negatives in groups < g + negatives in groups <= g)
        pos_users, pos_groups = user_index[positive], group[positive]
        order = np.argsort(pos_users, kind="mergesort")
        owners, starts = np.unique(pos_users[order], return_index=True)
        g = pos_groups[order]
        below = through[np.searchsorted(neg_groups, g, side="left")]
        below += through[np.searchsorted(neg_groups, g, side="right")]
        self.pairs = np.zeros((n_users, n_users))
        if len(order):
            self.pairs[owners] = 0.5 * np.add.reduceat(below, starts, axis=0)   # integers: exact in float32

    def auc(self, counts: np.ndarray | None = None) -> float:
        c = np.ones(len(self.positives)) if counts is None else np.asarray(counts, dtype=float)
        return float(self.auc_many(c[None, :])[0])

    def auc_many(self, counts: np.ndarray) -> np.ndarray:
        """AUC under each row of user counts (replicates x users); NaN where a class is empty."""
        numerator = ((counts @ self.pairs) * counts).sum(axis=1)
        denominator = (counts @ self.positives) * (counts @ self.negatives)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denominator > 0, numerator / denominator, np.nan)


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
                  level: float = 0.95, seed: int = 0, chunk: int = 250) -> Effect:
    """control[i] and treatment[i] are seed i's test scores, aligned with labels and users."""
    if len(control) != len(treatment) or not control:
        raise ValueError("need the same seeds, at least one, in both arms")
    labels = np.asarray(labels, dtype=float)
    _, user_index = np.unique(users, return_inverse=True)
    n_users = int(user_index.max()) + 1
    rng = np.random.default_rng(seed)

    # value(arm, i): seed i's metric on the whole slice; delta_many(i, counts): seed i's
    # treatment - control under each row of user counts (replicates x users).
    if metric == "auc" and use_pairs(n_users, len(labels)):
        pairs = [[user_pairs(np.asarray(s, float), labels, user_index, n_users) for s in arm]
                 for arm in (control, treatment)]
        value = lambda arm, i: pairs[arm][i].auc()  # noqa: E731
        # both arms share labels and users, so the AUC denominators cancel into one: the
        # delta is one quadratic form in the difference of the pair matrices
        differences = [t.pairs - c.pairs for c, t in zip(*pairs)]
        positives, negatives = pairs[0][0].positives, pairs[0][0].negatives

        def delta_many(i: int, c: np.ndarray) -> np.ndarray:
            with np.errstate(invalid="ignore", divide="ignore"):
                return ((c @ differences[i]) * c).sum(axis=1) / ((c @ positives) * (c @ negatives))
    elif metric == "auc":
        ranked = [[SortedScores(np.asarray(s, float), labels) for s in arm] for arm in (control, treatment)]
        value = lambda arm, i: ranked[arm][i].auc()  # noqa: E731

        def delta_many(i: int, c: np.ndarray) -> np.ndarray:
            weights = c[:, user_index]
            return ranked[1][i].auc_many(weights) - ranked[0][i].auc_many(weights)
    elif metric == "logloss":
        rows = np.bincount(user_index, minlength=n_users).astype(float)
        loss = [[np.bincount(user_index, weights=row_losses(np.asarray(s, float), labels), minlength=n_users)
                 for s in arm] for arm in (control, treatment)]
        value = lambda arm, i: float(loss[arm][i].sum() / rows.sum())  # noqa: E731
        delta_many = lambda i, c: (c @ (loss[1][i] - loss[0][i])) / (c @ rows)  # noqa: E731
    elif is_ranking(metric):
        # ndcg@K, recall@K, mrr: a mean over users, so linear in user counts like logloss
        tables = [[per_user(metric, labels, np.asarray(s, float), user_index, n_users) for s in arm]
                  for arm in (control, treatment)]
        value = lambda arm, i: tables[arm][i].mean()  # noqa: E731
        weight = tables[0][0].weight                  # users with a positive row: the same in both arms
        delta_terms = [weight * (t.value - c.value) for c, t in zip(*tables)]

        def delta_many(i: int, c: np.ndarray) -> np.ndarray:
            with np.errstate(invalid="ignore", divide="ignore"):
                return (c @ delta_terms[i]) / (c @ weight)
    else:
        raise ValueError(f"no paired statistics for metric {metric!r}")

    n = len(control)
    c_values = [value(0, i) for i in range(n)]
    t_values = [value(1, i) for i in range(n)]
    per_seed = [t - c for t, c in zip(t_values, c_values)]

    # A replicate draws n_users users with replacement (multinomial counts: all rows of a
    # drawn user count that many times) and n seeds with replacement; its effect is the mean
    # of the drawn seeds' deltas under those counts. Blocks of `chunk` replicates.
    draws = np.empty(replicates)
    uniform = np.full(n_users, 1.0 / n_users)
    for start in range(0, replicates, chunk):
        size = min(chunk, replicates - start)
        counts = rng.multinomial(n_users, uniform, size=size).astype(float)
        deltas = np.column_stack([delta_many(i, counts) for i in range(n)])
        seeds = rng.integers(0, n, (size, n))
        draws[start:start + size] = deltas[np.arange(size)[:, None], seeds].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    return Effect(float(np.mean(c_values)), float(np.mean(t_values)), per_seed, float(low), float(high),
                  n, n_users, replicates)

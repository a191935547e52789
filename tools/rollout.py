"""Staged rollout: serve the treatment to a growing share of users, halt on a guardrail breach.

The ramp (`ramp`) is ours and the same whatever serves the traffic: at each stage it asks
a `RolloutBackend` to expose the treatment to a share of users and to report what it
observed in the treatment and control groups, then checks every `Guard`. A breach halts
the ramp (the backend is told to roll back; later stages never run), and every stage that
ran is returned as a typed `Stage`.

The default backend, `ReplayRollout`, replays the latest time slice (the test slice):
users are hashed (sha256 of experiment id and user id) into 100 buckets, so a user's arm is
stable within an experiment and re-drawn across experiments, and the ramp is nested (the
5 % are part of the 25 %). A "user" here is whatever unit the evaluator's bootstrap
resamples: the user column, the manifest's cluster column, or, with neither, the row id
(each row hashed on its own). The treatment buckets' rows are scored with the treatment's
predictions and the rest with the control's, each metric averaged over the paired seeds.
Treatment and control are different users, so a raw difference mixes the treatment's
effect with who happened to land where; a guard is breached only when the harm's lower
confidence bound (point difference minus z times its user-level Poisson-bootstrap standard
error; z from `confidence`, 0.999 by default, so 3 stages x 2 guards keep an A/A's false
halts near 1 %) exceeds the guard's limit. A stage too small to measure a metric (too few
users, one label class) passes that guard with the reason recorded; the offline verdict
already judged the whole slice.

A real A/B platform replaces the replay by implementing `observe` (expose, wait, report
per-group metrics and a lower confidence bound of the harm) and `halt` (roll back).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Protocol

import numpy as np

from tools.ranking import is_ranking, per_user, row_shares
from tools.stats import SortedScores, row_losses

STAGES: tuple[float, ...] = (0.05, 0.25, 0.50)
BUCKETS = 100


def natural_sign(metric: str) -> int:
    """+1 when bigger is better (auc, ndcg@K, recall@K, mrr), -1 for logloss."""
    return -1 if metric == "logloss" else 1


def bucket_of(experiment_id: str, user: object) -> int:
    """The stable bucket (0..99) of a user within one experiment."""
    digest = hashlib.sha256(f"{experiment_id}\x1f{user}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


@dataclass(frozen=True)
class Guard:
    """A metric that must not get worse by more than `limit` (in metric units)."""

    metric: str
    limit: float

    @property
    def sign(self) -> int:
        return natural_sign(self.metric)


@dataclass(frozen=True)
class Observation:
    """What a backend saw at one stage. Harm is positive when the treatment is worse."""

    n_users: int                                # treatment group
    n_rows: int
    control_users: int
    control_rows: int
    control: dict[str, float]                   # metric -> value (NaN when not measurable)
    treatment: dict[str, float]
    harm_low: dict[str, float | None]           # lower confidence bound of the harm; None = not measurable
    note: str = ""


@dataclass(frozen=True)
class Stage:
    stage: int                                  # 1-based
    share: float
    n_users: int
    n_rows: int
    control_users: int
    control_rows: int
    control: dict[str, float | None]
    treatment: dict[str, float | None]
    checks: list[dict]                          # per guard: metric, harm, harm_low, limit, ok, note
    ok: bool
    reason: str

    def row(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Rollout:
    backend: str
    planned: tuple[float, ...]
    stages: list[Stage] = field(default_factory=list)

    @property
    def halted_at(self) -> Stage | None:
        return next((s for s in self.stages if not s.ok), None)

    @property
    def completed(self) -> bool:
        return self.halted_at is None and len(self.stages) == len(self.planned)

    @property
    def reason(self) -> str:
        if (stage := self.halted_at) is not None:
            return f"rollout halted at {stage.reason}"
        return (f"rollout passed {len(self.stages)} of {len(self.planned)} stages "
                f"({' -> '.join(f'{s:.0%}' for s in self.planned)}, {self.backend})")


class RolloutBackend(Protocol):
    """Serves the treatment to a share of users; the default is `ReplayRollout`."""

    name: str

    def observe(self, share: float) -> Observation:
        """Expose the treatment to `share` of users (a superset of the previous stage's) and report."""
        ...

    def halt(self, reason: str) -> None:
        """Stop serving the treatment (roll back to control)."""
        ...


def ramp(backend: RolloutBackend, guards: Sequence[Guard], shares: Sequence[float] = STAGES) -> Rollout:
    """Run the stages in order; the first breached guard halts the ramp."""
    if not shares or list(shares) != sorted(shares) or not 0 < shares[0] <= shares[-1] <= 1:
        raise ValueError(f"rollout shares must increase within (0, 1], got {list(shares)}")
    rollout = Rollout(backend.name, tuple(shares))
    for number, share in enumerate(shares, start=1):
        seen = backend.observe(share)
        checks = [_check(guard, seen) for guard in guards]
        breached = [c for c in checks if not c["ok"]]
        where = f"stage {number} ({share:.0%} of users, {seen.n_users} users, {seen.n_rows} rows)"
        if breached:
            reason = f"{where}: " + "; ".join(c["note"] for c in breached)
        else:
            skipped = [c["note"] for c in checks if c["harm_low"] is None]
            reason = f"{where}: all guards hold" + (f" ({'; '.join(skipped)})" if skipped else "")
        rollout.stages.append(Stage(number, share, seen.n_users, seen.n_rows, seen.control_users, seen.control_rows,
                                    _clean(seen.control), _clean(seen.treatment), checks, not breached, reason))
        if breached:
            backend.halt(reason)
            break
    return rollout


def _check(guard: Guard, seen: Observation) -> dict:
    c, t = seen.control.get(guard.metric), seen.treatment.get(guard.metric)
    low = seen.harm_low.get(guard.metric)
    harm = None if c is None or t is None or not np.isfinite(c - t) else float(guard.sign * (c - t))
    name = f"{guard.metric} {'drop' if guard.sign > 0 else 'regression'}"
    if harm is None or low is None or not np.isfinite(low):
        return {"metric": guard.metric, "harm": harm, "harm_low": None, "limit": guard.limit, "ok": True,
                "note": f"{guard.metric} not measurable here{': ' + seen.note if seen.note else ''}"}
    ok = low <= guard.limit
    note = (f"{name} {harm:+.4f} (at least {low:+.4f} with confidence) "
            f"{'within' if ok else 'exceeds'} the limit {guard.limit:g}")
    return {"metric": guard.metric, "harm": harm, "harm_low": float(low), "limit": guard.limit, "ok": ok,
            "note": note}


def _clean(values: dict[str, float]) -> dict[str, float | None]:
    return {k: (float(v) if v is not None and np.isfinite(v) else None) for k, v in values.items()}


class ReplayRollout:
    """Replays the test slice: hashed user buckets, treatment predictions for treated buckets.

    `control[i]` and `treatment[i]` are seed i's scores, aligned with `users` and `labels`.
    """

    name = "replay"

    def __init__(self, experiment_id: str, users: Sequence, labels: np.ndarray, control: Sequence[np.ndarray],
                 treatment: Sequence[np.ndarray], *, metrics: Sequence[str] = ("auc", "logloss"),
                 confidence: float = 0.999, replicates: int = 200, min_users: int = 5):
        if not control or len(control) != len(treatment):
            raise ValueError("need the same seeds, at least one, in both arms")
        self.experiment_id = experiment_id
        self.labels = np.asarray(labels, dtype=float)
        self.control = [np.asarray(s, dtype=float) for s in control]
        self.treatment = [np.asarray(s, dtype=float) for s in treatment]
        if any(len(s) != len(self.labels) for s in (*self.control, *self.treatment)):
            raise ValueError("every score array must align with the labels")
        keys, self.user_index = np.unique(np.asarray(users).astype(str), return_inverse=True)
        self.user_bucket = np.array([bucket_of(experiment_id, u) for u in keys], dtype=int)
        self.metrics = tuple(metrics)
        self.confidence = confidence
        self.replicates = replicates
        self.min_users = min_users
        self.halted: str | None = None
        # Ranking metrics are per user and a group holds whole users: each row's share of its
        # user's value and weight (seed-averaged), from the whole slice once.
        self._shares: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {"control": {}, "treatment": {}}
        for m in (m for m in self.metrics if is_ranking(m)):
            for arm, scores in (("control", self.control), ("treatment", self.treatment)):
                shares = [row_shares(per_user(m, self.labels, s, self.user_index, len(keys)), self.user_index)
                          for s in scores]
                self._shares[arm][m] = (np.mean([v for v, _ in shares], axis=0), shares[0][1])
        # The bootstrap draws depend only on the experiment and stage, so a replay is reproducible.
        self._rng_seed = int.from_bytes(hashlib.sha256(experiment_id.encode()).digest()[:4], "big")

    def treated_users(self, share: float) -> np.ndarray:
        """A boolean per distinct user: in the treatment at this share."""
        return self.user_bucket < round(share * BUCKETS)

    def observe(self, share: float) -> Observation:
        if self.halted is not None:
            raise RuntimeError(f"the replay rollout of {self.experiment_id} was halted: {self.halted}")
        treated_user = self.treated_users(share)
        treated = treated_user[self.user_index]
        n_t, n_c = int(treated_user.sum()), int((~treated_user).sum())
        groups = {"treatment": _Group(self.treatment, self.labels, treated, self._shares["treatment"]),
                  "control": _Group(self.control, self.labels, ~treated, self._shares["control"])}
        values = {arm: {m: g.metric(m) for m in self.metrics} for arm, g in groups.items()}
        harm_low: dict[str, float | None] = {m: None for m in self.metrics}
        note = ""
        if min(n_t, n_c) < self.min_users:
            note = f"fewer than {self.min_users} users in a group"
        else:
            draws = self._bootstrap(groups, share)
            z = NormalDist().inv_cdf(self.confidence)
            for m in self.metrics:
                harm = natural_sign(m) * (values["control"][m] - values["treatment"][m])
                valid = draws[m][np.isfinite(draws[m])]
                if len(valid) >= 0.9 * self.replicates and np.isfinite(harm):
                    harm_low[m] = float(harm - z * np.std(valid, ddof=1))
                else:
                    note = "one label class only in a bootstrap group"
        return Observation(n_t, int(treated.sum()), n_c, int((~treated).sum()), values["control"],
                           values["treatment"], harm_low, note)

    def _bootstrap(self, groups: dict[str, _Group], share: float, chunk: int = 50) -> dict[str, np.ndarray]:
        """Harm under Poisson(1) user weights, `chunk` replicates at a time (bounded memory)."""
        rng = np.random.default_rng([self._rng_seed, round(share * BUCKETS)])
        draws: dict[str, list[np.ndarray]] = {m: [] for m in self.metrics}
        for start in range(0, self.replicates, chunk):
            size = min(chunk, self.replicates - start)
            weights = rng.poisson(1.0, (size, len(self.user_bucket)))[:, self.user_index].astype(float)
            for m in self.metrics:
                draws[m].append(natural_sign(m) * (groups["control"].draws(m, weights)
                                                   - groups["treatment"].draws(m, weights)))
        return {m: np.concatenate(d) for m, d in draws.items()}

    def halt(self, reason: str) -> None:
        self.halted = reason


class _Group:
    """The rows of one arm at one stage; metrics averaged over seeds, optionally user-reweighted."""

    def __init__(self, scores: Sequence[np.ndarray], labels: np.ndarray, rows: np.ndarray,
                 shares: dict[str, tuple[np.ndarray, np.ndarray]] | None = None):
        self.rows = rows
        # ranking metrics: each row's share of its user's (value, weight), restricted to the group
        self.shares = {m: (v[rows], w[rows]) for m, (v, w) in (shares or {}).items()}
        labels = labels[rows]
        picked = [s[rows] for s in scores]
        self.sorted = [SortedScores(s, labels) for s in picked] if rows.any() else []
        # logloss is linear in row weights, so the seed average is one vector of per-row losses
        self.losses = np.mean([row_losses(s, labels) for s in picked], axis=0) if rows.any() else np.empty(0)

    def metric(self, metric: str) -> float:
        if not self.rows.any():
            return float("nan")
        if metric == "auc":
            return float(np.mean([s.auc() for s in self.sorted]))
        if metric == "logloss":
            return float(self.losses.mean())
        if metric in self.shares:
            value, weight = self.shares[metric]
            return float(value.sum() / weight.sum()) if weight.sum() > 0 else float("nan")
        raise ValueError(f"no rollout guard for metric {metric!r}")

    def draws(self, metric: str, weights: np.ndarray) -> np.ndarray:
        """The metric under each row of `weights` (replicates x all rows); NaN where unmeasurable."""
        if not self.rows.any():
            return np.full(len(weights), np.nan)
        w = weights[:, self.rows]
        total = w.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            if metric == "logloss":
                return np.where(total > 0, (w @ self.losses) / total, np.nan)
            if metric == "auc":
                return np.mean([s.auc_many(w) for s in self.sorted], axis=0)
            if metric in self.shares:
                value, weight = self.shares[metric]
                denominator = w @ weight
                return np.where(denominator > 0, (w @ value) / denominator, np.nan)
        raise ValueError(f"no rollout guard for metric {metric!r}")

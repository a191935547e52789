"""The heuristic brainstorm's policy as pure functions: posteriors, Thompson draws, choice probabilities.

An arm is what the bandit chooses: a recipe (its next untried parameters come with it), the
knobs (Optuna picks the values) or the interactions recipe. Each arm's posterior over its
signed validation effect is normal: the harness policy's prior mean (per arm, else per
family) weighs as `arm_weight` observations (one by default), the arm's own outcomes count fully and its siblings'
(other arms of the same family) count `family_weight` each; the spread shrinks as
`prior_sd / sqrt(1 + weight)`.

`choice_probabilities` is the propensity the evolution's off-policy gate needs: the chance
that an arm is among the k a Thompson draw ranks first, by Monte Carlo (Thompson sampling
has no closed form for it). `ArmStats` is what is logged per decision, so that any other
policy's propensity for the same decision can be recomputed later.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from agents.harness_spec import Policy

MC_DRAWS = 4000            # Monte Carlo draws per propensity: standard error <= 0.008
PROPENSITY_FLOOR = 1.0 / MC_DRAWS


@dataclass(frozen=True)
class ArmStats:
    """An arm at decision time: its own outcomes and its siblings' (same family, other arms)."""

    arm: str
    family: str
    n: int = 0
    total: float = 0.0
    sib_n: int = 0
    sib_total: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def posterior(policy: Policy, s: ArmStats) -> tuple[float, float]:
    weight = s.n + policy.family_weight * s.sib_n
    total = s.total + policy.family_weight * s.sib_total
    w0 = policy.weight(s.arm)
    mean = (w0 * policy.prior(s.arm, s.family) + total) / (w0 + weight)
    return mean, policy.prior_sd / math.sqrt(w0 + weight)


def posteriors(policy: Policy, arms: list[ArmStats]) -> tuple[np.ndarray, np.ndarray]:
    pairs = [posterior(policy, s) for s in arms]
    return np.array([m for m, _ in pairs]), np.array([s for _, s in pairs])


def choice_probabilities(policy: Policy, arms: list[ArmStats], k: int = 1, *, draws: int = MC_DRAWS,
                         seed: int = 12345) -> np.ndarray:
    """P(arm i is among the top k of one Thompson draw), by Monte Carlo; floored at 1/draws."""
    if not arms:
        return np.zeros(0)
    means, sds = posteriors(policy, arms)
    rng = np.random.default_rng(seed)
    sample = rng.normal(means, sds, size=(draws, len(arms)))
    k = min(k, len(arms))
    if k == 1:
        counts = np.bincount(sample.argmax(axis=1), minlength=len(arms))
    else:
        top = np.argpartition(-sample, k - 1, axis=1)[:, :k]
        counts = np.bincount(top.ravel(), minlength=len(arms))
    return np.maximum(counts / draws, PROPENSITY_FLOOR)


def propensity_of(policy: Policy, context: dict, arm: str) -> float:
    """A logged decision's `context` ({"k", "arms": [ArmStats dicts]}) re-scored under `policy`."""
    arms = [ArmStats(**a) for a in context["arms"]]
    names = [a.arm for a in arms]
    if arm not in names:
        return PROPENSITY_FLOOR
    return float(choice_probabilities(policy, arms, int(context.get("k", 1)))[names.index(arm)])

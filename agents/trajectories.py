"""Trajectories: one record per experiment, what harness evolution reads.

A trajectory joins what the KB holds about one experiment: the proposal and its rationale,
the harness version that made it (its playbook bullets and the prior its arm had), the
brain's choice probability and the posterior inputs of every arm it chose among, the code
change (branch and commits), the micro and full outcomes, the verdict with its effect and
confidence interval, the vetoes, and the reviewer's decision. One bounded SQL read
(`knowledge.reads.trajectory_rows`: the `WINDOW` most recent experiments), so an evolution
step costs about the same at a million experiments as at a hundred.

The split is fixed per experiment id (a hash), never by the proposer: `sealed` trajectories
(20%) are only ever used to report whether an accepted change holds up; `held_back` (30%)
are the gate's replay set; the rest are what a proposer may read.
"""

from __future__ import annotations

import hashlib
import math
import statistics
from dataclasses import dataclass, field
from typing import Literal

from knowledge.reads import trajectory_rows

WINDOW = 500                 # most recent experiments an evolution step reads
GATE_FAILURE_REWARD = -0.005  # the gate's price of a failure: fixed, so a candidate cannot redefine its own score
Split = Literal["proposer", "held_back", "sealed"]

@dataclass(frozen=True)
class Trajectory:
    experiment_id: str
    title: str
    rationale: str
    recipe: str | None
    params: dict
    arm: str
    family: str
    harness_version: int | None
    propensity: float | None
    decision_context: dict | None
    status: str
    failure_kind: str | None
    decision: str | None
    effect: float | None            # test delta, signed so that bigger is better
    ci_low: float | None            # signed, ordered
    ci_high: float | None
    valid_effect: float | None      # signed validation delta
    seed_effects: list[float] = field(default_factory=list)   # signed per-seed test deltas
    vetoes: list[str] = field(default_factory=list)
    pr_state: str | None = None
    review_reason: str | None = None
    micro_ok_s: list[float] = field(default_factory=list)     # seconds honest (ok) micro runs executed (the
                                                              # timeout's clock: no kernel start-up)
    micro_ok_mb: list[float] = field(default_factory=list)    # their kernels' peak memory (MB)
    micro_status: list[str] = field(default_factory=list)
    branch: str | None = None
    head_commit: str | None = None

    @property
    def split(self) -> Split:
        return split_of(self.experiment_id)

    @property
    def failed(self) -> bool:
        return self.status == "failed" or self.decision == "vetoed" or self.effect is None

    def reward(self) -> float:
        """The evaluator's outcome as one number: the signed test effect shrunk by its own
        confidence interval (effect * e^2 / (e^2 + se^2): a noisy effect counts for less), a
        fixed penalty for a failure or a veto, and at most that for a reviewer's rejection."""
        if self.failed:
            value = GATE_FAILURE_REWARD
        else:
            e = self.effect
            se = (self.ci_high - self.ci_low) / 3.92 if self.ci_low is not None and self.ci_high is not None else 0.0
            value = e if se <= 0 else e * e * e / (e * e + se * se)
        if self.pr_state == "rejected":
            value = min(value, GATE_FAILURE_REWARD)
        return value

    def outcome(self) -> str:
        if self.failed:
            return "failure"
        return {"ship": "win", "reject": "loss"}.get(self.decision or "", "neutral")


def split_of(experiment_id: str) -> Split:
    bucket = int(hashlib.sha256(f"agentx-split:{experiment_id}".encode()).hexdigest()[:8], 16) % 10
    return "sealed" if bucket < 2 else "held_back" if bucket < 5 else "proposer"


def load(kb, sign: int, family_of=lambda recipe: None, window: int = WINDOW) -> list[Trajectory]:
    """The finished experiments among the `window` most recent, oldest first."""
    out = []
    for r in trajectory_rows(kb, window):
        guards = r["guardrails"] or []
        per_seed = r["per_seed"] or []
        ci = sorted((sign * r["ci_low"], sign * r["ci_high"])) if r["ci_low"] is not None else (None, None)
        proposal = r["proposal"] or {}
        arm = r["arm"] or r["recipe"] or "free-form"
        out.append(Trajectory(
            experiment_id=r["id"], title=r["title"] or "", rationale=proposal.get("rationale") or "",
            recipe=r["recipe"], params=r["params"] or {}, arm=arm,
            family=r["recipe_family"] or family_of(r["recipe"]) or arm, harness_version=r["harness_version"],
            propensity=r["propensity"], decision_context=r["decision_context"], status=r["status"],
            failure_kind=r["failure_kind"], decision=r["decision"],
            effect=None if r["delta"] is None else sign * r["delta"], ci_low=ci[0], ci_high=ci[1],
            valid_effect=None if r["valid_delta"] is None else sign * r["valid_delta"],
            seed_effects=[sign * s["delta"] for s in per_seed if s.get("delta") is not None],
            vetoes=[g["name"] for g in guards if not g.get("ok", True)],
            pr_state=r["pr_state"], review_reason=r["review_reason"],
            micro_ok_s=[x for x in (r["micro_ok_s"] or []) if x is not None],
            micro_ok_mb=[x for x in (r["micro_ok_mb"] or []) if x is not None], micro_status=r["micro_status"] or [],
            branch=r["branch"], head_commit=r["head_commit"]))
    return out


def seed_sd(trajectories: list[Trajectory]) -> tuple[float | None, int]:
    """Pooled seed-to-seed standard deviation of paired effects, and its degrees of freedom."""
    ss, dof = 0.0, 0
    for t in trajectories:
        if len(t.seed_effects) >= 2:
            ss += statistics.variance(t.seed_effects) * (len(t.seed_effects) - 1)
            dof += len(t.seed_effects) - 1
    return (math.sqrt(ss / dof), dof) if dof else (None, 0)


MAX_SEEDS = 6               # the most paired seeds the calibration asks for (each is two training runs)


def seeds_needed(sd: float, min_effect: float, low: int = 2, high: int = MAX_SEEDS) -> int | None:
    """Paired seeds so that an effect of `min_effect` is seen at 80% power (two-sided 5%); None
    when the workspace sets no minimum effect (nothing to calibrate against)."""
    if min_effect <= 0:
        return None
    return max(low, min(high, math.ceil(((1.96 + 0.84) * sd / min_effect) ** 2)))

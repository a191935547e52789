"""Evaluator: control vs treatment over paired seeds, guardrails that veto, a decision.

Judgement is statistics, not a brain: the same seeds train both arms at the full tier
(control runs of the same base commit, seed and tier are reused from the KB), the test
effect and its 95 % interval come from `tools.stats.paired_effect` (seeds x users
bootstrap), and the decision follows fixed rules:

    vetoed        a treatment run failed (crash, nan, tamper, ...) or a guardrail is breached
    ship          CI lower bound above the manifest's minimum effect (in the good direction)
    reject        CI upper bound below zero (the treatment is worse)
    inconclusive  anything else, after adding seeds up to `max_seeds`

Validation (what the search optimises) is reported next to the test effect; only the test
slice judges.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tools.scoring import join_predictions, users_of
from tools.stats import paired_effect


@dataclass(frozen=True)
class EvalSettings:
    tier: str = "full"
    seeds: int = 2
    max_seeds: int = 3
    replicates: int = 1000


@dataclass
class Verdict:
    decision: str
    metric: str
    tier: str
    control: float | None = None
    treatment: float | None = None
    delta: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    valid_delta: float | None = None
    per_seed: list[dict] = field(default_factory=list)
    guardrails: list[dict] = field(default_factory=list)
    rationale: str = ""

    def row(self, experiment_id: str) -> dict:
        return {"experiment_id": experiment_id, "decision": self.decision, "metric": self.metric, "tier": self.tier,
                "control": self.control, "treatment": self.treatment, "delta": self.delta, "ci_low": self.ci_low,
                "ci_high": self.ci_high, "n_seeds": len(self.per_seed), "valid_delta": self.valid_delta,
                "per_seed": self.per_seed, "guardrails": self.guardrails, "rationale": self.rationale}


def evaluate(ws, experiment: dict, treatment_path, settings: EvalSettings) -> Verdict:
    metric = ws.manifest.metric
    control_path, base = ws.base_checkout(experiment["base_commit"])
    head = experiment["head_commit"]
    pairs = []
    target = settings.seeds
    while True:
        while len(pairs) < target:
            seed = len(pairs)
            control = ws.harness.run(control_path, base, tier=settings.tier, seed=seed, arm="control",
                                     experiment_id=experiment["id"], reuse=True)
            if not control.ok:
                raise RuntimeError(f"the control arm (base {base[:10]}, seed {seed}) failed: "
                                   f"{control.failure_kind}: {control.failure_detail}")
            treatment = ws.harness.run(treatment_path, head, tier=settings.tier, seed=seed, arm="treatment",
                                       experiment_id=experiment["id"], reuse=True)
            if not treatment.ok:
                return Verdict("vetoed", metric.primary, settings.tier, per_seed=_per_seed(pairs, metric.primary),
                               guardrails=[{"name": "run", "ok": False, "value": treatment.failure_kind,
                                            "limit": "a valid run", "detail": (treatment.failure_detail or "")[-500:]}],
                               rationale=f"treatment run {treatment.run_id} (seed {seed}) is {treatment.status}: "
                                         f"{treatment.failure_kind}")
            pairs.append((seed, control, treatment))
        verdict = judge(ws, pairs, settings)
        if verdict.decision != "inconclusive" or target >= settings.max_seeds:
            return verdict
        target += 1
        ws.kb.log_event("more_seeds", {"seeds": target, "ci": [verdict.ci_low, verdict.ci_high]},
                        experiment_id=experiment["id"])


def judge(ws, pairs, settings: EvalSettings) -> Verdict:
    metric = ws.manifest.metric
    splits = ws.harness.splits
    controls, treatments, labels, users = [], [], None, None
    for _, control, treatment in pairs:
        c = join_predictions(splits, _run_dir(ws, control.run_id), "test")
        t = join_predictions(splits, _run_dir(ws, treatment.run_id), "test")
        if not np.array_equal(c.ids, t.ids):
            raise RuntimeError("control and treatment were scored on different test rows")
        controls.append(c.scores)
        treatments.append(t.scores)
        labels = c.labels
        if users is None:
            users = users_of(splits, c.ids, ws.manifest.data.user_column)
    effect = paired_effect(controls, treatments, labels, users, metric=metric.primary,
                           replicates=settings.replicates)
    valid_deltas = [t.metric("valid", metric.primary) - c.metric("valid", metric.primary) for _, c, t in pairs]
    guardrails = check_guardrails(ws.manifest, pairs)
    sign, floor = metric.sign, ws.manifest.metric.min_effect
    low, high = sorted((sign * effect.ci_low, sign * effect.ci_high))   # in "bigger is better" units
    breached = [g["name"] for g in guardrails if not g["ok"]]
    if breached:
        decision, why = "vetoed", "guardrails breached: " + ", ".join(breached)
    elif low > floor:
        decision, why = "ship", f"95% CI lower bound {low:+.4f} is above the minimum effect {floor}"
    elif high < 0:
        decision, why = "reject", f"95% CI upper bound {high:+.4f} is below zero"
    else:
        decision, why = "inconclusive", f"95% CI [{low:+.4f}, {high:+.4f}] neither clears {floor} nor excludes 0"
    return Verdict(decision, metric.primary, settings.tier, effect.control, effect.treatment, effect.delta,
                   effect.ci_low, effect.ci_high, statistics.fmean(valid_deltas), _per_seed(pairs, metric.primary),
                   guardrails, f"{why} ({len(pairs)} paired seeds, {effect.n_users} test users, "
                               f"{effect.replicates} bootstrap replicates)")


def check_guardrails(manifest, pairs) -> list[dict]:
    rails = manifest.guardrails
    treat = [t for _, _, t in pairs]
    checks = []

    def worst(name: str) -> float | None:
        values = [t.metric("run", name) for t in treat if t.metric("run", name) is not None]
        return max(values) if values else None

    for name, limit, measured in (("max_params", rails.max_params, worst("num_params")),
                                  ("max_p95_latency_ms", rails.max_p95_latency_ms, worst("p95_latency_ms")),
                                  ("max_train_seconds", rails.max_train_seconds, worst("train_seconds"))):
        if limit is not None:
            ok = measured is not None and measured <= limit
            checks.append({"name": name, "value": measured, "limit": limit, "ok": ok})
    for name, allowed in rails.max_secondary_regression.items():
        c = statistics.fmean(c.metric("test", name) for _, c, _ in pairs)
        t = statistics.fmean(t.metric("test", name) for _, _, t in pairs)
        worse = (t - c) if name == "logloss" else (c - t)
        checks.append({"name": f"{name}_regression", "value": worse, "limit": allowed, "ok": worse <= allowed})
    return checks


def _per_seed(pairs, metric: str) -> list[dict]:
    return [{"seed": seed, "control_run": c.run_id, "treatment_run": t.run_id,
             "control": c.metric("test", metric), "treatment": t.metric("test", metric),
             "delta": t.metric("test", metric) - c.metric("test", metric),
             "valid_delta": t.metric("valid", metric) - c.metric("valid", metric)} for seed, c, t in pairs]


def _run_dir(ws, run_id: str) -> Path:
    return Path(ws.kb.get_run(run_id)["run_dir"])

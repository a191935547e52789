"""Evaluator: control vs treatment over paired seeds, guardrails that veto, a decision.

Judgement is statistics, not a brain: the same seeds train both arms at the full tier
(control runs of the same base commit, seed and tier are reused from the KB), the test
effect and its 95 % interval come from `tools.stats.paired_effect` (seeds x users
bootstrap; the unit is the manifest's cluster_column when it names one, else its
user_column, else each test row: `bootstrap_unit`), and the decision follows fixed rules:

    vetoed        a treatment run failed (crash, nan, tamper, ...), or a guardrail is breached
                  by a treatment that is not a clear loss
    reject        CI upper bound below zero (the treatment is worse; breached guardrails are
                  still listed in the verdict)
    ship          CI lower bound above the manifest's minimum effect (in the good direction)
    inconclusive  anything else, after adding seeds up to `max_seeds`

Validation (what the search optimises) is reported next to the test effect; only the test
slice judges. A run the executor lost (its Ray node died; `tools.harness.RunLost`) is no
evidence either way: it raises instead of vetoing, so it never counts against the code.

An offline `ship` then goes through a staged rollout (`roll_out`, `tools.rollout`): the
treatment is served to 5 % -> 25 % -> 50 % of the test slice's users (the same unit as the
bootstrap: users, clusters or rows; replayed by default,
or a real A/B platform through `EvalSettings.rollout_backend`), and a guardrail breach at
any stage halts the ramp and turns the decision into `vetoed`, naming the stage and metric.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from agentx.workspace import metric_sign
from tools.harness import RunLost
from tools.rollout import STAGES, Guard, ReplayRollout, Rollout, RolloutBackend, ramp
from tools.scoring import join_predictions, units_of
from tools.stats import paired_effect

# The logloss a rollout stage may lose when the manifest sets no max_secondary_regression for it.
DEFAULT_LOGLOSS_REGRESSION = 0.01

# (ws, experiment row, offline verdict, settings) -> the backend that serves the treatment.
BackendFactory = Callable[[object, dict, "Verdict", "EvalSettings"], RolloutBackend]


@dataclass(frozen=True)
class EvalSettings:
    tier: str = "full"
    seeds: int = 2
    max_seeds: int = 3
    replicates: int = 1000
    rollout_shares: tuple[float, ...] = STAGES
    rollout_confidence: float = 0.999          # a guard halts when this sure the harm exceeds its limit
    rollout_replicates: int = 200
    rollout_backend: BackendFactory | None = None   # None: ReplayRollout over the test slice


class ControlFailed(Exception):
    """The base commit's run failed (a full disk, a broken main): no verdict can be made.
    The experiment fails with this kind; the loop goes on."""

    def __init__(self, kind: str, detail: str):
        super().__init__(detail)
        self.kind, self.detail = kind, detail


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
    offline_decision: str | None = None          # the decision before the rollout, when one ran
    sandbox: str = "bwrap"                       # what confined its runs: bwrap | none | mixed

    def row(self, experiment_id: str) -> dict:
        return {"experiment_id": experiment_id, "decision": self.decision, "metric": self.metric, "tier": self.tier,
                "control": self.control, "treatment": self.treatment, "delta": self.delta, "ci_low": self.ci_low,
                "ci_high": self.ci_high, "n_seeds": len(self.per_seed), "valid_delta": self.valid_delta,
                "per_seed": self.per_seed, "guardrails": self.guardrails, "rationale": self.rationale,
                "offline_decision": self.offline_decision, "sandbox": self.sandbox}


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
            if control.lost:               # the executor lost it: no evidence either way (tools/harness.RunLost)
                raise RunLost(control)
            if not control.ok:
                raise ControlFailed(control.failure_kind or control.status,
                                    f"the control arm (base {base[:10]}, seed {seed}, run {control.run_id}) failed: "
                                    f"{control.failure_kind}: {(control.failure_detail or '')[-600:]}")
            treatment = ws.harness.run(treatment_path, head, tier=settings.tier, seed=seed, arm="treatment",
                                       experiment_id=experiment["id"], reuse=True)
            if treatment.lost:             # never a veto: the code did not fail, its node did
                raise RunLost(treatment)
            if not treatment.ok:
                sandbox, line, note = confinement(ws.kb, [treatment.run_id])
                return Verdict("vetoed", metric.primary, settings.tier, per_seed=_per_seed(pairs, metric.primary),
                               guardrails=[{"name": "run", "ok": False, "value": treatment.failure_kind,
                                            "limit": "a valid run", "detail": (treatment.failure_detail or "")[-500:]},
                                           line],
                               rationale=f"treatment run {treatment.run_id} (seed {seed}) is {treatment.status}: "
                                         f"{treatment.failure_kind}{note}", sandbox=sandbox)
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
    unit_column, unit_name = bootstrap_unit(ws.manifest.data)
    for _, control, treatment in pairs:
        c = join_predictions(splits, _run_dir(ws, control.run_id), "test")
        t = join_predictions(splits, _run_dir(ws, treatment.run_id), "test")
        if not np.array_equal(c.ids, t.ids):
            raise RuntimeError("control and treatment were scored on different test rows")
        controls.append(c.scores)
        treatments.append(t.scores)
        labels = c.labels
        if users is None:
            users = units_of(splits, c.ids, unit_column)
    effect = paired_effect(controls, treatments, labels, users, metric=metric.primary,
                           replicates=settings.replicates)
    valid_deltas = [t.metric("valid", metric.primary) - c.metric("valid", metric.primary) for _, c, t in pairs]
    guardrails = check_guardrails(ws.manifest, pairs)
    sandbox, line, note = confinement(ws.kb, [r.run_id for _, c, t in pairs for r in (c, t)])
    guardrails.append(line)
    sign, floor = metric.sign, ws.manifest.metric.min_effect
    low, high = sorted((sign * effect.ci_low, sign * effect.ci_high))   # in "bigger is better" units
    breached = [g["name"] for g in guardrails if not g["ok"]]
    if high < 0:      # a clear loss is a reject whatever else it breaks (the breaches are listed)
        decision, why = "reject", f"95% CI upper bound {high:+.4f} is below zero" + \
            (f"; guardrails breached too: {', '.join(breached)}" if breached else "")
    elif breached:
        decision, why = "vetoed", "guardrails breached: " + ", ".join(breached)
    elif low > floor:
        decision, why = "ship", f"95% CI lower bound {low:+.4f} is above the minimum effect {floor}"
    else:
        decision, why = "inconclusive", f"95% CI [{low:+.4f}, {high:+.4f}] neither clears {floor} nor excludes 0"
    return Verdict(decision, metric.primary, settings.tier, effect.control, effect.treatment, effect.delta,
                   effect.ci_low, effect.ci_high, statistics.fmean(valid_deltas), _per_seed(pairs, metric.primary),
                   guardrails, f"{why} ({len(pairs)} paired seeds, {effect.n_users} {unit_name}, "
                               f"{effect.replicates} bootstrap replicates){note}", sandbox=sandbox)


def bootstrap_unit(data) -> tuple[str | None, str]:
    """What the bootstrap and the rollout resample, from the manifest's [data]: a column (None:
    each test row is its own unit) and how a rationale names the units."""
    if data.cluster_column:
        return data.cluster_column, f"test clusters of {data.cluster_column}"
    if data.user_column:
        return data.user_column, "test users"
    return None, "test rows, each its own unit (no user_column or cluster_column in [data])"


def confinement(kb, run_ids: list[str]) -> tuple[str, dict, str]:
    """How the runs behind a verdict were confined: 'bwrap', 'none' or 'mixed'; the line the
    verdict lists (never a veto: running unsandboxed is the user's explicit choice, shown on
    every verdict); and the words the rationale ends with when it was not the full sandbox."""
    rows = kb.query(f"SELECT DISTINCT coalesce(sandbox, 'none') AS sandbox, coalesce(network, false) AS network "
                    f"FROM runs WHERE id IN ({', '.join('?' for _ in run_ids)})", run_ids) if run_ids else []
    kinds = {r["sandbox"] for r in rows} or {"none"}
    sandbox = kinds.pop() if len(kinds) == 1 else "mixed"
    network = any(r["network"] for r in rows)
    if sandbox == "bwrap":
        value = "bwrap, network allowed by the manifest" if network else "bwrap, no network"
    else:
        value = ("UNSANDBOXED: experiment code ran without the OS sandbox (--unsandboxed); it could have read "
                 "labels or changed files" if sandbox == "none" else "MIXED: some runs ran without the OS sandbox")
    notes = ([" [unsandboxed: experiment code ran without the OS sandbox]"] if sandbox != "bwrap" else []) + \
        ([" [network: the manifest let experiment code use the network]"] if network else [])
    return sandbox, {"name": "sandbox", "value": value, "limit": "bwrap, no network", "ok": True}, "".join(notes)


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
    # Checked by the harness on every run (a run that fails them never reaches a judgement:
    # it vetoes as a "run" guardrail with its failure kind); listed so a verdict shows them.
    checks.append({"name": "protected_paths", "value": "unchanged", "limit": ", ".join(manifest.paths.protected),
                   "ok": True})
    checks.append({"name": "predictions", "value": f"complete, finite, aligned in {len(treat)} runs",
                   "limit": "every given row scored once, no NaN, predict() agrees", "ok": True})
    for name, allowed in rails.max_secondary_regression.items():
        c = statistics.fmean(c.metric("test", name) for _, c, _ in pairs)
        t = statistics.fmean(t.metric("test", name) for _, _, t in pairs)
        worse = metric_sign(name) * (c - t)          # > 0: the treatment made it worse
        checks.append({"name": f"{name}_regression", "value": worse, "limit": allowed, "ok": worse <= allowed})
    return checks


def rollout_guards(manifest) -> list[Guard]:
    """The primary metric may not drop by more than the minimum effect; secondary metrics by
    no more than max_secondary_regression (logloss defaults to DEFAULT_LOGLOSS_REGRESSION)."""
    metric = manifest.metric
    limits = {metric.primary: metric.min_effect}
    for name, limit in {"logloss": DEFAULT_LOGLOSS_REGRESSION, **manifest.guardrails.max_secondary_regression}.items():
        limits.setdefault(name, limit)
    return [Guard(name, limit) for name, limit in limits.items()]


def roll_out(ws, experiment: dict, verdict: Verdict, settings: EvalSettings) -> tuple[Verdict, Rollout]:
    """Run the staged rollout of an offline ship, record its stages, return the final verdict."""
    if verdict.decision != "ship":
        raise ValueError(f"only an offline ship is rolled out, not {verdict.decision!r}")
    factory = settings.rollout_backend or replay_backend
    rollout = ramp(factory(ws, experiment, verdict, settings), rollout_guards(ws.manifest), settings.rollout_shares)
    ws.kb.set_rollout_stages(experiment["id"], rollout.backend, [s.row() for s in rollout.stages])
    ws.kb.log_event("rollout", {"backend": rollout.backend, "stages": len(rollout.stages),
                                "halted": rollout.halted_at is not None, "reason": rollout.reason},
                    experiment_id=experiment["id"])
    return apply_rollout(verdict, rollout), rollout


def apply_rollout(verdict: Verdict, rollout: Rollout) -> Verdict:
    """A halted ramp vetoes the ship; the rollout becomes one more guardrail line either way."""
    halted = rollout.halted_at
    planned = f"{len(rollout.planned)} stages up to {rollout.planned[-1]:.0%} of users"
    if halted is None:
        line = {"name": "rollout", "ok": True, "value": f"{len(rollout.stages)} stages passed", "limit": planned,
                "detail": rollout.reason}
        return replace(verdict, offline_decision=verdict.decision, guardrails=[*verdict.guardrails, line],
                       rationale=f"{verdict.rationale}; {rollout.reason}")
    worst = next(c for c in halted.checks if not c["ok"])
    line = {"name": f"rollout_stage_{halted.stage}_{worst['metric']}", "ok": False, "value": worst["harm"],
            "harm_low": worst["harm_low"], "limit": worst["limit"], "detail": halted.reason}
    return replace(verdict, decision="vetoed", offline_decision=verdict.decision,
                   guardrails=[*verdict.guardrails, line],
                   rationale=f"offline ship vetoed: {rollout.reason}. Offline: {verdict.rationale}")


def replay_backend(ws, experiment: dict, verdict: Verdict, settings: EvalSettings) -> ReplayRollout:
    """Replay the test slice with the verdict's paired runs (the default backend)."""
    splits = ws.harness.splits
    controls, treatments, labels, users, ids = [], [], None, None, None
    for seed in verdict.per_seed:
        c = join_predictions(splits, _run_dir(ws, seed["control_run"]), "test")
        t = join_predictions(splits, _run_dir(ws, seed["treatment_run"]), "test")
        if not np.array_equal(c.ids, t.ids) or (ids is not None and not np.array_equal(ids, c.ids)):
            raise RuntimeError("the rollout needs every run scored on the same test rows")
        controls.append(c.scores)
        treatments.append(t.scores)
        ids, labels = c.ids, c.labels
    users = units_of(splits, ids, bootstrap_unit(ws.manifest.data)[0])
    metrics = [g.metric for g in rollout_guards(ws.manifest)]
    return ReplayRollout(experiment["id"], users, labels, controls, treatments, metrics=metrics,
                         confidence=settings.rollout_confidence, replicates=settings.rollout_replicates)


def train_rows(ws, run_ids: list[str]) -> int | None:
    """How many training rows the first of these runs saw (its run directory's train.csv)."""
    for run_id in run_ids:
        run = ws.kb.get_run(run_id)
        path = Path(run["run_dir"]) / "train.csv" if run and run.get("run_dir") else None
        if path is not None and path.is_file():
            with path.open("rb") as f:
                return max(0, sum(1 for _ in f) - 1)
    return None


def _per_seed(pairs, metric: str) -> list[dict]:
    return [{"seed": seed, "control_run": c.run_id, "treatment_run": t.run_id,
             "control": c.metric("test", metric), "treatment": t.metric("test", metric),
             "delta": t.metric("test", metric) - c.metric("test", metric),
             "valid_delta": t.metric("valid", metric) - c.metric("valid", metric)} for seed, c, t in pairs]


def _run_dir(ws, run_id: str) -> Path:
    return Path(ws.kb.get_run(run_id)["run_dir"])

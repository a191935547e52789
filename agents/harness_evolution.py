"""Harness evolution (SGPO): the agents improve their own harness from trajectories, gated by replay.

Every N experiments (the loop's `evolve_harness` node) or by hand (`agentx evolve`), one step:

1. read the trajectories (agents/trajectories.py) and split them by a fixed hash of the
   experiment id: the proposer sees only its share; `held_back` is the gate's replay set;
   `sealed` is used only to report whether an accepted change holds up;
2. a proposer turns the proposer's share into candidates, each one small delta on the active
   version (`Delta` ops: add, edit or delete one bullet or one prompt section; set policy
   priors; set seeds; set the micro timeout; never a whole rewrite):
   - `OfflineProposer` (no LLM, deterministic): compiles outcomes per arm into playbook
     bullets with helpful/harmful counters (ACE's delta bullets), moves the heuristic
     policy's prior means towards the arms' shrunk observed effects, calibrates the micro
     timeout from honest micro run times, and sets the initial paired seeds from the
     seed-to-seed variance so that an effect of `min_effect` can be resolved;
   - `LLMProposer`: reflects on a minibatch (GEPA-style) and answers a `HarnessDelta`
     of at most three operations, checked before anything else (a malformed delta is
     refused and logged with the reason);
3. the gate replays each candidate on `held_back` and accepts only what shows no regression:
   - policy changes: an off-policy estimate of the reward per decision, self-normalised
     IPW with the logged (Monte Carlo) Thompson propensities, importance weights clipped at
     `CLIP`; accepted when the bootstrap lower bound (5%) of candidate minus current is
     above zero; the effective sample size is reported;
   - prompt and brainstorm-playbook changes from an LLM: the brainstorm step is replayed
     with the candidate and with the current version over groups of held-back experiments,
     each choice scored by the evaluator's outcome of the experiment chosen;
   - compiled bullets: no held-back outcome of the arm contradicts the bullet's direction;
   - micro timeout: no honest held-back micro run would have timed out;
   - seeds: the held-back seed variance asks for the same move;
   the reward is the evaluator's: the signed test effect shrunk by its own confidence
   interval, a fixed penalty for failures (Trajectory.reward);
4. the candidate is stored either way (`harness_versions`: accepted ones become active,
   rejected ones keep the reason and the evidence), with the sealed set's verdict.

The evaluator, the harness that scores runs and the guardrails are outside the spec; their
files are hash-checked before and after each step (`harness_spec.frozen_hash`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from string import Template
from typing import Literal, Protocol

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from agents.harness_spec import (AGENTS, Bullet, HarnessSpec, MicroSettings, Policy, SeedPolicy, active_version,
                                 frozen_hash, get_version, join_sections, placeholders, rewrite_ratio, save_version)
from agents.policy import propensity_of
from agents import trajectories as tj
from agents.trajectories import Trajectory

CLIP = 10.0                 # largest importance weight (candidate / logged propensity)
MIN_OPE = 5                 # held-back decisions with logged propensities the policy gate needs
MIN_ESS = 3.0               # ... and the candidate's effective sample size over them
BOOTSTRAP = 1000
MIN_ARM_OUTCOMES = 2        # outcomes of an arm before the offline proposer writes about it
MICRO_MARGIN = 3.0          # micro timeout = this times the slowest honest micro run ...
MICRO_FLOOR_S = 10.0        # ... and at least this
MICRO_MEMORY_MARGIN = 3.0   # micro memory cap = this times the largest honest micro peak ...
MICRO_MEMORY_FLOOR_MB = 1024  # ... and at least this
MAX_OPS = 3
MAX_REWRITE = 0.5           # an edited section keeps at least half of its text
EVOLVABLE_PROMPTS = ("brainstorm", "chat", "develop", "repair")
MAX_PRIOR_WEIGHT = 5        # pseudo-outcomes an evolved prior may count as
MAX_REPLAY_GROUPS = 5       # held-back groups a prompt replay asks about (two LLM calls each)
PRIOR_CAP = 0.05            # |prior mean| the offline proposer may set (metric units)

Kind = Literal["policy", "bullets", "prompt", "micro", "seeds"]


# -- deltas ------------------------------------------------------------------------------------


class DeltaOp(BaseModel):
    """One small edit of the harness; the LLM proposer answers a list of these."""

    op: Literal["add_bullet", "edit_bullet", "delete_bullet", "edit_section"]
    agent: Literal["brainstorm", "developer"] | None = Field(default=None, description="whose playbook (bullet ops)")
    bullet_id: str | None = Field(default=None, description="the bullet's id: lowercase, digits, '_', '.', '-'")
    prompt: str | None = Field(default=None, description="edit_section: the prompt's name, e.g. 'brainstorm'")
    section: str | None = Field(default=None, description="edit_section: the section's name")
    text: str | None = Field(default=None, description="the bullet's or the section's new text")
    rationale: str = Field(default="", description="which trajectories support this edit, and why")


class HarnessDelta(BaseModel):
    ops: list[DeltaOp] = Field(description="at most three small edits; never a whole rewrite")


class DeltaRefused(ValueError):
    """A delta that is malformed or too big; the reason is logged and the candidate dropped."""


def apply_ops(spec: HarnessSpec, ops: list[DeltaOp], source: str) -> HarnessSpec:
    if not ops:
        raise DeltaRefused("the delta has no operations")
    if len(ops) > MAX_OPS:
        raise DeltaRefused(f"the delta has {len(ops)} operations; at most {MAX_OPS} small edits are allowed")
    prompts = {name: dict(sections) for name, sections in spec.prompts.items()}
    playbook = {agent: list(bullets) for agent, bullets in spec.playbook.items()}
    for i, op in enumerate(ops, 1):
        where = f"operation {i} ({op.op})"
        if op.op == "edit_section":
            if op.prompt not in EVOLVABLE_PROMPTS:
                raise DeltaRefused(f"{where}: prompt {op.prompt!r} may not be edited; evolvable: "
                                   f"{', '.join(EVOLVABLE_PROMPTS)}")
            sections = prompts[op.prompt]
            if op.section not in sections:
                raise DeltaRefused(f"{where}: prompt {op.prompt!r} has no section {op.section!r}; it has "
                                   f"{', '.join(sections)}")
            old, new = sections[op.section], op.text or ""
            if placeholders(old) != placeholders(new):
                raise DeltaRefused(f"{where}: the section's placeholders must stay exactly "
                                   f"{sorted(placeholders(old))}; the edit has {sorted(placeholders(new))}")
            if (ratio := rewrite_ratio(old, new)) > MAX_REWRITE:
                raise DeltaRefused(f"{where}: the edit replaces {ratio:.0%} of the section; at most "
                                   f"{MAX_REWRITE:.0%} (a small edit, never a rewrite)")
            sections[op.section] = new
            continue
        if op.agent not in AGENTS:
            raise DeltaRefused(f"{where}: agent must be one of {', '.join(AGENTS)}, not {op.agent!r}")
        bullets = playbook.setdefault(op.agent, [])
        ids = [b.id for b in bullets]
        if op.op == "delete_bullet":
            if op.bullet_id not in ids:
                raise DeltaRefused(f"{where}: {op.agent} has no bullet {op.bullet_id!r}")
            bullets.pop(ids.index(op.bullet_id))
            continue
        try:
            bullet = Bullet(id=op.bullet_id or "", text=op.text or "", source=source)
        except ValidationError as exc:
            raise DeltaRefused(f"{where}: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}") from None
        if op.op == "add_bullet":
            if bullet.id in ids:
                raise DeltaRefused(f"{where}: {op.agent} already has bullet {bullet.id!r}; edit it instead")
            bullets.append(bullet)
        else:
            if bullet.id not in ids:
                raise DeltaRefused(f"{where}: {op.agent} has no bullet {bullet.id!r} to edit")
            old = bullets[ids.index(bullet.id)]
            bullets[ids.index(bullet.id)] = old.model_copy(update={"text": bullet.text, "source": source})
    edited = spec.model_copy(update={"prompts": prompts, "playbook": playbook})
    for name in {op.prompt for op in ops if op.op == "edit_section"}:
        text = join_sections(prompts[name])
        try:
            Template(text).substitute({p: "x" for p in placeholders(text)})
        except (ValueError, KeyError) as exc:
            raise DeltaRefused(f"the edited prompt {name!r} no longer renders: {exc} (a bare '$' must be "
                               "written '$$')") from None
    return edited


# -- candidates and proposers ----------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    kind: Kind
    spec: HarnessSpec
    delta: list[dict]                # what changed, readable (ops or field: old -> new)
    rationale: str
    proposer: str
    arms: tuple[str, ...] = ()       # bullets: the arms whose direction each bullet claims


@dataclass(frozen=True)
class World:
    """What a proposer and the gate know of the workspace besides trajectories."""

    min_effect: float
    metric: str


class Proposer(Protocol):
    name: str

    def propose(self, current: HarnessSpec, batch: list[Trajectory], world: World) -> list[Candidate]: ...


class OfflineProposer:
    """Deterministic, no LLM: lessons into bullets, outcomes into priors, run times into the
    micro timeout, seed variance into the initial seeds. One candidate per kind of change."""

    name = "offline"

    def propose(self, current: HarnessSpec, batch: list[Trajectory], world: World) -> list[Candidate]:
        out = []
        for make in (self._bullets, self._policy, self._micro, self._seeds):
            if (candidate := make(current, batch, world)) is not None:
                out.append(candidate)
        return out

    @staticmethod
    def _by_arm(batch: list[Trajectory]) -> dict[str, list[Trajectory]]:
        arms: dict[str, list[Trajectory]] = {}
        for t in batch:
            arms.setdefault(t.arm, []).append(t)
        return arms

    def _bullets(self, current, batch, world) -> Candidate | None:
        bullets = list(current.bullets("brainstorm"))
        ids = [b.id for b in bullets]
        changed, arms = [], []
        for arm, ts in sorted(self._by_arm(batch).items()):
            if len(ts) < MIN_ARM_OUTCOMES:
                continue
            rewards = [t.reward() for t in ts]
            wins = sum(t.outcome() == "win" for t in ts)
            harmful = sum(t.outcome() in ("loss", "failure") for t in ts)
            kinds = sorted({t.failure_kind for t in ts if t.failure_kind and t.outcome() == "failure"})
            mean = sum(rewards) / len(rewards)
            band = max(world.min_effect / 2, 1e-4)    # within it an arm is flat, not a help or a harm
            verb = "helps" if mean > band else "hurts" if mean < -band else "is flat"
            text = (f"arm {arm} ({ts[0].family}) {verb}: {len(ts)} experiments, mean shrunk {world.metric} effect "
                    f"{mean:+.4f}, {wins} shipped, {harmful} lost or failed"
                    + (f" (failures: {', '.join(kinds)})" if kinds else "")
                    + f"; e.g. {', '.join(t.experiment_id for t in ts[-3:])}")
            bullet = Bullet(id=f"arm.{_slug(arm)}", text=text[:400], source="offline: "
                            + ", ".join(t.experiment_id for t in ts[-5:]), helpful=wins, harmful=harmful)
            if bullet.id in ids:
                old = bullets[ids.index(bullet.id)]
                if (old.text, old.helpful, old.harmful) == (bullet.text, bullet.helpful, bullet.harmful):
                    continue
                bullets[ids.index(bullet.id)] = bullet
                changed.append({"op": "edit_bullet", "agent": "brainstorm", "bullet_id": bullet.id, "text": text})
            else:
                bullets.append(bullet)
                changed.append({"op": "add_bullet", "agent": "brainstorm", "bullet_id": bullet.id, "text": text})
            arms.append(arm)
        if not changed:
            return None
        spec = current.model_copy(update={"playbook": {**current.playbook, "brainstorm": bullets}})
        return Candidate("bullets", spec, changed, f"compiled the outcomes of {len(arms)} arms into bullets",
                         self.name, tuple(arms))

    def _policy(self, current, batch, world) -> Candidate | None:
        policy = current.policy
        default = Policy()
        arm_prior, arm_weight = dict(policy.arm_prior), dict(policy.arm_weight)
        changed = []
        for arm, ts in sorted(self._by_arm(batch).items()):
            if len(ts) < MIN_ARM_OUTCOMES:
                continue
            rewards = [t.reward() for t in ts]
            # empirical Bayes from the default prior: the arm's observed mean shrunk by one pseudo-
            # outcome of the shipped prior, counting as up to MAX_PRIOR_WEIGHT outcomes in a new run
            # (half the evidence, so a run can still overturn it)
            old, old_w = policy.prior(arm, ts[0].family), policy.weight(arm)
            new = round(max(-PRIOR_CAP, min(PRIOR_CAP, (default.prior(arm, ts[0].family) + sum(rewards))
                                             / (1 + len(rewards)))), 5)
            weight = float(min(MAX_PRIOR_WEIGHT, max(1, len(rewards) // 2)))
            if abs(new - old) < 1e-5 and weight == old_w:
                continue
            arm_prior[arm], arm_weight[arm] = new, weight
            changed.append({"field": f"policy.arm_prior.{arm}", "old": old, "new": new, "weight": weight,
                            "outcomes": len(ts)})
        if not changed:
            return None
        spec = current.model_copy(update={"policy": policy.model_copy(update={"arm_prior": arm_prior,
                                                                             "arm_weight": arm_weight})})
        return Candidate("policy", spec, changed, f"moved {len(changed)} arms' prior means towards their outcomes",
                         self.name)

    def _micro(self, current, batch, world) -> Candidate | None:
        settings = calibrate_micro([s for t in batch for s in t.micro_ok_s], [m for t in batch for m in t.micro_ok_mb])
        if settings is None:
            return None
        old = current.micro
        if settings.memory_mb is None and old.memory_mb is not None:   # no peaks recorded: keep the cap
            settings = settings.model_copy(update={"memory_mb": old.memory_mb})
        same = lambda a, b: a is not None and b is not None and abs(a - b) / b < 0.2  # noqa: E731
        if same(settings.timeout_s, old.timeout_s) and (settings.memory_mb is None or same(settings.memory_mb,
                                                                                               old.memory_mb)):
            return None
        spec = current.model_copy(update={"micro": settings})
        times = [s for t in batch for s in t.micro_ok_s]
        peaks = [m for t in batch for m in t.micro_ok_mb]
        return Candidate("micro", spec, [{"field": "micro", "old": old.model_dump(), "new": settings.model_dump(),
                                          "honest_runs": len(times), "slowest_s": round(max(times), 2),
                                          "peak_mb": round(max(peaks), 1) if peaks else None}],
                         f"{len(times)} honest micro runs took at most {max(times):.1f} s"
                         + (f" and {max(peaks):.0f} MB" if peaks else ""), self.name)

    def _seeds(self, current, batch, world) -> Candidate | None:
        sd, dof = tj.seed_sd(batch)
        if sd is None or dof < 3:
            return None
        need = tj.seeds_needed(sd, world.min_effect)
        old = current.seeds
        if need is None or need == old.initial:
            return None
        seeds = SeedPolicy(initial=need, max=max(need, old.max))
        spec = current.model_copy(update={"seeds": seeds})
        return Candidate("seeds", spec, [{"field": "seeds.initial", "old": old.initial, "new": need,
                                          "seed_sd": round(sd, 6), "dof": dof}],
                         f"seed-to-seed sd {sd:.4g} over {dof} degrees of freedom needs {need} paired seeds "
                         f"to resolve {world.min_effect}", self.name)


def calibrate_micro(seconds: list[float], peaks_mb: list[float]) -> MicroSettings | None:
    """Micro-tier settings from honest micro runs: a timeout of MICRO_MARGIN times the slowest
    (at least MICRO_FLOOR_S) and a memory cap of MICRO_MEMORY_MARGIN times the largest peak (at
    least MICRO_MEMORY_FLOOR_MB); None with fewer than three runs to go on."""
    if len(seconds) < 3:
        return None
    timeout = float(math.ceil(max(MICRO_FLOOR_S, MICRO_MARGIN * max(seconds))))
    memory = int(math.ceil(max(MICRO_MEMORY_FLOOR_MB, MICRO_MEMORY_MARGIN * max(peaks_mb)))) if len(peaks_mb) >= 3 \
        else None
    return MicroSettings(timeout_s=timeout, memory_mb=memory)


class LLMProposer:
    """Reflects on a minibatch of trajectories and answers a few delta edits (`HarnessDelta`)."""

    def __init__(self, client, minibatch: int = 8):
        self.client = client
        self.minibatch = minibatch
        self.name = f"llm ({client.provider}:{client.model_name})"
        self.refused: list[str] = []

    def propose(self, current: HarnessSpec, batch: list[Trajectory], world: World) -> list[Candidate]:
        self.refused = []                 # this step's refusals only
        shown = batch[-self.minibatch:]
        if not shown:
            return []
        prompt = current.render("evolve", trajectories=_trajectory_lines(shown), metric=world.metric,
                                playbook=_playbook_lines(current), sections=_section_index(current))
        answer = self.client.decide("evolution", prompt, HarnessDelta)
        try:
            spec = apply_ops(current, answer.ops, f"llm: {', '.join(t.experiment_id for t in shown[-5:])}")
        except DeltaRefused as exc:
            self.refused.append(str(exc))
            return []
        kind: Kind = "prompt"
        return [Candidate(kind, spec, [op.model_dump(exclude_none=True) for op in answer.ops],
                          "; ".join(op.rationale for op in answer.ops if op.rationale)[:500] or "(no rationale)",
                          self.name)]


class RandomProposer:
    """A control for the benchmark: random prior moves of the same size, through the same gate."""

    name = "random"

    def __init__(self, seed: int = 0, scale: float = 0.005):
        self.rng = np.random.default_rng(seed)
        self.scale = scale

    def propose(self, current: HarnessSpec, batch: list[Trajectory], world: World) -> list[Candidate]:
        arms = sorted({t.arm for t in batch})
        if not arms:
            return []
        arm_prior = dict(current.policy.arm_prior)
        changed = []
        for arm in self.rng.choice(arms, size=min(3, len(arms)), replace=False):
            old = current.policy.prior(str(arm), "")
            arm_prior[str(arm)] = round(float(old + self.rng.normal(0, self.scale)), 5)
            changed.append({"field": f"policy.arm_prior.{arm}", "old": old, "new": arm_prior[str(arm)]})
        spec = current.model_copy(update={"policy": current.policy.model_copy(update={"arm_prior": arm_prior})})
        return [Candidate("policy", spec, changed, "random prior moves (control)", self.name)]


# -- the gate ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GateResult:
    accepted: bool
    reason: str
    evidence: dict


def snipw(policy: Policy, logged: list[Trajectory], clip: float = CLIP) -> tuple[np.ndarray, np.ndarray]:
    """Per decision: the clipped importance weight of `policy` against the logged propensity, and the reward."""
    weights, rewards = [], []
    for t in logged:
        target = propensity_of(policy, t.decision_context, t.arm)
        weights.append(min(clip, target / t.propensity))
        rewards.append(t.reward())
    return np.array(weights), np.array(rewards)


def off_policy_gate(current: Policy, candidate: Policy, held_back: list[Trajectory], *,
                    replicates: int = BOOTSTRAP, seed: int = 0) -> GateResult:
    logged = [t for t in held_back if t.propensity and t.decision_context]
    if len(logged) < MIN_OPE:
        return GateResult(False, f"only {len(logged)} held-back decisions have logged propensities; the off-policy "
                                 f"gate needs {MIN_OPE}", {"n": len(logged)})
    w_cur, r = snipw(current, logged)
    w_new, _ = snipw(candidate, logged)
    rng = np.random.default_rng(seed)
    n = len(logged)
    idx = rng.integers(0, n, size=(replicates, n))
    est = lambda w, i: (w[i] * r[i]).sum(axis=-1) / np.maximum(w[i].sum(axis=-1), 1e-12)  # noqa: E731
    diffs = est(w_new, idx) - est(w_cur, idx)
    low, high = float(np.quantile(diffs, 0.05)), float(np.quantile(diffs, 0.95))
    value_cur, value_new = float(est(w_cur, np.arange(n))), float(est(w_new, np.arange(n)))
    ess = float(w_new.sum() ** 2 / max((w_new ** 2).sum(), 1e-12))
    evidence = {"estimator": "SNIPW", "clip": CLIP, "n": n, "ess": round(ess, 2), "current": value_cur,
                "candidate": value_new, "diff": value_new - value_cur, "diff_low_5%": low, "diff_high_95%": high,
                "replicates": replicates}
    if ess < MIN_ESS:
        return GateResult(False, f"off-policy (SNIPW): the candidate's effective sample size {ess:.1f} of {n} is below "
                                 f"{MIN_ESS:g}: too few held-back decisions it would have made", evidence)
    if low > 0:
        return GateResult(True, f"off-policy (SNIPW, clip {CLIP:g}) gain {value_new - value_cur:+.5f} per decision, "
                                f"bootstrap 5% bound {low:+.5f} > 0, ESS {ess:.1f} of {n}", evidence)
    return GateResult(False, f"off-policy (SNIPW, clip {CLIP:g}) gain {value_new - value_cur:+.5f} per decision, "
                             f"bootstrap 5% bound {low:+.5f} is not above 0 (ESS {ess:.1f} of {n})", evidence)


def bullets_gate(candidate: Candidate, held_back: list[Trajectory], world: World) -> GateResult:
    contradicted, checked = [], []
    for arm in candidate.arms:
        seen = [t.reward() for t in held_back if t.arm == arm]
        bullet = next(b for b in candidate.spec.bullets("brainstorm") if b.id == f"arm.{_slug(arm)}")
        claims = "helps" if " helps:" in bullet.text else "hurts" if " hurts:" in bullet.text else "flat"
        if len(seen) >= MIN_ARM_OUTCOMES:
            mean = sum(seen) / len(seen)
            checked.append({"arm": arm, "claims": claims, "held_back": len(seen), "mean": mean})
            band = max(world.min_effect / 2, 1e-4)
            if (claims == "helps" and mean < 0) or (claims == "hurts" and mean > 0) or \
                    (claims == "flat" and abs(mean) > 2 * band):
                contradicted.append(f"{arm} (claims {claims}, held-back mean {mean:+.4f} over {len(seen)})")
    evidence = {"checked": checked, "contradicted": contradicted}
    if contradicted:
        return GateResult(False, "held-back outcomes contradict: " + "; ".join(contradicted), evidence)
    if not checked:
        return GateResult(False, f"no arm of these bullets has {MIN_ARM_OUTCOMES} held-back outcomes to check them "
                                 "against yet", evidence)
    return GateResult(True, f"no held-back outcome contradicts the bullets ({len(checked)} arms checked against "
                            f"held-back outcomes, {len(candidate.arms) - len(checked)} without any)", evidence)


def micro_gate(candidate: Candidate, held_back: list[Trajectory]) -> GateResult:
    """No honest held-back micro run would have hit the candidate's timeout or memory cap."""
    timeout, cap = candidate.spec.micro.timeout_s, candidate.spec.micro.memory_mb
    times = [s for t in held_back for s in t.micro_ok_s]
    peaks = [m for t in held_back for m in t.micro_ok_mb]
    slow = [s for s in times if timeout is not None and s >= timeout]
    big = [m for m in peaks if cap is not None and m >= cap]
    evidence = {"timeout_s": timeout, "memory_mb": cap, "held_back_runs": len(times),
                "slowest_s": max(times) if times else None, "largest_mb": max(peaks) if peaks else None}
    if not times:
        return GateResult(False, "no honest held-back micro run to check the micro settings on", evidence)
    if cap is not None and not peaks:
        return GateResult(False, "no held-back micro run recorded its peak memory to check the memory cap on",
                          evidence)
    if slow or big:
        return GateResult(False, f"honest held-back micro runs would have failed: {len(slow)} over {timeout} s, "
                                 f"{len(big)} over {cap} MB", evidence)
    return GateResult(True, f"every one of {len(times)} honest held-back micro runs stays within {timeout:g} s"
                            + (f" and {cap} MB (largest {max(peaks):.0f} MB)" if cap and peaks else ""), evidence)


def seeds_gate(current: HarnessSpec, candidate: Candidate, held_back: list[Trajectory], world: World) -> GateResult:
    sd, dof = tj.seed_sd(held_back)
    new, old = candidate.spec.seeds.initial, current.seeds.initial
    if sd is None:
        return GateResult(False, "no held-back experiment has two or more seeds to check the seed policy on",
                          {"dof": 0})
    need = tj.seeds_needed(sd, world.min_effect)
    if need is None:
        return GateResult(False, "the workspace sets no min_effect: no seed count to calibrate against", {})
    evidence = {"held_back_sd": sd, "dof": dof, "held_back_needs": need, "current": old, "candidate": new}
    agrees = need == new or (new - old) * (need - old) > 0 and abs(need - new) <= abs(need - old)
    if agrees:
        return GateResult(True, f"held-back seed variance (sd {sd:.4g}, {dof} dof) needs {need} seeds: "
                                f"{old} -> {new} moves towards it", evidence)
    return GateResult(False, f"held-back seed variance (sd {sd:.4g}, {dof} dof) needs {need} seeds; "
                             f"{old} -> {new} does not move towards it", evidence)


def replay_gate(client, current: HarnessSpec, candidate: Candidate, visible: list[Trajectory],
                held_back: list[Trajectory], world: World, group: int = 4) -> GateResult:
    """Replay the brainstorm step: with each version, choose among groups of held-back experiments
    that were run; each choice scores the evaluator's outcome of the one chosen."""
    touched = {op.get("agent") or op.get("prompt") for op in candidate.delta}
    if touched & {"developer", "develop", "repair"}:
        return GateResult(False, "a developer change needs a developer replay (training runs per held-back "
                                 "experiment), which this gate does not do; only brainstorm changes are gated",
                          {"touched": sorted(x for x in touched if x)})
    if client is None:
        return GateResult(False, "a prompt change is replayed by an LLM brainstorm; no LLM client was given", {})
    runnable = [t for t in held_back if not t.failed or t.status == "evaluated"]
    groups = [runnable[i:i + group] for i in range(0, len(runnable), group)]
    groups = [g for g in groups if len(g) >= 2][-MAX_REPLAY_GROUPS:]      # the latest; bounds the LLM calls
    prompts = sorted({op.get("prompt") for op in candidate.delta if op.get("op") == "edit_section"} & {"chat"}
                     | ({"brainstorm"} if touched - {"chat"} else set()))
    if not groups:
        return GateResult(False, "fewer than two held-back experiments to choose among: nothing to replay",
                          {"held_back": len(held_back)})
    scores = {"current": [], "candidate": []}
    for g in groups:
        for prompt in prompts:
            for label, spec in (("current", current), ("candidate", candidate.spec)):
                scores[label].append(_replay_choice(client, spec, g, visible, world, prompt))
    cur, new = sum(scores["current"]), sum(scores["candidate"])
    evidence = {"groups": len(groups), "prompts": prompts, "current": scores["current"],
                "candidate": scores["candidate"]}
    if new > cur:
        return GateResult(True, f"brainstorm replay over {len(groups)} groups of held-back experiments: "
                                f"candidate's choices score {new:+.4f}, current's {cur:+.4f}", evidence)
    return GateResult(False, f"brainstorm replay over {len(groups)} groups of held-back experiments: candidate's "
                             f"choices score {new:+.4f}, not above current's {cur:+.4f}", evidence)


def _replay_choice(client, spec: HarnessSpec, group: list[Trajectory], visible: list[Trajectory], world,
                   prompt_name: str = "brainstorm") -> float:
    from agentx.state import Proposal, ProposalList
    choices = "\n".join(f"- {t.title} (recipe {t.recipe or 'free-form'}; params {json.dumps(t.params)})"
                        for t in group)
    request = "Replay: choose exactly one of the listed candidates; answer with its title."
    if prompt_name == "chat":
        answer = client.decide("evolution", spec.render("chat", request=request, recipes=choices), Proposal)
        titles = [answer.title.strip().lower()]
    else:
        prompt = spec.render("brainstorm", k=1, request=request, history=_trajectory_lines(visible[-10:]),
                             architecture="(replay)", recipes=choices, cards="(replay)", metric=world.metric)
        answer = client.decide("evolution", prompt, ProposalList)
        titles = [p.title.strip().lower() for p in answer.proposals[:1]]
    for t in group:
        if titles and titles[0] == t.title.strip().lower():
            return t.reward()
    return tj.GATE_FAILURE_REWARD        # an answer that is none of the candidates scores as a failure


def gate(current: HarnessSpec, candidate: Candidate, held_back: list[Trajectory], world: World, *,
         visible: list[Trajectory] = (), client=None) -> GateResult:
    if candidate.kind == "policy":
        return off_policy_gate(current.policy, candidate.spec.policy, held_back)
    if candidate.kind == "bullets":
        return bullets_gate(candidate, held_back, world)
    if candidate.kind == "micro":
        return micro_gate(candidate, held_back)
    if candidate.kind == "seeds":
        return seeds_gate(current, candidate, held_back, world)
    return replay_gate(client, current, candidate, list(visible), held_back, world)


# -- one step ------------------------------------------------------------------------------------


@dataclass
class Decision:
    candidate: Candidate
    result: GateResult
    version_id: int
    sealed: GateResult | None = None


@dataclass
class EvolutionStep:
    base_version: int
    trajectories: dict[str, int]
    decisions: list[Decision] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def accepted(self) -> list[Decision]:
        return [d for d in self.decisions if d.result.accepted]

    def lines(self) -> list[str]:
        split = ", ".join(f"{k} {v}" for k, v in self.trajectories.items())
        out = [f"from v{self.base_version}; trajectories: {split}"]
        if self.note:
            out.append(self.note)
        for reason in self.refused:
            out.append(f"refused a malformed delta: {reason}")
        for d in self.decisions:
            verdict = "ACCEPTED" if d.result.accepted else "rejected"
            out.append(f"{d.candidate.kind} candidate by {d.candidate.proposer}: {d.candidate.rationale}")
            for change in d.candidate.delta[:6]:
                out.append(f"    delta: {json.dumps(change, sort_keys=True)[:200]}")
            out.append(f"  -> {verdict} as v{d.version_id}: {d.result.reason}")
            if d.sealed is not None:
                out.append(f"     sealed set (reporting only): {'confirms' if d.sealed.accepted else 'does not confirm'}"
                           f" ({d.sealed.reason})")
        if not self.decisions and not self.refused:
            out.append("no candidate: nothing in the trajectories asks for a change yet")
        return out


class Evolver:
    def __init__(self, proposer: Proposer | None = None, client=None):
        self.proposer = proposer or OfflineProposer()
        self.client = client


@dataclass(frozen=True)
class Judged:
    candidate: Candidate
    result: GateResult
    sealed: GateResult | None


def step_on(current: HarnessSpec, every: list[Trajectory], world: World, evolver: Evolver
            ) -> tuple[dict[str, list[Trajectory]], list[Judged]]:
    """The step without a KB: split, propose on the proposer's share, gate each candidate on
    the held-back share (accepted ones become the base of the next), check accepted ones on
    the sealed share for the report. `agentx evolve` and benchmarks/evolution.py both run this."""
    parts = {s: [t for t in every if t.split == s] for s in ("proposer", "held_back", "sealed")}
    base = current
    judged = []
    for candidate in evolver.proposer.propose(base, parts["proposer"], world):
        rebased = _rebase(candidate, base, current)
        result = gate(current, rebased, parts["held_back"], world, visible=parts["proposer"], client=evolver.client)
        sealed = gate(current, rebased, parts["sealed"], world, visible=parts["proposer"], client=evolver.client) \
            if result.accepted else None
        judged.append(Judged(rebased, result, sealed))
        if result.accepted:
            current = rebased.spec
    return parts, judged


def evolve(ws, evolver: Evolver | None = None) -> EvolutionStep:
    """One evolution step on workspace `ws` (see the module docstring)."""
    evolver = evolver or Evolver()
    before = frozen_hash()
    base = active_version(ws.kb)
    world = World(min_effect=ws.manifest.metric.min_effect, metric=ws.manifest.metric.primary)
    family_of = lambda recipe: ws.recipes.family(recipe) if recipe and recipe in ws.recipes else None  # noqa: E731
    every = tj.load(ws.kb, ws.manifest.metric.sign, family_of)
    parts, judged = step_on(base.spec, every, world, evolver)
    step = EvolutionStep(base.id, {k: len(v) for k, v in parts.items()})
    step.refused = list(getattr(evolver.proposer, "refused", []))
    for reason in step.refused:
        ws.kb.log_event("harness_delta_refused", {"proposer": evolver.proposer.name, "reason": reason})
    current = base
    for j in judged:
        evidence = {**j.result.evidence, "sealed": None if j.sealed is None else
                    {"confirms": j.sealed.accepted, "reason": j.sealed.reason}, "frozen_hash": before}
        version_id = save_version(ws.kb, j.candidate.spec, parent_id=current.id,
                                  status="active" if j.result.accepted else "rejected",
                                  proposer=j.candidate.proposer, reason=j.result.reason, evidence=evidence,
                                  delta=j.candidate.delta)
        step.decisions.append(Decision(j.candidate, j.result, version_id, j.sealed))
        if j.result.accepted:
            current = get_version(ws.kb, version_id)
    if frozen_hash() != before:
        raise RuntimeError("the evaluator, scoring or guardrail files changed during an evolution step")
    ws.kb.log_event("evolve_harness", {"base": base.id, "active": current.id, "trajectories": step.trajectories,
                                       "decisions": [{"kind": d.candidate.kind, "accepted": d.result.accepted,
                                                      "version": d.version_id, "reason": d.result.reason}
                                                     for d in step.decisions], "refused": step.refused})
    return step


def _rebase(candidate: Candidate, base: HarnessSpec, current: HarnessSpec) -> Candidate:
    """A candidate made against `base`, carried onto `current` (an earlier candidate of this step
    may have been accepted): only the part of the spec its kind changes is taken."""
    if current == base:
        return candidate
    part = {"policy": "policy", "bullets": "playbook", "micro": "micro", "seeds": "seeds"}.get(candidate.kind)
    if part is None:     # prompt deltas touch prompts and playbooks: both
        spec = current.model_copy(update={"prompts": candidate.spec.prompts, "playbook": candidate.spec.playbook})
    else:
        spec = current.model_copy(update={part: getattr(candidate.spec, part)})
    return Candidate(candidate.kind, spec, candidate.delta, candidate.rationale, candidate.proposer, candidate.arms)


# -- prompt material -------------------------------------------------------------------------------


def _trajectory_lines(ts: list[Trajectory]) -> str:
    lines = []
    for t in ts:
        ci = "-" if t.ci_low is None else f"[{t.ci_low:+.4f}, {t.ci_high:+.4f}]"
        effect = "-" if t.effect is None else f"{t.effect:+.4f}"
        lines.append(f"- {t.experiment_id} '{t.title}' (arm {t.arm}): {t.decision or t.status}, effect {effect} {ci}"
                     + (f", failure {t.failure_kind}" if t.failure_kind else "")
                     + (f", vetoed by {', '.join(t.vetoes)}" if t.vetoes else "")
                     + (f", reviewer {t.pr_state}: {t.review_reason}" if t.pr_state == "rejected" else ""))
    return "\n".join(lines) or "(none)"


def _playbook_lines(spec: HarnessSpec) -> str:
    lines = [f"- {agent}/{b.id}: {b.text} (helpful {b.helpful}, harmful {b.harmful})"
             for agent in AGENTS for b in spec.bullets(agent)]
    return "\n".join(lines) or "(empty)"


def _section_index(spec: HarnessSpec) -> str:
    return "\n".join(f"- {name}: {', '.join(spec.prompts[name])}" for name in EVOLVABLE_PROMPTS if name in spec.prompts)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_.-]+", "-", text.lower()).strip("-")[:58] or "arm"

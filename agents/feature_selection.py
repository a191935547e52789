"""MoFA feature selection: two brains behind one interface, `brain.select(problem) -> Selection`.

- `OfflineBrain` (the default, no LLM): constrained greedy mRMR. Relevance is the mean of
  three statistics, each scaled to [0, 1] by its maximum over the eligible features: split
  gain share (counted only when the permutation drop is positive), validation permutation
  drop and mutual information (gain alone rewards memorised high-cardinality columns, MI
  alone misses features that only act in interaction, permutation alone is noisy). A candidate's score is its relevance times
  (1 - its strongest association with anything already kept): a near-copy of a kept
  feature scores close to zero. Required features go first; then the best-scoring feature
  that keeps every hard constraint is added (`agents.feature_constraints.extend`) until
  the budget is full or nothing fits. The budget is filled: a weak feature still beats an
  empty slot when a model decides how much to use it.
- `LLMFeatureBrain` (`agents/feature_selection_llm.py`): the same statistics, definitions
  and constraints in a structured prompt; bucket, merge, then add/swap refinement; its
  answer goes through `repair` before anything is trusted.

A `Selection` carries the kept features, a reason for every catalog feature (kept or
dropped), the constraint check and the repair log.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agents.feature_constraints import Check, Constraints, Rules, check, extend, feasibility, violations
from tools.feature_catalog import CatalogFeature
from tools.feature_stats import StatsTable


@dataclass(frozen=True)
class Problem:
    catalog: list[CatalogFeature]
    stats: StatsTable
    constraints: Constraints
    task: str = "binary click-through prediction; metric: AUC"
    crosses: tuple = ()                      # tools.feature_crosses.Cross, shown to the LLM

    def relevance(self) -> dict[str, float]:
        return relevance(self.stats, [f.name for f in self.catalog if f.name not in self.constraints.forbidden])

    def rules(self) -> Rules:
        return Rules(self.constraints, self.catalog, self.stats, self.relevance())


@dataclass
class Selection:
    brain: str
    kept: list[str]
    reasons: dict[str, str]                  # every catalog feature -> why kept or dropped
    checks: list[Check]
    repairs: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)      # what each stage of the brain did

    @property
    def valid(self) -> bool:
        return not violations(self.checks)

    def as_dict(self, problem: Problem) -> dict:
        rel = problem.relevance()
        rows = []
        for f in problem.catalog:
            s = problem.stats.stats.get(f.name)
            rows.append({"feature": f.name, "group": f.group, "type": f.type, "serving_cost": f.serving_cost,
                         "kept": f.name in self.kept, "reason": self.reasons.get(f.name, ""),
                         "relevance": rel.get(f.name), "gain": s.gain if s else None,
                         "permutation": s.permutation if s else None, "mutual_info": s.mutual_info if s else None,
                         "missing_rate": s.missing_rate if s else None, "cardinality": s.cardinality if s else None,
                         "partners": [list(p) for p in s.partners] if s else []})
        return {"brain": self.brain, "kept": self.kept, "valid": self.valid, "features": rows,
                "checks": [c.__dict__ for c in self.checks], "repairs": self.repairs, "steps": self.steps}


def relevance(stats: StatsTable, names: list[str]) -> dict[str, float]:
    """Mean of gain, permutation drop and MI, each divided by its maximum over `names` (negatives 0).

    Split gain counts only where the permutation drop is positive: gain the model spent on a
    column whose shuffling costs nothing on validation is memorisation (a 300-level noise id
    collects plenty), not relevance."""
    def generalised_gain(s) -> float:
        return (s.gain or 0.0) if (s.permutation or 0.0) > 0 else 0.0

    getters = (generalised_gain, lambda s: s.permutation or 0.0, lambda s: s.mutual_info)
    parts = []
    for get in getters:
        raw = {n: max(0.0, get(stats.stats[n])) for n in names if n in stats.stats}
        top = max(raw.values(), default=0.0)
        parts.append({n: (v / top if top > 0 else 0.0) for n, v in raw.items()})
    return {n: sum(p.get(n, 0.0) for p in parts) / len(parts) for n in names}


def mrmr_score(rules: Rules):
    """relevance x (1 - strongest association with what is already kept)."""
    def score(name: str, selected: list[str]) -> float:
        overlap = max((rules.assoc(name, s) for s in selected), default=0.0)
        return rules.priority.get(name, 0.0) * (1.0 - overlap)
    return score


def stat_line(problem: Problem, name: str) -> str:
    s = problem.stats.stats.get(name)
    if s is None:
        return "no statistics"
    gain = "-" if s.gain is None else f"{s.gain:.3f}"
    perm = "-" if s.permutation is None else f"{s.permutation:+.4f}"
    return f"gain {gain}, permutation {perm}, MI {s.mutual_info:.4f}"


class OfflineBrain:
    name = "offline brain: constrained greedy mRMR over the statistics (no LLM)"

    def select(self, problem: Problem) -> Selection:
        rules = problem.rules()
        feasibility(rules)
        score = mrmr_score(rules)
        kept = list(problem.constraints.must_include)
        kept = extend(kept, rules, problem.constraints.budget, score)
        reasons = {n: self._kept_reason(problem, rules, kept, n, score) for n in kept}
        for f in problem.catalog:
            if f.name not in kept:
                reasons[f.name] = self._dropped_reason(problem, rules, kept, f.name, score)
        steps = [f"greedy mRMR: {len(kept)} of {len(problem.catalog)} features kept "
                 f"(budget {problem.constraints.budget})"]
        return Selection(self.name, kept, reasons, check(kept, rules), steps=steps)

    @staticmethod
    def _kept_reason(problem: Problem, rules: Rules, kept: list[str], name: str, score) -> str:
        before = kept[:kept.index(name)]
        head = "required (must_include); " if name in problem.constraints.must_include else f"pick {len(before) + 1}: "
        partner = max(before, key=lambda s: rules.assoc(name, s), default=None)
        overlap = f"; strongest overlap {rules.assoc(name, partner):.2f} with {partner!r}" if partner else ""
        return (f"{head}relevance {rules.priority.get(name, 0.0):.2f} ({stat_line(problem, name)}), "
                f"score {score(name, before):.3f}{overlap}")

    @staticmethod
    def _dropped_reason(problem: Problem, rules: Rules, kept: list[str], name: str, score) -> str:
        c = problem.constraints
        if name in c.forbidden:
            return c.forbidden[name]
        rel = f"relevance {rules.priority.get(name, 0.0):.2f} ({stat_line(problem, name)})"
        if c.max_correlation is not None:
            over = [s for s in kept if rules.assoc(name, s) > c.max_correlation]
            if over:
                return f"association {rules.assoc(name, over[0]):.2f} with kept {over[0]!r} is above the cap " \
                       f"{c.max_correlation:g}; {rel}"
        group = rules.group(name)
        if group in c.group_max and rules.counts(kept)[group] >= c.group_max[group]:
            return f"group {group} is full (at most {c.group_max[group]}); {rel}"
        if c.max_serving_cost is not None and rules.cost(kept) + rules.by_name[name].serving_cost > c.max_serving_cost:
            return f"its serving cost would take the total above {c.max_serving_cost:g}; {rel}"
        last = min((score(n, kept[:i]) for i, n in enumerate(kept) if n not in c.must_include), default=None)
        versus = f" (lowest kept score {last:.3f})" if last is not None else ""
        return f"score {score(name, kept):.3f} given the kept set{versus}; {rel}"

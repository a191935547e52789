"""The LLM brain of MoFA feature selection: bucket, merge, refine; code enforces the constraints.

1. Buckets: the eligible candidates (forbidden and leaky ones are removed in code first),
   ordered by group and then relevance, split into buckets of at most `bucket_size` (40),
   so that each prompt stays readable; each bucket keeps at most K. The kept ones (plus any
   required feature) form the next pool; while it is bigger than one bucket this repeats.
   With a single bucket the bucket stage is skipped: the merge sees every candidate.
2. Merge: one prompt over the pool, keep at most K. The answer goes through `repair`
   (unknown or repeated names, forbidden features, budget, groups, cost, correlation), and
   the repair log says what changed.
3. Refinement: up to `refine_steps` single moves (add, swap or stop), each checked in code;
   a move that names an unknown feature or would break a constraint is refused and logged.

Every decision is a structured output (`FeatureDecisions`, `RefineMove`) from
`LLMClient.decide`, which logs each call to the KB.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, Field

from agents.feature_constraints import Rules, check, feasibility, repair, violations
from agents.feature_selection import Problem, Selection
from agents.prompts import render_prompt

BUCKET_SIZE = 40
REFINE_STEPS = 3
AGENT = "feature_selection"


class FeatureVerdict(BaseModel):
    name: str = Field(description="the feature's name, exactly as in the candidate table")
    keep: bool
    reason: str = Field(description="one sentence citing the statistics or the definition")


class FeatureDecisions(BaseModel):
    decisions: list[FeatureVerdict]
    summary: str = ""


class RefineMove(BaseModel):
    action: Literal["add", "swap", "stop"]
    add: str | None = Field(default=None, description="the candidate to add (add, swap)")
    remove: str | None = Field(default=None, description="the kept feature to remove (swap)")
    reason: str = ""


class LLMFeatureBrain:
    def __init__(self, client, *, bucket_size: int = BUCKET_SIZE, refine_steps: int = REFINE_STEPS, harness=None):
        """`harness`: the workspace's active harness version (agents/harness_spec.py), whose
        prompt sections and feature-selection playbook the prompts are rendered from; None:
        the shipped templates."""
        if bucket_size < 2:
            raise ValueError(f"bucket_size must be at least 2, not {bucket_size}")
        self.client, self.bucket_size, self.refine_steps = client, bucket_size, refine_steps
        self.harness = harness
        self.name = f"LLM brain ({client.provider}:{client.model_name})"

    def select(self, problem: Problem) -> Selection:
        rules = problem.rules()
        feasibility(rules)
        c = problem.constraints
        reasons = {n: why for n, why in c.forbidden.items()}
        steps: list[str] = []
        repairs: list[str] = []
        pool = self._order(problem, [f.name for f in problem.catalog if rules.eligible(f.name)], rules)
        while len(pool) > self.bucket_size:
            pool = self._bucket_round(problem, rules, pool, reasons, steps, repairs)
        answer = self._ask(problem, rules, pool, "merge: choose the final subset", c.budget)
        proposal = self._kept(answer, pool, reasons, repairs, "merge")
        steps.append(f"merge over {len(pool)} candidates: the LLM kept {len(proposal)}")
        selected, log = repair(proposal, rules, target=min(c.budget, max(1, len(proposal))))
        repairs += [f"merge answer: {r}" for r in log]
        for r in log:
            if r.name in rules.by_name:
                reasons[r.name] = f"{r.action} by repair: {r.why}"
        selected = self._refine(problem, rules, selected, reasons, steps, repairs)
        for f in problem.catalog:
            reasons.setdefault(f.name, "kept" if f.name in selected else "not kept by the LLM (no reason given)")
        return Selection(self.name, selected, reasons, check(selected, rules), repairs, steps)

    # -- stages ------------------------------------------------------------------------------

    def _bucket_round(self, problem, rules, pool, reasons, steps, repairs) -> list[str]:
        n_buckets = math.ceil(len(pool) / self.bucket_size)
        size = math.ceil(len(pool) / n_buckets)
        buckets = [pool[i:i + size] for i in range(0, len(pool), size)]
        finalists = [n for n in problem.constraints.must_include if n in pool]
        for i, bucket in enumerate(buckets, 1):
            keep = min(problem.constraints.budget, len(bucket))
            answer = self._ask(problem, rules, bucket, f"bucket {i} of {len(buckets)}: keep the promising ones", keep)
            kept = self._kept(answer, bucket, reasons, repairs, f"bucket {i}")
            if len(kept) > keep:
                repairs.append(f"bucket {i}: the LLM kept {len(kept)}, more than {keep}; kept its first {keep}")
                kept = kept[:keep]
            finalists += [n for n in kept if n not in finalists]
        steps.append(f"{len(buckets)} buckets over {len(pool)} candidates: {len(finalists)} finalists")
        if len(finalists) >= len(pool):   # no progress: cut by relevance so the loop ends
            finalists = sorted(finalists, key=lambda n: (-rules.priority.get(n, 0.0), n))[:self.bucket_size]
            repairs.append(f"the buckets did not shrink the pool; kept the {len(finalists)} most relevant")
        return self._order(problem, finalists, rules)

    def _refine(self, problem, rules, selected, reasons, steps, repairs) -> list[str]:
        history: list[str] = []
        for step in range(1, self.refine_steps + 1):
            others = [n for n in self._by_relevance(rules) if n not in selected and rules.eligible(n)]
            prompt = render_prompt("select_features_refine", self.harness, task=problem.task,
                                   constraints=_bullets(problem.constraints.describe()),
                                   selected=self._table(problem, rules, selected),
                                   checks=_checks(check(selected, rules)),
                                   candidates=self._table(problem, rules, others[:self.bucket_size]) or "(none)",
                                   history="\n".join(history) or "(none)")
            move = self.client.decide(AGENT, prompt, RefineMove)
            if move.action == "stop":
                steps.append(f"refinement step {step}: stop ({move.reason})")
                break
            after, problem_text = _apply(move, selected, rules)
            label = f"{move.action} {move.add!r}" + (f" for {move.remove!r}" if move.action == "swap" else "")
            if problem_text:
                repairs.append(f"refinement step {step}: refused {label}: {problem_text}")
                history.append(f"- step {step}: {label} REFUSED ({problem_text})")
                continue
            selected = after
            reasons[move.add] = f"added in refinement: {move.reason}"
            if move.remove:
                reasons[move.remove] = f"swapped out in refinement: {move.reason}"
            steps.append(f"refinement step {step}: {label} ({move.reason})")
            history.append(f"- step {step}: {label} accepted")
        return selected

    # -- pieces ------------------------------------------------------------------------------

    def _ask(self, problem: Problem, rules: Rules, names: list[str], stage: str, keep: int) -> FeatureDecisions:
        crosses = "\n".join(f"- {x.name}: valid logloss {x.gain:+.4f} over the additive pair"
                            for x in problem.crosses) or "(none found)"
        notes = "" if not problem.constraints.forbidden else \
            "Forbidden features were removed before this list: " + ", ".join(sorted(problem.constraints.forbidden))
        prompt = render_prompt("select_features", self.harness, task=problem.task, stage=stage, keep=keep, notes=notes,
                               constraints=_bullets(problem.constraints.describe()),
                               candidates=self._table(problem, rules, names), crosses=crosses)
        return self.client.decide(AGENT, prompt, FeatureDecisions)

    @staticmethod
    def _kept(answer: FeatureDecisions, shown: list[str], reasons: dict, repairs: list[str], stage: str) -> list[str]:
        """Names the answer keeps, in its order; names it was not shown are logged and ignored."""
        kept = []
        for d in answer.decisions:
            if d.name not in shown:
                repairs.append(f"{stage}: ignored {d.name!r}: not a candidate shown at this stage")
                continue
            reasons[d.name] = d.reason
            if d.keep and d.name not in kept:
                kept.append(d.name)
        return kept

    @staticmethod
    def _by_relevance(rules: Rules) -> list[str]:
        return sorted(rules.by_name, key=lambda n: (-rules.priority.get(n, 0.0), n))

    @staticmethod
    def _order(problem: Problem, names: list[str], rules: Rules) -> list[str]:
        """Group by group (related features share a bucket), strongest first within a group."""
        return sorted(names, key=lambda n: (rules.group(n), -rules.priority.get(n, 0.0), n))

    @staticmethod
    def _table(problem: Problem, rules: Rules, names: list[str]) -> str:
        lines = []
        for n in names:
            f, s = rules.by_name[n], problem.stats.stats.get(n)
            partners = ", ".join(f"{p} {v:.2f}" for p, v, _ in s.partners) if s else "-"
            gain = "-" if s is None or s.gain is None else f"{s.gain:.3f}"
            perm = "-" if s is None or s.permutation is None else f"{s.permutation:+.4f}"
            mi = f"{s.mutual_info:.4f}" if s else "-"
            miss = f"{s.missing_rate:.2f}" if s else "-"
            card = str(s.cardinality) if s else "-"
            note = "required" if n in problem.constraints.must_include else ""
            lines.append(f"{n} | {f.group} | {f.type} | {f.serving_cost:g} | {gain} | {perm} | {mi} | {miss} | "
                         f"{card} | {partners} | {note} | {f.definition}")
        return "\n".join(lines)


def _apply(move: RefineMove, selected: list[str], rules: Rules) -> tuple[list[str], str | None]:
    """The selection after a move, or why the move is refused."""
    if move.add not in rules.by_name:
        return selected, f"{move.add!r} is not in the catalog"
    if move.add in selected:
        return selected, f"{move.add!r} is already kept"
    if move.action == "swap":
        if move.remove not in selected:
            return selected, f"{move.remove!r} is not kept"
        if move.remove in rules.c.must_include:
            return selected, f"{move.remove!r} is required (must_include)"
    after = [n for n in selected if n != move.remove] if move.action == "swap" else list(selected)
    after.append(move.add)
    failed = violations(check(after, rules))
    if failed:
        return selected, "would break " + "; ".join(f"{f.name} ({f.value} vs limit {f.limit})" for f in failed)
    return after, None


def _bullets(lines: list[str]) -> str:
    return "\n".join(f"- {line}" for line in lines)


def _checks(checks) -> str:
    return "; ".join(f"{c.name} {c.value}/{c.limit} {'ok' if c.ok else 'VIOLATED'}" for c in checks)

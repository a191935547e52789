"""Hard constraints on a feature selection: build them, check a selection, repair one.

The constraints (`[features.constraints]` in agentx.toml, overridable by flags): a budget K
(keep at most K), per-group minimum and maximum counts, features that must be kept,
forbidden features (every catalog entry flagged `leaky` among them, always), a cap on the
summed serving cost and a cap on the association of any two kept features.

They are enforced here, in code. A brain (the offline mRMR one or an LLM) proposes; `repair`
turns any proposal into one that satisfies every constraint, or raises `ConstraintError`
when no selection can, and says in its log each thing it changed and why. An LLM's answer
is never trusted to satisfy the constraints, only to rank what is worth keeping.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from agentx.errors import UserError
from agentx.workspace import FeatureConstraints
from tools.feature_catalog import CatalogFeature
from tools.feature_stats import StatsTable

LEAKY_REASON = "leaky in the catalog (post-event or label-derived): never selectable"
FORBIDDEN_REASON = "forbidden by the constraints"


class ConstraintError(UserError):
    """Constraints no selection can satisfy, or names they use that the catalog lacks."""


@dataclass(frozen=True)
class Constraints:
    budget: int
    group_min: dict[str, int] = field(default_factory=dict)
    group_max: dict[str, int] = field(default_factory=dict)
    must_include: tuple[str, ...] = ()
    forbidden: dict[str, str] = field(default_factory=dict)     # name -> why
    max_serving_cost: float | None = None
    max_correlation: float | None = None

    @classmethod
    def build(cls, spec: FeatureConstraints | None, catalog: list[CatalogFeature], *, budget: int | None = None,
              must_include: tuple[str, ...] = (), forbidden: tuple[str, ...] = ()) -> Constraints:
        """The manifest's constraints, with flags layered on top and leaky entries forbidden."""
        spec = spec or FeatureConstraints()
        k = budget if budget is not None else spec.budget
        if k is None or k < 1:
            raise ConstraintError("no feature budget: pass --budget K, or set budget = K under "
                                  "[features.constraints] in agentx.toml")
        names, groups = {f.name for f in catalog}, {f.group for f in catalog}
        must = tuple(dict.fromkeys([*spec.must_include, *must_include]))
        banned = {n: FORBIDDEN_REASON for n in [*spec.forbidden, *forbidden]}
        banned.update({f.name: LEAKY_REASON for f in catalog if f.leaky})
        problems = [f"unknown feature {n!r} in {where}" for where, listed in
                    (("must_include", must), ("forbidden", list(banned))) for n in listed if n not in names]
        problems += [f"unknown group {g!r} in {where}" for where, table in
                     (("group_min", spec.group_min), ("group_max", spec.group_max)) for g in table if g not in groups]
        problems += [f"{n!r} is both required and forbidden ({banned[n]})" for n in must if n in banned]
        if problems:
            raise ConstraintError("feature constraints: " + "; ".join(problems) +
                                  f". Catalog features: {', '.join(sorted(names))}; groups: {', '.join(sorted(groups))}")
        return cls(k, dict(spec.group_min), dict(spec.group_max), must, banned, spec.max_serving_cost,
                   spec.max_correlation)

    def describe(self) -> list[str]:
        """One line per constraint, for prompts and reports."""
        lines = [f"budget: keep at most {self.budget} features"]
        lines += [f"group {g}: keep at least {n}" for g, n in sorted(self.group_min.items())]
        lines += [f"group {g}: keep at most {n}" for g, n in sorted(self.group_max.items())]
        if self.must_include:
            lines.append(f"must include: {', '.join(self.must_include)}")
        lines += [f"forbidden: {n} ({why})" for n, why in sorted(self.forbidden.items())]
        if self.max_serving_cost is not None:
            lines.append(f"total serving_cost at most {self.max_serving_cost:g}")
        if self.max_correlation is not None:
            lines.append(f"no two kept features with association above {self.max_correlation:g}")
        return lines


@dataclass(frozen=True)
class Repair:
    """One change repair made: which feature, added or dropped, and why."""

    action: str          # "added" | "dropped"
    name: str
    why: str

    def __str__(self) -> str:
        return f"{self.action} {self.name!r}: {self.why}"


@dataclass(frozen=True)
class Check:
    name: str
    value: object
    limit: object
    ok: bool
    detail: str = ""


class Rules:
    """Constraints bound to a catalog and its statistics: the questions check and repair ask."""

    def __init__(self, c: Constraints, catalog: list[CatalogFeature], stats: StatsTable | None,
                 priority: Mapping[str, float]):
        self.c, self.stats, self.priority = c, stats, priority
        self.by_name = {f.name: f for f in catalog}

    def group(self, name: str) -> str:
        return self.by_name[name].group

    def cost(self, selected: list[str]) -> float:
        return sum(self.by_name[n].serving_cost for n in selected)

    def assoc(self, a: str, b: str) -> float:
        return self.stats.assoc(a, b) if self.stats is not None else 0.0

    def worst_pair(self, selected: list[str]) -> tuple[float, str, str]:
        pairs = [(self.assoc(a, b), a, b) for i, a in enumerate(selected) for b in selected[i + 1:]]
        return max(pairs, default=(0.0, "", ""))

    def counts(self, selected: list[str]) -> Counter:
        return Counter(self.group(n) for n in selected)

    def eligible(self, name: str) -> bool:
        return name in self.by_name and name not in self.c.forbidden

    def deficits(self, selected: list[str]) -> dict[str, int]:
        counts = self.counts(selected)
        return {g: n - counts[g] for g, n in self.c.group_min.items() if counts[g] < n}

    def room(self, selected: list[str]) -> bool:
        """Can the group minima still be met from here (slots, cost, features left)?"""
        deficits = self.deficits(selected)
        if sum(deficits.values()) > self.c.budget - len(selected):
            return False
        reserve = 0.0
        for g, missing in deficits.items():
            costs = sorted(self.by_name[n].serving_cost for n in self.by_name
                           if self.group(n) == g and n not in selected and self.eligible(n))
            if len(costs) < missing:
                return False
            reserve += sum(costs[:missing])
        cap = self.c.max_serving_cost
        return cap is None or self.cost(selected) + reserve <= cap + 1e-9

    def fits(self, selected: list[str], name: str, look_ahead: bool = True) -> bool:
        """Would adding `name` keep every upper limit (and, with `look_ahead`, leave room for
        the group minima still unmet)?"""
        if not self.eligible(name) or name in selected or len(selected) >= self.c.budget:
            return False
        g = self.group(name)
        if g in self.c.group_max and self.counts(selected)[g] >= self.c.group_max[g]:
            return False
        cap = self.c.max_serving_cost
        if cap is not None and self.cost(selected) + self.by_name[name].serving_cost > cap + 1e-9:
            return False
        limit = self.c.max_correlation
        if limit is not None and any(self.assoc(name, s) > limit for s in selected):
            return False
        return not look_ahead or self.room([*selected, name])

    def weakest(self, candidates: list[str], key: Callable[[str], float] | None = None) -> str | None:
        key = key or (lambda n: self.priority.get(n, 0.0))
        return min(candidates, key=lambda n: (key(n), n), default=None)

    def droppable(self, selected: list[str], group: str | None = None) -> list[str]:
        """Kept features repair may remove: not required, and (if possible) not at a group's minimum."""
        counts = self.counts(selected)
        pool = [n for n in selected if n not in self.c.must_include and (group is None or self.group(n) == group)]
        spare = [n for n in pool if counts[self.group(n)] > self.c.group_min.get(self.group(n), 0)]
        return spare or pool


def check(selected: list[str], rules: Rules) -> list[Check]:
    """Every constraint, its value for `selected`, its limit and whether it holds."""
    c = rules.c
    unknown = [n for n in selected if n not in rules.by_name]
    twice = sorted(n for n, k in Counter(selected).items() if k > 1)
    kept = [n for n in dict.fromkeys(selected) if n in rules.by_name]
    checks = [Check("known features", len(unknown), 0, not unknown, ", ".join(unknown)),
              Check("distinct", len(twice), 0, not twice, ", ".join(twice)),
              Check("budget", len(kept), c.budget, len(kept) <= c.budget)]
    counts = rules.counts(kept)
    checks += [Check(f"group_min[{g}]", counts[g], n, counts[g] >= n) for g, n in sorted(c.group_min.items())]
    checks += [Check(f"group_max[{g}]", counts[g], n, counts[g] <= n) for g, n in sorted(c.group_max.items())]
    missing = [n for n in c.must_include if n not in kept]
    checks.append(Check("must_include", len(c.must_include) - len(missing), len(c.must_include), not missing,
                        f"missing {', '.join(missing)}" if missing else ""))
    bad = [n for n in kept if n in c.forbidden]
    checks.append(Check("forbidden", len(bad), 0, not bad, ", ".join(bad)))
    if c.max_serving_cost is not None:
        cost = round(rules.cost(kept), 6)
        checks.append(Check("serving_cost", cost, c.max_serving_cost, cost <= c.max_serving_cost + 1e-9))
    if c.max_correlation is not None:
        worst, a, b = rules.worst_pair(kept)
        checks.append(Check("max_correlation", round(worst, 4), c.max_correlation, worst <= c.max_correlation,
                            f"{a} ~ {b}" if a else ""))
    return checks


def violations(checks: list[Check]) -> list[Check]:
    return [ch for ch in checks if not ch.ok]


def feasibility(rules: Rules) -> None:
    """Raise ConstraintError when no selection can satisfy the constraints (says which, and why)."""
    c, must = rules.c, list(rules.c.must_include)
    problems = [f"the required features alone break {ch.name} ({ch.value}, limit {ch.limit})"
                for ch in violations(check(must, rules)) if not ch.name.startswith("group_min")]
    need = sum(max(n, rules.counts(must)[g]) for g, n in c.group_min.items()) + \
        sum(1 for n in must if rules.group(n) not in c.group_min)
    if need > c.budget:
        problems.append(f"the group minima and required features need {need} slots, the budget is {c.budget}")
    elif not problems and not rules.room(must):
        problems.append("the group minima cannot be met within the budget and the serving-cost cap "
                        "(too few eligible features in a group, or they cost too much)")
    if problems:
        raise ConstraintError("the feature constraints cannot all hold: " + "; ".join(problems) +
                              ". Loosen [features.constraints] in agentx.toml or the command's flags.")


def extend(selected: list[str], rules: Rules, target: int, score: Callable[[str, list[str]], float]) -> list[str]:
    """Greedily add the best-scoring feature that keeps every constraint until `target` are kept.
    When the open slots are exactly what the group minima still need, only those groups qualify."""
    selected = list(selected)
    while len(selected) < min(target, rules.c.budget):
        options = [n for n in rules.by_name if rules.fits(selected, n)]
        deficits = rules.deficits(selected)
        if deficits and sum(deficits.values()) >= rules.c.budget - len(selected):
            options = [n for n in options if rules.group(n) in deficits]
        if not options:
            break
        selected.append(max(options, key=lambda n: (score(n, selected), rules.priority.get(n, 0.0), n)))
    return selected


def repair(proposed: list[str], rules: Rules, target: int | None = None) -> tuple[list[str], list[Repair]]:
    """A selection that satisfies every constraint, close to `proposed`, and a log of each change.

    Order: drop unknown, repeated and forbidden names; add required ones; resolve pairs above
    the correlation cap, then group maxima, the budget and the cost cap, always dropping the
    least relevant feature that is not required; meet group minima (swapping out the weakest
    spare feature when the budget is full); refill to `target` (default: as many known names
    as were proposed, at most the budget) with the most relevant features that fit."""
    c, log = rules.c, []
    seen, selected = set(), []
    for n in proposed:
        if n in seen:
            log.append(Repair("dropped", n, "named twice"))
        elif n not in rules.by_name:
            log.append(Repair("dropped", n, "unknown feature (not in the catalog)"))
        elif n in c.forbidden:
            log.append(Repair("dropped", n, c.forbidden[n]))
        else:
            selected.append(n)
        seen.add(n)
    known = len({n for n in proposed if n in rules.by_name})
    target = min(c.budget, known if target is None else target)
    for n in c.must_include:
        if n not in selected:
            selected.append(n)
            log.append(Repair("added", n, "required (must_include)"))
    selected = _trim(selected, rules, log)
    selected = _meet_minima(selected, rules, log)
    before = list(selected)
    selected = extend(selected, rules, target, lambda n, s: rules.priority.get(n, 0.0))
    log += [Repair("added", n, f"refills the selection to {target}: the most relevant feature that keeps "
                               f"every constraint") for n in selected if n not in before]
    failed = violations(check(selected, rules))
    if failed:
        raise ConstraintError("repair could not satisfy: " + "; ".join(f"{f.name} {f.value} (limit {f.limit})"
                                                                       for f in failed))
    return selected, log


def _trim(selected: list[str], rules: Rules, log: list[Repair]) -> list[str]:
    c = rules.c
    while c.max_correlation is not None:
        worst, a, b = rules.worst_pair(selected)
        if worst <= c.max_correlation:
            break
        victim = rules.weakest([n for n in (a, b) if n not in c.must_include]) or b
        selected.remove(victim)
        other = a if victim == b else b
        log.append(Repair("dropped", victim, f"association {worst:.3f} with {other!r} is above the cap "
                                             f"{c.max_correlation:g} (kept the more relevant one)"))
    for g, most in sorted(c.group_max.items()):
        while rules.counts(selected)[g] > most:
            victim = rules.weakest(rules.droppable(selected, g))
            selected.remove(victim)
            log.append(Repair("dropped", victim, f"group {g} allows at most {most}"))
    while len(selected) > c.budget:
        victim = rules.weakest(rules.droppable(selected))
        selected.remove(victim)
        log.append(Repair("dropped", victim, f"over the budget of {c.budget} (least relevant)"))
    cap = c.max_serving_cost
    while cap is not None and rules.cost(selected) > cap + 1e-9:
        per_cost = lambda n: rules.priority.get(n, 0.0) / max(rules.by_name[n].serving_cost, 1e-9)  # noqa: E731
        victim = rules.weakest(rules.droppable(selected), key=per_cost)
        if victim is None:
            break
        selected.remove(victim)
        log.append(Repair("dropped", victim, f"total serving cost above {cap:g} (least relevance per unit of cost)"))
    return selected


def _meet_minima(selected: list[str], rules: Rules, log: list[Repair]) -> list[str]:
    for g, missing in sorted(rules.deficits(selected).items()):
        for _ in range(missing):
            options = [n for n in rules.by_name if rules.group(n) == g and n not in selected and rules.eligible(n)]
            added = _add_or_swap(selected, options, rules)
            if added is None:
                break
            name, out = added
            if out:
                log.append(Repair("dropped", out, f"swapped out for {name!r}: group {g} needs at least "
                                                  f"{rules.c.group_min[g]} (least relevant spare feature)"))
            log.append(Repair("added", name, f"group {g} needs at least {rules.c.group_min[g]}"))
    return selected


def _add_or_swap(selected: list[str], options: list[str], rules: Rules) -> tuple[str, str | None] | None:
    ranked = sorted(options, key=lambda n: -rules.priority.get(n, 0.0))
    for name in ranked:
        if rules.fits(selected, name, look_ahead=False):
            selected.append(name)
            return name, None
    counts = rules.counts(selected)
    spare = [n for n in selected if n not in rules.c.must_include
             and counts[rules.group(n)] > rules.c.group_min.get(rules.group(n), 0)]
    for out in sorted(spare, key=lambda n: rules.priority.get(n, 0.0)):
        rest = [n for n in selected if n != out]
        for name in ranked:
            if rules.fits(rest, name, look_ahead=False):
                selected.remove(out)
                selected.append(name)
                return name, out
    return None


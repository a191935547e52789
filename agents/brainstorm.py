"""Brainstorm: rank executable proposals from the history, the architecture and the research cards.

Two brains behind one `propose()`:
- `HeuristicBrainstorm` (the default, no LLM): the workspace's recipes (`ws.recipes`, the
  sets its manifest names) ranked by Thompson sampling, and its declared knobs (`[knobs]`)
  as one more arm of that bandit, whose parameters Optuna's sampler picks
  (agents/knob_search.py: TPE over the knob space, trials rebuilt from the KB). Each untried (recipe, parameters) gets a draw from a normal posterior over its
  validation effect, pooled from outcomes of the same recipe and, more weakly, its family;
  failures and reviewer rejections count as small losses. It never proposes a
  configuration already tried, and every ranking (all candidates, their posteriors and
  draws) is stored as a `brainstorm_ranking` event. Candidates that do not apply to main's
  code now are left out (a dry run, agents/applicability.py).
- `LLMBrainstorm`: the same inputs rendered into a prompt; the answer is a structured
  `ProposalList`; recipes it names are checked against the workspace's recipes.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agents.applicability import DryRun, dry_run
from agents.harness_spec import Policy, active_version
from agents.policy import ArmStats, choice_probabilities, posterior
from agents import interactions
from agents.knob_requests import knob_request
from agents.knob_search import KNOB_RECIPE, KnobSearch
from agents.prompts import render_prompt
from agents.recipes import RecipeRegistry, all_params, describe
from agentx.errors import UserError
from agentx.state import Proposal, ProposalList
from knowledge.reads import ArmOutcome, params_key, recent_experiments, recipe_outcomes, tried_by_recipe, tried_params

FAILURE_REWARD = Policy().failure_reward    # the default policy's; the active harness may differ


# The family of the arms that are not recipes (their siblings pool with recipes of that family).
_ARM_FAMILY = {KNOB_RECIPE: "knobs", interactions.INTERACTION_RECIPE: "interaction"}


def experiment_count(kb) -> int:
    return kb.query("SELECT count(*) AS n FROM experiments")[0]["n"]


class NoMatchingRecipe(UserError):
    """A chat request the heuristic brain cannot map onto its recipe library."""


def outcomes(kb, sign: int, failure_reward: float = FAILURE_REWARD) -> list[tuple[str, float]]:
    """(recipe, reward) per finished experiment: signed validation effect, or a failure penalty."""
    rows = kb.query("""
        SELECT e.recipe, e.status, v.decision, v.valid_delta, p.state AS pr_state
        FROM experiments e
        LEFT JOIN verdicts v ON v.experiment_id = e.id
        LEFT JOIN pull_requests p ON p.experiment_id = e.id
        WHERE e.recipe IS NOT NULL AND e.status IN ('failed', 'evaluated', 'merged', 'rejected')""")
    rewards = []
    for row in rows:
        if row["status"] == "failed" or row["decision"] == "vetoed" or row["valid_delta"] is None:
            reward = failure_reward
        else:
            reward = sign * row["valid_delta"]
        if row["pr_state"] == "rejected":
            reward = min(reward, failure_reward)
        rewards.append((row["recipe"], reward))
    return rewards


@dataclass(frozen=True)
class Scored:
    stats: ArmStats
    params: dict
    mean: float
    sd: float
    draw: float

    @property
    def recipe(self) -> str:
        return self.stats.arm


class HeuristicBrainstorm:
    name = "heuristic brain: the workspace's recipes ranked by Thompson sampling (no LLM)"

    def __init__(self, seed: int = 0, sampler: str = "tpe"):
        self.seed = seed
        self.knobs = KnobSearch(sampler=sampler, seed=seed)

    def arms(self, ws, policy: Policy, check: DryRun | None = None, *, interaction: bool = False
             ) -> list[tuple[ArmStats, dict]]:
        """Every arm that can be proposed now, with its outcome statistics and, for a recipe, its
        first untried parameters that apply to main (`check`: a dry run, None when it applies).
        One arm per recipe, so a recipe with a big grid is not favoured; the knobs (when
        declared) and the interactions recipe (when it has a cross to propose) are arms too."""
        kb, recipes, sign = ws.kb, ws.recipes, ws.manifest.metric.sign
        own = recipe_outcomes(kb, sign, policy.failure_reward)
        by_family: dict[str, tuple[int, float]] = {}
        for name, o in own.items():
            family = recipes.family(name) if name in recipes else _ARM_FAMILY.get(name)
            if family is not None:
                n, total = by_family.get(family, (0, 0.0))
                by_family[family] = (n + o.n, total + o.total)

        def stats(arm: str, family: str) -> ArmStats:
            o = own.get(arm)
            n, total = (o.n, o.total) if o else (0, 0.0)
            fam_n, fam_total = by_family.get(family, (0, 0.0))
            return ArmStats(arm, family, n, total, fam_n - n, fam_total - total)

        out = []
        grids = {recipe.name: all_params(recipe) for recipe in recipes}
        done = tried_by_recipe(kb, {name: [params_key(p) for p in grid] for name, grid in grids.items()})
        for recipe in recipes:
            untried = (p for p in grids[recipe.name]
                       if params_key(p) not in done[recipe.name] and (check is None or check(recipe, p) is None))
            first = next(untried, None)
            if first is not None:
                out.append((stats(recipe.name, recipe.family), first))
        if ws.manifest.knobs:
            out.append((stats(KNOB_RECIPE, _ARM_FAMILY[KNOB_RECIPE]), {}))
        if interaction:      # its own outcomes only: no sibling pooling for the interactions' arm
            o = own.get(interactions.INTERACTION_RECIPE, ArmOutcome(0, 0.0))
            out.append((ArmStats(interactions.INTERACTION_RECIPE, _ARM_FAMILY[interactions.INTERACTION_RECIPE],
                                 o.n, o.total), {}))
        return out

    def decide(self, arms: list[tuple[ArmStats, dict]], policy: Policy, k: int, history: int) -> list[Scored]:
        """One Thompson draw per arm, best first."""
        rng = np.random.default_rng(self.seed + history)
        scored = []
        for s, params in arms:
            mean, sd = posterior(policy, s)
            scored.append(Scored(s, params, mean, sd, float(rng.normal(mean, sd))))
        return sorted(scored, key=lambda x: x.draw, reverse=True)

    def propose(self, ws, k: int, request: str | None = None) -> list[Proposal]:
        if request:
            return [self.match(ws, request)]
        policy = active_version(ws.kb).spec.policy
        cross = interactions.propose(ws, ws.harness.progress)
        with tempfile.TemporaryDirectory() as scratch:
            arms = self.arms(ws, policy, dry_run(ws, Path(scratch) / "scratch"), interaction=cross is not None)
        history = experiment_count(ws.kb)
        ranked = self.decide(arms, policy, k, history)
        chosen = ranked[:k]
        stats = [s for s, _ in arms]
        probabilities = choice_probabilities(policy, stats, len(chosen))
        propensity = {s.arm: float(p) for s, p in zip(stats, probabilities)}
        context = {"k": len(chosen), "arms": [s.as_dict() for s in stats]}
        ws.kb.log_event("brainstorm_ranking", {"brain": "heuristic", "candidates": [
            {"recipe": s.recipe, "params": s.params, "mean": s.mean, "sd": s.sd, "draw": s.draw,
             "propensity": propensity[s.recipe]} for s in ranked]})
        # the knobs' arm fills every slot the recipes cannot (one knob configuration per slot)
        has_knobs = any(s.arm == KNOB_RECIPE for s in stats)
        wanted = sum(s.recipe == KNOB_RECIPE for s in chosen) + (k - len(chosen) if has_knobs else 0)
        knobs = iter(self.knobs.propose(ws, wanted) if wanted else [])
        logged = {"context": context}
        proposals = []
        for s in chosen:
            why = f"Thompson draw {s.draw:+.4f} from N({s.mean:+.4f}, {s.sd:.4f})"
            decision = {**logged, "arm": s.recipe, "propensity": propensity[s.recipe]}
            if s.recipe == interactions.INTERACTION_RECIPE and cross is not None:
                proposals.append(cross.model_copy(update={"score": s.draw, "decision": decision, "rationale": (
                    f"{cross.rationale}; the interactions' arm won the draw ({why} over past interaction "
                    "experiments)")}))
            elif s.recipe != KNOB_RECIPE:
                proposals.append(Proposal(title=describe(ws.recipes.get(s.recipe), s.params), recipe=s.recipe,
                                          params=s.params, hypothesis=ws.recipes.get(s.recipe).hypothesis,
                                          score=s.draw, source="brainstorm", decision=decision,
                                          rationale=f"{why} over past validation effects of this recipe and its "
                                                    "family"))
            elif (proposal := next(knobs, None)) is not None:
                proposals.append(proposal.model_copy(update={"score": s.draw, "decision": decision, "rationale": (
                    f"{proposal.rationale}; the knobs' arm won the draw ({why} over past knob experiments)")}))
        proposals += [p.model_copy(update={"decision": {**logged, "arm": KNOB_RECIPE,
                                                        "propensity": propensity.get(KNOB_RECIPE)}})
                      for p in knobs]
        return proposals[:k]

    def match(self, ws, request: str) -> Proposal:
        """Map a chat request onto the knob or features it names (agents/knob_requests.py), else
        onto the workspace's recipe whose keywords it mentions most."""
        if (proposal := knob_request(request, ws.root, ws.manifest)) is not None:
            return proposal
        words = set(re.findall(r"[a-z0-9]+", request.lower()))
        text = " " + " ".join(re.findall(r"[a-z0-9]+", request.lower())) + " "
        hits = []
        for recipe in ws.recipes:
            score = sum(2 if " " in kw else 1 for kw in recipe.keywords
                        if (f" {kw.lower()} " in text if " " in kw else kw.lower() in words))
            if score:
                hits.append((score, recipe.name))
        if not hits and not len(ws.recipes):
            named = ", ".join(ws.recipes.set_names)
            where = f"its sets {named} hold none" if named else "agentx.toml names no [recipes] sets"
            raise NoMatchingRecipe(f"the heuristic brain found no recipe for {request!r}: this workspace has no "
                                   f"recipes ({where}; `agentx recipes` lists the sets there are). Use an LLM "
                                   "brain (--llm SPEC) for free-form requests.")
        if not hits:
            known = "; ".join(f"{r.title} ({', '.join(r.keywords[:3])})" for r in ws.recipes)
            raise NoMatchingRecipe(f"the heuristic brain found no recipe for {request!r}. It knows: {known}. "
                                   "Rephrase with one of those, or use an LLM brain (--llm SPEC) for free-form requests.")
        _, name = max(hits)
        recipe = ws.recipes.get(name)
        done = tried_params(ws.kb, name, [params_key(p) for p in all_params(recipe)])
        untried = [p for p in all_params(recipe) if params_key(p) not in done]
        params = (untried or all_params(recipe))[0]
        return Proposal(title=describe(recipe, params), recipe=name, params=params, source="chat",
                        hypothesis=recipe.hypothesis, rationale=f"matched the request {request!r} to recipe {name}")


class LLMBrainstorm:
    name = "LLM brain"

    def __init__(self, client):
        self.client = client
        self.name = f"LLM brain ({client.provider}:{client.model_name})"

    def propose(self, ws, k: int, request: str | None = None) -> list[Proposal]:
        harness = active_version(ws.kb).spec
        if request:
            answer = self.client.decide("brainstorm", render_prompt("chat", harness, request=request,
                                                                    recipes=recipe_table(ws.recipes)), Proposal)
            return [checked(ws.recipes, answer).model_copy(update={"source": "chat"})]
        prompt = render_prompt("brainstorm", harness, k=k, request=request or "(none: propose the most promising ideas)",
                               history=history_table(ws.kb), architecture=architecture(ws),
                               recipes=recipe_table(ws.recipes), cards=cards_digest(ws.kb),
                               metric=f"{ws.manifest.metric.primary} ({ws.manifest.metric.direction})")
        answer = self.client.decide("brainstorm", prompt, ProposalList)
        proposals = [checked(ws.recipes, p) for p in answer.proposals[:k]]
        if not proposals:
            raise UserError("the LLM brainstorm returned no proposals")
        return proposals


def history_table(kb, limit: int = 30) -> str:
    """The latest `limit` experiments with their latest verdicts, and the latest lessons (a
    bounded read: knowledge.reads.recent_experiments)."""
    rows = recent_experiments(kb, limit)
    if not rows:
        return "(no experiments yet)"
    lines = ["id | title | status | decision | test delta [95% CI] | valid delta"]
    for r in rows:
        ci = f"{r.delta:+.4f} [{r.ci_low:+.4f}, {r.ci_high:+.4f}]" if r.delta is not None else "-"
        valid = f"{r.valid_delta:+.4f}" if r.valid_delta is not None else "-"
        lines.append(f"{r.experiment_id} | {r.title} | {r.status} | {r.decision or '-'} | {ci} | {valid}")
    lessons = kb.query("SELECT text FROM lessons ORDER BY created_at DESC, id DESC LIMIT 10")
    return "\n".join(lines + ["", "Lessons:"] + [f"- {r['text']}" for r in lessons])


def architecture(ws) -> str:
    parts = []
    for path in ws.manifest.paths.editable:
        file = ws.root / path
        if file.is_file():
            parts.append(f"### {path}\n```python\n{file.read_text()[:6000]}\n```")
    return "\n\n".join(parts)


def checked(recipes: RecipeRegistry, proposal: Proposal) -> Proposal:
    """A recipe the workspace does not have becomes a free-form change the developer writes."""
    if proposal.recipe is not None and proposal.recipe not in recipes:
        return proposal.model_copy(update={"recipe": None})
    return proposal


def recipe_table(recipes: RecipeRegistry) -> str:
    """The workspace's recipes for a prompt, one line each."""
    if not len(recipes):
        return "(this workspace has no recipes: every proposal is a free-form change, recipe null)"
    return "\n".join(f"- {r.name}: {r.title} (family {r.family}; params {json.dumps(r.space)}) — {r.hypothesis}"
                     for r in recipes)


def cards_digest(kb) -> str:
    return "\n".join(f"- {c['title']}: {c['summary']}" for c in kb.research_cards()) or "(no research cards)"

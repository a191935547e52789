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
import math
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agents.applicability import DryRun, canonical, dry_run, tried_configurations
from agents import interactions
from agents.knob_requests import knob_request
from agents.knob_search import KNOB_RECIPE, KnobSearch
from agents.prompts import render_prompt
from agents.recipes import RecipeRegistry, all_params, describe
from agentx.errors import UserError
from agentx.state import Proposal, ProposalList

FAILURE_REWARD = -0.005     # a crash, a veto or a reviewer's rejection, in metric units
PRIOR_SD = 0.01             # how far from zero an untried recipe's effect may plausibly be
FAMILY_WEIGHT = 0.5         # an outcome of a sibling recipe counts half
# Prior beliefs before any outcome, from the research cards: explicit feature interactions,
# user-history pooling and cold-start gating are the changes CTR work most often reports
# gains from; capacity and optimisation knobs are a coin flip. The history overrides these
# after a few outcomes (each prior weighs as one observation).
PRIOR_MEAN = {"interaction": 0.002, "sequence": 0.002, "cold_start": 0.001, "ensemble": 0.001}


class NoMatchingRecipe(UserError):
    """A chat request the heuristic brain cannot map onto its recipe library."""


def outcomes(kb, sign: int) -> list[tuple[str, float]]:
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
            reward = FAILURE_REWARD
        else:
            reward = sign * row["valid_delta"]
        if row["pr_state"] == "rejected":
            reward = min(reward, FAILURE_REWARD)
        rewards.append((row["recipe"], reward))
    return rewards


@dataclass(frozen=True)
class Scored:
    recipe: str
    params: dict
    mean: float
    sd: float
    draw: float


class HeuristicBrainstorm:
    name = "heuristic brain: the workspace's recipes ranked by Thompson sampling (no LLM)"

    def __init__(self, seed: int = 0, sampler: str = "tpe"):
        self.seed = seed
        self.knobs = KnobSearch(sampler=sampler, seed=seed)

    def knob_arm(self, ws) -> Scored | None:
        """The knobs' arm: a Thompson draw from the outcomes of past knob experiments (prior
        N(0, PRIOR_SD)), ranked with the recipes; None when no knobs are declared."""
        if not ws.manifest.knobs:
            return None
        own = [reward for recipe, reward in outcomes(ws.kb, ws.manifest.metric.sign) if recipe == KNOB_RECIPE]
        mean, sd = sum(own) / (1.0 + len(own)), PRIOR_SD / math.sqrt(1.0 + len(own))
        rng = np.random.default_rng(self.seed + 7919 + len(own))
        return Scored(KNOB_RECIPE, {}, mean, sd, float(rng.normal(mean, sd)))

    def interaction_arm(self, ws) -> Scored:
        """The interactions' arm (agents/interactions.py): a Thompson draw from past interaction
        experiments, prior mean that of the "interaction" family."""
        own = [reward for recipe, reward in outcomes(ws.kb, ws.manifest.metric.sign)
               if recipe == interactions.INTERACTION_RECIPE]
        mean = (interactions.PRIOR_MEAN + sum(own)) / (1.0 + len(own))
        sd = PRIOR_SD / math.sqrt(1.0 + len(own))
        rng = np.random.default_rng(self.seed + 104729 + len(own))
        return Scored(interactions.INTERACTION_RECIPE, {}, mean, sd, float(rng.normal(mean, sd)))

    def rank(self, recipes: RecipeRegistry, kb, sign: int, check: DryRun | None = None) -> list[Scored]:
        """One Thompson draw per recipe of `recipes` (so a recipe with a big grid is not
        favoured), each carrying its first untried parameters; `check(recipe, params)` (a dry
        run: None when it applies) filters out what cannot apply to the current code (e.g.
        dropping a feature the model lacks)."""
        by_recipe: dict[str, list[float]] = {}
        by_family: dict[str, list[float]] = {}
        for recipe, reward in outcomes(kb, sign):
            by_recipe.setdefault(recipe, []).append(reward)
            if recipe in recipes:
                by_family.setdefault(recipes.family(recipe), []).append(reward)
        tried = tried_configurations(kb)
        rng = np.random.default_rng(self.seed + len(tried))
        scored = []
        for recipe in recipes:
            name = recipe.name
            untried = [p for p in all_params(recipe) if (name, canonical(p)) not in tried
                       and (check is None or check(recipe, p) is None)]
            if not untried:
                continue
            own = by_recipe.get(name, [])
            siblings = by_family.get(recipe.family, [])
            weight = len(own) + FAMILY_WEIGHT * (len(siblings) - len(own))
            total = sum(own) + FAMILY_WEIGHT * (sum(siblings) - sum(own))
            prior = PRIOR_MEAN.get(recipe.family, 0.0)
            mean = (prior + total) / (1.0 + weight)   # the prior counts as one pseudo-observation
            sd = PRIOR_SD / math.sqrt(1.0 + weight)
            scored.append(Scored(name, untried[0], mean, sd, float(rng.normal(mean, sd))))
        return sorted(scored, key=lambda s: s.draw, reverse=True)

    def propose(self, ws, k: int, request: str | None = None) -> list[Proposal]:
        if request:
            return [self.match(ws, request)]
        with tempfile.TemporaryDirectory() as scratch:
            ranked = self.rank(ws.recipes, ws.kb, ws.manifest.metric.sign, dry_run(ws, Path(scratch) / "scratch"))
        if (arm := self.knob_arm(ws)) is not None:
            ranked = sorted([*ranked, arm], key=lambda s: s.draw, reverse=True)
        cross = interactions.propose(ws, ws.harness.progress)
        if cross is not None:
            ranked = sorted([*ranked, self.interaction_arm(ws)], key=lambda s: s.draw, reverse=True)
        ws.kb.log_event("brainstorm_ranking", {"brain": "heuristic", "candidates": [s.__dict__ for s in ranked]})
        chosen = ranked[:k]
        # the knobs' arm fills every slot the recipes cannot (one knob configuration per slot)
        wanted = sum(s.recipe == KNOB_RECIPE for s in chosen) + (k - len(chosen) if arm is not None else 0)
        knobs = iter(self.knobs.propose(ws, wanted) if wanted else [])
        proposals = []
        for s in chosen:
            if s.recipe == interactions.INTERACTION_RECIPE and cross is not None:
                proposals.append(cross.model_copy(update={"score": s.draw, "rationale": (
                    f"{cross.rationale}; the interactions' arm won the Thompson draw ({s.draw:+.4f} from "
                    f"N({s.mean:+.4f}, {s.sd:.4f}) over past interaction experiments)")}))
            elif s.recipe != KNOB_RECIPE:
                proposals.append(Proposal(title=describe(ws.recipes.get(s.recipe), s.params), recipe=s.recipe,
                                          params=s.params, hypothesis=ws.recipes.get(s.recipe).hypothesis,
                                          score=s.draw, source="brainstorm",
                                          rationale=f"Thompson draw {s.draw:+.4f} from N({s.mean:+.4f}, {s.sd:.4f}) "
                                                    "over past validation effects of this recipe and its family"))
            elif (proposal := next(knobs, None)) is not None:
                proposals.append(proposal.model_copy(update={"score": s.draw, "rationale": (
                    f"{proposal.rationale}; the knobs' arm won the Thompson draw ({s.draw:+.4f} from "
                    f"N({s.mean:+.4f}, {s.sd:.4f}) over past knob experiments)")}))
        proposals += list(knobs)
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
        tried = tried_configurations(ws.kb)
        untried = [p for p in all_params(recipe) if (name, canonical(p)) not in tried]
        params = (untried or all_params(recipe))[0]
        return Proposal(title=describe(recipe, params), recipe=name, params=params, source="chat",
                        hypothesis=recipe.hypothesis, rationale=f"matched the request {request!r} to recipe {name}")


class LLMBrainstorm:
    name = "LLM brain"

    def __init__(self, client):
        self.client = client
        self.name = f"LLM brain ({client.provider}:{client.model_name})"

    def propose(self, ws, k: int, request: str | None = None) -> list[Proposal]:
        if request:
            answer = self.client.decide("brainstorm", render_prompt("chat", request=request,
                                                                    recipes=recipe_table(ws.recipes)), Proposal)
            return [checked(ws.recipes, answer).model_copy(update={"source": "chat"})]
        prompt = render_prompt("brainstorm", k=k, request=request or "(none: propose the most promising ideas)",
                               history=history_table(ws.kb), architecture=architecture(ws),
                               recipes=recipe_table(ws.recipes), cards=cards_digest(ws.kb),
                               metric=f"{ws.manifest.metric.primary} ({ws.manifest.metric.direction})")
        answer = self.client.decide("brainstorm", prompt, ProposalList)
        proposals = [checked(ws.recipes, p) for p in answer.proposals[:k]]
        if not proposals:
            raise UserError("the LLM brainstorm returned no proposals")
        return proposals


def history_table(kb, limit: int = 30) -> str:
    rows = kb.query("""
        SELECT e.id, e.title, e.status, v.decision, v.delta, v.ci_low, v.ci_high, v.valid_delta
        FROM experiments e LEFT JOIN verdicts v ON v.experiment_id = e.id
        ORDER BY e.id DESC LIMIT ?""", [limit])
    if not rows:
        return "(no experiments yet)"
    lines = ["id | title | status | decision | test delta [95% CI] | valid delta"]
    for r in rows:
        ci = f"{r['delta']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]" if r["delta"] is not None else "-"
        valid = f"{r['valid_delta']:+.4f}" if r["valid_delta"] is not None else "-"
        lines.append(f"{r['id']} | {r['title']} | {r['status']} | {r['decision'] or '-'} | {ci} | {valid}")
    lessons = kb.query("SELECT text FROM lessons ORDER BY id DESC LIMIT 10")
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

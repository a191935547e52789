"""Brainstorm: rank executable proposals from the history, the architecture and the research cards.

Two brains behind one `propose()`:
- `HeuristicBrainstorm` (the default, no LLM): the recipe library ranked by Thompson
  sampling. Each untried (recipe, parameters) gets a draw from a normal posterior over its
  validation effect, pooled from outcomes of the same recipe and, more weakly, its family;
  failures and reviewer rejections count as small losses. It never proposes a
  configuration already tried, and every ranking (all candidates, their posteriors and
  draws) is stored as a `brainstorm_ranking` event.
- `LLMBrainstorm`: the same inputs rendered into a prompt; the answer is a structured
  `ProposalList`; recipes it names are checked against the library.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agents.prompts import render_prompt
from agents.recipes import RECIPES, RecipeNotApplicable, all_params, describe
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


def canonical(params: dict) -> str:
    return json.dumps(params, sort_keys=True)


def tried_configurations(kb) -> set[tuple[str, str]]:
    rows = kb.query("SELECT recipe, params FROM experiments WHERE recipe IS NOT NULL")
    return {(r["recipe"], canonical(r["params"] or {})) for r in rows}


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
    name = "heuristic brain: recipe library ranked by Thompson sampling (no LLM)"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def rank(self, kb, sign: int, applicable=None) -> list[Scored]:
        """One Thompson draw per recipe (so a recipe with a big grid is not favoured), each
        carrying its first untried parameters; `applicable(recipe, params)` filters out what
        cannot apply to the current code (e.g. dropping a feature the model lacks)."""
        by_recipe: dict[str, list[float]] = {}
        by_family: dict[str, list[float]] = {}
        for recipe, reward in outcomes(kb, sign):
            by_recipe.setdefault(recipe, []).append(reward)
            if recipe in RECIPES:
                by_family.setdefault(RECIPES[recipe].family, []).append(reward)
        tried = tried_configurations(kb)
        rng = np.random.default_rng(self.seed + len(tried))
        scored = []
        for name, recipe in RECIPES.items():
            untried = [p for p in all_params(recipe) if (name, canonical(p)) not in tried
                       and (applicable is None or applicable(recipe, p))]
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
            ranked = self.rank(ws.kb, ws.manifest.metric.sign, applies_to(ws, Path(scratch)))
        ws.kb.log_event("brainstorm_ranking", {"brain": "heuristic", "candidates": [s.__dict__ for s in ranked]})
        return [Proposal(title=describe(RECIPES[s.recipe], s.params), recipe=s.recipe, params=s.params,
                         hypothesis=RECIPES[s.recipe].hypothesis, score=s.draw, source="brainstorm",
                         rationale=f"Thompson draw {s.draw:+.4f} from N({s.mean:+.4f}, {s.sd:.4f}) over "
                                   f"past validation effects of this recipe and its family")
                for s in ranked[:k]]

    def match(self, ws, request: str) -> Proposal:
        """Map a chat request onto the recipe whose keywords it mentions most."""
        words = set(re.findall(r"[a-z0-9]+", request.lower()))
        text = " " + " ".join(re.findall(r"[a-z0-9]+", request.lower())) + " "
        hits = []
        for name, recipe in RECIPES.items():
            score = sum(2 if " " in kw else 1 for kw in recipe.keywords
                        if (f" {kw.lower()} " in text if " " in kw else kw.lower() in words))
            if score:
                hits.append((score, name))
        if not hits:
            known = "; ".join(f"{r.title} ({', '.join(r.keywords[:3])})" for r in RECIPES.values())
            raise NoMatchingRecipe(f"the heuristic brain found no recipe for {request!r}. It knows: {known}. "
                                   "Rephrase with one of those, or use an LLM brain (--llm SPEC) for free-form requests.")
        _, name = max(hits)
        recipe = RECIPES[name]
        tried = tried_configurations(ws.kb)
        untried = [p for p in all_params(recipe) if (name, canonical(p)) not in tried]
        params = (untried or all_params(recipe))[0]
        return Proposal(title=describe(recipe, params), recipe=name, params=params, source="chat",
                        hypothesis=recipe.hypothesis, rationale=f"matched the request {request!r} to recipe {name}")


def applies_to(ws, scratch: Path):
    """A dry run of a recipe on a scratch copy of the base's editable files, plus the manifest
    and the feature catalog, which recipes may read (feature_subset places features by type)."""
    def applicable(recipe, params) -> bool:
        shutil.rmtree(scratch, ignore_errors=True)
        for rel in [*ws.manifest.paths.editable, "agentx.toml", ws.manifest.features.catalog]:
            if (ws.root / rel).is_file():
                (scratch / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ws.root / rel, scratch / rel)
        try:
            recipe.apply(scratch, params)
        except RecipeNotApplicable:
            return False
        return True
    return applicable


class LLMBrainstorm:
    name = "LLM brain"

    def __init__(self, client):
        self.client = client
        self.name = f"LLM brain ({client.provider}:{client.model_name})"

    def propose(self, ws, k: int, request: str | None = None) -> list[Proposal]:
        if request:
            answer = self.client.decide("brainstorm", render_prompt("chat", request=request, recipes=recipe_table()),
                                        Proposal)
            return [self._checked(answer).model_copy(update={"source": "chat"})]
        prompt = render_prompt("brainstorm", k=k, request=request or "(none: propose the most promising ideas)",
                               history=history_table(ws.kb), architecture=architecture(ws),
                               recipes=recipe_table(), cards=cards_digest(ws.kb),
                               metric=f"{ws.manifest.metric.primary} ({ws.manifest.metric.direction})")
        answer = self.client.decide("brainstorm", prompt, ProposalList)
        proposals = [self._checked(p) for p in answer.proposals[:k]]
        if not proposals:
            raise UserError("the LLM brainstorm returned no proposals")
        return proposals

    @staticmethod
    def _checked(proposal: Proposal) -> Proposal:
        """A recipe the library does not have becomes a free-form change the developer writes."""
        if proposal.recipe is not None and proposal.recipe not in RECIPES:
            return proposal.model_copy(update={"recipe": None})
        return proposal


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


def recipe_table() -> str:
    return "\n".join(f"- {name}: {r.title} (family {r.family}; params {json.dumps(r.space)}) — {r.hypothesis}"
                     for name, r in RECIPES.items())


def cards_digest(kb) -> str:
    return "\n".join(f"- {c['title']}: {c['summary']}" for c in kb.research_cards()) or "(no research cards)"

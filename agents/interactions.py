"""Discovered interactions as experiments (MoFA's value-model case).

Interaction discovery (tools/feature_crosses.py, cached in the KB by `agentx.mofa`) scores
pairs of features by how much better a model of the pair does when it may combine them.
A pair of numeric catalog features with a positive gain becomes a proposal: add the derived
entry `product(a,b)` (tools/derived.py: the harness computes that column from the two
features) to the workspace's features knob. Its recipe is `interaction`; the developer
applies it like a knob change, so the branch changes only the features list.

The heuristic brainstorm ranks this arm with the recipes and the knobs by a Thompson draw:
past interaction experiments' signed validation effects, prior mean `PRIOR_MEAN` (the
"interaction" family's), and it offers the untried cross with the largest gain first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from agentx.errors import UserError
from agentx.state import Proposal
from knowledge.reads import tried_items
from tools.derived import product_name
from tools.feature_catalog import load_catalog
from tools.knobs import read_knob

INTERACTION_RECIPE = "interaction"
PRIOR_MEAN = 0.002


@dataclass(frozen=True)
class Candidate:
    name: str                 # the derived entry, product(a,b)
    parts: tuple[str, str]
    gain: float               # valid logloss of the additive pair model minus the joint one
    auc_additive: float
    auc_joint: float


def features_knob(manifest) -> str | None:
    """The first declared features knob, if any."""
    return next((name for name, spec in manifest.knobs.items() if spec.type == "features"), None)


def candidates(ws, progress: Callable[[str], None] = lambda _: None) -> list[Candidate]:
    """The workspace's discovered crosses of two numeric catalog features, largest gain first
    (statistics computed once per data and catalog version, then read from the KB)."""
    from agentx.mofa import workspace_stats   # agentx.mofa imports the brains' modules

    try:
        catalog = {f.name: f for f in load_catalog(ws.root, ws.manifest)}
    except UserError:
        return []
    if sum(f.type == "numeric" and not f.leaky for f in catalog.values()) < 2:
        return []
    stats = workspace_stats(ws, progress=progress)
    found = []
    for cross in stats.crosses:
        a, b = cross.parts
        if all(p in catalog and catalog[p].type == "numeric" and not catalog[p].leaky for p in (a, b)):
            found.append(Candidate(product_name(a, b), (a, b), cross.gain, cross.auc_additive, cross.auc_joint))
    return found


def tried(kb, knob: str, names: Iterable[str]) -> set[str]:
    """Which of the derived `names` an interaction experiment of the KB put in `knob` (finished
    or not): a look-up of those names (knowledge/reads.py), not a read of every experiment."""
    return tried_items(kb, INTERACTION_RECIPE, knob, names)


def propose(ws, progress: Callable[[str], None] = lambda _: None) -> Proposal | None:
    """The next untried cross as a proposal, or None (no features knob, no positive cross)."""
    knob = features_knob(ws.manifest)
    if knob is None:
        return None
    current: dict[str, Any] = {name: read_knob(ws.root, spec) for name, spec in ws.manifest.knobs.items()}
    present = set(current[knob] or [])
    fresh = [c for c in candidates(ws, progress) if c.name not in present]
    done = tried(ws.kb, knob, [c.name for c in fresh])
    for c in fresh:
        if c.name in done:
            continue
        return Proposal(
            title=f"Add derived feature {c.name} to {knob}", recipe=INTERACTION_RECIPE,
            params={**current, knob: [*(current[knob] or []), c.name]}, source="brainstorm",
            hypothesis=f"{c.parts[0]} and {c.parts[1]} act together: a model that may combine them predicts "
                       f"better than one that adds their effects, so their product as an input should lift "
                       f"validation {ws.manifest.metric.primary}.",
            rationale=f"interaction discovery: on validation, a model of the pair that may combine them has "
                      f"logloss {c.gain:.4f} below the additive one (AUC {c.auc_additive:.4f} -> {c.auc_joint:.4f}); "
                      f"the harness computes {c.name} from the two features")
    return None

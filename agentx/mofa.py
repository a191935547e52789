"""MoFA in a workspace: statistics cached in the KB, a selection, and the experiment it becomes.

`agentx select-features` is a thin printer over these functions:
- `workspace_stats`: the catalog's statistics and interaction candidates for the current
  splits, computed once per (splits, catalog, statistics definition) and stored in the KB;
- `build_problem` / `make_brain`: constraints from agentx.toml plus flags, and the brain
  (offline mRMR by default, an LLM with `--llm`);
- `run_selection`: the selection as a proposal through the same loop as `agentx ask`, so it
  gets a branch, the micro tier, paired seeds and a verdict. A workspace with a features
  knob gets that knob set to the kept names (any repository: nothing else is edited);
  otherwise the `feature_subset` recipe of the `feature-lists` set rewrites train.py's
  CATEGORICAL / NUMERIC / MULTI_CATEGORICAL lists (the movielens-ctr layout).
Only the train and validation slices are read here; the test slice judges the experiment.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

from agents.feature_constraints import Constraints
from agents.feature_selection import OfflineBrain, Problem, Selection
from agents.feature_selection_llm import LLMFeatureBrain
from agents.harness_spec import active_version
from agents.interactions import features_knob
from agents.knob_search import KNOB_RECIPE, describe_change
from agents.recipes import Recipe, RecipeRegistry, describe
from agentx.errors import UserError
from agentx.llm import LLMClient, parse_provider_spec
from agentx.state import Proposal
from knowledge.features import load_stats, save_catalog, save_stats
from tools.feature_catalog import CatalogFeature, as_entry, catalog_digest, load_catalog
from tools.feature_crosses import Cross, analyse, cross_rows, crosses_from_rows
from tools.feature_stats import STATS_VERSION, StatsTable, read_train_valid, stats_from_rows, stats_rows
from tools.derived import product_name
from tools.knobs import check_value, read_knob

RECIPE = "feature_subset"


@dataclass(frozen=True)
class WorkspaceStats:
    catalog: list[CatalogFeature]
    table: StatsTable
    crosses: list[Cross]
    version: str
    cached: bool


def stats_version(splits_key: str, catalog: list[CatalogFeature]) -> str:
    return f"{splits_key}:catalog-{catalog_digest(catalog)}:stats-v{STATS_VERSION}"


def workspace_stats(ws, *, recompute: bool = False, progress: Callable[[str], None] = lambda _: None,
                    seed: int = 0) -> WorkspaceStats:
    """The statistics of the workspace's catalog on its current splits (from the KB when cached)."""
    catalog = load_catalog(ws.root, ws.manifest)
    save_catalog(ws.kb, [as_entry(f) for f in catalog])
    splits = ws.harness.splits
    version = stats_version(splits.key, catalog)
    if not recompute:
        rows = load_stats(ws.kb, version)
        table = stats_from_rows(rows) if rows else None
        if table is not None:
            return WorkspaceStats(catalog, table, crosses_from_rows(rows), version, True)
    progress("computing feature statistics and interaction candidates on train and validation "
             "(once per data and catalog version; the test slice is not read)")
    train, valid = read_train_valid(splits)
    table, crosses = analyse(train, valid, catalog, ws.manifest.data.label_column, version=version, seed=seed)
    save_stats(ws.kb, version, stats_rows(table) + cross_rows(crosses, version))
    return WorkspaceStats(catalog, table, crosses, version, False)


def build_problem(ws, stats: WorkspaceStats, *, budget: int | None = None, must_include: tuple[str, ...] = (),
                  forbidden: tuple[str, ...] = ()) -> Problem:
    constraints = Constraints.build(ws.manifest.features.constraints, stats.catalog, budget=budget,
                                    must_include=must_include, forbidden=forbidden)
    metric = ws.manifest.metric
    task = (f"{ws.manifest.workspace.description or ws.manifest.workspace.name}. Label column "
            f"{ws.manifest.data.label_column!r}; the model is judged on {metric.primary} ({metric.direction}).")
    return Problem(stats.catalog, stats.table, constraints, task=task, crosses=tuple(stats.crosses))


def make_brain(kb, spec: str = "heuristic", *, dollar_cap: float | None = None, chat_model=None):
    """The offline brain for 'heuristic'; an LLM brain for a provider spec (or a scripted model)."""
    provider = parse_provider_spec(spec)
    if provider.is_heuristic and chat_model is None:
        return OfflineBrain()
    if chat_model is not None:
        client = LLMClient(chat_model, kb=kb, provider=provider.kind, model_name=provider.model or "scripted",
                           dollar_cap=dollar_cap)
    else:
        client = LLMClient.from_spec(provider, kb=kb, dollar_cap=dollar_cap)
    return LLMFeatureBrain(client, harness=active_version(kb).spec)


def record_selection(kb, selection: Selection, problem: Problem, version: str) -> None:
    kb.log_event("feature_selection", {"version": version, **selection.as_dict(problem)})


def subset_recipe(recipes: RecipeRegistry) -> Recipe:
    """The workspace's feature_subset recipe, or a UserError saying how to get one."""
    recipe = recipes.find(RECIPE)
    if recipe is None:
        raise UserError(f"--run makes an experiment of the selection: it sets the workspace's features knob "
                        f"([knobs.NAME] type = \"features\", a list of catalog names in an editable file), or uses "
                        f"the {RECIPE} recipe of the 'feature-lists' set (a train.py with CATEGORICAL / NUMERIC / "
                        f"MULTI_CATEGORICAL lists); this workspace has neither: declare a features knob in "
                        f"agentx.toml (docs/contracts.md, Knobs), then `agentx trust`")
    return recipe


def check_runnable(ws) -> None:
    """Raise a UserError when a selection could not become an experiment here (before any statistics)."""
    if features_knob(ws.manifest) is None:
        subset_recipe(ws.recipes)


def derived_name(stats: WorkspaceStats, cross: Cross) -> str | None:
    """product(a,b) when both parts are numeric, non-leaky catalog features; else None."""
    numeric = {f.name for f in stats.catalog if f.type == "numeric" and not f.leaky}
    return product_name(*cross.parts) if set(cross.parts) <= numeric else None


def crosses_of(stats: WorkspaceStats, selection: Selection, n: int) -> list[Cross]:
    """The `n` best discovered crosses of two kept numeric catalog features (largest gain first)."""
    numeric = {f.name for f in stats.catalog if f.type == "numeric" and not f.leaky}
    kept = set(selection.kept) & numeric
    return [c for c in stats.crosses if c.gain > 0 and set(c.parts) <= kept][:n]


def proposal_for(ws, selection: Selection, version: str, crosses: list[Cross] = ()) -> Proposal:
    """The selection as an experiment: the features knob set to the kept names (every other
    knob at main's value) plus a derived product(a,b) per given cross, or else a
    feature_subset proposal of the workspace's recipes (which cannot take crosses)."""
    rationale = f"MoFA selection by the {selection.brain}; statistics {version}"
    knob = features_knob(ws.manifest)
    if knob is None and crosses:
        raise UserError("--crosses needs a features knob ([knobs.NAME] type = \"features\"): the harness adds a "
                        "derived column only where a features knob lists it")
    if knob is not None:
        current = {name: read_knob(ws.root, spec) for name, spec in ws.manifest.knobs.items()}
        derived = [product_name(*c.parts) for c in crosses]
        if derived:
            rationale += "; with the discovered cross" + "es" * (len(derived) > 1) + " " + ", ".join(
                f"{name} (valid logloss gain {c.gain:.4f})" for name, c in zip(derived, crosses))
        kept = check_value(ws.manifest.knobs[knob], [*selection.kept, *derived])
        if sorted(kept) == sorted(current[knob] or []):
            raise UserError(f"the selection keeps exactly the {len(kept)} features {knob} has now: nothing to run")
        return Proposal(title="Set knobs " + describe_change(ws.manifest, knob, current[knob], kept),
                        recipe=KNOB_RECIPE, params={**current, knob: kept}, source="cli",
                        hypothesis="A subset chosen for relevance, low redundancy and serving cost under the "
                                   "catalog's constraints should match the current inputs' accuracy or beat it, "
                                   "with less to serve.",
                        rationale=f"{rationale}; sets the features knob {knob}")
    recipe = subset_recipe(ws.recipes)
    params = {"keep": list(selection.kept)}
    return Proposal(title=describe(recipe, params), recipe=RECIPE, params=params, source="cli",
                    hypothesis=recipe.hypothesis, rationale=rationale)


def run_selection(ws, proposal: Proposal, settings, progress: Callable[[str], None]):
    """The proposal through the loop (develop, micro tier, evaluate, record); returns the LoopResult.
    The loop key names the selection, so re-running an interrupted one resumes it."""
    from agentx.app import GivenProposal, RunOptions, run_in

    digest = hashlib.sha256(json.dumps(proposal.params, sort_keys=True).encode()).hexdigest()[:10]
    options = RunOptions(experiments=1, parallel=1, seeds=settings.seeds, max_seeds=settings.max_seeds,
                         tier=settings.tier, evolve_every=0, key=f"select-features-{digest}")
    return run_in(ws, options, progress, brainstorm=GivenProposal(proposal, proposal.recipe))

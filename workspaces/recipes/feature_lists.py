"""The `feature-lists` recipe set: feature_subset, which makes the model read exactly a chosen
set of catalog features.

This is how a MoFA selection (`agentx select-features`) becomes an experiment: params
`{"keep": [...]}` name the inputs to keep, and train.py's feature lists are rewritten to
exactly those, each placed by its catalog type: `categorical` into CATEGORICAL, `numeric`
into NUMERIC, `multi_categorical` into MULTI_CATEGORICAL (one pooled field, or None). The
catalog is read from the checkout itself (`agentx.toml` [features] catalog). Features the
model already reads keep their position, so an unchanged part of the model is built and
initialised exactly as before; id dropout rates of dropped ids are removed. Any workspace
whose train.py keeps those lists can name the set; the movielens-ctr template does.
"""

from __future__ import annotations

from pathlib import Path

from agents.recipes.core import Recipe, RecipeSet
from agents.recipes.edits import RecipeNotApplicable, get_constant, read, set_constant, write
from agentx.errors import UserError
from agentx.workspace import load_manifest
from tools.feature_catalog import load_catalog

NAME = "feature-lists"
TRAIN = "train.py"
# The grid's one point (what the heuristic brainstorm may try): every input of the
# movielens-ctr catalog. Any other subset is passed in by `select-features` or a chat request.
ALL_TEMPLATE_FEATURES = ["user_id", "item_id", "age", "gender", "occupation", "zip_prefix", "genres", "release_year"]


def catalog_types(worktree: Path) -> dict[str, str]:
    """Feature name -> catalog type, from the checkout's own manifest and catalog."""
    try:
        catalog = load_catalog(worktree, load_manifest(worktree))
    except UserError as exc:
        raise RecipeNotApplicable(f"feature_subset needs the workspace's feature catalog: {exc}") from None
    return {f.name: f.type for f in catalog}


def _ordered(current: list[str], wanted: list[str]) -> list[str]:
    """`wanted`, with the features already in `current` first and in their current order."""
    return [n for n in current if n in wanted] + [n for n in wanted if n not in current]


def apply_feature_subset(worktree: Path, params: dict) -> list[str]:
    keep = params["keep"]
    if not keep or not all(isinstance(n, str) for n in keep) or len(set(keep)) != len(keep):
        raise RecipeNotApplicable(f"keep must be a non-empty list of distinct feature names, got {keep!r}")
    types = catalog_types(worktree)
    unknown = [n for n in keep if n not in types]
    if unknown:
        raise RecipeNotApplicable(f"not in the feature catalog: {', '.join(unknown)} "
                                  f"(catalog: {', '.join(types)})")
    categorical = [n for n in keep if types[n] == "categorical"]
    numeric = [n for n in keep if types[n] == "numeric"]
    multi = [n for n in keep if types[n] == "multi_categorical"]
    if len(multi) > 1:
        raise RecipeNotApplicable(f"{TRAIN} pools one multi-categorical field (MULTI_CATEGORICAL); "
                                  f"the subset has {len(multi)}: {', '.join(multi)}")
    if not categorical:
        raise RecipeNotApplicable(f"{TRAIN} needs at least one categorical input; the subset has none")
    text = read(worktree, TRAIN)
    wanted = {"CATEGORICAL": _ordered(get_constant(text, TRAIN, "CATEGORICAL"), categorical),
              "NUMERIC": _ordered(get_constant(text, TRAIN, "NUMERIC"), numeric),
              "MULTI_CATEGORICAL": multi[0] if multi else None}
    try:
        rates = get_constant(text, TRAIN, "ID_DROPOUT")
    except RecipeNotApplicable:   # a train.py without id dropout
        rates = None
    if isinstance(rates, dict):
        wanted["ID_DROPOUT"] = {k: v for k, v in rates.items() if k in categorical}
    changed = [name for name, value in wanted.items() if get_constant(text, TRAIN, name) != value]
    if not changed:
        raise RecipeNotApplicable(f"{TRAIN} already reads exactly {', '.join(keep)}")
    for name in changed:
        text = set_constant(text, TRAIN, name, wanted[name])
    write(worktree, TRAIN, text)
    return [TRAIN]


FEATURE_SUBSET = Recipe(
    name="feature_subset", family="feature_selection", title="Feature subset", card="mofa",
    hypothesis="A subset chosen for relevance, low redundancy and serving cost under the catalog's "
               "constraints should match the current inputs' accuracy or beat it, with less to serve.",
    kind="config", space={"keep": [ALL_TEMPLATE_FEATURES]}, free=("keep",),
    keywords=("feature subset", "select features", "selected features", "keep features", "all features"),
    apply=apply_feature_subset, detail="keep {keep}")


def recipe_set() -> RecipeSet:
    return RecipeSet(NAME, "a train.py whose inputs are CATEGORICAL / NUMERIC / MULTI_CATEGORICAL lists of "
                           "feature-catalog names", (FEATURE_SUBSET,))

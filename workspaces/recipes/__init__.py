"""Recipe sets bundled with agentx, kept next to the template they were written for.

- `movielens-ctr` (movielens_ctr/): the movielens-ctr template's code recipes (DCN-v2, FM,
  history pooling, ... inserted at `CTRModel`'s marked blocks) and config recipes (its
  `EMBED_DIM`, `HIDDEN`, `LR`, ... constants and its MovieLens feature lists).
- `feature-lists` (feature_lists.py): `feature_subset`, the experiment a MoFA selection
  becomes, for any train.py that reads its inputs from `CATEGORICAL` / `NUMERIC` /
  `MULTI_CATEGORICAL` lists of feature-catalog names.

These modules are agentx's own code, installed with it: a workspace's manifest names a set
(`[recipes] sets = ["movielens-ctr"]`) and agentx imports it from here, never from the
workspace (agents/recipes/registry.py says why).
"""

from __future__ import annotations

from collections.abc import Callable

from agents.recipes.core import RecipeSet


def bundled_sets() -> dict[str, Callable[[], RecipeSet]]:
    """Set name -> the function that builds it (imported on call, so naming costs nothing)."""
    from workspaces.recipes import feature_lists, movielens_ctr

    return {movielens_ctr.NAME: movielens_ctr.recipe_set, feature_lists.NAME: feature_lists.recipe_set}

"""Recipes: named, parameterised changes to a workspace, and the registry a workspace uses.

Every recipe is tied to a research card (knowledge/cards/<card>.md) that says where the
idea comes from and what to watch out for. A recipe edits a checkout in place at named
anchors (edits.py) and returns the changed paths, or raises `RecipeNotApplicable` when the
anchors it needs are missing. Recipes come in sets written for one kind of code; a
workspace's manifest names the sets it wants and its `RecipeRegistry` holds them
(registry.py). The sets agentx ships live beside the templates, in workspaces/recipes/.

    recipe = ws.recipes.get("dcn_v2")            # a workspace naming the movielens-ctr set
    for params in all_params(recipe):            # the grid, default first
        changed = recipe.run(checkout, params)   # ["model.py"]
        title = describe(recipe, params)         # "DCN-v2 cross network (2 layers)"
        branch = slug(recipe, params)            # "dcn_v2-layers2"
"""

from __future__ import annotations

from agents.recipes.core import InvalidParams, Recipe, RecipeSet, all_params, check_params, describe, show, slug
from agents.recipes.edits import RecipeNotApplicable
from agents.recipes.registry import RecipeRegistry, RecipeSetError, registry_for

__all__ = ["InvalidParams", "Recipe", "RecipeNotApplicable", "RecipeRegistry", "RecipeSet", "RecipeSetError",
           "all_params", "check_params", "describe", "registry_for", "show", "slug"]

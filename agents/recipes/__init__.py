"""The heuristic brain's recipe library: named, parameterised changes to a workspace.

Every recipe is tied to a research card (knowledge/cards/<card>.md) that says where the
idea comes from and what to watch out for. Code recipes (model_recipes.py) insert new
model or training code at the template's marked blocks; config recipes (config_recipes.py)
change one hyper-parameter constant; the feature-subset recipe (feature_recipes.py) rewrites
the model's input lists to a MoFA selection. Both edit a checkout in place and return the changed
paths, or raise `RecipeNotApplicable` when the anchors they need are missing.

    recipe = get_recipe("dcn_v2")
    for params in all_params(recipe):            # the grid, default first
        changed = recipe.run(checkout, params)   # ["model.py"]
        title = describe(recipe, params)         # "DCN-v2 cross network (2 layers)"
        branch = slug(recipe, params)            # "dcn_v2-layers2"
"""

from __future__ import annotations

from agents.recipes.config_recipes import CONFIG_RECIPES
from agents.recipes.core import InvalidParams, Recipe, all_params, check_params, describe, show, slug
from agents.recipes.edits import RecipeNotApplicable
from agents.recipes.feature_recipes import FEATURE_RECIPES
from agents.recipes.model_recipes import CODE_RECIPES

RECIPES: dict[str, Recipe] = {recipe.name: recipe for recipe in (*CODE_RECIPES, *CONFIG_RECIPES, *FEATURE_RECIPES)}


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise KeyError(f"no recipe {name!r}; known: {', '.join(sorted(RECIPES))}") from None


def recipes_for_card(card: str) -> list[Recipe]:
    return [recipe for recipe in RECIPES.values() if recipe.card == card]


__all__ = ["RECIPES", "InvalidParams", "Recipe", "RecipeNotApplicable", "all_params", "check_params", "describe",
           "get_recipe", "recipes_for_card", "show", "slug"]

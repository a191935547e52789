"""The movielens-ctr template's recipe set: code recipes (model_recipes.py, their inserted
code in model_code.py) and config recipes (config_recipes.py).

Every recipe here is written for that template: the code recipes insert at `CTRModel`'s
marked blocks in model.py and at train.py's `Featurizer`, training loop and constants; the
config recipes set train.py's `EMBED_DIM`, `HIDDEN`, `DROPOUT`, `WEIGHT_DECAY`,
`ID_DROPOUT`, `BATCH_SIZE`, `LR` and its MovieLens feature lists. On other code their
anchors are missing and each says which (`RecipeNotApplicable`).
"""

from __future__ import annotations

from agents.recipes.core import RecipeSet
from workspaces.recipes.movielens_ctr.config_recipes import CONFIG_RECIPES
from workspaces.recipes.movielens_ctr.model_recipes import CODE_RECIPES

NAME = "movielens-ctr"


def recipe_set() -> RecipeSet:
    return RecipeSet(NAME, "the movielens-ctr template's model.py (CTRModel and its marked blocks) and "
                           "train.py (Featurizer, training loop, hyper-parameter constants, MovieLens features)",
                     (*CODE_RECIPES, *CONFIG_RECIPES))

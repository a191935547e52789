"""Config recipes: change one hyper-parameter constant in train.py (`NAME = value`).

Each edits the single top-level line that assigns the constant, found by its name, and
keeps that line's comment. A constant that is missing, assigned twice, spread over several
lines, or already at the requested value makes the recipe not applicable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agents.recipes.core import Recipe
from agents.recipes.edits import RecipeNotApplicable, get_constant, read, set_constant, write

TRAIN = "train.py"


def _set(worktree: Path, name: str, value: Any) -> list[str]:
    text = read(worktree, TRAIN)
    write(worktree, TRAIN, set_constant(text, TRAIN, name, value))
    return [TRAIN]


def apply_embed_dim(worktree: Path, params: dict) -> list[str]:
    return _set(worktree, "EMBED_DIM", int(params["embed_dim"]))


def apply_mlp_shape(worktree: Path, params: dict) -> list[str]:
    return _set(worktree, "HIDDEN", [int(w) for w in params["hidden"]])


def apply_dropout(worktree: Path, params: dict) -> list[str]:
    return _set(worktree, "DROPOUT", float(params["dropout"]))


def apply_weight_decay(worktree: Path, params: dict) -> list[str]:
    return _set(worktree, "WEIGHT_DECAY", float(params["weight_decay"]))


def apply_batch_size(worktree: Path, params: dict) -> list[str]:
    return _set(worktree, "BATCH_SIZE", int(params["batch_size"]))


def apply_learning_rate(worktree: Path, params: dict) -> list[str]:
    return _set(worktree, "LR", float(params["lr"]))


def apply_id_dropout(worktree: Path, params: dict) -> list[str]:
    """Set the per-column id dropout rates; other columns in the dict keep theirs."""
    text = read(worktree, TRAIN)
    current = get_constant(text, TRAIN, "ID_DROPOUT")
    if not isinstance(current, dict):
        raise RecipeNotApplicable(f"{TRAIN}: ID_DROPOUT is not a dict of column -> rate")
    updated = {**current, "user_id": float(params["user_id"]), "item_id": float(params["item_id"])}
    write(worktree, TRAIN, set_constant(text, TRAIN, "ID_DROPOUT", updated))
    return [TRAIN]


NUMERIC_FEATURES = {"age", "release_year"}   # the catalog's numeric inputs; the rest are categorical


def apply_add_feature(worktree: Path, params: dict) -> list[str]:
    """Add one catalog input the model does not read yet to CATEGORICAL or NUMERIC."""
    feature = params["add"]
    text = read(worktree, TRAIN)
    target = "NUMERIC" if feature in NUMERIC_FEATURES else "CATEGORICAL"
    for name in ("CATEGORICAL", "NUMERIC"):
        if feature in get_constant(text, TRAIN, name):
            raise RecipeNotApplicable(f"{TRAIN}: {feature!r} is already in {name}")
    text = set_constant(text, TRAIN, target, [*get_constant(text, TRAIN, target), feature])
    write(worktree, TRAIN, text)
    return [TRAIN]


def apply_drop_feature(worktree: Path, params: dict) -> list[str]:
    """Remove one input from the feature lists (and from ID_DROPOUT when it is an id)."""
    feature = params["drop"]
    text = read(worktree, TRAIN)
    lists = [name for name in ("CATEGORICAL", "NUMERIC")
             if feature in (get_constant(text, TRAIN, name) or [])]
    if not lists:
        raise RecipeNotApplicable(f"{TRAIN}: {feature!r} is in neither CATEGORICAL nor NUMERIC")
    for name in lists:
        remaining = [f for f in get_constant(text, TRAIN, name) if f != feature]
        if not remaining and name == "CATEGORICAL":  # an empty NUMERIC is fine, no categorical is not
            raise RecipeNotApplicable(f"{TRAIN}: dropping {feature!r} would leave CATEGORICAL empty")
        text = set_constant(text, TRAIN, name, remaining)
    if "ID_DROPOUT" in text:
        rates = get_constant(text, TRAIN, "ID_DROPOUT")
        if isinstance(rates, dict) and feature in rates:
            text = set_constant(text, TRAIN, "ID_DROPOUT", {k: v for k, v in rates.items() if k != feature})
    write(worktree, TRAIN, text)
    return [TRAIN]


CONFIG_RECIPES = (
    Recipe(
        name="embed_dim", family="capacity", title="Embedding size", card="embedding_size",
        hypothesis="Field vectors of a different size trade memorisation of ids against "
                   "overfitting; 16 may be too small for the interaction terms to separate items.",
        kind="config", space={"embed_dim": [32, 8, 64]},
        keywords=("embedding", "embed_dim", "embedding size", "dimension"),
        apply=apply_embed_dim, detail="{embed_dim} dims"),
    Recipe(
        name="mlp_shape", family="capacity", title="MLP shape", card="mlp_shape",
        hypothesis="A wider or deeper tower models more feature interactions; a thinner one "
                   "overfits less on 80k rows.",
        kind="config", space={"hidden": [[128, 64], [256, 128, 64], [32]]},
        keywords=("mlp", "hidden", "depth", "width", "tower", "layers"),
        apply=apply_mlp_shape, detail="hidden {hidden}"),
    Recipe(
        name="dropout", family="regularisation", title="Dropout in the MLP", card="regularisation",
        hypothesis="Most evaluation users are unseen in train, so a model that generalises "
                   "from demographics beats one that memorises; more dropout pushes that way.",
        kind="config", space={"dropout": [0.2, 0.0, 0.3]},
        keywords=("dropout", "regularisation", "regularization", "overfitting"),
        apply=apply_dropout, detail="p={dropout}"),
    Recipe(
        name="weight_decay", family="regularisation", title="AdamW weight decay",
        card="regularisation",
        hypothesis="Stronger decay shrinks rarely-updated id embeddings towards zero, which "
                   "helps the many rare items and users.",
        kind="config", space={"weight_decay": [1e-4, 1e-3, 0.0]},
        keywords=("weight decay", "l2", "regularisation", "regularization"),
        apply=apply_weight_decay, detail="wd={weight_decay}"),
    Recipe(
        name="id_dropout", family="regularisation", title="Id dropout", card="regularisation",
        hypothesis="85% of evaluation rows come from users unseen in train and hit the "
                   "out-of-vocabulary row; training that row on more rows should help them.",
        kind="config", space={"user_id": [0.5, 0.8, 0.15], "item_id": [0.1, 0.2, 0.0]},
        keywords=("id dropout", "cold start", "oov", "out-of-vocabulary", "unseen users"),
        apply=apply_id_dropout, detail="user {user_id}, item {item_id}"),
    Recipe(
        name="batch_size", family="optimisation", title="Batch size", card="batch_size",
        hypothesis="Smaller batches mean more (noisier) steps in the fixed epoch budget; "
                   "larger ones fewer, smoother steps.",
        kind="config", space={"batch_size": [256, 1024, 128]},
        keywords=("batch size", "batch", "steps"),
        apply=apply_batch_size, detail="{batch_size} rows"),
    Recipe(
        name="learning_rate", family="optimisation", title="Learning rate", card="lr_schedule",
        hypothesis="With a fixed number of epochs the step size decides how far training gets "
                   "and how noisy it ends.",
        kind="config", space={"lr": [3e-3, 8e-3, 1e-3]},
        keywords=("learning rate", "lr", "step size"),
        apply=apply_learning_rate, detail="lr={lr}"),
    Recipe(
        name="drop_feature", family="feature_selection", title="Drop one input feature",
        card="mofa",
        hypothesis="A feature that adds noise or serving cost without signal should go; the "
                   "user id barely generalises when most evaluation users are new.",
        kind="config", space={"drop": ["user_id", "release_year", "age", "gender", "occupation", "zip_prefix"]},
        keywords=("feature selection", "drop feature", "remove feature", "mofa", "ablation"),
        apply=apply_drop_feature, detail="without {drop}"),
    Recipe(
        name="add_feature", family="feature_selection", title="Add one catalog feature", card="mofa",
        hypothesis="Side information the model does not read yet (the user's demographics) is "
                   "the only personal signal for users unseen in train.",
        kind="config", space={"add": ["gender", "age", "occupation", "zip_prefix"]},
        keywords=("add feature", "feature selection", "demographics", "gender", "age", "occupation",
                  "zip", "mofa"),
        apply=apply_add_feature, detail="with {add}"),
)

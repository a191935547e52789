"""The Recipe type: one named, parameterised change to a workspace, tied to a research card,
and the RecipeSet that ships recipes written for one kind of code (agents/recipes/registry.py).

A recipe is data plus one function. `apply(worktree, params)` edits files in a checkout of
the workspace and returns the relative paths it changed; when the anchors it needs are
missing it raises `RecipeNotApplicable`. The parameter grid (`space`) is small and ordered:
its first point is the recipe's default, the one tried first.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agents.recipes.edits import RecipeNotApplicable

Apply = Callable[[Path, dict[str, Any]], list[str]]


class InvalidParams(RecipeNotApplicable, ValueError):
    """Parameters the recipe does not take, or a value outside its grid."""


@dataclass(frozen=True)
class Recipe:
    name: str                       # registry key, also the prefix of branch slugs
    family: str                     # what the bandit and lessons group by (e.g. "interaction")
    title: str                      # "DCN-v2 cross network"
    card: str                       # research card id in knowledge/cards/
    hypothesis: str                 # why it should move the metric, in one or two sentences
    kind: Literal["code", "config"]  # code: new model/training code; config: a constant
    space: dict[str, list]          # parameter grid, first value of each list = default
    keywords: tuple[str, ...]       # words a chat request may use for it
    apply: Apply = field(repr=False, compare=False)
    detail: str = ""                # describe(): "{layers} layers" -> "DCN-v2 ... (2 layers)"
    free: tuple[str, ...] = ()      # parameters that take any value of their grid's type (not only
                                    # grid points), e.g. a feature subset; `apply` validates them

    def __post_init__(self) -> None:
        if self.kind not in ("code", "config"):
            raise ValueError(f"recipe {self.name}: kind must be 'code' or 'config', not {self.kind!r}")
        if not self.space or any(not values for values in self.space.values()):
            raise ValueError(f"recipe {self.name}: every parameter needs at least one value")
        edit = getattr(self.apply, "__wrapped_edit__", self.apply)

        def apply(worktree: Path, params: dict[str, Any] | None = None) -> list[str]:
            """Fill missing parameters with the defaults, check them against the grid, edit."""
            full = {**self.default, **(params or {})}
            check_params(self, full)
            return edit(Path(worktree), full)

        apply.__wrapped_edit__ = edit  # type: ignore[attr-defined]
        object.__setattr__(self, "apply", apply)

    @property
    def default(self) -> dict[str, Any]:
        return {key: values[0] for key, values in self.space.items()}

    def run(self, worktree: Path, params: dict[str, Any] | None = None) -> list[str]:
        """Apply the recipe to `worktree` (parameters default per key; same as `apply`)."""
        return self.apply(worktree, params)


@dataclass(frozen=True)
class RecipeSet:
    """Recipes written for one kind of code (a template's anchors and constants), by name.

    A workspace's manifest names the sets it wants (`[recipes] sets`); `description` says in
    one sentence what code the recipes expect, for `agentx recipes` and error messages."""

    name: str
    description: str
    recipes: tuple[Recipe, ...]

    def __post_init__(self) -> None:
        names = [recipe.name for recipe in self.recipes]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"recipe set {self.name}: recipe names used twice: {', '.join(twice)}")


def check_params(recipe: Recipe, params: dict[str, Any]) -> None:
    """`params` names exactly the recipe's parameters, each with a value from its grid."""
    if set(params) != set(recipe.space):
        raise InvalidParams(f"recipe {recipe.name} takes parameters {sorted(recipe.space)}, "
                            f"got {sorted(params)}")
    for key, value in params.items():
        grid = recipe.space[key]
        if key in recipe.free:
            if not isinstance(value, type(grid[0])):
                raise InvalidParams(f"recipe {recipe.name}: {key} must be a {type(grid[0]).__name__}, "
                                    f"got {value!r}")
            continue
        sneaky_bool = isinstance(value, bool) and not any(isinstance(v, bool) for v in grid)  # True == 1
        if value not in grid or sneaky_bool:
            raise InvalidParams(f"recipe {recipe.name}: {key}={value!r} is not in its grid "
                                f"{grid!r}")


def all_params(recipe: Recipe) -> list[dict[str, Any]]:
    """Every grid point, in a fixed order: the first parameter varies slowest."""
    keys = list(recipe.space)
    return [dict(zip(keys, values)) for values in itertools.product(*(recipe.space[k] for k in keys))]


def show(value: Any) -> str:
    """A parameter value for titles: [128, 64] -> 128x64, ["age", "gender"] -> age+gender,
    {"user_id": 0.5} -> user_id=0.5."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        joiner = "+" if value and all(isinstance(v, str) for v in value) else "x"
        return joiner.join(show(v) for v in value) or "none"
    if isinstance(value, dict):
        return ",".join(f"{k}={show(v)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def describe(recipe: Recipe, params: dict[str, Any]) -> str:
    """One line for titles and PRs: 'DCN-v2 cross network (2 layers)'."""
    check_params(recipe, params)
    shown = {k: show(v) for k, v in params.items()}
    detail = recipe.detail.format(**shown) if recipe.detail else ", ".join(f"{k}={v}" for k, v in shown.items())
    return f"{recipe.title} ({detail})"


def slug(recipe: Recipe, params: dict[str, Any]) -> str:
    """Branch-safe id of a recipe at a grid point: 'dcn_v2-layers2', 'mlp_shape-hidden128x64'."""
    check_params(recipe, params)
    parts = [recipe.name] + [f"{k}{show(v)}" for k, v in params.items()]
    text = re.sub(r"[^a-z0-9._]+", "-", "-".join(parts).lower())
    return re.sub(r"\.{2,}", ".", text).strip("-.")


__all__ = ["Apply", "InvalidParams", "Recipe", "RecipeNotApplicable", "RecipeSet", "all_params", "check_params", "describe",
           "show", "slug"]

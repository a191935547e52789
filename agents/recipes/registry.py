"""A workspace's recipes: the sets its manifest names, resolved from code agentx trusts.

A workspace says which recipe sets fit its code in agentx.toml (`[recipes] sets =
["movielens-ctr", "feature-lists"]`); `registry_for(manifest)` builds the `RecipeRegistry`
an opened workspace holds (`Workspace.recipes`), once. The brainstorm, the developer, the
loop's lessons, pull requests and `select-features --run` look recipes up there, so a
repository gets only the recipes written for code like its own.

Why a set is a *name* resolved here, and not a module in the workspace: recipe code runs in
agentx's own process (it edits checkouts; the brainstorm dry-runs it on every proposal),
unsandboxed, while a workspace's files are experiment-editable and run only inside the
kernel sandbox. Importing a module from the workspace's tree would hand code any
experiment may have written to the process that holds the KB, the git repository and the
verdicts. So a name resolves only to code the operator installed:

1. a set bundled with agentx (`workspaces/recipes/`, next to the templates: `movielens-ctr`,
   `feature-lists`); these work from a source checkout without reinstalling; or
2. a plugin: an entry point in the group `agentx.recipes` of a pip-installed package, whose
   value is a function returning a `RecipeSet` of the same name, e.g. in its pyproject.toml
   `[project.entry-points."agentx.recipes"] my-ranker = "my_pkg.recipes:recipe_set"`.

A name that is both is refused as ambiguous, a name that is neither is refused with the
available names, and only the named sets are imported. No recipe is global: every shipped
recipe edits anchors of the movielens-ctr template's files (feature_subset: its feature
lists), so none works on an arbitrary repository; a workspace without `[recipes]` has none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points

from agents.recipes.core import Recipe, RecipeSet
from agentx.errors import UserError
from agentx.workspace import Manifest

ENTRY_POINT_GROUP = "agentx.recipes"
SetLoader = Callable[[], RecipeSet]


class RecipeSetError(UserError):
    """A recipe set the manifest names that cannot be found or loaded; the message says which
    sets there are."""


@dataclass(frozen=True)
class RecipeRegistry:
    """The recipes one workspace may use, by name, each with the set it came from."""

    sets: tuple[RecipeSet, ...] = ()
    _by_name: dict[str, Recipe] = field(init=False, repr=False, compare=False)
    _origin: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name: dict[str, Recipe] = {}
        origin: dict[str, str] = {}
        for recipe_set in self.sets:
            for recipe in recipe_set.recipes:
                if recipe.name in by_name:
                    raise RecipeSetError(f"recipe {recipe.name!r} is in both set {origin[recipe.name]!r} and set "
                                         f"{recipe_set.name!r}; name only one of them in [recipes] sets")
                by_name[recipe.name], origin[recipe.name] = recipe, recipe_set.name
        object.__setattr__(self, "_by_name", by_name)
        object.__setattr__(self, "_origin", origin)

    def __iter__(self) -> Iterator[Recipe]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    @property
    def names(self) -> list[str]:
        return list(self._by_name)

    @property
    def set_names(self) -> list[str]:
        return [recipe_set.name for recipe_set in self.sets]

    def find(self, name: str | None) -> Recipe | None:
        """The recipe called `name`, or None (no name, a free-form change, or the knob brain's)."""
        return self._by_name.get(name) if name else None

    def get(self, name: str) -> Recipe:
        """The recipe called `name`; a KeyError naming the sets and recipes there are."""
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no recipe {name!r} in this workspace's recipe sets "
                           f"({', '.join(self.set_names) or 'none named'}); known: "
                           f"{', '.join(sorted(self._by_name)) or 'none'}") from None

    def origin(self, name: str) -> str:
        """The name of the set recipe `name` came from."""
        return self._origin[name]

    def family(self, name: str | None) -> str:
        """What lessons group an experiment by: its recipe's family, else 'free-form'."""
        recipe = self.find(name)
        return recipe.family if recipe else "free-form"

    def for_card(self, card: str) -> list[Recipe]:
        return [recipe for recipe in self if recipe.card == card]


def bundled_sets() -> dict[str, SetLoader]:
    """The sets that ship with agentx (workspaces/recipes/)."""
    from workspaces.recipes import bundled_sets as shipped

    return shipped()


def plugin_sets() -> dict[str, SetLoader]:
    """The sets installed packages declare in the `agentx.recipes` entry-point group."""
    return {point.name: _plugin_loader(point) for point in entry_points(group=ENTRY_POINT_GROUP)}


def _plugin_loader(point: EntryPoint) -> SetLoader:
    """Import the plugin's function only when its set is named."""
    def load() -> RecipeSet:
        try:
            build = point.load()
        except (ImportError, AttributeError) as exc:
            raise RecipeSetError(f"recipe set {point.name!r} (plugin {point.value}) does not load: {exc}") from None
        return build()
    return load


def available_sets() -> dict[str, SetLoader]:
    """Every set a manifest may name: bundled ones and installed plugins, by name."""
    bundled, plugins = bundled_sets(), plugin_sets()
    both = sorted(set(bundled) & set(plugins))
    if both:
        raise RecipeSetError(f"recipe set names both bundled with agentx and declared by an installed plugin "
                             f"(entry points {ENTRY_POINT_GROUP!r}): {', '.join(both)}; rename the plugin's set")
    return {**bundled, **plugins}


def load_set(name: str, available: dict[str, SetLoader]) -> RecipeSet:
    """Build the set called `name`, checking that it is a RecipeSet of that name."""
    if name not in available:
        raise RecipeSetError(f"agentx.toml [recipes] sets: no recipe set {name!r}; available: "
                             f"{', '.join(sorted(available)) or 'none'} (bundled with agentx, or a package's "
                             f"{ENTRY_POINT_GROUP!r} entry point)")
    built = available[name]()
    if not isinstance(built, RecipeSet):
        raise RecipeSetError(f"recipe set {name!r}: its loader returned a {type(built).__name__}, not a RecipeSet")
    if built.name != name:
        raise RecipeSetError(f"recipe set {name!r}: its loader returned the set {built.name!r}")
    return built


def registry_for(manifest: Manifest) -> RecipeRegistry:
    """The registry of the sets `manifest` names, in the order it names them."""
    if not manifest.recipes.sets:
        return RecipeRegistry()
    available = available_sets()
    return RecipeRegistry(tuple(load_set(name, available) for name in manifest.recipes.sets))


__all__ = ["ENTRY_POINT_GROUP", "RecipeRegistry", "RecipeSetError", "available_sets", "bundled_sets",
           "load_set", "plugin_sets", "registry_for"]

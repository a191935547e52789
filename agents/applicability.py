"""Which recipes and knobs can change a workspace now, and why not: dry runs on a scratch copy.

The heuristic brainstorm keeps only the candidates whose dry run succeeds (`dry_run`);
`agentx recipes` prints a `survey` of the workspace's recipes and knobs, and the loop, when
the brainstorm has nothing left, stops with `no_proposals_reason`. A dry run applies a recipe
to a scratch copy of main's editable files, manifest and feature catalog (recipes may read
both); the workspace is never touched and none of its code runs: recipes edit text.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agents.recipes import Recipe, RecipeNotApplicable, all_params
from agents.recipes.registry import bundled_sets, plugin_sets
from agentx.workspace import MANIFEST, Manifest
from knowledge.reads import tried_by_recipe
from tools.knobs import KnobError, read_knob

DryRun = Callable[[Recipe, dict[str, Any]], "str | None"]
SHOWN_REASONS = 3          # reasons the loop's stop line quotes before "N more"
REASON_CHARS = 160         # each cut to this length there


def canonical(params: dict) -> str:
    """A parameter dict's identity in the KB."""
    return json.dumps(params, sort_keys=True)


def tried_configurations(kb) -> set[tuple[str, str]]:
    """Every (recipe, canonical params) the KB has an experiment for, finished or not. Reads
    every experiment: the brains ask about their candidates instead (`tried_points`)."""
    rows = kb.query("SELECT recipe, params FROM experiments WHERE recipe IS NOT NULL")
    return {(r["recipe"], canonical(r["params"] or {})) for r in rows}


def tried_points(kb, recipes: Iterable[Recipe]) -> set[tuple[str, str]]:
    """The (recipe, canonical params) of `recipes`' grid points that the KB has an experiment
    for: one look-up of those keys (knowledge/reads.py), whatever the KB's size."""
    found = tried_by_recipe(kb, {recipe.name: [canonical(p) for p in all_params(recipe)] for recipe in recipes})
    return {(name, key) for name, keys in found.items() for key in keys}


def scratch_paths(manifest: Manifest) -> list[str]:
    """What a recipe may read or edit: the editable files, the manifest and the feature catalog."""
    return [*manifest.paths.editable, MANIFEST, manifest.features.catalog]


def dry_run(ws, scratch: Path) -> DryRun:
    """A function that applies a recipe at some parameters to a fresh scratch copy of `ws`'s
    files and returns why it does not apply (None when it does). Reasons name the workspace,
    not the scratch folder."""
    def reason(recipe: Recipe, params: dict[str, Any]) -> str | None:
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        for rel in scratch_paths(ws.manifest):
            source = ws.root / rel
            if source.is_file():
                (scratch / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, scratch / rel)
            elif source.is_dir():
                shutil.copytree(source, scratch / rel)
        try:
            recipe.apply(scratch, params)
        except RecipeNotApplicable as exc:
            return exc.reason.replace(str(scratch), str(ws.root))
        return None
    return reason


@dataclass(frozen=True)
class RecipeStatus:
    """One recipe against main's code now: does it apply, and what of its grid is left."""

    name: str
    recipe_set: str
    title: str
    family: str
    kind: str
    settings: int               # points of its parameter grid
    untried: int                # of those, not yet in the KB
    left: int                   # of those, applying to main now: what the brainstorm may still propose
    reason: str | None          # why no setting applies (the default's reason); None when one does
    untried_reason: str | None  # why the first untried setting does not apply, if it does not

    @property
    def applicable(self) -> bool:
        return self.reason is None

    @property
    def note(self) -> str:
        """One line: why not, or what is left."""
        if self.reason is not None:
            return self.reason
        if self.left:
            return f"{self.left} untried setting{'s' * (self.left != 1)} of {self.settings} " \
                   f"appl{'ies' if self.left == 1 else 'y'}"
        if not self.untried:
            return f"every setting ({self.settings}) was tried"
        return f"the {self.untried} untried settings do not apply: {self.untried_reason}"


@dataclass(frozen=True)
class KnobStatus:
    """One declared knob: where it lives and whether its current value can be read."""

    name: str
    file: str
    key: str
    type: str
    current: Any
    reason: str | None          # why the knob cannot be read (so cannot be searched); None when it can

    @property
    def applicable(self) -> bool:
        return self.reason is None


def recipe_status(ws, recipe: Recipe, tried: set[tuple[str, str]], check: DryRun) -> RecipeStatus:
    """Dry-run every grid point of `recipe` on main's code; `tried` is (recipe, canonical params)."""
    points = all_params(recipe)
    reasons = [check(recipe, params) for params in points]
    untried = [i for i, params in enumerate(points) if (recipe.name, canonical(params)) not in tried]
    blocked_untried = [reasons[i] for i in untried if reasons[i] is not None]
    return RecipeStatus(
        name=recipe.name, recipe_set=ws.recipes.origin(recipe.name), title=recipe.title, family=recipe.family,
        kind=recipe.kind, settings=len(points), untried=len(untried),
        left=len(untried) - len(blocked_untried),
        reason=None if any(r is None for r in reasons) else reasons[0],
        untried_reason=blocked_untried[0] if blocked_untried else None)


def knob_status(root: Path, name: str, spec) -> KnobStatus:
    try:
        current, reason = read_knob(root, spec), None
    except KnobError as exc:
        current, reason = None, str(exc)
    return KnobStatus(name, spec.file, spec.name, spec.type, current, reason)


@dataclass(frozen=True)
class Survey:
    """Every recipe and knob of a workspace, with whether it applies and why not."""

    root: str
    sets: list[str]             # the sets agentx.toml names
    available: list[str]        # every set it could name (bundled and installed plugins)
    recipes: list[RecipeStatus]
    knobs: list[KnobStatus]

    def as_dict(self) -> dict[str, Any]:
        return {"workspace": self.root, "sets": self.sets, "available_sets": self.available,
                "recipes": [{**asdict(r), "applicable": r.applicable, "note": r.note} for r in self.recipes],
                "knobs": [{**asdict(k), "applicable": k.applicable} for k in self.knobs],
                "summary": summary(self)}


def survey(ws) -> Survey:
    """Dry-run every recipe of `ws.recipes` at every grid point and read every declared knob."""
    tried = tried_points(ws.kb, ws.recipes)
    with tempfile.TemporaryDirectory() as folder:
        check = dry_run(ws, Path(folder) / "scratch")
        recipes = [recipe_status(ws, recipe, tried, check) for recipe in ws.recipes]
    knobs = [knob_status(ws.root, name, spec) for name, spec in ws.manifest.knobs.items()]
    return Survey(str(ws.root), list(ws.recipes.set_names), sorted({*bundled_sets(), *plugin_sets()}),
                  recipes, knobs)


def _cut(text: str) -> str:
    return text if len(text) <= REASON_CHARS else text[:REASON_CHARS - 3] + "..."


def _reasons(blocked: list[RecipeStatus]) -> str:
    """The commonest reasons first, each with the recipes it stops: 'dcn_v2, fm_second_order +6:
    model.py does not exist in ...; ...; 4 other reasons'."""
    by_reason: dict[str, list[str]] = {}
    for status in blocked:
        by_reason.setdefault(status.reason or "", []).append(status.name)
    ranked = sorted(by_reason.items(), key=lambda item: -len(item[1]))   # stable: first seen first on ties
    shown = [f"{', '.join(names[:2])}{f' +{len(names) - 2}' if len(names) > 2 else ''}: {_cut(reason)}"
             for reason, names in ranked[:SHOWN_REASONS]]
    rest = len(ranked) - SHOWN_REASONS
    return "; ".join(shown + ([f"{rest} other reason{'s' * (rest != 1)}"] if rest > 0 else []))


def summary(result: Survey) -> str:
    """One line: how many recipes do not apply (the first reasons), how many untried settings
    are left, and the knobs."""
    if not result.recipes:
        where = (f"its recipe sets ({', '.join(result.sets)}) hold none" if result.sets
                 else "agentx.toml names no [recipes] sets")
        hint = "name one written for this code under [recipes] sets" + ("" if result.knobs else
                                                                         ", or declare [knobs.NAME]")
        parts = [f"this workspace has no recipes ({where}; sets there are: {', '.join(result.available) or 'none'}"
                 f"; {hint})"]
    else:
        blocked = [r for r in result.recipes if not r.applicable]
        parts = [f"{len(blocked)} of {len(result.recipes)} recipes do not apply"
                 + (f" ({_reasons(blocked)})" if blocked else "")]
        left, untried = sum(r.left for r in result.recipes), sum(r.untried for r in result.recipes)
        parts.append(f"{left} untried recipe setting{'s' * (left != 1)} appl{'ies' if left == 1 else 'y'} "
                     f"({untried} untried in all)")
    readable = sum(k.applicable for k in result.knobs)
    parts.append(f"{len(result.knobs)} knob{'s' * (len(result.knobs) != 1)} declared ({readable} readable)"
                 if result.knobs else "no knobs declared")
    return "; ".join(parts)


def no_proposals_reason(result: Survey) -> str:
    """The loop's stop line when the brainstorm has nothing left: why, in numbers and reasons."""
    return (f"no untried proposals left: {summary(result)}; `agentx recipes --workspace {result.root}` "
            "lists each with its reason")


__all__ = ["DryRun", "KnobStatus", "RecipeStatus", "Survey", "canonical", "dry_run", "knob_status",
           "no_proposals_reason", "recipe_status", "scratch_paths", "summary", "survey", "tried_configurations",
           "tried_points"]

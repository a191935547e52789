"""The feature catalog (`features.yaml`, protected): one entry per model input.

MoFA reasons over what a feature *is* as well as what it scores, so every entry carries a
written definition, a group, a type, a relative serving cost and a `leaky` flag for
post-event fields that must never be selected. This module reads and validates the file;
statistics are `tools/feature_stats.py`, selection is `agents/feature_selection.py`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentx.errors import UserError
from agentx.workspace import Manifest

FeatureType = Literal["categorical", "numeric", "multi_categorical"]


class CatalogError(UserError):
    """A catalog that cannot be used; the message names the file, the entry and the fix."""


class CatalogFeature(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="the column name in the data")
    definition: str = Field(min_length=1, description="what the feature means, in words")
    group: str = Field(min_length=1, description="user, item, context, interaction, ...")
    type: FeatureType
    serving_cost: float = Field(ge=0, description="relative cost (1.0 = one key-value lookup per request)")
    leaky: bool = Field(default=False, description="post-event or label-derived: never selectable")

    @property
    def is_categorical(self) -> bool:
        """Categorical and multi-categorical features are both compared with Cramér's V."""
        return self.type != "numeric"


def load_catalog(workspace: Path, manifest: Manifest) -> list[CatalogFeature]:
    """The workspace's catalog, in file order; raises CatalogError with what to fix."""
    path = Path(workspace) / manifest.features.catalog
    if not path.is_file():
        raise CatalogError(f"{path}: no feature catalog. agentx.toml [features] catalog names it; "
                           "write one entry per model input (name, definition, group, type, "
                           "serving_cost, leaky), as in the movielens-ctr template's features.yaml.")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path}: not valid YAML ({exc})") from None
    return parse_catalog(raw, source=str(path))


def parse_catalog(raw: object, source: str = "features.yaml") -> list[CatalogFeature]:
    if not isinstance(raw, list) or not raw:
        raise CatalogError(f"{source}: expected a non-empty list of feature entries")
    features = []
    for i, entry in enumerate(raw):
        try:
            features.append(CatalogFeature.model_validate(entry))
        except ValidationError as exc:
            name = entry.get("name", f"#{i + 1}") if isinstance(entry, dict) else f"#{i + 1}"
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'entry'}: {e['msg']}"
                                 for e in exc.errors(include_url=False))
            raise CatalogError(f"{source}: entry {name}: {problems}") from None
    names = [f.name for f in features]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise CatalogError(f"{source}: features listed twice: {', '.join(duplicates)}")
    return features


def catalog_digest(features: list[CatalogFeature]) -> str:
    """A short hash of the catalog's content: statistics are cached per catalog version."""
    text = json.dumps([f.model_dump() for f in features], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def as_entry(feature: CatalogFeature) -> dict:
    """The catalog entry as written in features.yaml (for printing new entries)."""
    return feature.model_dump()

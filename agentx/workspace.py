"""The workspace contract: `agentx.toml` parsed into a typed, validated manifest.

A workspace is any git repository with an `agentx.toml` at its root (the format is in
docs/contracts.md). Every problem with the file becomes a `ManifestError` that names the
file, the key and what was expected, so a person can fix it without reading our code.
"""

from __future__ import annotations

import tomllib
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from agentx.errors import UserError
from tools.ranking import is_ranking

MANIFEST = "agentx.toml"


class ManifestError(UserError, ValueError):
    """A manifest that cannot be used; the message says where and what to write instead."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WorkspaceInfo(_Section):
    name: str = Field(min_length=1, description="a short name for reports")
    description: str = ""


class TrainSpec(_Section):
    entrypoint: str = Field(description='"module:function", called in a kernel as function(run_dir)')
    preload: list[str] = Field(default=[], description="libraries a warm kernel imports before its run")

    @field_validator("entrypoint")
    @classmethod
    def _module_and_function(cls, value: str) -> str:
        module, _, function = value.partition(":")
        if not (module and function and all(p.isidentifier() for p in module.split("."))
                and function.isidentifier()):
            raise ValueError(f'must look like "module:function" (e.g. "train:main"), got {value!r}')
        return value

    @property
    def module(self) -> str:
        return self.entrypoint.partition(":")[0]

    @property
    def function(self) -> str:
        return self.entrypoint.partition(":")[2]


class DataSpec(_Section):
    module: str = Field(description="path of the protected data module, e.g. data.py")
    id_column: str = "row_id"
    label_column: str = "label"
    # Optional: a repository's data need not have users or items. user_column is the
    # bootstrap's and the rollout's unit; item_column gives the popularity reference;
    # cluster_column, when set, is the resampling unit instead of the user (rows otherwise).
    user_column: str | None = Field(default=None, min_length=1, description="the user of a row, if any")
    item_column: str | None = Field(default=None, min_length=1, description="the item of a row, if any")
    cluster_column: str | None = Field(default=None, min_length=1, description="the bootstrap's resampling "
                                       "unit (e.g. a session); default: the user column, else each row")

    @field_validator("module")
    @classmethod
    def _python_file(cls, value: str) -> str:
        if not value.endswith(".py"):
            raise ValueError(f"must be a .py file inside the workspace, got {value!r}")
        return _relative_path(value)


METRIC_NAMES = "auc, logloss, ndcg@K, recall@K or mrr (K a whole number, e.g. ndcg@10)"


def _metric_name(value: str) -> str:
    if value not in ("auc", "logloss") and not is_ranking(value):
        raise ValueError(f"unknown metric {value!r}: one of {METRIC_NAMES}")
    return value


def natural_direction(metric: str) -> str:
    """'minimize' for logloss, 'maximize' for the others."""
    return "minimize" if metric == "logloss" else "maximize"


def metric_sign(metric: str) -> int:
    """+1 when bigger is better for `metric`, -1 when smaller is."""
    return 1 if natural_direction(metric) == "maximize" else -1


class MetricSpec(_Section):
    """`[metric]`: auc and logloss over all rows; ndcg@K, recall@K and mrr rank each user's
    rows (tools/ranking.py) and need [data] user_column."""

    primary: str = Field(description=METRIC_NAMES)
    direction: Literal["maximize", "minimize"]
    min_effect: float = Field(ge=0, description="smallest effect worth shipping, in metric units")
    secondary: list[str] = []

    @field_validator("primary")
    @classmethod
    def _known_primary(cls, value: str) -> str:
        return _metric_name(value)

    @field_validator("secondary")
    @classmethod
    def _known_secondary(cls, values: list[str]) -> list[str]:
        return [_metric_name(v) for v in values]

    @property
    def names(self) -> list[str]:
        """Every metric a run is scored on: the primary first, then the secondary ones."""
        return [self.primary, *(m for m in self.secondary if m != self.primary)]

    @model_validator(mode="after")
    def _direction_fits(self) -> MetricSpec:
        natural = natural_direction(self.primary)
        if self.direction != natural:
            raise ValueError(f"{self.primary} is a metric to {natural}, but direction is {self.direction!r}")
        return self

    @property
    def sign(self) -> int:
        """+1 when bigger is better, -1 when smaller is better."""
        return 1 if self.direction == "maximize" else -1


class TierSpec(_Section):
    epochs: int = Field(ge=1)
    timeout_s: float = Field(gt=0)
    train_rows: int | None = Field(default=None, ge=10, description="sample size; absent = all rows")
    eval_rows: int | None = Field(default=None, ge=10)


class Tiers(_Section):
    micro: TierSpec
    full: TierSpec

    @model_validator(mode="after")
    def _micro_is_small(self) -> Tiers:
        if self.micro.train_rows is None:
            raise ValueError("tiers.micro needs train_rows (a few hundred rows: it is the smoke test)")
        return self


class Guardrails(_Section):
    max_params: int | None = Field(default=None, gt=0)
    max_p95_latency_ms: float | None = Field(default=None, gt=0)
    max_train_seconds: float | None = Field(default=None, gt=0)
    max_secondary_regression: dict[str, float] = Field(
        default={}, description="metric -> the most a treatment may make it worse (in metric units)")

    @field_validator("max_secondary_regression")
    @classmethod
    def _known_metrics(cls, limits: dict[str, float]) -> dict[str, float]:
        return {_metric_name(name): limit for name, limit in limits.items()}


class PathRules(_Section):
    editable: list[str] = Field(min_length=1)
    protected: list[str] = Field(min_length=1)

    @field_validator("editable", "protected")
    @classmethod
    def _relative(cls, values: list[str]) -> list[str]:
        return [_relative_path(v) for v in values]

    @model_validator(mode="after")
    def _disjoint(self) -> PathRules:
        both = sorted(set(self.editable) & set(self.protected))
        if both:
            raise ValueError(f"paths cannot be both editable and protected: {', '.join(both)}")
        return self

    def is_protected(self, path: str) -> bool:
        return any(_covers(rule, path) for rule in self.protected)

    def is_editable(self, path: str) -> bool:
        return not self.is_protected(path) and any(_covers(rule, path) for rule in self.editable)


class FeatureConstraints(_Section):
    """`[features.constraints]`: the hard limits a feature selection must respect.

    Catalog entries flagged `leaky` are always forbidden, whether listed here or not. Names
    are checked against the catalog when a selection runs (`agents/feature_constraints.py`),
    since the catalog is a separate file."""

    budget: int | None = Field(default=None, ge=1, description="keep at most this many features "
                                                               "(`select-features --budget` overrides)")
    group_min: dict[str, int] = Field(default={}, description="group -> fewest features to keep from it")
    group_max: dict[str, int] = Field(default={}, description="group -> most features to keep from it")
    must_include: list[str] = []
    forbidden: list[str] = []
    max_serving_cost: float | None = Field(default=None, gt=0, description="cap on the summed serving_cost")
    max_correlation: float | None = Field(default=None, gt=0, le=1, description="cap on the association "
                                          "(|Spearman| or Cramér's V) of any two kept features")

    @field_validator("group_min", "group_max")
    @classmethod
    def _counts(cls, value: dict[str, int]) -> dict[str, int]:
        negative = [group for group, count in value.items() if count < 0]
        if negative:
            raise ValueError(f"counts must be 0 or more (groups {', '.join(negative)})")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> FeatureConstraints:
        both = sorted(set(self.must_include) & set(self.forbidden))
        if both:
            raise ValueError(f"features both required and forbidden: {', '.join(both)}")
        crossed = [g for g, low in self.group_min.items() if g in self.group_max and low > self.group_max[g]]
        if crossed:
            raise ValueError(f"group_min exceeds group_max for {', '.join(crossed)}")
        return self


class FeatureSpec(_Section):
    catalog: str = "features.yaml"
    constraints: FeatureConstraints = FeatureConstraints()

    @field_validator("catalog")
    @classmethod
    def _relative(cls, value: str) -> str:
        return _relative_path(value)


class SandboxSpec(_Section):
    """How experiment kernels are confined (tools/confine.py)."""

    network: bool = Field(default=False, description="let experiment code use the network (shown on every verdict)")
    run_dir_mb: int = Field(default=2048, gt=0, description="size cap of the run directory, the one writable folder")
    tmp_mb: int = Field(default=1024, gt=0, description="size of the kernel's private /tmp")


class RecipeSpec(_Section):
    """`[recipes]`: the recipe sets written for this workspace's code (agents/recipes/registry.py)."""

    sets: list[str] = Field(default=[], description="names of recipe sets bundled with agentx or installed as "
                            "'agentx.recipes' plugins, e.g. [\"movielens-ctr\"]; none: no recipes")

    @field_validator("sets")
    @classmethod
    def _distinct(cls, names: list[str]) -> list[str]:
        if any(not name.strip() for name in names) or len(set(names)) != len(names):
            raise ValueError(f"must be distinct, non-empty set names, got {names!r}")
        return names


KnobType = Literal["float", "int", "categorical", "bool", "features"]
KNOB_FILE_KINDS = (".py", ".toml", ".yaml", ".yml", ".json")


class KnobSpec(_Section):
    """`[knobs.NAME]`: one value the default brain may search (tools/knobs.py edits it).

    The value lives in a module-level constant of a Python file (`name` is the constant) or
    under a key of a TOML, YAML or JSON file (`name` is a dotted key path, `model.params.C`).
    A `features` knob is a list of catalog feature names: its candidates are `choices`, or
    every name in the feature catalog when absent, and it keeps at least `min_size`."""

    file: str = Field(description="the editable file holding the value")
    name: str = Field(min_length=1, description="constant name (.py) or dotted key path (config files)")
    type: KnobType
    low: float | int | None = Field(default=None, description="float / int: smallest value")
    high: float | int | None = Field(default=None, description="float / int: largest value")
    log: bool = Field(default=False, description="float / int: search on a log scale (needs low > 0)")
    choices: list[str | int | float | bool] | None = Field(
        default=None, description="categorical: the values; features: candidate names (default: the catalog)")
    min_size: int | None = Field(default=None, ge=0, description="features: keep at least this many")
    when: dict[str, str | int | float | bool] = Field(
        default={}, description="searched one at a time only while these knobs have these values "
                                "(e.g. {MODEL = \"logreg\"}: C matters only for that model)")

    @field_validator("file")
    @classmethod
    def _config_or_python(cls, value: str) -> str:
        value = _relative_path(value)
        if not value.endswith(KNOB_FILE_KINDS):
            raise ValueError(f"must be a {', '.join(KNOB_FILE_KINDS)} file, got {value!r}")
        return value

    @model_validator(mode="after")
    def _fits_type(self) -> KnobSpec:
        problems = _knob_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def is_python(self) -> bool:
        return self.file.endswith(".py")

    @property
    def keys(self) -> list[str]:
        """The key path in a config file (one element for a Python constant)."""
        return [self.name] if self.is_python else self.name.split(".")


def _knob_problems(spec: KnobSpec) -> list[str]:
    """What is wrong with a knob's settings for its type, first problem first."""
    problems = []
    if spec.is_python and not spec.name.isidentifier():
        problems.append(f"name {spec.name!r} must be a constant's name in {spec.file}")
    if not spec.is_python and not all(spec.keys):
        problems.append(f"name {spec.name!r} must be a dotted key path such as 'model.params.C'")
    numeric = spec.type in ("float", "int")
    given = {"low": spec.low is not None, "high": spec.high is not None, "log": spec.log,
             "choices": spec.choices is not None, "min_size": spec.min_size is not None}
    allowed = {"float": {"low", "high", "log"}, "int": {"low", "high", "log"}, "categorical": {"choices"},
               "bool": set(), "features": {"choices", "min_size"}}[spec.type]
    extra = [key for key, present in given.items() if present and key not in allowed]
    if extra:
        problems.append(f"{', '.join(extra)} do not apply to a {spec.type} knob")
    if numeric:
        if spec.low is None or spec.high is None:
            problems.append(f"a {spec.type} knob needs low and high")
        elif not spec.low < spec.high:
            problems.append(f"low must be below high (low = {spec.low}, high = {spec.high})")
        elif spec.log and spec.low <= 0:
            problems.append(f"log = true needs low > 0 (low = {spec.low})")
        elif spec.type == "int" and not (float(spec.low).is_integer() and float(spec.high).is_integer()):
            problems.append(f"an int knob needs whole low and high (low = {spec.low}, high = {spec.high})")
    choices = spec.choices or []
    shown = [repr(c) for c in choices]
    twice = sorted({c for c in shown if shown.count(c) > 1})
    if twice:
        problems.append(f"choices listed twice: {', '.join(twice)}")
    if spec.type == "categorical" and len(choices) < 2:
        problems.append("a categorical knob needs choices, at least two")
    if spec.type == "features":
        if not all(isinstance(c, str) for c in choices):
            problems.append("the choices of a features knob are feature names (strings)")
        if spec.choices is not None and (spec.min_size or 0) > len(choices):
            problems.append(f"min_size {spec.min_size} is more than the {len(choices)} choices")
    return problems


class Manifest(_Section):
    workspace: WorkspaceInfo
    train: TrainSpec
    data: DataSpec
    metric: MetricSpec
    tiers: Tiers
    guardrails: Guardrails = Guardrails()
    paths: PathRules
    features: FeatureSpec = FeatureSpec()
    sandbox: SandboxSpec = SandboxSpec()
    recipes: RecipeSpec = RecipeSpec()
    knobs: dict[str, KnobSpec] = Field(default={}, description="name -> a value the default brain may search")

    @field_validator("knobs")
    @classmethod
    def _knobs_editable(cls, knobs: dict[str, KnobSpec], info: ValidationInfo) -> dict[str, KnobSpec]:
        paths = info.data.get("paths")
        for name, knob in knobs.items():
            unknown = [other for other in knob.when if other not in knobs or other == name]
            if unknown:
                raise ValueError(f"knob {name!r}: when names {', '.join(map(repr, unknown))}, which is not another "
                                 f"declared knob")
            if paths is not None and not paths.is_editable(knob.file):
                raise ValueError(f"knob {name!r} changes {knob.file}, which is not under paths.editable "
                                 f"({', '.join(paths.editable)}); a knob may only change an editable file")
        return knobs

    @model_validator(mode="after")
    def _ranking_needs_users(self) -> Manifest:
        named = [*self.metric.names, *self.guardrails.max_secondary_regression]
        ranking = sorted({m for m in named if is_ranking(m)})
        if ranking and self.data.user_column is None:
            raise ValueError(f"{', '.join(ranking)} rank each user's rows, but [data] has no user_column: name "
                             f"the column that says whose row it is (user_column = \"user_id\"), or use auc or "
                             f"logloss")
        if ranking and self.data.cluster_column is not None and self.data.cluster_column != self.data.user_column:
            raise ValueError(f"{', '.join(ranking)} are per-user means, so the bootstrap resamples users: remove "
                             f"[data] cluster_column ({self.data.cluster_column!r}) or use auc or logloss")
        return self

    @model_validator(mode="after")
    def _data_module_protected(self) -> Manifest:
        for needed in (self.data.module, MANIFEST):
            if not self.paths.is_protected(needed):
                raise ValueError(f"paths.protected must cover {needed!r}: the harness relies on it")
        return self


def _relative_path(value: str) -> str:
    path = PurePosixPath(value)
    if not value or path.is_absolute() or ".." in path.parts:
        raise ValueError(f"must be a path inside the workspace (relative, no '..'), got {value!r}")
    return str(path)


def _covers(rule: str, path: str) -> bool:
    return path == rule or path.startswith(rule.rstrip("/") + "/")


def load_manifest(workspace: Path | str) -> Manifest:
    """Read `<workspace>/agentx.toml` (or a manifest file given directly)."""
    path = Path(workspace)
    if path.is_dir():
        path = path / MANIFEST
    if not path.is_file():
        raise ManifestError(f"{path}: no manifest here. A workspace needs an {MANIFEST} at its root; "
                            "`agentx init DIR` creates one from a template.")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: not valid TOML ({exc})") from None
    return parse_manifest(raw, source=str(path))


def parse_manifest(raw: dict, source: str = MANIFEST) -> Manifest:
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        raise ManifestError(f"{source}: " + "; ".join(_describe(e) for e in exc.errors())) from None


def _describe(error: dict) -> str:
    key = ".".join(str(p) for p in error["loc"]) or "(top level)"
    kind = error["type"]
    if kind == "missing":
        return f"key {key!r} is missing"
    if kind == "extra_forbidden":
        return f"key {key!r} is not a known setting (check its spelling)"
    message = error["msg"].removeprefix("Value error, ")
    got = error.get("input")
    shown = "" if isinstance(got, dict) or kind.startswith("value_error") else f" (got {got!r})"
    return f"key {key!r}: {message}{shown}"

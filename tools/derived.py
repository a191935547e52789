"""Derived features: interactions and transforms the harness computes from feature columns.

MoFA's value-model case is a discovered interaction that lifts the metric. A model repo
cannot be asked to write that column itself, and experiment code must never compute
features from anything it should not see, so the *harness* materialises it: a features knob
may list, besides catalog names, a derived entry named by what it is

    product(a,b)     a * b
    ratio(a,b)       a / b (0 where b is 0)
    bucket(a,N)      the quantile bucket of a, 0..N-1, with edges from the run's train rows

where a and b are numeric catalog features (never the label, the id, or a leaky entry).
The name is the definition, so a branch's diff says exactly what the model gets
(`+    "product(price,rating)",`) and the same name always means the same column.

The harness reads the features knobs of the code it is about to run (`requested`), checks
the derived names against main's catalog (`check`), and writes the columns into the run
directory's train, valid and test files (`with_derived`), computed by DuckDB from feature
columns only, once per (tier rows, derived set) into its own cache like the tier rows.
A code that lists no derived entry gets byte-identical files to before.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import duckdb

from agentx.errors import UserError
from agentx.workspace import Manifest
from tools.feature_catalog import CatalogFeature, load_catalog
from tools.knobs import KnobError, read_knob
from tools.splits import _csv, _quote

OPS = ("product", "ratio", "bucket")
PATTERN = re.compile(r"^(product|ratio)\(\s*([A-Za-z_][\w.]*)\s*,\s*([A-Za-z_][\w.]*)\s*\)$"
                     r"|^bucket\(\s*([A-Za-z_][\w.]*)\s*,\s*([2-9]|[1-9][0-9])\s*\)$")
SPLITS = ("train", "valid", "test")


class DerivedError(UserError):
    """A derived entry the harness will not compute (unknown, non-numeric or leaky input)."""


@dataclass(frozen=True)
class Derived:
    name: str
    op: str
    inputs: tuple[str, ...]
    bins: int | None = None

    @property
    def canonical(self) -> str:
        return (f"bucket({self.inputs[0]},{self.bins})" if self.op == "bucket"
                else f"{self.op}({','.join(self.inputs)})")

    def describe(self) -> str:
        a = self.inputs[0]
        return {"product": f"{a} times {self.inputs[-1]}",
                "ratio": f"{a} divided by {self.inputs[-1]} (0 where it is 0)",
                "bucket": f"the quantile bucket (0 to {(self.bins or 0) - 1}) of {a}, edges from train"}[self.op]


def parse(name: str) -> Derived | None:
    """The derived entry a name defines, or None when it is a plain name."""
    match = PATTERN.match(str(name).strip())
    if match is None:
        return None
    if match.group(1):
        return Derived(str(name), match.group(1), (match.group(2), match.group(3)))
    return Derived(str(name), "bucket", (match.group(4),), int(match.group(5)))


def product_name(a: str, b: str) -> str:
    return f"product({a},{b})"


def requested(checkout: Path, manifest: Manifest) -> list[Derived]:
    """The derived entries the features knobs of `checkout` list, in order, once each."""
    found: dict[str, Derived] = {}
    for spec in manifest.knobs.values():
        if spec.type != "features":
            continue
        try:
            value = read_knob(checkout, spec)
        except KnobError:
            continue                      # the run fails on its own terms; nothing to materialise
        for name in value if isinstance(value, list) else []:
            if (derived := parse(name)) is not None:
                found.setdefault(derived.name, derived)
    return list(found.values())


def check(derived: list[Derived], catalog: list[CatalogFeature] | None, columns: dict[str, str], *,
          id_column: str, label_column: str) -> None:
    """Raise DerivedError unless every input is a numeric, non-leaky catalog feature (or, with
    no catalog, a numeric column other than the id and the label). `columns`: name -> DuckDB type."""
    entries = {f.name: f for f in catalog or []}
    for d in derived:
        for part in d.inputs:
            if part in (id_column, label_column):
                raise DerivedError(f"{d.name}: {part!r} is the {'label' if part == label_column else 'id'} "
                                   f"column; a derived feature is computed from features only")
            if catalog is not None and part not in entries:
                raise DerivedError(f"{d.name}: {part!r} is not in the feature catalog")
            if part in entries and entries[part].leaky:
                raise DerivedError(f"{d.name}: {part!r} is marked leaky in the feature catalog")
            if part not in columns:
                raise DerivedError(f"{d.name}: the data has no column {part!r}")
            if not _numeric(columns[part]):
                raise DerivedError(f"{d.name}: {part!r} is {columns[part]}, not a number; {d.op} needs numbers")


def catalog_entry(d: Derived, catalog: list[CatalogFeature]) -> CatalogFeature:
    """The catalog entry a derived name stands for (group `interaction`, numeric)."""
    parts = {f.name: f for f in catalog}
    cost = sum(parts[p].serving_cost for p in d.inputs if p in parts)
    return CatalogFeature(name=d.name, definition=f"derived by the harness: {d.describe()}", group="interaction",
                          type="numeric", serving_cost=cost, leaky=any(parts[p].leaky for p in d.inputs if p in parts))


def with_derived(rows: Path, derived: list[Derived], cache: Path, *, id_column: str) -> Path:
    """The folder holding `rows`' three files plus the derived columns (`rows` itself when
    there are none), written once per (rows, derived set) under `cache`, atomically."""
    if not derived:
        return rows
    key = hashlib.sha256(json.dumps([str(rows), [d.canonical for d in derived]]).encode()).hexdigest()[:16]
    folder = cache / f"{rows.name}-derived-{key}"
    if (folder / "counts.json").is_file():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=cache))
    con = duckdb.connect()
    edges = {d.name: _edges(con, rows / "train.csv", d) for d in derived if d.op == "bucket"}
    for split in SPLITS:
        source = _csv(rows / f"{split}.csv")
        columns = ", ".join(f"{_sql(d, edges.get(d.name))} AS {_quote(d.name)}" for d in derived)
        target = str(staging / f"{split}.csv").replace("'", "''")
        con.execute(f"COPY (SELECT *, {columns} FROM {source} ORDER BY {_quote(id_column)}) TO '{target}' "
                    f"(HEADER, DELIMITER ',')")
    shutil.copyfile(rows / "counts.json", staging / "counts.json")
    try:
        staging.rename(folder)
    except OSError:                      # another process got there first: use theirs
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def column_types(path: Path) -> dict[str, str]:
    with duckdb.connect() as con:
        return {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM {_csv(path)}").fetchall()}


def load_catalog_or_none(root: Path, manifest: Manifest) -> list[CatalogFeature] | None:
    if not (root / manifest.features.catalog).is_file():
        return None
    return load_catalog(root, manifest)


def _edges(con, train: Path, d: Derived) -> list[float]:
    """Inner quantile edges of the input on the train rows (distinct, ascending)."""
    assert d.bins is not None
    qs = [i / d.bins for i in range(1, d.bins)]
    (values,) = con.execute(f"SELECT quantile_cont(CAST({_quote(d.inputs[0])} AS DOUBLE), ?) FROM {_csv(train)}",
                            [qs]).fetchone()
    return sorted({float(v) for v in values or [] if v is not None})


def _sql(d: Derived, edges: list[float] | None) -> str:
    a = f"CAST({_quote(d.inputs[0])} AS DOUBLE)"
    if d.op == "product":
        return f"{a} * CAST({_quote(d.inputs[1])} AS DOUBLE)"
    if d.op == "ratio":
        b = f"CAST({_quote(d.inputs[1])} AS DOUBLE)"
        return f"CASE WHEN {b} = 0 OR {b} IS NULL THEN 0.0 ELSE {a} / {b} END"
    if not edges:
        return "0"
    return "(" + " + ".join(f"CASE WHEN {a} > {edge!r} THEN 1 ELSE 0 END" for edge in edges) + ")"


def _numeric(duck_type: str) -> bool:
    return duck_type.upper() in ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "FLOAT", "DOUBLE",
                                 "REAL", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT") \
        or duck_type.upper().startswith("DECIMAL")



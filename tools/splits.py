"""Splits: the harness runs the protected data module and hands kernels label-free copies.

The data module of the *base* checkout writes train/valid/test with labels into a folder
under the user's cache, keyed by a hash of the module's source; that folder is the
harness's own and is never handed to a kernel. For each run, `materialise` writes the run
directory: train rows with labels, valid and test rows without, sampled for the micro tier
(each tier's rows are written once per splits version and copied into run directories).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import duckdb

from agentx.errors import UserError
from agentx.workspace import Manifest, TierSpec

SPLITS = ("train", "valid", "test")
EVAL_SPLITS = ("valid", "test")


class DataError(UserError):
    """The data module failed or wrote something the harness cannot use."""


@dataclass(frozen=True)
class Splits:
    """Prepared splits with labels: harness-owned, never inside a run directory."""

    root: Path
    id_column: str
    label_column: str

    def file(self, split: str) -> Path:
        return self.root / f"{split}.csv"

    @property
    def key(self) -> str:
        return self.root.name


def prepare_splits(base_checkout: Path, manifest: Manifest, cache: Path) -> Splits:
    """Run the data module of `base_checkout` once per version of its source; reuse after."""
    module_path = base_checkout / manifest.data.module
    if not module_path.is_file():
        raise DataError(f"{module_path}: the data module named in agentx.toml ([data] module) is missing")
    digest = hashlib.sha256(module_path.read_bytes()).hexdigest()[:16]
    root = cache / "splits" / f"{manifest.workspace.name}-{digest}"
    splits = Splits(root, manifest.data.id_column, manifest.data.label_column)
    if (root / "DONE").is_file():
        return splits
    # A staging folder of our own: another process may be preparing the same splits; the
    # first to finish renames its folder into place and the others drop theirs.
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=root.name + ".", suffix=".partial", dir=root.parent))
    try:
        try:
            _load_module(module_path, digest).prepare(cache / "datasets", staging)
        except DataError:
            raise
        except Exception as exc:  # the workspace's own code: say whose error it is, keep the cause
            raise DataError(f"the data module {module_path} failed: {type(exc).__name__}: {exc}") from exc
        _check_written(Splits(staging, splits.id_column, splits.label_column))
        (staging / "DONE").write_text(json.dumps({"module": str(module_path), "sha": digest}))
        try:
            staging.rename(root)                         # atomic: a folder with DONE, or none
        except OSError:
            if not (root / "DONE").is_file():
                raise DataError(f"{root} exists but is incomplete (no DONE file); delete it and run "
                                "again") from None
            # another process renamed its folder first: use theirs
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return splits


def _load_module(path: Path, digest: str):
    spec = importlib.util.spec_from_file_location(f"agentx_data_{digest}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, "prepare", None)):
        raise DataError(f"{path}: defines no prepare(cache_dir, out_dir) function")
    return module


def _check_written(splits: Splits) -> None:
    con = duckdb.connect()
    for split in SPLITS:
        path = splits.file(split)
        if not path.is_file():
            raise DataError(f"the data module wrote no {path.name}")
        columns = [row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {_csv(path)}").fetchall()]
        for needed in (splits.id_column, splits.label_column):
            if needed not in columns:
                raise DataError(f"{path.name} has no {needed!r} column (columns: {', '.join(columns)})")


def _csv(path: Path) -> str:
    return "read_csv('" + str(path).replace("'", "''") + "', header=true)"


def materialise(splits: Splits, run_dir: Path, tier_name: str, tier: TierSpec, seed: int,
                run_id: str) -> dict[str, int]:
    """Write the run directory a kernel sees; return the row count per split.

    The rows depend only on the splits and the tier's sizes (the sample is REPEATABLE), so
    they are written once per (splits, tier) into the harness's own cache and copied into
    each run directory. A copy, not a link: a run may overwrite its own files, and must not
    reach the cached ones through them."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "predictions").mkdir(exist_ok=True)
    cached = tier_rows(splits, tier)
    for split in SPLITS:
        shutil.copyfile(cached / f"{split}.csv", run_dir / f"{split}.csv")
    config = {"run_id": run_id, "seed": seed, "tier": tier_name, "epochs": tier.epochs, "device": "auto"}
    (run_dir / "run.json").write_text(json.dumps(config, indent=2))
    return json.loads((cached / "counts.json").read_text())


def tier_rows(splits: Splits, tier: TierSpec) -> Path:
    """The folder with a tier's label-free rows, written on first use (atomically: a
    concurrent writer's folder wins and ours is dropped)."""
    folder = splits.root / "tiers" / f"train{tier.train_rows or 'all'}-eval{tier.eval_rows or 'all'}"
    if (folder / "counts.json").is_file():
        return folder
    staging = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=_mkdir(folder.parent)))
    con = duckdb.connect()
    counts = {}
    for split in SPLITS:
        rows = tier.train_rows if split == "train" else tier.eval_rows
        drop = "" if split == "train" else f" EXCLUDE ({_quote(splits.label_column)})"
        sample = "" if rows is None else f" USING SAMPLE reservoir({int(rows)} ROWS) REPEATABLE (7)"
        query = (f"SELECT *{drop} FROM (SELECT * FROM {_csv(splits.file(split))}{sample}) "
                 f"ORDER BY {_quote(splits.id_column)}")
        target = str(staging / f"{split}.csv").replace("'", "''")
        con.execute(f"COPY ({query}) TO '{target}' (HEADER, DELIMITER ',')")
        counts[split] = con.execute(f"SELECT count(*) FROM {_csv(staging / f'{split}.csv')}").fetchone()[0]
    (staging / "counts.json").write_text(json.dumps(counts))
    try:
        staging.rename(folder)
    except OSError:                      # another process got there first: use theirs
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _quote(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'

"""Splits: the harness runs the protected data module and hands kernels label-free copies.

The data module comes from a *commit*, read from git objects, never from a working tree:
`prepare_splits` exports the commit's tree (once per tree sha, into a harness-private folder
under `<cache>/code/`) and imports the data module from there, so helper modules it imports
from the repository come from the same commit. Uncommitted files, and the working tree's
`__pycache__`, are never read. Whether the commit itself may be trusted (its protected
files match what a person trusted) is tools/trust.py's question, asked before this runs.

NOT isolated: the module runs in the harness's process. A helper module whose name is
already imported there (a standard or agentx module) resolves to the one already imported.

The module writes train/valid/test with labels into a folder under the user's cache, keyed
by the blob shas of the protected paths (a change to any protected file makes new splits);
that folder is the harness's own and is never handed to a kernel. For each run,
`materialise` writes the run directory: train rows with labels, valid and test rows without,
sampled for the micro tier (each tier's rows are written once per splits version and
copied into run directories).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import duckdb

from agentx.errors import UserError
from agentx.workspace import Manifest, TierSpec
from tools.git_repo import WorkspaceRepo

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


def prepare_splits(repo: WorkspaceRepo, commit: str, manifest: Manifest, cache: Path) -> Splits:
    """Run the data module of `commit` once per version of the protected files; reuse after."""
    blobs = repo.blobs(commit, manifest.paths.protected)
    module = manifest.data.module
    if blobs.get(module, "absent") == "absent":
        raise DataError(f"{module}: the data module named in agentx.toml ([data] module) is missing "
                        f"from commit {commit[:12]}")
    digest = hashlib.sha256("".join(f"{p} {b}\n" for p, b in sorted(blobs.items())).encode()).hexdigest()[:16]
    root = cache / "splits" / f"{manifest.workspace.name}-{digest}"
    splits = Splits(root, manifest.data.id_column, manifest.data.label_column)
    if (root / "DONE").is_file():
        return splits
    code = export_code(repo, commit, cache / "code")
    # A staging folder of our own: another process may be preparing the same splits; the
    # first to finish renames its folder into place and the others drop theirs.
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=root.name + ".", suffix=".partial", dir=root.parent))
    try:
        try:
            _run_module(code, module, digest, cache / "datasets", staging)
        except DataError:
            raise
        except Exception as exc:  # the workspace's own code: say whose error it is, keep the cause
            raise DataError(f"the data module {module} of commit {commit[:12]} failed: "
                            f"{type(exc).__name__}: {exc}") from exc
        _check_written(Splits(staging, splits.id_column, splits.label_column))
        (staging / "DONE").write_text(json.dumps({"module": module, "commit": commit, "sha": digest,
                                                  "protected": blobs}))
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


def export_code(repo: WorkspaceRepo, commit: str, folder: Path) -> Path:
    """`commit`'s committed files in `folder/<tree sha>`, exported once (atomically: a
    concurrent exporter's folder wins and ours is dropped). `folder` is private (0700)."""
    tree = repo.tree(commit)
    target = folder / tree
    if target.is_dir():
        return target
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    staging = Path(tempfile.mkdtemp(prefix=tree + ".", suffix=".partial", dir=folder))
    try:
        repo.export_tree(commit, staging)
        try:
            staging.rename(target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _run_module(code: Path, module: str, digest: str, cache_dir: Path, out_dir: Path) -> None:
    """Import the data module with the exported commit first on sys.path and call prepare();
    afterwards forget the commit's modules and path, and write no bytecode into the export."""
    before, bytecode = set(sys.modules), sys.dont_write_bytecode
    sys.path.insert(0, str(code))
    sys.dont_write_bytecode = True
    try:
        _load_module(code, module, digest).prepare(cache_dir, out_dir)
    finally:
        sys.dont_write_bytecode = bytecode
        if str(code) in sys.path:
            sys.path.remove(str(code))
        for name in set(sys.modules) - before:
            if _inside(getattr(sys.modules[name], "__file__", None), code):
                del sys.modules[name]


def _inside(file: str | None, folder: Path) -> bool:
    return file is not None and Path(file).resolve().is_relative_to(folder.resolve())


def _load_module(code: Path, module: str, digest: str):
    spec = importlib.util.spec_from_file_location(f"agentx_data_{digest}", code / module)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    if not callable(getattr(loaded, "prepare", None)):
        raise DataError(f"{module}: defines no prepare(cache_dir, out_dir) function")
    return loaded


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
                run_id: str, rows: Path | None = None) -> dict[str, int]:
    """Write the run directory a kernel sees; return the row count per split.

    The rows depend only on the splits and the tier's sizes (the sample is REPEATABLE), so
    they are written once per (splits, tier) into the harness's own cache and copied into
    each run directory. A copy, not a link: a run may overwrite its own files, and must not
    reach the cached ones through them. `rows`: the folder to copy instead of the tier's
    (the tier's rows with derived columns, tools/derived.py)."""
    cached = rows or tier_rows(splits, tier)
    lay_out(cached, run_dir, run_config(run_id, seed, tier_name, tier))
    return json.loads((cached / "counts.json").read_text())


def run_config(run_id: str, seed: int, tier_name: str, tier: TierSpec) -> dict:
    """The run directory's run.json: what the entrypoint is told about its run."""
    return {"run_id": run_id, "seed": seed, "tier": tier_name, "epochs": tier.epochs, "device": "auto"}


def lay_out(rows: Path, run_dir: Path, config: dict) -> None:
    """A run directory from a folder of label-free rows (train.csv with labels, valid.csv and
    test.csv without) and its run.json; wherever the run executes (tools/executors)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "predictions").mkdir(exist_ok=True)
    for split in SPLITS:
        shutil.copyfile(rows / f"{split}.csv", run_dir / f"{split}.csv")
    (run_dir / "run.json").write_text(json.dumps(config, indent=2))


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

"""Bytes that travel between the agentx machine and a node: no shared file system.

- `pack_code`: a tar of the commit's checkout (as `work/`, without `.git`, `.agentx` or
  caches: the same filter as local staging); `pack_rows`: the run directory's label-free
  rows (as `run/`: train.csv, valid.csv, test.csv, an empty predictions/). It refuses to
  pack a valid or test file whose header names the label column: labels never leave. The
  two are packed apart so that the Ray executor can send each once and reuse it (the same
  tier's rows serve every run of a splits version; a commit's code serves all its seeds).
- `unpack_inputs` (on the node): extracts both into a slot with tarfile's `data` filter
  (no absolute paths, no links out of the slot, no device files), writes run.json, and
  returns what it received, file by file (`ReceivedFile`: path, size, sha256, a CSV's
  header), for the record.
- `pack_dir` / `unpack_run`: the run directory after the run, back to `spec.dest` (atomic:
  extracted beside it, then renamed into place).

Not compressed: on one machine or a fast network the object store moves bytes faster than
gzip makes them; a run directory is at most its cap (`[sandbox] run_dir_mb`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from tools.executors import ReceivedFile
from tools.splits import EVAL_SPLITS, SPLITS
from tools.staging import SKIP


class LabelsWouldLeave(RuntimeError):
    """A run's valid or test rows still carry the label column: nothing is sent."""


def _add_tree(tar: tarfile.TarFile, root: Path, arcname: str) -> None:
    """`root`'s files under `arcname`, skipping what local staging skips (tools/staging.SKIP)."""
    tar.add(str(root), arcname=arcname, recursive=False)
    for folder, dirs, files in os.walk(root):
        ignored = SKIP(folder, dirs + files)
        dirs[:] = sorted(d for d in dirs if d not in ignored)
        rel = Path(folder).relative_to(root)
        for name in dirs + sorted(f for f in files if f not in ignored):
            tar.add(os.path.join(folder, name), arcname=f"{arcname}/{(rel / name).as_posix()}", recursive=False)


def csv_header(path: Path) -> tuple[str, ...]:
    with open(path, encoding="utf-8", errors="replace") as f:
        return tuple(col.strip().strip('"') for col in f.readline().rstrip("\r\n").split(","))


def pack_code(code: Path) -> bytes:
    """The commit's checkout as `work/...` (see the module docstring)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        _add_tree(tar, Path(code), "work")
    return buffer.getvalue()


def pack_rows(rows: Path, label_column: str) -> bytes:
    """The run directory's label-free rows as `run/...`; LabelsWouldLeave when a valid or
    test file still has the label column."""
    for split in EVAL_SPLITS:
        if label_column and label_column in csv_header(rows / f"{split}.csv"):
            raise LabelsWouldLeave(f"{rows / (split + '.csv')} has the label column {label_column!r}; "
                                   "it is not sent to another machine")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in ("run", "run/predictions"):
            folder = tarfile.TarInfo(name)
            folder.type, folder.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(folder)
        for split in SPLITS:
            tar.add(str(rows / f"{split}.csv"), arcname=f"run/{split}.csv", recursive=False)
    return buffer.getvalue()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def received_files(root: Path) -> tuple[ReceivedFile, ...]:
    """Every file under `root` (a slot: work/ and run/), with a header for run/*.csv."""
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        rel = path.relative_to(root).as_posix()
        header = csv_header(path) if rel.startswith("run/") and path.suffix == ".csv" else None
        found.append(ReceivedFile(rel, path.stat().st_size, _sha256(path), header))
    return tuple(found)


def unpack_inputs(code: bytes, rows: bytes, config: dict, slot_root: Path) -> tuple[ReceivedFile, ...]:
    """Extract a run's inputs into a slot whose `work/` and `run/` exist (empty), write its
    run.json; what arrived."""
    for data in (code, rows):
        with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
            tar.extractall(slot_root, filter="data")
    (slot_root / "run" / "run.json").write_text(json.dumps(config, indent=2))
    return received_files(slot_root)


def pack_dir(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(str(folder), arcname="run")
    return buffer.getvalue()


def unpack_run(data: bytes, dest: Path) -> None:
    """The run directory `pack_dir` packed, in place at `dest` (which must not exist yet)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=dest.name + ".", suffix=".partial", dir=dest.parent))
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
            tar.extractall(staging, filter="data")
        os.replace(staging / "run", dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

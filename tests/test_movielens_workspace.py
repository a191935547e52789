"""The bundled movielens-ctr workspace: its data module, its training entrypoint, its quality.

Data tests run the real prepare() against the shared cache (fetched from PyPI once per
cache). Training tests (slow) call the real train.main() on hand-made run directories
laid out as the contract says: labels stripped from valid and test.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agentx.workspace import load_manifest

WORKSPACE = Path(__file__).resolve().parents[1] / "workspaces" / "movielens-ctr"
SPLIT_ROWS = {"train": 80_000, "valid": 10_000, "test": 10_000}


# -- helpers -----------------------------------------------------------------------------

def load_data_module():
    spec = importlib.util.spec_from_file_location("movielens_ctr_data", WORKSPACE / "data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Rank AUC with ties averaged (Mann-Whitney)."""
    ranks = pd.Series(scores).rank().to_numpy()
    pos = int(labels.sum())
    neg = len(labels) - pos
    return float((ranks[labels == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def popularity_scores(train: pd.DataFrame, frame: pd.DataFrame, smoothing: float = 5.0) -> np.ndarray:
    """Item click rate from train, smoothed towards the global rate; unseen items get it."""
    prior = train["label"].mean()
    stats = train.groupby("item_id")["label"].agg(["sum", "count"])
    rate = (stats["sum"] + smoothing * prior) / (stats["count"] + smoothing)
    return frame["item_id"].map(rate).fillna(prior).to_numpy()


def make_run_dir(root: Path, splits: dict[str, pd.DataFrame], *, seed: int, tier: str, epochs: int,
                 train_rows: int | None = None, eval_rows: int | None = None) -> Path:
    """A run directory as the harness lays it out: labels only in train.csv."""
    root.mkdir(parents=True)
    for name, frame in splits.items():
        rows = train_rows if name == "train" else eval_rows
        if rows is not None:
            frame = frame.sample(n=rows, random_state=0).sort_values(["timestamp", "row_id"])
        if name != "train":
            frame = frame.drop(columns=["label"])
        frame.to_csv(root / f"{name}.csv", index=False)
    (root / "predictions").mkdir()
    (root / "run.json").write_text(json.dumps(
        {"run_id": root.name, "seed": seed, "tier": tier, "epochs": epochs, "device": "cpu"}))
    return root


def read_predictions(run_dir: Path, split: str) -> pd.DataFrame:
    return pd.read_csv(run_dir / "predictions" / f"{split}.csv")


# -- fixtures ----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def data_module():
    return load_data_module()


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    return Path(os.environ.get("AGENTX_CACHE_DIR") or Path.home() / ".cache" / "agentx")


@pytest.fixture(scope="session")
def prepared(data_module, cache_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ml100k")
    data_module.prepare(cache_dir, out)
    return out


@pytest.fixture(scope="session")
def splits(prepared) -> dict[str, pd.DataFrame]:
    return {name: pd.read_csv(prepared / f"{name}.csv") for name in SPLIT_ROWS}


@pytest.fixture
def train_module(monkeypatch):
    """The workspace's train.py imported the way a kernel in the checkout imports it."""
    monkeypatch.syspath_prepend(str(WORKSPACE))
    for name in ("train", "model"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    module = importlib.import_module("train")
    assert Path(module.__file__).resolve() == WORKSPACE / "train.py"
    yield module
    for name in ("train", "model"):
        sys.modules.pop(name, None)


@pytest.fixture
def dead_registry(tmp_path, monkeypatch):
    """pip sees only an index nobody listens on: no config files, no local wheels."""
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty))


# -- the manifest, catalog and self-containment ------------------------------------------

def test_manifest_and_catalog_describe_the_template(train_module):
    manifest = load_manifest(WORKSPACE)
    assert (manifest.train.module, manifest.train.function) == ("train", "main")
    assert manifest.tiers.micro.train_rows == 400 and manifest.tiers.micro.epochs == 1
    assert manifest.paths.is_protected("features.yaml") and manifest.paths.is_editable("model.py")

    yaml = pytest.importorskip("yaml")
    catalog = yaml.safe_load((WORKSPACE / "features.yaml").read_text())
    names = {entry["name"] for entry in catalog}
    for entry in catalog:
        assert set(entry) == {"name", "definition", "group", "type", "serving_cost", "leaky"}, entry
        assert entry["group"] in {"user", "item", "context", "interaction"}
        assert entry["type"] in {"categorical", "numeric", "multi_categorical"}
        assert isinstance(entry["serving_cost"], float) and entry["leaky"] is False
    inputs = {*train_module.CATEGORICAL, *train_module.NUMERIC, train_module.MULTI_CATEGORICAL}
    assert inputs <= names, f"model inputs missing from features.yaml: {inputs - names}"
    data_columns = set(load_data_module().COLUMNS) - {"row_id", "label", "timestamp"}
    assert names == data_columns


def test_workspace_imports_only_its_own_files_and_allowed_packages():
    allowed = {"torch", "numpy", "pandas", "model", "train"}
    for path in WORKSPACE.glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
        third_party = imported - set(sys.stdlib_module_names) - {"__future__"}
        if path.name == "data.py":
            assert not third_party, f"data.py must use the standard library only: {third_party}"
        assert third_party <= allowed, f"{path.name} imports {third_party - allowed}"


# -- data.py -----------------------------------------------------------------------------

def test_prepare_writes_three_time_ordered_splits(splits, data_module):
    sizes = {name: len(frame) for name, frame in splits.items()}
    assert sum(sizes.values()) == 100_000
    for name, expected in SPLIT_ROWS.items():              # 80/10/10, rounded per user
        assert abs(sizes[name] - expected) <= 1_000, sizes
    for frame in splits.values():
        assert list(frame.columns) == data_module.COLUMNS
        assert "rating" not in frame.columns
        assert set(frame["label"].unique()) == {0, 1}
    train, valid, test = splits["train"], splits["valid"], splits["test"]
    # per user, time only moves forward: train < valid < test
    last_train = train.groupby("user_id")["timestamp"].max()
    first_valid, last_valid = valid.groupby("user_id")["timestamp"].min(), valid.groupby("user_id")["timestamp"].max()
    first_test = test.groupby("user_id")["timestamp"].min()
    assert (last_train.loc[first_valid.index] <= first_valid).all()
    assert (last_valid.loc[first_test.index] <= first_test).all()
    # every user in valid and test has a history in train (all 943 users)
    assert set(valid["user_id"]) <= set(train["user_id"]) and set(test["user_id"]) <= set(train["user_id"])
    assert train["user_id"].nunique() == 943
    for frame in splits.values():
        assert frame["timestamp"].is_monotonic_increasing
    row_ids = pd.concat([f["row_id"] for f in splits.values()])
    assert sorted(row_ids) == list(range(100_000))
    everything = pd.concat(splits.values())
    assert 0.50 < everything["label"].mean() < 0.60  # 55,375 ratings of 4 or 5 in ml-100k
    genres = set("|".join(everything["genres"]).split("|"))
    assert {"Children's", "Film-Noir", "Sci-Fi", "Drama"} <= genres and len(genres) == 19
    assert set(everything["zip_prefix"].astype(str)) <= set("0123456789?")
    assert (everything["zip_prefix"].astype(str) == "?").any()
    assert (everything.loc[everything["item_id"] == 267, "release_year"] == 0).all()
    # the known first interaction of ml-100k (row 0 of the .inter file): user 196, item 242, rating 3
    first = everything.set_index("row_id").loc[0]
    assert (first["user_id"], first["item_id"], first["label"]) == (196, 242, 0)


def test_prepare_is_byte_for_byte_deterministic(data_module, cache_dir, prepared, tmp_path):
    data_module.prepare(cache_dir, tmp_path)
    for name in SPLIT_ROWS:
        assert (tmp_path / f"{name}.csv").read_bytes() == (prepared / f"{name}.csv").read_bytes()


def test_hand_placed_files_are_used_without_any_registry(
    data_module, cache_dir, prepared, tmp_path, dead_registry
):
    (tmp_path / "cache" / "ml-100k").mkdir(parents=True)
    for name in data_module.SHA256:
        shutil.copy(cache_dir / "ml-100k" / name, tmp_path / "cache" / "ml-100k" / name)
    data_module.prepare(tmp_path / "cache", tmp_path / "out")
    assert (tmp_path / "out" / "test.csv").read_bytes() == (prepared / "test.csv").read_bytes()


def test_unreachable_registry_fails_fast_with_instructions(data_module, tmp_path, dead_registry):
    started = time.monotonic()
    with pytest.raises(data_module.DatasetUnavailable) as caught:
        data_module.prepare(tmp_path / "cache", tmp_path / "out")
    assert time.monotonic() - started < 30
    message = str(caught.value)
    for name, digest in data_module.SHA256.items():
        assert str(tmp_path / "cache" / "ml-100k" / name) in message
        assert digest in message
    assert "recbole==1.2.1" in message and "pip download failed" in message
    assert not (tmp_path / "out").exists()


def test_checksum_mismatch_names_file_expected_and_actual(data_module, cache_dir, prepared, tmp_path):
    target = tmp_path / "cache" / "ml-100k"
    target.mkdir(parents=True)
    for name in data_module.SHA256:
        shutil.copy(cache_dir / "ml-100k" / name, target / name)
    tampered = (target / "ml-100k.user").read_bytes().replace(b"technician", b"technicien", 1)
    (target / "ml-100k.user").write_bytes(tampered)
    with pytest.raises(data_module.ChecksumMismatch) as caught:
        data_module.prepare(tmp_path / "cache", tmp_path / "out")
    message = str(caught.value)
    assert "ml-100k.user" in message
    assert data_module.SHA256["ml-100k.user"] in message
    assert hashlib.sha256(tampered).hexdigest() in message


# -- train.py ----------------------------------------------------------------------------

@pytest.mark.slow
def test_micro_run_writes_well_formed_predictions(train_module, splits, tmp_path):
    run_dir = make_run_dir(tmp_path / "micro", splits, seed=0, tier="micro", epochs=1,
                           train_rows=400, eval_rows=100)
    started = time.monotonic()
    predictor = train_module.main(str(run_dir))
    elapsed = time.monotonic() - started
    assert elapsed < 60, f"micro run took {elapsed:.1f}s"
    for split in ("valid", "test"):
        frame = pd.read_csv(run_dir / f"{split}.csv")
        predictions = read_predictions(run_dir, split)
        assert list(predictions.columns) == ["row_id", "score"]
        assert predictions["row_id"].tolist() == frame["row_id"].tolist()
        assert predictions["score"].notna().all()
        assert predictions["score"].between(0, 1).all()
        np.testing.assert_allclose(predictor.predict(frame), predictions["score"], atol=1e-6)
    assert isinstance(predictor.num_params, int)
    assert predictor.num_params == sum(p.numel() for p in predictor.model.parameters()) > 0


@pytest.mark.slow
def test_same_seed_same_predictions_other_seed_differs(train_module, splits, tmp_path):
    def run(name: str, seed: int) -> bytes:
        run_dir = make_run_dir(tmp_path / name, splits, seed=seed, tier="micro", epochs=1,
                               train_rows=400, eval_rows=100)
        train_module.main(str(run_dir))
        return (run_dir / "predictions" / "valid.csv").read_bytes()

    first = run("a", seed=3)
    assert run("b", seed=3) == first
    assert run("c", seed=4) != first


@pytest.mark.slow
def test_full_run_beats_item_popularity(train_module, splits, tmp_path):
    manifest = tomllib.loads((WORKSPACE / "agentx.toml").read_text())
    epochs = manifest["tiers"]["full"]["epochs"]
    run_dir = make_run_dir(tmp_path / "full", splits, seed=0, tier="full", epochs=epochs)
    started = time.monotonic()
    train_module.main(str(run_dir))
    elapsed = time.monotonic() - started
    result = {}
    for split in ("valid", "test"):
        frame = splits[split]
        scores = read_predictions(run_dir, split).set_index("row_id").loc[frame["row_id"], "score"]
        result[split] = (auc(frame["label"].to_numpy(), scores.to_numpy()),
                         auc(frame["label"].to_numpy(), popularity_scores(splits["train"], frame)))
    print(f"full run {elapsed:.1f}s; (model AUC, popularity AUC): {result}")
    # about 10 s of training on an idle 2-core machine; the bound is the manifest's guardrail,
    # loose enough for a machine shared with other test suites
    assert elapsed < manifest["guardrails"]["max_train_seconds"]
    assert result["valid"][0] > result["valid"][1]
    assert result["test"][0] > result["test"][1] + 0.02

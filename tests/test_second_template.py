"""The second bundled template, caravan-conversion: scikit-learn instead of torch, the CoIL 2000
Caravan data (from the ISLP wheel on PyPI) instead of MovieLens, no user or item column.

The data module runs from the installed package against the shared cache (fetched once per
cache); `agentx init` + `agentx baseline` run it end to end; every knob reads back and both
model choices train on a run directory laid out as the contract says.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED_CACHE
from typer.testing import CliRunner

from agentx.cli import app
from agentx.workspace import load_manifest
from tools.feature_catalog import load_catalog
from tools.git_repo import resolve_template
from tools.knobs import check_value, read_knob, write_knob
from tools.scoring import auc

TEMPLATE = resolve_template("caravan-conversion")
ROWS, BUYERS = 5822, 348


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def data_module():
    return load_module(TEMPLATE / "data.py", "caravan_conversion_data")


@pytest.fixture(scope="module")
def prepared(data_module, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("caravan")
    data_module.prepare(SHARED_CACHE, out)
    return out


@pytest.fixture(scope="module")
def splits(prepared) -> dict[str, pd.DataFrame]:
    return {name: pd.read_csv(prepared / f"{name}.csv") for name in ("train", "valid", "test")}


@pytest.fixture
def dead_registry(tmp_path, monkeypatch):
    """pip sees only an index nobody listens on: no config files, no local wheels."""
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty))


def make_run_dir(root: Path, splits: dict[str, pd.DataFrame], seed: int) -> Path:
    """A run directory as the harness lays it out: labels only in train.csv."""
    root.mkdir(parents=True)
    (root / "run.json").write_text(json.dumps({"run_id": "t", "seed": seed, "tier": "full", "epochs": 1,
                                               "device": "auto"}))
    splits["train"].to_csv(root / "train.csv", index=False)
    for name in ("valid", "test"):
        splits[name].drop(columns="label").to_csv(root / f"{name}.csv", index=False)
    return root


# -- the template ------------------------------------------------------------------------

def test_template_is_bundled_and_is_not_torch():
    manifest = load_manifest(TEMPLATE)
    assert TEMPLATE.parent.name == "workspaces" and manifest.workspace.name == "caravan-conversion"
    data = manifest.data
    assert (data.user_column, data.item_column, data.cluster_column) == (None, None, None)
    assert (manifest.metric.primary, manifest.metric.direction) == ("auc", "maximize")
    assert manifest.paths.is_protected("data.py") and manifest.paths.is_editable("train.py")
    for path in TEMPLATE.glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
        third_party = imported - set(sys.stdlib_module_names) - {"__future__"}
        allowed = set() if path.name == "data.py" else {"numpy", "pandas", "sklearn", "threadpoolctl"}
        assert third_party <= allowed, f"{path.name} imports {third_party - allowed}"


# -- data.py -----------------------------------------------------------------------------

def test_prepare_writes_stratified_splits_with_the_contract_columns(data_module, splits):
    manifest = load_manifest(TEMPLATE)
    catalog = {feature.name for feature in load_catalog(TEMPLATE, manifest)}
    id_column, label_column = manifest.data.id_column, manifest.data.label_column
    for frame in splits.values():
        assert list(frame.columns) == data_module.COLUMNS
        assert set(frame.columns) == {id_column, label_column} | catalog
        assert set(frame[label_column].unique()) == {0, 1}
        assert frame[id_column].is_monotonic_increasing
        # no input is the label under another name: the harness can strip the label column
        without_label = frame.drop(columns=[label_column, id_column])
        assert not any((without_label[c] == frame[label_column]).all() for c in without_label)
    sizes = {name: len(frame) for name, frame in splits.items()}
    assert sizes == {"train": 3493, "valid": 1165, "test": 1164}
    ids = pd.concat([frame[id_column] for frame in splits.values()])
    assert sorted(ids) == list(range(ROWS))
    buyers = {name: int(frame[label_column].sum()) for name, frame in splits.items()}
    assert sum(buyers.values()) == BUYERS and buyers["valid"] >= 69 and buyers["test"] >= 69
    # the first row of Caravan.csv: MOSTYPE 33, MOSHOOFD 8, APERSAUT 1, not a buyer
    first = pd.concat(splits.values()).set_index(id_column).loc[0]
    assert (first["customer_subtype"], first["customer_main_type"], first["num_car_policies"],
            first["label"]) == (33, 8, 1, 0)


def test_prepare_is_byte_for_byte_deterministic(data_module, prepared, tmp_path):
    data_module.prepare(SHARED_CACHE, tmp_path)
    for name in ("train", "valid", "test"):
        assert (tmp_path / f"{name}.csv").read_bytes() == (prepared / f"{name}.csv").read_bytes()


def test_unreachable_registry_fails_fast_with_instructions(data_module, tmp_path, dead_registry):
    started = time.monotonic()
    with pytest.raises(data_module.DatasetUnavailable) as caught:
        data_module.prepare(tmp_path / "cache", tmp_path / "out")
    assert time.monotonic() - started < 30
    message = str(caught.value)
    assert str(tmp_path / "cache" / "caravan" / "Caravan.csv") in message and data_module.SHA256 in message
    assert "ISLP==0.4.0" in message and "pip download failed" in message
    assert not (tmp_path / "out").exists()


def test_checksum_mismatch_names_expected_and_actual(data_module, prepared, tmp_path):
    target = tmp_path / "cache" / "caravan"
    target.mkdir(parents=True)
    tampered = (SHARED_CACHE / "caravan" / "Caravan.csv").read_bytes().replace(b",No\n", b",Yes\n", 1)
    (target / "Caravan.csv").write_bytes(tampered)
    with pytest.raises(data_module.ChecksumMismatch) as caught:
        data_module.prepare(tmp_path / "cache", tmp_path / "out")
    assert data_module.SHA256 in str(caught.value) and hashlib.sha256(tampered).hexdigest() in str(caught.value)


# -- knobs and train.py ------------------------------------------------------------------

def test_every_knob_reads_back_a_valid_value():
    manifest = load_manifest(TEMPLATE)
    catalog = {feature.name for feature in load_catalog(TEMPLATE, manifest)}
    kinds = {spec.type for spec in manifest.knobs.values()}
    assert {"float", "categorical", "int", "features"} <= kinds
    values = {name: read_knob(TEMPLATE, spec) for name, spec in manifest.knobs.items()}
    for name, spec in manifest.knobs.items():
        assert values[name] is not None, name
        assert check_value(spec, values[name]) == values[name], name
    assert values["MODEL"] == "logreg" and manifest.knobs["C"].log
    assert set(values["FEATURES"]) <= catalog and len(values["FEATURES"]) >= manifest.knobs["FEATURES"].min_size


@pytest.mark.parametrize("model", ["logreg", "hgb"])
def test_each_model_choice_trains_and_beats_chance(model, splits, tmp_path, monkeypatch):
    code = tmp_path / "code"
    shutil.copytree(TEMPLATE, code)
    manifest = load_manifest(code)
    write_knob(code, manifest.knobs["MODEL"], model)
    write_knob(code, manifest.knobs["FEATURES"], ["customer_subtype", "car_contrib", "purchasing_power",
                                                  "num_boat_policies", "fire_contrib"])
    monkeypatch.syspath_prepend(str(code))
    monkeypatch.delitem(sys.modules, "train", raising=False)
    train = importlib.import_module("train")
    try:
        run = make_run_dir(tmp_path / "run", splits, seed=3)
        predictor = train.main(str(run))
    finally:
        sys.modules.pop("train", None)
    assert train.MODEL == model and predictor.num_params > 0
    valid = pd.read_csv(run / "predictions" / "valid.csv")
    assert list(valid.columns) == ["row_id", "score"] and (valid["row_id"] == splits["valid"]["row_id"]).all()
    assert valid["score"].between(0, 1).all()
    assert auc(splits["valid"]["label"].to_numpy(), valid["score"].to_numpy()) > 0.68
    again = predictor.predict(pd.read_csv(run / "valid.csv"))
    assert np.allclose(again, valid["score"].to_numpy(), atol=1e-7)


# -- agentx init + baseline --------------------------------------------------------------

def test_init_and_baseline_from_the_template(tmp_path):
    ws = tmp_path / "ws"
    runner = CliRunner()
    result = runner.invoke(app, ["init", str(ws), "--template", "caravan-conversion"])
    assert result.exit_code == 0, result.output
    assert (ws / "data.py").read_bytes() == (TEMPLATE / "data.py").read_bytes()
    result = runner.invoke(app, ["baseline", "--workspace", str(ws), "--seeds", "1", "--tier", "micro"])
    assert result.exit_code == 0, result.output
    assert "no popularity reference (no item_column in [data])" in result.output
    assert "micro" in result.output and " ok " in result.output

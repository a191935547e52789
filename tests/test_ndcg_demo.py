"""ndcg@10 as the primary metric on movielens-ctr: the demo's baseline and its experiment are
scored and judged on it, per user, with the user-level bootstrap, and the popularity
reference is compared on the same metric."""

from __future__ import annotations

import shutil

import pytest
from typer.testing import CliRunner

from agentx.cli import app
from knowledge import KnowledgeBase
from tools.git_repo import resolve_template


@pytest.mark.slow
@pytest.mark.timeout(900)      # a MovieLens baseline and one experiment: 2 to 4 minutes
def test_a_demo_with_ndcg_at_10_judges_with_it_per_user(tmp_path):
    template = tmp_path / "movielens-ndcg"
    shutil.copytree(resolve_template("movielens-ctr"), template)
    manifest = template / "agentx.toml"
    text = manifest.read_text()
    assert 'primary = "auc"' in text and 'secondary = ["logloss", "ndcg@10"]' in text
    manifest.write_text(text.replace('primary = "auc"', 'primary = "ndcg@10"')
                        .replace('secondary = ["logloss", "ndcg@10"]', 'secondary = ["auc", "logloss"]')
                        .replace("min_effect = 0.002", "min_effect = 0.005"))
    ws = tmp_path / "ws"
    result = CliRunner().invoke(app, ["demo", "--dir", str(ws), "--template", str(template), "--experiments", "1",
                                      "--seeds", "2"])
    assert result.exit_code == 0, result.output
    assert "valid ndcg@10" in result.output and "test ndcg@10: mean" in result.output
    assert "popularity baseline (item click rate in train) test ndcg@10" in result.output

    kb = KnowledgeBase.for_workspace(ws)
    (experiment,) = kb.experiments()
    verdict = kb.verdicts(experiment["id"])[-1]
    assert verdict["metric"] == "ndcg@10", verdict
    assert "test users" in verdict["rationale"] and "bootstrap replicates" in verdict["rationale"]
    assert verdict["ci_low"] <= verdict["delta"] <= verdict["ci_high"]
    print(f"{experiment['title']}: {verdict['decision']}, ndcg@10 {verdict['control']:.4f} -> "
          f"{verdict['treatment']:.4f}, delta {verdict['delta']:+.4f}, CI [{verdict['ci_low']:+.4f}, "
          f"{verdict['ci_high']:+.4f}]; {verdict['rationale']}")
    for run in kb.runs(experiment["id"]):
        if run["status"] == "ok" and run["tier"] == "full":
            metrics = kb.metrics_for(run["id"])
            assert 0 < metrics[("test", "ndcg@10")] <= 1 and 0.5 < metrics[("test", "auc")] < 1, metrics

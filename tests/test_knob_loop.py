"""The default brain on a repo with declared knobs and no recipes: the loop makes judged
experiments whose branches change only knob values (Optuna's proposals through the
Thompson bandit's knobs arm)."""

from typer.testing import CliRunner

from agentx.cli import app
from knowledge import KnowledgeBase
from test_knob_search import PRIOR_KNOB, add_knobs
from tools.git_repo import WorkspaceRepo


def test_run_on_a_repo_with_only_knobs_judges_experiments_that_change_only_knob_values(tiny_template, tmp_path):
    WorkspaceRepo.init_from_template(tmp_path / "ws", add_knobs(tiny_template, PRIOR_KNOB))
    result = CliRunner().invoke(app, ["run", "--workspace", str(tmp_path / "ws"), "--experiments", "3"])
    assert result.exit_code == 0, result.output
    kb, repo = KnowledgeBase.for_workspace(tmp_path / "ws"), WorkspaceRepo(tmp_path / "ws")
    experiments = kb.experiments()
    assert len(experiments) == 3 and all(e["recipe"] == "knobs" for e in experiments)
    values = [e["params"]["PRIOR_WEIGHT"] for e in experiments]
    assert len(set(values)) == 3 and all(0.1 <= v <= 10.0 for v in values)      # three distinct draws in range
    for experiment in experiments:
        (verdict,) = kb.verdicts(experiment["id"])
        assert verdict["decision"] in ("ship", "reject", "inconclusive", "vetoed") and verdict["ci_low"] is not None
        diff = [line for line in repo.diff(experiment["branch"]).splitlines()
                if line.startswith(("+", "-")) and not line.startswith(("+++", "---"))]
        assert diff == ["-PRIOR_WEIGHT = 1.0  # pseudo-observations of the mean click rate",
                        f"+PRIOR_WEIGHT = {experiment['params']['PRIOR_WEIGHT']!r}  # pseudo-observations of the "
                        "mean click rate"], diff
        assert "Optuna TPE sampler" in experiment["proposal"]["rationale"]

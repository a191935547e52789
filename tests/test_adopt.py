"""`agentx adopt` on an independent repository: a small scikit-learn click model written here
(not one of our templates), adopted, given knobs by hand, checked, and searched by the
default brain. The issue "Any model repository", acceptance test 1."""

import tomllib

import pytest
import yaml
from typer.testing import CliRunner

from agentx.check import CHECKS
from agentx.cli import app
from agentx.workspace import load_manifest
from knowledge import KnowledgeBase
from tools.git_repo import WorkspaceRepo
from tools.derived import parse
from tools.knobs import read_knob

from click_repo import CONFIG, FEATURES, KNOBS, git, make_click_repo


@pytest.fixture
def click_repo(tmp_path):
    return make_click_repo(tmp_path)


def test_adopt_writes_a_manifest_and_catalog_and_refuses_to_overwrite(click_repo):
    result = CliRunner().invoke(app, ["adopt", str(click_repo)])
    assert result.exit_code == 0, result.output
    assert "agentx check --workspace" in result.output and "wrote" in result.output
    manifest = tomllib.loads((click_repo / "agentx.toml").read_text())
    assert manifest["train"]["entrypoint"] == "train:main" and manifest["data"]["module"] == "data.py"
    assert (manifest["data"]["id_column"], manifest["data"]["label_column"]) == ("row_id", "label")
    assert "user_column" not in manifest["data"] and "item_column" not in manifest["data"]
    assert manifest["paths"]["editable"] == ["train.py", "conf/model.yaml"]
    assert manifest["paths"]["protected"] == ["data.py", "agentx.toml", "features.yaml"]
    assert manifest["metric"] == {"primary": "auc", "direction": "maximize", "min_effect": 0.002,
                                  "secondary": ["logloss"]}
    assert manifest["tiers"]["micro"]["train_rows"] == 2000 and "knobs" not in manifest
    assert {"numpy", "pandas", "yaml", "sklearn.linear_model"} <= set(manifest["train"]["preload"])
    text = (click_repo / "agentx.toml").read_text()
    assert '# name = "model.C"' in text and "# [recipes]" in text        # commented examples
    catalog = yaml.safe_load((click_repo / "features.yaml").read_text())
    assert [(f["name"], f["type"], f["group"]) for f in catalog] == [(n, "numeric", "TODO") for n in FEATURES]

    again = CliRunner().invoke(app, ["adopt", str(click_repo)])
    assert again.exit_code == 2 and "already exists" in again.output and "--force" in again.output
    assert len(again.output.strip().splitlines()) == 1


def test_the_commented_knob_examples_are_real_knobs_once_uncommented(click_repo):
    assert CliRunner().invoke(app, ["adopt", str(click_repo)]).exit_code == 0
    text = (click_repo / "agentx.toml").read_text()
    start = text.index("# [knobs.")
    examples = text[start:text.index("\n\n", start)]
    uncommented = "\n".join(line[2:] if line.startswith("# ") else "" for line in examples.splitlines())
    (click_repo / "agentx.toml").write_text(text.replace(examples, uncommented))
    manifest = load_manifest(click_repo)
    assert {name: (k.file, k.name, k.type) for name, k in manifest.knobs.items()} == {
        "C": ("conf/model.yaml", "model.C", "float"), "features": ("conf/model.yaml", "features", "features")}
    assert [read_knob(click_repo, k) for k in manifest.knobs.values()] == [1.0, FEATURES]


def test_adopt_says_what_to_pass_when_it_cannot_tell(click_repo):
    runner = CliRunner()
    (click_repo / "more_data.py").write_text("def prepare(cache_dir, out_dir):\n    pass\n")
    result = runner.invoke(app, ["adopt", str(click_repo)])
    assert result.exit_code == 2 and "several files define prepare() (data.py, more_data.py)" in result.output
    assert "pass --data FILE" in result.output
    result = runner.invoke(app, ["adopt", str(click_repo), "--data", "more_data.py"])
    assert result.exit_code == 2 and "wrote no train.csv, valid.csv, test.csv" in result.output
    result = runner.invoke(app, ["adopt", str(click_repo), "--data", "data.py", "--id-column", "impression"])
    assert result.exit_code == 2 and "no id column 'impression'" in result.output and "row_id" in result.output
    result = runner.invoke(app, ["adopt", str(click_repo), "--data", "data.py", "--entrypoint", "train:fit"])
    assert result.exit_code == 2 and "train.py defines no module-level function fit" in result.output
    (click_repo / "data.py").write_text((click_repo / "data.py").read_text() + "\nraise SystemExit('no network')\n")
    result = runner.invoke(app, ["adopt", str(click_repo), "--data", "data.py"])
    assert result.exit_code == 2 and "failed in a child process: no network" in result.output
    assert not (click_repo / "agentx.toml").exists()
    assert runner.invoke(app, ["adopt", str(click_repo.parent)]).exit_code == 2      # not a repository


@pytest.mark.slow
@pytest.mark.timeout(900)      # eight experiments and the interaction statistics
def test_adopted_repo_with_knobs_checks_and_runs_eight_judged_knob_experiments(click_repo):
    runner = CliRunner()
    assert runner.invoke(app, ["adopt", str(click_repo)]).exit_code == 0
    manifest = click_repo / "agentx.toml"
    manifest.write_text(manifest.read_text() + KNOBS)
    git(click_repo, "add", "agentx.toml", "features.yaml")
    git(click_repo, "commit", "-q", "-m", "agentx manifest and catalog, knobs C and features")

    check = runner.invoke(app, ["check", "--workspace", str(click_repo)])
    assert check.exit_code == 0, check.output
    lines = [line.split() for line in check.output.splitlines() if line.split() and line.split()[0] in
             ("ok", "FAIL", "skipped")]
    assert len(lines) == len(CHECKS) and all(line[0] == "ok" for line in lines), check.output

    run = runner.invoke(app, ["run", "--workspace", str(click_repo), "--experiments", "8"])
    assert run.exit_code == 0, run.output
    kb, repo = KnowledgeBase.for_workspace(click_repo), WorkspaceRepo(click_repo)
    experiments = kb.experiments()
    # knob moves, and discovered crosses added to the features knob (product(a,b): still only its value)
    assert len(experiments) == 8 and all(e["recipe"] in ("knobs", "interaction") for e in experiments), experiments
    config = CONFIG.lstrip().splitlines()
    for experiment in experiments:
        verdicts = kb.verdicts(experiment["id"])
        assert verdicts and verdicts[-1]["decision"] in ("ship", "reject", "inconclusive", "vetoed"), verdicts
        assert repo.changed_paths(experiment["branch"]) == ["conf/model.yaml"]
        diff = [line for line in repo.diff(experiment["branch"]).splitlines()
                if line.startswith(("+", "-")) and not line.startswith(("+++", "---"))]
        knob_lines = {"  C: 1.0          # inverse regularisation strength"} | {f"  - {n}" for n in FEATURES}
        assert diff and all(line[1:] in knob_lines for line in diff if line.startswith("-")), diff
        for line in (line[1:] for line in diff if line.startswith("+")):
            name = line.removeprefix("  - ")
            assert line.startswith("  C: ") or name in FEATURES or parse(name) is not None, diff
        assert set(config) - knob_lines <= set(_branch_file(repo, experiment["branch"]).splitlines())


def _branch_file(repo, branch):
    return repo.repo.git.show(f"{branch}:conf/model.yaml")

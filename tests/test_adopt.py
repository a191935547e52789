"""`agentx adopt` on an independent repository: a small scikit-learn click model written here
(not one of our templates), adopted, given knobs by hand, checked, and searched by the
default brain. The issue "Any model repository", acceptance test 1."""

import subprocess
import textwrap
import tomllib

import pytest
import yaml
from typer.testing import CliRunner

from agentx.check import CHECKS
from agentx.cli import app
from agentx.workspace import load_manifest
from knowledge import KnowledgeBase
from tools.git_repo import WorkspaceRepo
from tools.knobs import read_knob

FEATURES = ["position", "price", "rating", "distance_km", "age_days", "discount"]

DATA = '''
"""Synthetic hotel-listing clicks: six numeric features, a logistic click model with an
interaction (cheap AND well rated), split by time 70/15/15. Standard library only."""
import csv
import math
import random

FEATURES = ["position", "price", "rating", "distance_km", "age_days", "discount"]
ROWS = 4000


def _row(rng):
    position = rng.randint(1, 20)
    price = rng.lognormvariate(4.5, 0.5)
    rating = min(5.0, max(1.0, rng.gauss(3.8, 0.7)))
    distance = rng.expovariate(0.3)
    age = rng.randint(0, 365)
    discount = rng.choice([0.0, 0.0, 0.1, 0.2, 0.3])
    cheap = 1.0 if price < 80 else 0.0
    logit = (-1.0 - 0.12 * position + 0.6 * (rating - 3.8) - 0.08 * distance + 2.0 * discount
             + 1.2 * cheap * (rating - 3.5) - 0.002 * age)
    label = 1 if rng.random() < 1 / (1 + math.exp(-logit)) else 0
    return [position, round(price, 2), round(rating, 2), round(distance, 3), age, discount, label]


def prepare(cache_dir, out_dir):
    rng = random.Random(20240601)
    rows = [[i] + _row(rng) for i in range(ROWS)]
    cuts = {"train": rows[:2800], "valid": rows[2800:3400], "test": rows[3400:]}
    for split, part in cuts.items():
        with open(out_dir / f"{split}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["row_id"] + FEATURES + ["label"])
            writer.writerows(part)
'''

CONFIG = """
# The ranker's settings; train.py reads them.
model:
  C: 1.0          # inverse regularisation strength
  penalty: l2
features:
""" + "".join(f"  - {name}\n" for name in FEATURES)

TRAIN = '''
"""Logistic-regression click model over the features conf/model.yaml lists."""
import os

import numpy as np
import pandas as pd
import yaml
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

HERE = os.path.dirname(os.path.abspath(__file__))
L1_RATIO = {"l2": 0.0, "l1": 1.0}


def load_config(path=os.path.join(HERE, "conf", "model.yaml")):
    with open(path) as f:
        return yaml.safe_load(f)


class ClickModel:
    def __init__(self, pipeline, features):
        self.pipeline, self.features = pipeline, features
        self.num_params = int(pipeline[-1].coef_.size + 1)

    def predict(self, frame):
        return self.pipeline.predict_proba(frame[self.features].to_numpy(dtype=float))[:, 1]


def main(run_dir):
    config = load_config()
    params, features = config["model"], config["features"]
    train = pd.read_csv(os.path.join(run_dir, "train.csv"))
    solver = "lbfgs" if params["penalty"] == "l2" else "saga"
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(C=float(params["C"]),
                             l1_ratio=L1_RATIO[params["penalty"]], solver=solver, max_iter=2000))
    pipeline.fit(train[features].to_numpy(dtype=float), train["label"].to_numpy())
    model = ClickModel(pipeline, features)
    os.makedirs(os.path.join(run_dir, "predictions"), exist_ok=True)
    for split in ("valid", "test"):
        frame = pd.read_csv(os.path.join(run_dir, f"{split}.csv"))
        pd.DataFrame({"row_id": frame["row_id"], "score": np.clip(model.predict(frame), 0.0, 1.0)}).to_csv(
            os.path.join(run_dir, "predictions", f"{split}.csv"), index=False)
    return model
'''

KNOBS = """
[knobs.C]
file = "conf/model.yaml"
name = "model.C"
type = "float"
low = 0.001
high = 100.0
log = true

[knobs.features]
file = "conf/model.yaml"
name = "features"
type = "features"
min_size = 3
"""


def git(root, *args):
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


@pytest.fixture
def click_repo(tmp_path):
    root = tmp_path / "hotel-clicks"
    (root / "conf").mkdir(parents=True)
    (root / "data.py").write_text(textwrap.dedent(DATA).lstrip())
    (root / "train.py").write_text(textwrap.dedent(TRAIN).lstrip())
    (root / "conf" / "model.yaml").write_text(CONFIG.lstrip())
    (root / ".gitignore").write_text("__pycache__/\n")
    git(tmp_path, "init", "-q", "-b", "main", str(root))
    git(root, "config", "user.name", "A Person")
    git(root, "config", "user.email", "person@example.com")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "a click model")
    return root


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
    assert len(experiments) == 8 and all(e["recipe"] == "knobs" for e in experiments), experiments
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
            assert line.startswith("  C: ") or line.removeprefix("  - ") in FEATURES, diff
        assert set(config) - knob_lines <= set(_branch_file(repo, experiment["branch"]).splitlines())


def _branch_file(repo, branch):
    return repo.repo.git.show(f"{branch}:conf/model.yaml")

"""An independent repository for tests: a small scikit-learn click model written here (not one
of agentx's templates), with a YAML config file the model reads. `make_click_repo` commits it
to a fresh git repository; `adopted_click_repo` also runs `agentx adopt` and declares KNOBS."""

import subprocess
import textwrap
from pathlib import Path

from typer.testing import CliRunner

from agentx.cli import app

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


def commit_repo(root: Path, files: dict[str, str], message: str) -> Path:
    """A fresh git repository at `root` (branch main) holding `files`, committed by a person."""
    for rel, text in {**files, ".gitignore": "__pycache__/\n"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    git(root.parent, "init", "-q", "-b", "main", str(root))
    git(root, "config", "user.name", "A Person")
    git(root, "config", "user.email", "person@example.com")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", message)
    return root


def adopt_with_knobs(root: Path, knobs: str) -> Path:
    """`agentx adopt` on `root`, then `knobs` appended to its manifest, committed."""
    result = CliRunner().invoke(app, ["adopt", str(root)])
    assert result.exit_code == 0, result.output
    manifest = root / "agentx.toml"
    manifest.write_text(manifest.read_text() + knobs)
    git(root, "add", "agentx.toml", "features.yaml")
    git(root, "commit", "-q", "-m", "agentx manifest and catalog, knobs")
    return root


def make_click_repo(tmp_path: Path, config: str = CONFIG) -> Path:
    return commit_repo(tmp_path / "hotel-clicks", {"data.py": textwrap.dedent(DATA).lstrip(),
                                                   "train.py": textwrap.dedent(TRAIN).lstrip(),
                                                   "conf/model.yaml": config.lstrip()}, "a click model")


def adopted_click_repo(tmp_path: Path, config: str = CONFIG, knobs: str = KNOBS) -> Path:
    """The click repo adopted by `agentx adopt`, with `knobs` declared and committed."""
    return adopt_with_knobs(make_click_repo(tmp_path, config), knobs)

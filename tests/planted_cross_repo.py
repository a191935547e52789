"""A repository with a planted interaction, for tests: ten numeric features whose main
effects fall off (f1 strongest), a product term between f7 and f8 (weak alone, so they
rank 7th and 8th), and a logistic-regression model that cannot learn a product by itself.
The model reads the features `conf/model.json` lists; `make_planted_repo` commits it and
`adopted_planted_repo` runs `agentx adopt` and declares the knobs."""

import textwrap
from pathlib import Path

from click_repo import adopt_with_knobs, commit_repo

FEATURES = [f"f{i}" for i in range(1, 11)]
PLANTED = ("f7", "f8")

DATA = '''
"""Synthetic conversions with a planted interaction of f7 and f8. Standard library only."""
import csv
import math
import random

FEATURES = [f"f{i}" for i in range(1, 11)]
MAIN = [1.6, 1.45, 1.3, 1.15, 1.0, 0.85, 0.1, 0.1, 0.0, 0.0]
ROWS = 20000


def prepare(cache_dir, out_dir):
    rng = random.Random(20261130)
    rows = []
    for i in range(ROWS):
        x = [round(rng.gauss(0.0, 1.0), 4) for _ in FEATURES]
        logit = -1.0 + sum(w * v for w, v in zip(MAIN, x)) + 1.0 * x[6] * x[7]
        rows.append([i, *x, 1 if rng.random() < 1 / (1 + math.exp(-logit)) else 0])
    cuts = {"train": rows[:12000], "valid": rows[12000:16000], "test": rows[16000:]}
    for split, part in cuts.items():
        with open(out_dir / f"{split}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["row_id", *FEATURES, "label"])
            writer.writerows(part)
'''

CONFIG = '{\n  "C": 1.0,\n  "features": [' + ", ".join(f'"{n}"' for n in FEATURES) + ']\n}\n'

TRAIN = '''
"""Logistic regression over the features conf/model.json lists."""
import json
import os

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

HERE = os.path.dirname(os.path.abspath(__file__))


class Model:
    def __init__(self, pipeline, features):
        self.pipeline, self.features = pipeline, features
        self.num_params = int(pipeline[-1].coef_.size + 1)

    def predict(self, frame):
        return self.pipeline.predict_proba(frame[self.features].to_numpy(dtype=float))[:, 1]


def main(run_dir):
    with open(os.path.join(HERE, "conf", "model.json")) as f:
        config = json.load(f)
    train = pd.read_csv(os.path.join(run_dir, "train.csv"))
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(C=float(config["C"]), max_iter=2000))
    pipeline.fit(train[config["features"]].to_numpy(dtype=float), train["label"].to_numpy())
    model = Model(pipeline, config["features"])
    os.makedirs(os.path.join(run_dir, "predictions"), exist_ok=True)
    for split in ("valid", "test"):
        frame = pd.read_csv(os.path.join(run_dir, f"{split}.csv"))
        pd.DataFrame({"row_id": frame["row_id"], "score": model.predict(frame)}).to_csv(
            os.path.join(run_dir, "predictions", f"{split}.csv"), index=False)
    return model
'''

KNOBS = """
[knobs.C]
file = "conf/model.json"
name = "C"
type = "float"
low = 0.001
high = 100.0
log = true

[knobs.features]
file = "conf/model.json"
name = "features"
type = "features"
min_size = 3
"""


def make_planted_repo(tmp_path: Path) -> Path:
    return commit_repo(tmp_path / "planted-cross", {"data.py": textwrap.dedent(DATA).lstrip(),
                                                    "train.py": textwrap.dedent(TRAIN).lstrip(),
                                                    "conf/model.json": CONFIG}, "a conversion model")


def adopted_planted_repo(tmp_path: Path) -> Path:
    return adopt_with_knobs(make_planted_repo(tmp_path), KNOBS)

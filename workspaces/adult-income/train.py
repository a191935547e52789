"""Train the propensity model on one run directory. EDITABLE.

Called by the harness in a fresh kernel as main(run_dir). The run directory holds
run.json {"run_id", "seed", "tier", "epochs", "device"}, train.csv (with label),
valid.csv and test.csv (without label). main() trains, writes predictions/valid.csv and
predictions/test.csv (row_id,score with score = probability of income > 50K) and returns
a Predictor the harness uses to time inference. scikit-learn on the CPU; no torch.
Read top to bottom: hyper-parameters -> features -> model -> predictions.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler
from threadpoolctl import threadpool_limits

# -----------------------------------------------------------------------------
# Hyper-parameters (edit here; agentx.toml [knobs] names the ones a search may set)
MODEL = "logreg"        # "logreg" (standardised numbers, one-hot categories) or "hgb"
C = 0.1                 # logreg: inverse L2 strength
LEARNING_RATE = 0.05    # hgb: shrinkage per tree
MAX_DEPTH = 3           # hgb: depth of each tree
MAX_ITER = 200          # hgb: number of trees (epochs in run.json scale nothing here)
MIN_SAMPLES_LEAF = 40   # hgb: rows per leaf at least
L2_REGULARIZATION = 1.0 # hgb: L2 on leaf values
MAX_FEATURES = 0.8      # hgb: share of features drawn per split (what the seed changes)

# -----------------------------------------------------------------------------
# Features the model reads (all columns are described in features.yaml). The baseline
# leaves out fnlwgt (the census sampling weight, not a person's attribute) and
# native_country (42 values, most of them rare).
FEATURES = [
    "age",
    "workclass",
    "education",
    "education_num",
    "marital_status",
    "occupation",
    "relationship",
    "capital_gain",
    "capital_loss",
    "hours_per_week",
]
CATEGORICAL = ["workclass", "education", "marital_status", "occupation", "relationship",
               "native_country"]  # strings (when in FEATURES)
ID_COLUMN = "row_id"
LABEL_COLUMN = "label"


def build_model(seed: int) -> Pipeline:
    """The estimator for MODEL: one sklearn Pipeline over the FEATURES columns."""
    categorical = [f for f in FEATURES if f in CATEGORICAL]
    numeric = [f for f in FEATURES if f not in CATEGORICAL]
    if MODEL == "logreg":
        columns = ColumnTransformer([
            ("categorical", OneHotEncoder(handle_unknown="ignore"), categorical),
            ("numeric", StandardScaler(), numeric),
        ])
        estimator = LogisticRegression(C=C, max_iter=2000)
    elif MODEL == "hgb":
        columns = ColumnTransformer([
            ("categorical", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1,
                                           encoded_missing_value=-1), categorical),
            ("numeric", "passthrough", numeric),
        ])
        estimator = HistGradientBoostingClassifier(
            learning_rate=LEARNING_RATE, max_depth=MAX_DEPTH, max_iter=MAX_ITER,
            min_samples_leaf=MIN_SAMPLES_LEAF, l2_regularization=L2_REGULARIZATION,
            max_features=MAX_FEATURES, early_stopping=False, random_state=seed,
            categorical_features=list(range(len(categorical))),
        )
    else:
        raise ValueError(f"MODEL must be 'logreg' or 'hgb', got {MODEL!r}")
    return Pipeline([("columns", columns), ("model", estimator)])


@dataclass
class Predictor:
    """What main() returns: the fitted pipeline behind predict(frame) -> probabilities."""

    pipeline: Pipeline

    @property
    def num_params(self) -> int:
        model = self.pipeline.named_steps["model"]
        if isinstance(model, LogisticRegression):
            return int(model.coef_.size + model.intercept_.size)
        # one value per node of every tree
        return int(sum(len(predictor.nodes) for trees in model._predictors for predictor in trees))

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return self.pipeline.predict_proba(frame[FEATURES])[:, 1]


def write_predictions(path: Path, frame: pd.DataFrame, scores: np.ndarray) -> None:
    out = pd.DataFrame({"row_id": frame[ID_COLUMN].to_numpy(), "score": scores})
    out.to_csv(path, index=False, float_format="%.8f")


def main(run_dir: str) -> Predictor:
    run_dir = Path(run_dir)
    config = json.loads((run_dir / "run.json").read_text())
    seed = int(config.get("seed", 0))
    np.random.seed(seed)
    # One OpenMP thread, for training and for every later predict() in this process: gradient
    # boosting's OpenMP workers spin while they wait, which on a busy small machine makes the
    # latency guardrail measure the load instead of the model.
    threadpool_limits(1)

    # data
    train = pd.read_csv(run_dir / "train.csv")
    valid = pd.read_csv(run_dir / "valid.csv")
    test = pd.read_csv(run_dir / "test.csv")
    print(f"tier {config.get('tier')} | seed {seed} | model {MODEL} | "
          f"train {len(train)} valid {len(valid)} test {len(test)} rows", flush=True)

    # model
    started = time.time()
    pipeline = build_model(seed).fit(train[FEATURES], train[LABEL_COLUMN].to_numpy())
    predictor = Predictor(pipeline)
    print(f"fit {time.time() - started:.2f}s | {predictor.num_params} parameters", flush=True)

    # predictions
    predictions = run_dir / "predictions"
    predictions.mkdir(exist_ok=True)
    write_predictions(predictions / "valid.csv", valid, predictor.predict(valid))
    write_predictions(predictions / "test.csv", test, predictor.predict(test))
    return predictor


if __name__ == "__main__":
    main(sys.argv[1])

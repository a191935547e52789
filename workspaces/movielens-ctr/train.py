"""Train the click-through model on one run directory. EDITABLE.

Called by the harness in a fresh kernel as main(run_dir). The run directory holds
run.json {"run_id", "seed", "tier", "epochs", "device"}, train.csv (with label),
valid.csv and test.csv (without label). main() trains, writes predictions/valid.csv and
predictions/test.csv (row_id,score with score = click probability) and returns a
Predictor the harness uses to time inference. Read top to bottom:
hyper-parameters -> features -> data -> model -> training loop -> predictions.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from model import CTRModel

# -----------------------------------------------------------------------------
# Hyper-parameters (edit here)
EMBED_DIM = 16          # size of every field vector
HIDDEN = [64, 32]       # MLP widths ([] leaves only the linear part)
DROPOUT = 0.1           # dropout after each hidden layer
LR = 5e-3               # AdamW learning rate
WEIGHT_DECAY = 1e-5     # AdamW weight decay
BATCH_SIZE = 512        # training rows per step
ID_DROPOUT = {"user_id": 0.3, "item_id": 0.1}  # per id column: share of training rows whose
                                               # id is swapped for the OOV index, so the OOV
                                               # row learns "unseen" (most valid/test users are)
EVAL_BATCH_SIZE = 8192  # rows per forward pass at prediction time

# -----------------------------------------------------------------------------
# Features the model reads (all columns are described in features.yaml). The data also
# has age, gender, occupation and zip_prefix; the baseline leaves them out: on validation
# they add nothing, since most valid/test users joined after the training period.
CATEGORICAL = ["user_id", "item_id"]
NUMERIC = ["release_year"]
MISSING_AS_ZERO = ["release_year"]  # 0 means unknown: imputed with the train mean
MULTI_CATEGORICAL = "genres"        # pipe-joined tokens, pooled into one field (None: no such field)
ID_COLUMN = "row_id"
LABEL_COLUMN = "label"


class Featurizer:
    """Frame -> model tensors. Vocabularies and scaling come from the training rows only."""

    def __init__(self, train: pd.DataFrame) -> None:
        # index 0 of every vocabulary is out-of-vocabulary (unseen at training time)
        self.vocab = {
            col: {value: i + 1 for i, value in enumerate(sorted(train[col].astype(str).unique()))}
            for col in CATEGORICAL
        }
        self.genres = []
        if MULTI_CATEGORICAL is not None:
            tokens = train[MULTI_CATEGORICAL].fillna("").astype(str).str.split("|")
            self.genres = sorted({t for row in tokens for t in row if t})
        numeric = self._raw_numeric(train)
        self.mean = numeric.mean().fillna(0.0)
        self.std = numeric.std().fillna(1.0).replace(0.0, 1.0)

    @property
    def cardinalities(self) -> dict[str, int]:
        return {col: len(values) + 1 for col, values in self.vocab.items()}

    def _raw_numeric(self, frame: pd.DataFrame) -> pd.DataFrame:
        numeric = frame[NUMERIC].astype("float64")
        for col in set(MISSING_AS_ZERO) & set(NUMERIC):
            numeric[col] = numeric[col].replace(0.0, np.nan)
        return numeric

    def __call__(self, frame: pd.DataFrame) -> dict[str, torch.Tensor]:
        categorical = np.stack(
            [frame[col].astype(str).map(self.vocab[col]).fillna(0).to_numpy("int64")
             for col in CATEGORICAL],
            axis=1,
        )
        numeric = ((self._raw_numeric(frame) - self.mean) / self.std).fillna(0.0)
        return {
            "categorical": torch.from_numpy(categorical),
            "numeric": torch.from_numpy(numeric.to_numpy("float32", copy=True)),
            "genres": torch.from_numpy(self._multi_hot(frame)),
        }

    def _multi_hot(self, frame: pd.DataFrame) -> np.ndarray:
        """(rows, n_genres) 0/1 matrix; genres unseen in train are dropped (no columns without
        a MULTI_CATEGORICAL field)."""
        if MULTI_CATEGORICAL is None:
            return np.zeros((len(frame), 0), dtype=np.float32)
        column = frame[MULTI_CATEGORICAL]
        codes, uniques = pd.factorize(column.fillna("").astype(str))
        position = {g: j for j, g in enumerate(self.genres)}
        table = np.zeros((len(uniques) + 1, len(self.genres)), dtype=np.float32)
        for i, value in enumerate(uniques):
            for token in value.split("|"):
                if token in position:
                    table[i, position[token]] = 1.0
        return table[codes]  # factorize codes are never -1 here: NaN was filled


@dataclass
class Predictor:
    """What main() returns: the trained model behind predict(frame) -> click probabilities."""

    model: CTRModel
    featurizer: Featurizer
    device: torch.device

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @torch.no_grad()
    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        self.model.eval()
        x = self.featurizer(frame)
        scores = []
        for start in range(0, len(frame), EVAL_BATCH_SIZE):
            batch = {k: v[start:start + EVAL_BATCH_SIZE].to(self.device) for k, v in x.items()}
            scores.append(torch.sigmoid(self.model(batch)).float().cpu().numpy())
        return np.concatenate(scores) if scores else np.zeros(0, dtype=np.float32)


def drop_ids(categorical: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Training-time id dropout: swap ids for the OOV index 0 at the ID_DROPOUT rates."""
    columns = [c for c in ID_DROPOUT if c in CATEGORICAL]
    slots = [CATEGORICAL.index(c) for c in columns]
    rates = torch.tensor([ID_DROPOUT[c] for c in columns])
    drop = torch.rand(len(categorical), len(columns), generator=generator) < rates
    out = categorical.clone()
    out[:, slots] = out[:, slots].masked_fill(drop.to(out.device), 0)
    return out


def pick_device(requested: str) -> torch.device:
    if requested == "cpu":
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("run.json asks for device 'cuda' but CUDA is not available")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def write_predictions(path: Path, frame: pd.DataFrame, scores: np.ndarray) -> None:
    out = pd.DataFrame({"row_id": frame[ID_COLUMN].to_numpy(), "score": scores})
    out.to_csv(path, index=False, float_format="%.8f")


def main(run_dir: str) -> Predictor:
    run_dir = Path(run_dir)
    config = json.loads((run_dir / "run.json").read_text())
    seed = int(config.get("seed", 0))
    epochs = int(config.get("epochs", 1))

    # determinism first: cuBLAS reads this when CUDA initialises. On the CPU this model's
    # ops are deterministic already, and the switch costs ~2 s of imports, so CUDA only.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    device = pick_device(str(config.get("device", "auto")))
    if device.type == "cuda":
        torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.set_num_threads(min(2, os.cpu_count() or 1))

    # data
    train = pd.read_csv(run_dir / "train.csv")
    valid = pd.read_csv(run_dir / "valid.csv")
    test = pd.read_csv(run_dir / "test.csv")
    featurizer = Featurizer(train)
    x_train = {k: v.to(device) for k, v in featurizer(train).items()}
    y_train = torch.tensor(train[LABEL_COLUMN].to_numpy("float32"), device=device)
    print(f"tier {config.get('tier')} | seed {seed} | device {device} | "
          f"train {len(train)} valid {len(valid)} test {len(test)} rows", flush=True)

    # model
    model = CTRModel(
        cardinalities=featurizer.cardinalities,
        n_genres=len(featurizer.genres),
        n_numeric=len(NUMERIC),
        embed_dim=EMBED_DIM,
        hidden=HIDDEN,
        dropout=DROPOUT,
    ).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    predictor = Predictor(model, featurizer, device)
    print(f"model {predictor.num_params} parameters", flush=True)

    # training loop
    generator = torch.Generator().manual_seed(seed)  # shuffling and id dropout, on CPU
    n = len(train)
    for epoch in range(epochs):
        model.train()
        started = time.time()
        order = torch.randperm(n, generator=generator).to(device)
        total_loss = 0.0
        for start in range(0, n, BATCH_SIZE):
            idx = order[start:start + BATCH_SIZE]
            batch = {k: v[idx] for k, v in x_train.items()}
            batch["categorical"] = drop_ids(batch["categorical"], generator)
            loss = F.binary_cross_entropy_with_logits(model(batch), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(idx)
        print(f"epoch {epoch + 1}/{epochs} | loss {total_loss / n:.4f} | "
              f"{time.time() - started:.1f}s", flush=True)
        with open(run_dir / "curve.csv", "a") as curve:   # the learning curve the web app plots
            curve.write(("epoch,train_loss\n" if epoch == 0 else "") + f"{epoch + 1},{total_loss / n:.6f}\n")

    # predictions
    predictions = run_dir / "predictions"
    predictions.mkdir(exist_ok=True)
    write_predictions(predictions / "valid.csv", valid, predictor.predict(valid))
    write_predictions(predictions / "test.csv", test, predictor.predict(test))
    return predictor


if __name__ == "__main__":
    main(sys.argv[1])

import os
import textwrap
from pathlib import Path

import pytest

# Datasets are immutable and checksummed: share the user's cache between tests so the
# MovieLens files are fetched once; everything else goes to a temp home.
SHARED_CACHE = Path(os.environ.get("AGENTX_CACHE_DIR") or Path.home() / ".cache" / "agentx")


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AGENTX_CACHE_DIR", str(SHARED_CACHE))
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


TINY_MANIFEST = """
[workspace]
name = "tiny"

[train]
entrypoint = "train:main"

[data]
module = "data.py"
user_column = "user_id"
item_column = "item_id"

[metric]
primary = "auc"
direction = "maximize"
min_effect = 0.0
secondary = ["logloss"]

[tiers.micro]
train_rows = 50
eval_rows = 20
epochs = 1
timeout_s = 20

[tiers.full]
epochs = 1
timeout_s = 30

[paths]
editable = ["train.py"]
protected = ["data.py", "agentx.toml"]
"""

TINY_DATA = '''
import csv, random

def prepare(cache_dir, out_dir):
    rng = random.Random(0)
    rows = []
    for i in range(600):
        item = rng.randrange(30)
        rows.append((i, rng.randrange(50), item, int(rng.random() < 0.2 + item / 60)))
    for name, part in (("train", rows[:400]), ("valid", rows[400:500]), ("test", rows[500:])):
        with open(out_dir / f"{name}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["row_id", "user_id", "item_id", "label"])
            w.writerows(part)
'''

TINY_TRAIN = '''
import csv, json, os

class Model:
    num_params = 30
    def __init__(self, rates, prior):
        self.rates, self.prior = rates, prior
    def score(self, item):
        return self.rates.get(item, self.prior)
    def predict(self, frame):
        return [self.score(str(i)) for i in frame["item_id"]]

def main(run_dir):
    with open(os.path.join(run_dir, "train.csv")) as f:
        rows = list(csv.DictReader(f))
    clicks, seen = {}, {}
    for r in rows:
        seen[r["item_id"]] = seen.get(r["item_id"], 0) + 1
        clicks[r["item_id"]] = clicks.get(r["item_id"], 0) + int(r["label"])
    prior = sum(clicks.values()) / len(rows)
    model = Model({k: (clicks[k] + prior) / (seen[k] + 1) for k in seen}, prior)
    for split in ("valid", "test"):
        with open(os.path.join(run_dir, f"{split}.csv")) as f, \\
             open(os.path.join(run_dir, "predictions", f"{split}.csv"), "w") as out:
            out.write("row_id,score\\n")
            for r in csv.DictReader(f):
                out.write(f"{r['row_id']},{model.score(r['item_id'])}\\n")
    return model
'''


@pytest.fixture
def tiny_template(tmp_path):
    root = tmp_path / "tiny-template"
    root.mkdir()
    (root / "agentx.toml").write_text(TINY_MANIFEST)
    (root / "data.py").write_text(textwrap.dedent(TINY_DATA))
    (root / "train.py").write_text(textwrap.dedent(TINY_TRAIN))
    return root


def wrap_main(body: str) -> str:
    """Patch train.main so that `body` runs after the honest training (run_dir is in scope)."""
    return ("_honest_main = main\n"
            "def main(run_dir):\n"
            "    model = _honest_main(run_dir)\n"
            + "".join(f"    {line}\n" for line in body.strip().splitlines())
            + "    return model\n")

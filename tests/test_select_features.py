"""`agentx select-features` end to end on small real workspaces, and the feature_subset recipe
that turns a selection into an experiment (including the template without its genre field)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from agents.recipes import InvalidParams, RecipeNotApplicable
from agents.recipes.edits import get_constant
from agentx.cli import app
from workspaces.recipes.feature_lists import FEATURE_SUBSET
from conftest import TINY_MANIFEST
from tools.git_repo import WorkspaceRepo

TEMPLATE = Path(__file__).resolve().parents[1] / "workspaces" / "movielens-ctr"

FEATURE_DATA = '''
import csv, math, random

def prepare(cache_dir, out_dir):
    rng = random.Random(0)
    rows = []
    for i in range(900):
        user, item = rng.randrange(40), rng.randrange(30)
        price, noise = rng.gauss(0, 1), rng.gauss(0, 1)
        colour = rng.choice(["red", "green", "blue"])
        logit = 1.4 * price + {"red": 0.9, "green": -0.9, "blue": 0.0}[colour] + 0.5 * (item % 3 - 1)
        label = int(rng.random() < 1 / (1 + math.exp(-logit)))
        rows.append((i, user, item, round(price, 4), round(price + rng.gauss(0, 0.15), 4), colour,
                     round(noise, 4), round(2 * label + rng.gauss(0, 0.3), 4), label))
    header = ["row_id", "user_id", "item_id", "price", "price_copy", "colour", "noise", "dwell", "label"]
    for name, part in (("train", rows[:600]), ("valid", rows[600:750]), ("test", rows[750:])):
        with open(out_dir / f"{name}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(part)
'''

FEATURE_CATALOG = """
- {name: user_id, definition: the user, group: user, type: categorical, serving_cost: 1.0, leaky: false}
- {name: item_id, definition: the item, group: item, type: categorical, serving_cost: 1.0, leaky: false}
- {name: price, definition: item price, group: item, type: numeric, serving_cost: 0.2, leaky: false}
- {name: price_copy, definition: item price from a second feed, group: item, type: numeric, serving_cost: 0.2, leaky: false}
- {name: colour, definition: item colour, group: item, type: categorical, serving_cost: 0.1, leaky: false}
- {name: noise, definition: a sensor reading, group: context, type: numeric, serving_cost: 0.1, leaky: false}
- {name: dwell, definition: seconds on the item after the click, group: context, type: numeric, serving_cost: 0.1, leaky: true}
"""

# A naive-Bayes model over whatever CATEGORICAL and NUMERIC name: per-value (or per-quartile) click
# rates from train, summed as log-odds. Pure Python, so a kernel runs it in a second.
FEATURE_TRAIN = '''
import csv, math, os

CATEGORICAL = ["user_id", "item_id"]
NUMERIC = ["price"]
MULTI_CATEGORICAL = None
ID_DROPOUT = {"user_id": 0.0, "item_id": 0.0}


def logit(p):
    return math.log(p / (1 - p))


class Model:
    def __init__(self, rows):
        self.prior = sum(int(r["label"]) for r in rows) / len(rows)
        self.edges = {c: sorted(float(r[c]) for r in rows)[len(rows) // 4::len(rows) // 4][:3] for c in NUMERIC}
        self.tables = {}
        for c in CATEGORICAL + NUMERIC:
            clicks, seen = {}, {}
            for r in rows:
                key = self.key(c, r[c])
                seen[key] = seen.get(key, 0) + 1
                clicks[key] = clicks.get(key, 0) + int(r["label"])
            self.tables[c] = {k: (clicks[k] + 5 * self.prior) / (seen[k] + 5) for k in seen}
        self.num_params = sum(len(t) for t in self.tables.values())

    def key(self, column, value):
        if column in NUMERIC:
            return sum(float(value) > e for e in self.edges[column])
        return str(value)

    def score(self, row):
        z = logit(self.prior)
        for c in CATEGORICAL + NUMERIC:
            z += logit(self.tables[c].get(self.key(c, row[c]), self.prior)) - logit(self.prior)
        return 1 / (1 + math.exp(-z))

    def predict(self, frame):
        columns = {c: frame[c].tolist() for c in CATEGORICAL + NUMERIC}
        return [self.score({c: v[i] for c, v in columns.items()}) for i in range(len(frame))]


def main(run_dir):
    with open(os.path.join(run_dir, "train.csv")) as f:
        model = Model(list(csv.DictReader(f)))
    for split in ("valid", "test"):
        with open(os.path.join(run_dir, f"{split}.csv")) as f, \\
             open(os.path.join(run_dir, "predictions", f"{split}.csv"), "w") as out:
            out.write("row_id,score\\n")
            for r in csv.DictReader(f):
                out.write(f"{r['row_id']},{model.score(r)}\\n")
    return model
'''


@pytest.fixture
def feature_ws(tmp_path):
    template = tmp_path / "feature-template"
    template.mkdir()
    manifest = TINY_MANIFEST.replace('protected = ["data.py", "agentx.toml"]',
                                     'protected = ["data.py", "agentx.toml", "features.yaml"]')
    manifest += '\n[features]\ncatalog = "features.yaml"\n\n[features.constraints]\nbudget = 3\nmax_correlation = 0.9\n'
    manifest += '\n[recipes]\nsets = ["feature-lists"]\n'      # select-features --run needs feature_subset
    (template / "agentx.toml").write_text(manifest)
    (template / "data.py").write_text(textwrap.dedent(FEATURE_DATA))
    (template / "features.yaml").write_text(FEATURE_CATALOG.lstrip())
    (template / "train.py").write_text(textwrap.dedent(FEATURE_TRAIN))
    WorkspaceRepo.init_from_template(tmp_path / "ws", template)
    return tmp_path / "ws"


def select(ws: Path, *extra: str) -> dict:
    result = CliRunner().invoke(app, ["select-features", "--workspace", str(ws), "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_select_features_prints_a_valid_selection_and_caches_the_statistics(feature_ws):
    first = select(feature_ws)
    selection = first["selection"]
    assert selection["valid"] and len(selection["kept"]) == 3 and "dwell" not in selection["kept"]
    assert not {"price", "price_copy"} <= set(selection["kept"]) and {"price", "price_copy"} & set(selection["kept"])
    assert all(c["ok"] for c in selection["checks"]) and {c["name"] for c in selection["checks"]} >= {
        "budget", "forbidden", "max_correlation"}
    rows = {r["feature"]: r for r in selection["features"]}
    assert "leaky" in rows["dwell"]["reason"] and rows["dwell"]["gain"] is None and rows["price"]["gain"] > 0
    assert first["statistics"]["cached"] is False and first["statistics"]["rows"] == {"train": 600, "valid": 150}
    second = select(feature_ws, "--budget", "2", "--forbid", "price")
    assert second["statistics"]["cached"] is True and second["statistics"]["version"] == first["statistics"]["version"]
    assert len(second["selection"]["kept"]) == 2 and "price" not in second["selection"]["kept"]
    result = CliRunner().invoke(app, ["select-features", "--workspace", str(feature_ws), "--must-include", "dwell"])
    assert result.exit_code == 2 and "'dwell' is both required and forbidden" in result.output


def test_select_features_with_an_llm_over_the_openai_protocol(feature_ws):
    from fake_llm import FakeOpenAIServer

    merge = {"decisions": [{"name": n, "keep": True, "reason": "strong"} for n in
                           ("dwell", "price", "price_copy", "colour", "item_id", "noise", "mystery_feature")],
             "summary": "s"}
    with FakeOpenAIServer() as server:
        server.enqueue(merge).enqueue({"action": "stop", "reason": "done"})
        report = select(feature_ws, "--llm", f"openai-compatible:{server.base_url}#scripted")
    selection = report["selection"]
    assert selection["brain"].startswith("LLM brain (openai-compatible:scripted)") and selection["valid"]
    assert len(selection["kept"]) == 3 and "dwell" not in selection["kept"]
    assert not {"price", "price_copy"} <= set(selection["kept"])
    repairs = "\n".join(selection["repairs"])
    assert "ignored 'mystery_feature'" in repairs and "ignored 'dwell'" in repairs and "over the budget of 3" in repairs
    assert len(server.requests) == 2


def test_tables_show_reasons_checks_and_repairs(feature_ws):
    result = CliRunner().invoke(app, ["select-features", "--workspace", str(feature_ws)])
    assert result.exit_code == 0, result.output
    for text in ("feature selection: offline brain", "constraint check", "max_correlation", "repair: nothing to "
                 "repair", "kept 3:"):
        assert text in result.output


def test_select_features_run_becomes_an_experiment_with_a_verdict(feature_ws):
    report = select(feature_ws, "--run", "--seeds", "1", "--max-seeds", "1")
    experiment = report["experiment"]
    assert experiment["id"] == "E0001" and experiment["status"] == "evaluated"
    assert experiment["verdict"]["decision"] in ("ship", "reject", "inconclusive")
    from knowledge import KnowledgeBase

    row = KnowledgeBase.for_workspace(feature_ws).get_experiment("E0001")
    assert row["recipe"] == "feature_subset" and row["params"] == {"keep": report["selection"]["kept"]}
    assert row["source"] == "cli"


# -- the recipe ---------------------------------------------------------------------------

def copy_template(dest: Path) -> Path:
    shutil.copytree(TEMPLATE, dest, ignore=shutil.ignore_patterns(".agentx", "__pycache__"))
    return dest


def test_feature_subset_places_each_feature_by_its_catalog_type(tmp_path):
    recipe = FEATURE_SUBSET
    checkout = copy_template(tmp_path / "ws")
    assert recipe.apply(checkout, {"keep": ["item_id", "gender", "release_year", "age"]}) == ["train.py"]
    text = (checkout / "train.py").read_text()
    assert get_constant(text, "train.py", "CATEGORICAL") == ["item_id", "gender"]
    assert get_constant(text, "train.py", "NUMERIC") == ["release_year", "age"]
    assert get_constant(text, "train.py", "MULTI_CATEGORICAL") is None
    assert get_constant(text, "train.py", "ID_DROPOUT") == {"item_id": 0.1}
    compile(text, "train.py", "exec")

    fresh = copy_template(tmp_path / "ws2")
    recipe.apply(fresh, {"keep": ["user_id", "item_id", "genres", "occupation"]})
    text = (fresh / "train.py").read_text()
    assert get_constant(text, "train.py", "MULTI_CATEGORICAL") == "genres"
    assert get_constant(text, "train.py", "NUMERIC") == []


def test_feature_subset_refuses_what_it_cannot_express(tmp_path):
    recipe = FEATURE_SUBSET
    checkout = copy_template(tmp_path / "ws")
    for keep, reason in ((["user_id", "bogus"], "not in the feature catalog: bogus"),
                         (["age", "release_year"], "at least one categorical"),
                         (["user_id", "item_id", "release_year", "genres"], "already reads exactly"),
                         (["user_id", "user_id"], "distinct feature names")):
        with pytest.raises(RecipeNotApplicable, match=reason):
            recipe.apply(checkout, {"keep": keep})
    with pytest.raises(InvalidParams, match="keep must be a list"):
        recipe.apply(checkout, {"keep": "user_id"})


def test_template_trains_without_its_genre_field(tmp_path):
    """MULTI_CATEGORICAL = None: no genre field in the model, and main() still trains and predicts."""
    checkout = copy_template(tmp_path / "ws")
    FEATURE_SUBSET.apply(checkout, {"keep": ["user_id", "item_id", "gender", "release_year"]})
    rng = np.random.default_rng(0)
    n = 300
    frame = pd.DataFrame({"row_id": range(n), "user_id": rng.integers(1, 30, n), "item_id": rng.integers(1, 40, n),
                          "timestamp": range(n), "age": rng.integers(15, 60, n), "gender": rng.choice(["M", "F"], n),
                          "occupation": "other", "zip_prefix": "1", "genres": "Drama|Comedy",
                          "release_year": rng.integers(1950, 1998, n), "label": rng.integers(0, 2, n)})
    run = tmp_path / "run"
    (run / "predictions").mkdir(parents=True)
    frame[:200].to_csv(run / "train.csv", index=False)
    for split, part in (("valid", frame[200:250]), ("test", frame[250:])):
        part.drop(columns="label").to_csv(run / f"{split}.csv", index=False)
    (run / "run.json").write_text(json.dumps({"seed": 0, "tier": "micro", "epochs": 1, "device": "cpu"}))
    code = ("import train\np = train.main(r'%s')\n"
            "print(p.model.genre_embedding is None, p.model.n_fields, p.num_params)" % run)
    out = subprocess.run([sys.executable, "-c", code], cwd=checkout, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    no_genre, n_fields, _ = out.stdout.split()[-3:]
    assert no_genre == "True" and n_fields == "4"      # user_id, item_id, gender + release_year
    scores = pd.read_csv(run / "predictions" / "test.csv")["score"]
    assert len(scores) == 50 and scores.between(0, 1).all()


@pytest.mark.slow
def test_statistics_on_the_real_movielens_splits(tmp_path):
    """The real splits (train and valid only): ids lead, an id determines its own attributes,
    the second call reads the KB, and the template's constraints give a valid selection."""
    from agents.feature_selection import OfflineBrain, relevance
    from agentx.context import Workspace
    from agentx.mofa import build_problem, workspace_stats

    WorkspaceRepo.init_from_template(tmp_path / "ws", "movielens-ctr")
    with Workspace.open(tmp_path / "ws", warm_kernels=False) as ws:
        first = workspace_stats(ws)
        table = first.table
        assert not first.cached and table.rows["train"] > 79_000 and table.rows["valid"] > 9_000
        assert table.stats["user_id"].cardinality == 943 and table.stats["item_id"].cardinality > 1_600
        rel = relevance(table, list(table.stats))
        assert sorted(rel, key=rel.get)[-2:] in (["user_id", "item_id"], ["item_id", "user_id"])
        assert table.assoc("item_id", "genres") > 0.9 and table.assoc("user_id", "gender") > 0.9
        assert table.assoc("user_id", "item_id") < 0.2 and 0.7 < table.model_auc < 0.9
        again = workspace_stats(ws)
        assert again.cached and again.table.stats == table.stats and again.version == first.version
        selection = OfflineBrain().select(build_problem(ws, again))
        assert selection.valid and {"user_id", "item_id"} <= set(selection.kept) and len(selection.kept) <= 6

"""Harness-side scoring: metrics match first principles, broken predictions are never scored."""

import csv
import itertools
from pathlib import Path

import numpy as np
import pytest

from agentx.workspace import TierSpec
from tools.scoring import InvalidPredictions, auc, join_predictions, logloss, popularity_scores, score_run
from tools.splits import Splits, materialise


def brute_auc(labels, scores):
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auc_matches_pair_counting_with_ties():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300) + 0.3 * labels, 1)  # coarse: many ties
    assert auc(labels, scores) == pytest.approx(brute_auc(labels, scores), abs=1e-12)
    assert auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert auc([0, 1], [0.5, 0.5]) == 0.5


def test_logloss_known_value():
    assert logloss([1, 0], [0.8, 0.2]) == pytest.approx(-np.log(0.8))


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


@pytest.fixture
def splits(tmp_path):
    root = tmp_path / "splits"
    root.mkdir()
    rng = np.random.default_rng(1)
    for split, start in (("train", 0), ("valid", 1000), ("test", 2000)):
        rows = [(start + i, int(rng.integers(1, 20)), int(rng.random() < 0.4)) for i in range(200)]
        write_csv(root / f"{split}.csv", ["row_id", "item_id", "label"], rows)
    return Splits(root, "row_id", "label")


def run_dir_for(splits, tmp_path, tier=TierSpec(epochs=1, timeout_s=10)):
    run_dir = tmp_path / "run"
    materialise(splits, run_dir, "full", tier, 0, "R-test")
    return run_dir


def predict(run_dir, split, rows):
    write_csv(run_dir / "predictions" / f"{split}.csv", ["row_id", "score"], rows)


def ids(run_dir, split):
    with open(run_dir / f"{split}.csv") as f:
        return [int(r["row_id"]) for r in csv.DictReader(f)]


def test_run_dir_holds_no_eval_labels_and_micro_samples(splits, tmp_path):
    run_dir = run_dir_for(splits, tmp_path, TierSpec(epochs=1, timeout_s=10, train_rows=50, eval_rows=20))
    for split in ("valid", "test"):
        header = (run_dir / f"{split}.csv").read_text().splitlines()[0].split(",")
        assert "label" not in header
        assert len(ids(run_dir, split)) == 20
    assert "label" in (run_dir / "train.csv").read_text().splitlines()[0]
    assert len(ids(run_dir, "train")) == 50


def test_scores_only_the_rows_given(splits, tmp_path):
    run_dir = run_dir_for(splits, tmp_path, TierSpec(epochs=1, timeout_s=10, train_rows=50, eval_rows=30))
    truth = {}
    with open(splits.file("test")) as f:
        truth = {int(r["row_id"]): int(r["label"]) for r in csv.DictReader(f)}
    for split in ("valid", "test"):
        predict(run_dir, split, [(i, 0.5) for i in ids(run_dir, split)])
    test_ids = ids(run_dir, "test")
    predict(run_dir, "test", [(i, 0.9 if truth[i] else 0.1) for i in test_ids])  # a perfect ranker
    metrics = score_run(splits, run_dir, ["auc", "logloss"])
    assert metrics[("test", "auc")] == 1.0 and metrics[("valid", "auc")] == 0.5
    assert len(join_predictions(splits, run_dir, "test").ids) == 30


@pytest.mark.parametrize("kind,mutate", [
    ("missing_rows", lambda rows: rows[:-1]),
    ("missing_rows", lambda rows: rows + [(999999, 0.5)]),
    ("duplicate_rows", lambda rows: rows + rows[:1]),
    ("nan", lambda rows: [(i, "nan") for i, _ in rows]),
    ("nan", lambda rows: [(rows[0][0], "inf")] + rows[1:]),
    ("format", lambda rows: [(i, 3.0) for i, _ in rows]),
])
def test_broken_predictions_are_invalid(splits, tmp_path, kind, mutate):
    run_dir = run_dir_for(splits, tmp_path)
    predict(run_dir, "valid", [(i, 0.5) for i in ids(run_dir, "valid")])
    predict(run_dir, "test", mutate([(i, 0.5) for i in ids(run_dir, "test")]))
    with pytest.raises(InvalidPredictions) as info:
        score_run(splits, run_dir, ["auc"])
    assert info.value.kind == kind


def test_missing_prediction_file_and_wrong_columns(splits, tmp_path):
    run_dir = run_dir_for(splits, tmp_path)
    with pytest.raises(InvalidPredictions, match="wrote no predictions/valid.csv"):
        score_run(splits, run_dir, ["auc"])
    write_csv(run_dir / "predictions" / "valid.csv", ["id", "prob"], [(1, 0.5)])
    with pytest.raises(InvalidPredictions, match="needs columns row_id,score"):
        score_run(splits, run_dir, ["auc"])


def test_popularity_uses_train_click_rates(splits, tmp_path):
    run_dir = run_dir_for(splits, tmp_path)
    pop = popularity_scores(splits, "item_id", run_dir)
    assert len(pop.scores) == 200 and np.all((pop.scores > 0) & (pop.scores < 1))


def test_processes_preparing_the_same_splits_at_once_all_get_them(tiny_template, tmp_path):
    # Each process stages in a folder of its own and the first rename wins; a shared staging
    # folder let one process delete another's half-written files.
    import multiprocessing

    from agentx.workspace import load_manifest
    from tools.git_repo import WorkspaceRepo

    ws = WorkspaceRepo.init_from_template(tmp_path / "ws", tiny_template)
    manifest = load_manifest(ws.root)
    cache = tmp_path / "cache"
    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        roots = pool.starmap(_prepare, [(ws.root, ws.head(), manifest, cache)] * 4)
    assert len(set(roots)) == 1 and (Path(roots[0]) / "DONE").is_file()
    assert sorted(p.name for p in Path(roots[0]).iterdir()) == ["DONE", "test.csv", "train.csv", "valid.csv"]
    assert [p.name for p in (cache / "splits").iterdir()] == [Path(roots[0]).name]   # no staging left
    assert [p.name for p in (cache / "code").iterdir()] == [ws.tree(ws.head())]       # one export, no staging


def _prepare(root, commit, manifest, cache):
    from tools.git_repo import WorkspaceRepo
    from tools.splits import prepare_splits

    return str(prepare_splits(WorkspaceRepo(root), commit, manifest, cache).root)

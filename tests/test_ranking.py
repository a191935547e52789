"""Per-user ranking metrics (ndcg@K, recall@K, mrr): exact against a plain per-user loop,
ties broken against the model, paired intervals with the user bootstrap, the rollout's
groups, and the manifest's rule that they need a user column."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agentx.errors import UserError
from agentx.workspace import load_manifest, metric_sign
from tools.git_repo import resolve_template
from tools.ranking import is_ranking, per_user, ranking_metric, row_shares
from tools.rollout import Guard, ReplayRollout, ramp
from tools.scoring import metric_value
from tools.stats import paired_effect


def reference(metric: str, labels, scores, users) -> float:
    """The textbook definition, one user at a time (ties: negatives first)."""
    values = []
    for user in np.unique(users):
        rows = [(-s, y) for s, y, u in zip(scores, labels, users) if u == user]
        ranked = [y for _, y in sorted(rows)]            # score descending; equal scores: 0 before 1
        positives = int(sum(ranked))
        if positives == 0:
            continue
        if metric == "mrr":
            values.append(1.0 / (ranked.index(1) + 1))
            continue
        kind, k = metric.split("@")
        k = int(k)
        if kind == "recall":
            values.append(sum(ranked[:k]) / positives)
        else:
            dcg = sum(y / math.log2(r + 2) for r, y in enumerate(ranked[:k]))
            idcg = sum(1 / math.log2(r + 2) for r in range(min(k, positives)))
            values.append(dcg / idcg)
    return float(np.mean(values))


@pytest.mark.parametrize("metric", ["ndcg@1", "ndcg@3", "ndcg@10", "recall@2", "recall@5", "mrr"])
def test_metrics_equal_the_per_user_definition(metric):
    rng = np.random.default_rng(7)
    users = rng.integers(0, 40, 600)
    labels = (rng.random(600) < 0.2).astype(float)
    scores = np.round(rng.random(600), 2)                 # rounding makes ties
    assert ranking_metric(metric, labels, scores, users) == pytest.approx(reference(metric, labels, scores, users))


def test_ties_count_against_the_model_and_users_without_a_positive_are_left_out():
    users, labels = np.array([0, 0, 0, 1, 1]), np.array([0, 1, 0, 0, 0])
    assert ranking_metric("mrr", labels, np.array([0.5, 0.5, 0.5, 0.9, 0.1]), users) == pytest.approx(1 / 3)
    assert ranking_metric("mrr", labels, np.array([0.1, 0.9, 0.2, 0.9, 0.1]), users) == 1.0
    table = per_user("ndcg@10", labels, np.zeros(5), np.array([0, 0, 0, 1, 1]))
    assert table.weight.tolist() == [1.0, 0.0]


def test_names_and_the_error_without_users():
    assert all(is_ranking(m) for m in ("ndcg@10", "recall@20", "mrr"))
    assert not any(is_ranking(m) for m in ("auc", "ndcg", "ndcg@0", "ndcg@x", "map@10"))
    assert metric_sign("ndcg@10") == 1 and metric_sign("logloss") == -1
    with pytest.raises(ValueError, match="needs the user column"):
        metric_value("ndcg@10", np.array([0, 1]), np.array([0.1, 0.2]))


def test_row_shares_add_up_to_each_users_term():
    rng = np.random.default_rng(1)
    users = rng.integers(0, 30, 300)
    labels, scores = (rng.random(300) < 0.3).astype(float), rng.random(300)
    _, index = np.unique(users, return_inverse=True)
    table = per_user("ndcg@5", labels, scores, index)
    value, weight = row_shares(table, index)
    assert value.sum() / weight.sum() == pytest.approx(table.mean())
    np.testing.assert_allclose(np.bincount(index, weights=value), table.weight * table.value)


def synthetic(n_users=500, rows_per_user=12, seeds=2, lift=0.0, rng_seed=0):
    rng = np.random.default_rng(rng_seed)
    users = np.repeat(np.arange(n_users), rows_per_user)
    signal = rng.normal(size=len(users))
    labels = (signal + rng.normal(size=len(users)) > 1).astype(float)
    control = [signal + rng.normal(scale=1.0, size=len(users)) for _ in range(seeds)]
    treatment = [signal + rng.normal(scale=1.0 - lift, size=len(users)) for _ in range(seeds)]
    squash = lambda arm: [1 / (1 + np.exp(-s)) for s in arm]  # noqa: E731
    return squash(control), squash(treatment), labels, users


def test_a_ranking_lift_has_an_interval_above_zero_and_identical_arms_give_zero():
    control, treatment, labels, users = synthetic(lift=0.5)
    effect = paired_effect(control, treatment, labels, users, metric="ndcg@10", replicates=300)
    per_seed = [ranking_metric("ndcg@10", labels, t, users) - ranking_metric("ndcg@10", labels, c, users)
                for c, t in zip(control, treatment)]
    assert effect.per_seed == pytest.approx(per_seed)
    assert effect.ci_low > 0 and effect.ci_low < effect.delta < effect.ci_high and effect.n_users == 500
    same = paired_effect(control, [c.copy() for c in control], labels, users, metric="mrr", replicates=100)
    assert same.delta == 0 and same.ci_low == 0 == same.ci_high


def test_ranking_intervals_cover_zero_for_equal_arms():
    covered = 0
    for rep in range(20):
        control, treatment, labels, users = synthetic(lift=0.0, rng_seed=rep)
        effect = paired_effect(control, treatment, labels, users, metric="recall@5", replicates=200, seed=rep)
        covered += effect.ci_low <= 0 <= effect.ci_high
    assert covered >= 17


def test_the_rollout_guards_a_ranking_metric():
    control, treatment, labels, users = synthetic(lift=0.0, rng_seed=3)
    shuffled = [np.random.default_rng(9).permutation(c) for c in control]        # ranking destroyed
    replay = ReplayRollout("E0001", users, labels, control, shuffled, metrics=("ndcg@10",))
    rollout = ramp(replay, [Guard("ndcg@10", 0.01)])
    assert rollout.halted_at is rollout.stages[0]
    (breach,) = [c for c in rollout.stages[0].checks if not c["ok"]]
    assert breach["metric"] == "ndcg@10" and breach["harm_low"] > 0.01
    good = ramp(ReplayRollout("E0002", users, labels, control, [c.copy() for c in control], metrics=("ndcg@10",)),
                [Guard("ndcg@10", 0.01)])
    assert good.halted_at is None and len(good.stages) == 3


def test_a_ranking_metric_without_a_user_column_is_refused_by_name(tmp_path):
    source = (resolve_template("adult-income") / "agentx.toml").read_text()
    (tmp_path / "agentx.toml").write_text(source.replace('primary = "auc"', 'primary = "ndcg@10"'))
    with pytest.raises(UserError, match=r"ndcg@10 rank each user's rows, but \[data\] has no user_column"):
        load_manifest(tmp_path)
    (tmp_path / "agentx.toml").write_text(source.replace('primary = "auc"', 'primary = "ncdg@10"'))
    with pytest.raises(UserError, match="unknown metric 'ncdg@10'"):
        load_manifest(tmp_path)

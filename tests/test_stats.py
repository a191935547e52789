"""Paired statistics: weighted AUC is exact, intervals cover, A/A intervals straddle zero."""

import numpy as np
import pytest

from tools.scoring import auc
import tools.stats
from tools.stats import SortedScores, UserPairs, paired_effect


def test_weighted_auc_equals_auc_of_repeated_rows():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500).astype(float)
    scores = np.round(rng.random(500) + 0.4 * labels, 2)
    weights = rng.integers(0, 4, 500)
    expanded = auc(np.repeat(labels, weights), np.repeat(scores, weights))
    assert SortedScores(scores, labels).auc(weights) == pytest.approx(expanded, abs=1e-12)
    assert SortedScores(scores, labels).auc() == pytest.approx(auc(labels, scores), abs=1e-12)


def test_auc_many_equals_auc_row_by_row_and_nan_for_one_class():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300).astype(float)
    scores = np.round(rng.random(300) + 0.3 * labels, 1)       # many ties
    weights = rng.integers(0, 3, (7, 300)).astype(float)
    weights[3] = labels                                         # positives only: undefined
    ranked = SortedScores(scores, labels)
    many = ranked.auc_many(weights)
    assert np.isnan(many[3])
    for row in (0, 1, 2, 4, 5, 6):
        assert many[row] == pytest.approx(ranked.auc(weights[row]), abs=1e-12)


def test_user_pairs_auc_equals_row_weighted_auc():
    rng = np.random.default_rng(2)
    users = rng.integers(0, 40, 600)
    labels = rng.integers(0, 2, 600).astype(float)
    scores = np.round(rng.random(600) + 0.3 * labels, 2)       # ties within and across users
    counts = rng.multinomial(40, np.full(40, 1 / 40), size=5).astype(float)
    pairs, ranked = UserPairs(scores, labels, users, 40), SortedScores(scores, labels)
    assert pairs.auc() == pytest.approx(auc(labels, scores), abs=1e-12)
    np.testing.assert_allclose(pairs.auc_many(counts), ranked.auc_many(counts[:, users]), atol=1e-12)


def test_both_bootstrap_paths_agree(monkeypatch):
    control, treatment, labels, users = synthetic(lift=0.3)
    quadratic = paired_effect(control, treatment, labels, users, replicates=200, seed=3)
    monkeypatch.setattr(tools.stats, "MAX_PAIR_USERS", 10)     # forces the row-level path
    rows = paired_effect(control, treatment, labels, users, replicates=200, seed=3)
    assert (rows.ci_low, rows.ci_high) == pytest.approx((quadratic.ci_low, quadratic.ci_high), abs=1e-10)


def synthetic(n_users=400, rows_per_user=10, seeds=2, lift=0.0, rng_seed=0):
    rng = np.random.default_rng(rng_seed)
    users = np.repeat(np.arange(n_users), rows_per_user)
    signal = rng.normal(size=len(users))
    labels = (signal + rng.normal(size=len(users)) > 0).astype(float)
    control = [1 / (1 + np.exp(-(signal + rng.normal(scale=1.0, size=len(users))))) for _ in range(seeds)]
    treatment = [1 / (1 + np.exp(-(signal + rng.normal(scale=1.0 - lift, size=len(users))))) for _ in range(seeds)]
    return control, treatment, labels, users


def test_a_real_lift_has_an_interval_above_zero():
    control, treatment, labels, users = synthetic(lift=0.5)
    effect = paired_effect(control, treatment, labels, users, replicates=300)
    assert effect.delta > 0.02 and effect.ci_low > 0 and effect.ci_low < effect.delta < effect.ci_high
    assert effect.n_seeds == 2 and effect.n_users == 400


def test_identical_arms_give_a_zero_effect_and_an_interval_around_it():
    control, _, labels, users = synthetic()
    effect = paired_effect(control, [c.copy() for c in control], labels, users, replicates=200)
    assert effect.delta == 0 and effect.ci_low == 0 and effect.ci_high == 0


def test_independent_noise_arms_straddle_zero_most_of_the_time():
    covered = 0
    for rep in range(20):
        control, treatment, labels, users = synthetic(lift=0.0, rng_seed=rep)
        effect = paired_effect(control, treatment, labels, users, replicates=200, seed=rep)
        covered += effect.ci_low <= 0 <= effect.ci_high
    assert covered >= 17  # a 95 % interval; 20 tries


def test_logloss_effect_sign():
    control, treatment, labels, users = synthetic(lift=0.5)
    effect = paired_effect(control, treatment, labels, users, metric="logloss", replicates=100)
    assert effect.delta < 0  # better scores, lower loss
    with pytest.raises(ValueError):
        paired_effect(control, treatment[:1], labels, users)

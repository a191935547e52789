"""Paired statistics: weighted AUC is exact, intervals cover, A/A intervals straddle zero."""

import numpy as np
import pytest

from tools.scoring import auc
from tools.stats import SortedScores, paired_effect


def test_weighted_auc_equals_auc_of_repeated_rows():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500).astype(float)
    scores = np.round(rng.random(500) + 0.4 * labels, 2)
    weights = rng.integers(0, 4, 500)
    expanded = auc(np.repeat(labels, weights), np.repeat(scores, weights))
    assert SortedScores(scores, labels).auc(weights) == pytest.approx(expanded, abs=1e-12)
    assert SortedScores(scores, labels).auc() == pytest.approx(auc(labels, scores), abs=1e-12)


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

"""The planted feature-selection problem and the methods compared on it (used by feature_selection.py).

Ground truth: the label is drawn from a logistic model of nine *informative* features:
four linear (one weak), two nonlinear (a sine of the hour, a U-shape), two categorical
with level effects, and one interaction pair (user_affinity_score x item_novelty: each
has no effect on its own). Around them:
- three near-copies of informative features (|rho| about 0.95): not informative (the
  original is); keeping both is a redundant pair, keeping only the copy is a miss and a
  false positive;
- one leaky post-event feature (post_click_dwell_seconds, flagged `leaky` in the catalog):
  a function of the label in train and validation; in the held-out test slice it is drawn
  from its marginal, independent of the label, because at serving time the event has not
  happened yet;
- pure noise (x_noise_*) and noise with plausible names and definitions (decoys such as
  user_ctr_30d, and campaign_id with 300 levels).
Groups (user, item, context, behaviour) and serving costs make the constraints bind: the
informative set satisfies every constraint, with slack except the user group's maximum.

Every method sees the same train and validation rows and the same K; the test rows only
score the selections (a LightGBM model on the selected columns).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.feature_selection import RFE, SelectFromModel, SelectKBest, mutual_info_classif
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from agents.feature_constraints import Constraints
from agents.feature_selection import OfflineBrain, Problem
from agentx.workspace import FeatureConstraints
from tools.feature_catalog import CatalogFeature
from tools.feature_stats import compute_stats, encode, fit_lgbm, permutation_drops
from tools.scoring import auc

LABEL = "label"
# name, group, type, serving cost, definition; then the roles
SPEC = [
    ("user_tenure_days", "user", "numeric", 0.2, "days since the user signed up, standardised"),
    ("item_price", "item", "numeric", 0.2, "listed price of the item, standardised"),
    ("user_age", "user", "numeric", 0.2, "user age from the profile, standardised"),
    ("hour_of_day", "context", "numeric", 0.1, "local hour of the request, 0-24"),
    ("item_rating_variance", "item", "numeric", 0.3, "spread of the item's ratings, centred"),
    ("device_type", "context", "categorical", 0.1, "device class of the request (6 values)"),
    ("user_region", "user", "categorical", 0.2, "region of the user's account (8 values)"),
    ("user_affinity_score", "user", "numeric", 0.5, "user's affinity to the item's category, centred"),
    ("item_novelty", "item", "numeric", 0.5, "how new the item is relative to its category, centred"),
    ("user_tenure_weeks", "user", "numeric", 0.2, "weeks since the user signed up, from a second source"),
    ("item_price_usd", "item", "numeric", 0.2, "item price converted to USD at the daily rate"),
    ("item_rating_spread", "item", "numeric", 0.3, "interquartile range of the item's ratings"),
    ("post_click_dwell_seconds", "behaviour", "numeric", 0.1, "seconds the user stayed on the item after the "
                                                              "click (logged after the event)"),
    ("user_ctr_30d", "user", "numeric", 0.8, "user's click-through rate over the last 30 days"),
    ("item_popularity_rank", "item", "numeric", 0.6, "rank of the item by views this week"),
    ("user_engagement_score", "behaviour", "numeric", 0.8, "composite engagement score of the user"),
    ("session_depth", "behaviour", "numeric", 0.5, "requests so far in the session"),
    ("campaign_id", "context", "categorical", 0.4, "marketing campaign that brought the request (300 values)"),
    ("item_quality_score", "item", "numeric", 0.7, "editorial quality score of the item"),
    ("x_noise_1", "user", "numeric", 0.2, "unused column x_noise_1"),
    ("x_noise_2", "item", "numeric", 0.2, "unused column x_noise_2"),
    ("x_noise_3", "context", "numeric", 0.2, "unused column x_noise_3"),
    ("x_noise_4", "behaviour", "numeric", 0.2, "unused column x_noise_4"),
    ("x_noise_cat", "context", "categorical", 0.3, "unused column x_noise_cat (5 values)"),
]
INFORMATIVE = ["user_tenure_days", "item_price", "user_age", "hour_of_day", "item_rating_variance", "device_type",
               "user_region", "user_affinity_score", "item_novelty"]
COPIES = {"user_tenure_weeks": "user_tenure_days", "item_price_usd": "item_price",
          "item_rating_spread": "item_rating_variance"}
LEAK = "post_click_dwell_seconds"
PLANTED_CROSS = ("user_affinity_score", "item_novelty")
CONSTRAINTS = FeatureConstraints(must_include=["user_tenure_days"], group_min={"context": 1},
                                 group_max={"user": 4, "item": 4, "context": 3, "behaviour": 1},
                                 max_serving_cost=3.0, max_correlation=0.85)
CATALOG = [CatalogFeature(name=n, group=g, type=t, serving_cost=c, definition=d, leaky=(n == LEAK))
           for n, g, t, c, d in SPEC]


def make_data(seed: int, n_train: int, n_valid: int, n_test: int) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    n = n_train + n_valid + n_test
    x = {name: rng.normal(size=n) for name, _, kind, _, _ in SPEC if kind == "numeric"}
    x["hour_of_day"] = rng.uniform(0, 24, n)
    device, region = rng.integers(0, 6, n), rng.integers(0, 8, n)
    logit = (1.0 * x["user_tenure_days"] + 0.7 * x["item_price"] + 0.35 * x["user_age"]
             + 0.8 * np.sin(2 * np.pi * x["hour_of_day"] / 24) + 0.6 * (np.abs(x["item_rating_variance"]) - 0.8)
             + np.array([0.6, -0.5, 0.0, 0.4, -0.4, 0.0])[device]
             + np.array([0.35, -0.35, 0.2, -0.2, 0.0, 0.3, -0.3, 0.0])[region]
             + 0.9 * x["user_affinity_score"] * x["item_novelty"] - 0.3)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    for copy, original in COPIES.items():
        x[copy] = x[original] + 0.3 * rng.normal(size=n)
    frame = pd.DataFrame(x)
    frame["device_type"] = np.array(["phone", "tablet", "desktop", "tv", "watch", "car"])[device]
    frame["user_region"] = [f"r{r}" for r in region]
    frame["campaign_id"] = [f"c{c}" for c in rng.integers(0, 300, n)]
    frame["x_noise_cat"] = [f"v{v}" for v in rng.integers(0, 5, n)]
    frame[LEAK] = np.where(y == 1, rng.gamma(4.0, 10.0, n), rng.gamma(1.5, 8.0, n))
    frame[LABEL] = y
    parts = {"train": frame.iloc[:n_train], "valid": frame.iloc[n_train:n_train + n_valid],
             "test": frame.iloc[n_train + n_valid:].copy()}
    # at serving time the post-event field is not known yet: a draw from its marginal, unrelated to y
    test = parts["test"]
    clicked = rng.random(len(test)) < y[:n_train].mean()
    test[LEAK] = np.where(clicked, rng.gamma(4.0, 10.0, len(test)), rng.gamma(1.5, 8.0, len(test)))
    return {k: v.reset_index(drop=True) for k, v in parts.items()}


def problem_for(data, k: int, seed: int, stats=None, constraints: FeatureConstraints = CONSTRAINTS) -> Problem:
    stats = stats or compute_stats(data["train"], data["valid"], CATALOG, LABEL, version=f"planted-{seed}", seed=seed)
    return Problem(CATALOG, stats, Constraints.build(constraints, CATALOG, budget=k))


# -- baselines: every one sees train (+ valid where it needs held-out rows) and K ----------------

def design(data, features: list[CatalogFeature]) -> np.ndarray:
    """The train matrix the linear baselines fit: numerics as they are, categoricals target-encoded
    out of fold (5 folds, smoothing 20), every column standardised."""
    train = data["train"]
    x = train[[f.name for f in features]].copy()
    prior, folds = train[LABEL].mean(), np.arange(len(train)) % 5
    for f in features:
        if f.type != "numeric":
            encoded = np.empty(len(train))
            for fold in range(5):
                rates = train[folds != fold].groupby(f.name)[LABEL].agg(["sum", "count"])
                table = (rates["sum"] + 20 * prior) / (rates["count"] + 20)
                encoded[folds == fold] = train.loc[folds == fold, f.name].map(table).fillna(prior)
            x[f.name] = encoded
    return StandardScaler().fit_transform(x.to_numpy(float))


def mi_scores(data, features: list[CatalogFeature], seed: int) -> np.ndarray:
    columns = encode(data["train"], data["valid"], features)
    x = np.column_stack([np.nan_to_num(c.train, nan=-1) for c in columns.values()])
    discrete = np.array([f.type != "numeric" for f in features])
    return mutual_info_classif(x, data["train"][LABEL], discrete_features=discrete, random_state=seed)


def ranked(scores, names) -> list[str]:
    return [names[i] for i in np.argsort(-np.asarray(scores), kind="stable")]


def baseline_rankings(data, seed: int, exclude: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Each deterministic method's order of preference over all features; its top K is its
    selection at K. RFE with step 1 and greedy mRMR are nested, so one run gives every K."""
    features = [f for f in CATALOG if f.name not in exclude]
    names = [f.name for f in features]
    y, y_valid = data["train"][LABEL].to_numpy(), data["valid"][LABEL].to_numpy()
    xt = design(data, features)
    mi = mi_scores(data, features, seed)
    columns = list(encode(data["train"], data["valid"], features).values())
    booster = fit_lgbm(columns, y, y_valid, seed=seed)
    _, drops = permutation_drops(booster, columns, y_valid, seed=seed)
    kbest = SelectKBest(lambda X, Y: mi, k="all").fit(xt, y)
    l1 = SelectFromModel(LogisticRegression(l1_ratio=1.0, solver="liblinear", C=0.1), threshold=-np.inf).fit(xt, y)
    rfe = RFE(LogisticRegression(max_iter=2000), n_features_to_select=1, step=1).fit(xt, y)
    return {
        "SelectKBest (MI)": ranked(kbest.scores_, names),
        "L1 (SelectFromModel)": ranked(np.abs(l1.estimator_.coef_[0]), names),
        "RFE (logistic)": [names[i] for i in np.argsort(rfe.ranking_, kind="stable")],
        "permutation top-K": ranked(drops, names),
        "LightGBM gain top-K": ranked(booster.feature_importance("gain"), names),
        "mRMR (textbook)": mrmr(mi, xt, names, len(names)),
    }


def random_draws(seed: int, k: int, draws: int) -> list[list[str]]:
    rng = np.random.default_rng(1000 * seed + k)
    return [[str(n) for n in rng.choice([f.name for f in CATALOG], size=k, replace=False)] for _ in range(draws)]


def mrmr(mi: np.ndarray, x: np.ndarray, names: list[str], k: int) -> list[str]:
    """Textbook greedy mRMR (MID form): MI relevance scaled to [0, 1] minus the mean |Pearson| with
    the features already chosen; no constraints."""
    relevance = mi / mi.max() if mi.max() > 0 else mi
    corr = np.abs(np.nan_to_num(np.corrcoef(x, rowvar=False)))
    chosen = [int(np.argmax(relevance))]
    while len(chosen) < k:
        rest = [j for j in range(len(names)) if j not in chosen]
        chosen.append(max(rest, key=lambda j: relevance[j] - corr[j, chosen].mean()))
    return [names[j] for j in chosen]


# -- scoring a selection ---------------------------------------------------------------------

def test_auc(data, selected: list[str], seed: int) -> float:
    """LightGBM on the selected columns (train, early-stopped on valid), AUC on the test rows."""
    features = [f for f in CATALOG if f.name in selected]
    columns = encode(data["train"], data["valid"], features)
    test = encode(data["train"], data["test"], features)     # the same train vocabularies, test rows
    booster = fit_lgbm(list(columns.values()), data["train"][LABEL].to_numpy(), data["valid"][LABEL].to_numpy(),
                       seed=seed, learning_rate=0.1)
    x_test = np.column_stack([test[name].valid for name in columns])
    return auc(data["test"][LABEL].to_numpy(), booster.predict(x_test))


def quality(selected: list[str], problem: Problem) -> dict:
    from agents.feature_constraints import check, violations

    truth = set(INFORMATIVE)
    hits = len(truth & set(selected))
    precision, recall = hits / len(selected), hits / len(truth)
    f1 = 0.0 if hits == 0 else 2 * precision * recall / (precision + recall)
    redundant = sum(1 for i, a in enumerate(selected) for b in selected[i + 1:] if problem.stats.assoc(a, b) >= 0.9)
    return {"precision": precision, "recall": recall, "f1": f1, "redundant": redundant,
            "violations": len(violations(check(selected, problem.rules()))), "leak": int(LEAK in selected)}


def ours(problem: Problem) -> list[str]:
    return OfflineBrain().select(problem).kept

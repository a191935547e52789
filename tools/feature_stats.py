"""Feature statistics for MoFA: what each catalog feature scores on the workspace's data.

Per feature, computed from the **train and validation** slices only (the test slice judges
experiments; it never informs a selection):

- `gain`: its share of the total split gain of a LightGBM model fitted on train and
  early-stopped on validation;
- `permutation`: the drop in validation AUC of that model when the feature's column is
  shuffled (mean over a few shuffles): gain rewards what the model *used*, permutation what
  *generalised*, so a high-cardinality column that was only memorised scores high on the
  first and about zero on the second;
- `mutual_info`: mutual information with the label on train, in nats, numeric columns cut
  into quantile bins, minus the Miller-Madow estimate of the plug-in bias (which otherwise
  grows with cardinality);
- `missing_rate`, `cardinality` (on train);
- the association with every other feature: |Spearman| when both are numeric, otherwise
  Cramér's V with Bergsma's bias correction (numeric columns binned); `partners` lists the
  strongest. A multi-categorical column is compared as one categorical of its joined value.

Catalog entries flagged `leaky` are left out of the model-based statistics (gain,
permutation): they are never selectable, and a label-derived column would soak up the
importance of everything else. Their mutual information and associations are still shown.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tools.feature_catalog import CatalogFeature
from tools.scoring import auc

# lightgbm is imported where a model is fitted: it takes seconds to import on a busy
# machine, and a selection over cached statistics does not need it.

STATS_VERSION = 1          # bump when a statistic's definition changes: cached rows are keyed by it
BINS = 16                  # quantile bins for numeric columns in MI and Cramér's V
PARTNERS = 3               # partners listed per feature
PERMUTATION_REPEATS = 3
MAX_ROWS = 200_000         # train rows used (a fixed sample above this)


@dataclass(frozen=True)
class FeatureStat:
    name: str
    gain: float | None              # share of total split gain, 0..1 (None: leaky, not modelled)
    permutation: float | None       # valid AUC drop when shuffled (None: leaky)
    mutual_info: float              # nats, bias-corrected, >= 0
    missing_rate: float
    cardinality: int
    partners: tuple[tuple[str, float, str], ...] = ()   # (name, association, "spearman" | "cramers_v")


@dataclass(frozen=True)
class StatsTable:
    version: str
    stats: dict[str, FeatureStat]
    association: dict[str, dict[str, float]]      # symmetric; a feature is absent from its own row
    model_auc: float | None = None                # validation AUC of the statistics model
    excluded: tuple[str, ...] = ()                # leaky features left out of that model
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def assoc(self, a: str, b: str) -> float:
        return 0.0 if a == b else self.association.get(a, {}).get(b, 0.0)


@dataclass
class Column:
    """One feature, encoded: `train`/`valid` are floats (numeric) or category codes as floats
    (NaN = missing or unseen in train); `bins` are non-negative codes on train for MI and
    Cramér's V (missing is a bin of its own)."""

    feature: CatalogFeature
    train: np.ndarray
    valid: np.ndarray
    bins: np.ndarray
    cardinality: int
    missing_rate: float


def read_train_valid(splits) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The labelled train and validation slices; the test slice is deliberately not read."""
    return (pd.read_csv(splits.file("train"), low_memory=False),
            pd.read_csv(splits.file("valid"), low_memory=False))


def encode(train: pd.DataFrame, valid: pd.DataFrame, catalog: list[CatalogFeature]) -> dict[str, Column]:
    missing = [f.name for f in catalog if f.name not in train.columns or f.name not in valid.columns]
    if missing:
        raise ValueError(f"catalog features missing from the data: {', '.join(missing)}; the catalog "
                         f"must name columns the data module writes (it has: {', '.join(train.columns)})")
    return {f.name: _encode_one(f, train[f.name], valid[f.name]) for f in catalog}


def _encode_one(feature: CatalogFeature, train: pd.Series, valid: pd.Series) -> Column:
    if feature.type == "numeric":
        tr = pd.to_numeric(train, errors="coerce").to_numpy("float64")
        va = pd.to_numeric(valid, errors="coerce").to_numpy("float64")
        present = tr[~np.isnan(tr)]
        edges = np.unique(np.quantile(present, np.linspace(0, 1, BINS + 1)[1:-1])) if present.size else []
        bins = np.where(np.isnan(tr), 0, np.searchsorted(edges, tr, side="right") + 1)
        cardinality = int(np.unique(present).size)
    else:
        text_train = train.astype("string").replace("", pd.NA)
        codes, uniques = pd.factorize(text_train, use_na_sentinel=True)
        lookup = {value: i for i, value in enumerate(uniques)}
        va_codes = valid.astype("string").map(lookup)
        tr = np.where(codes < 0, np.nan, codes).astype("float64")
        va = pd.to_numeric(va_codes, errors="coerce").to_numpy("float64")
        bins = np.where(codes < 0, 0, codes + 1)
        cardinality = len(uniques)
    return Column(feature, tr, va, bins.astype("int64"), cardinality, float(np.isnan(tr).mean()))


# -- information measures ------------------------------------------------------------------

def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def _dense(codes: np.ndarray) -> tuple[np.ndarray, int]:
    uniques, dense = np.unique(codes, return_inverse=True)
    return dense, len(uniques)


def mutual_info(bins: np.ndarray, y: np.ndarray) -> float:
    """I(X; Y) in nats (plug-in) minus the Miller-Madow bias (Kx - 1)(Ky - 1) / 2N, at least 0."""
    x, kx = _dense(bins)
    yy, ky = _dense(y.astype("int64"))
    joint = np.bincount(x * ky + yy, minlength=kx * ky)
    mi = _entropy(np.bincount(x)) + _entropy(np.bincount(yy)) - _entropy(joint)
    return max(0.0, mi - (kx - 1) * (ky - 1) / (2 * len(bins)))


def cramers_v(a: np.ndarray, b: np.ndarray) -> float:
    """Bias-corrected Cramér's V (Bergsma 2013) of two code arrays: 0 independent, 1 determined."""
    x, k = _dense(a)
    z, r = _dense(b)
    n = len(x)
    if k < 2 or r < 2 or n < 3:
        return 0.0
    cells, counts = np.unique(x.astype("int64") * r + z, return_counts=True)
    rows, cols = np.bincount(x, minlength=k), np.bincount(z, minlength=r)
    chi2 = n * (float((counts ** 2 / (rows[cells // r] * cols[cells % r])).sum()) - 1.0)
    phi2 = max(0.0, chi2 / n - (k - 1) * (r - 1) / (n - 1))
    k_corr, r_corr = k - (k - 1) ** 2 / (n - 1), r - (r - 1) ** 2 / (n - 1)
    denominator = min(k_corr - 1, r_corr - 1)
    return float(min(1.0, np.sqrt(phi2 / denominator))) if denominator > 0 else 0.0


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """|Spearman's rho| on the rows where both are present."""
    both = ~(np.isnan(a) | np.isnan(b))
    if both.sum() < 3:
        return 0.0
    ra = pd.Series(a[both]).rank().to_numpy()
    rb = pd.Series(b[both]).rank().to_numpy()
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(abs(np.corrcoef(ra, rb)[0, 1]))


def association(x: Column, y: Column) -> tuple[float, str]:
    if x.feature.type == "numeric" and y.feature.type == "numeric":
        return spearman(x.train, y.train), "spearman"
    return cramers_v(x.bins, y.bins), "cramers_v"


# -- the statistics model ------------------------------------------------------------------

def threads() -> int:
    """One LightGBM thread unless AGENTX_LGBM_THREADS says otherwise: OpenMP threads spin-wait,
    and on a shared CPU two threads ran a 2,000-row fit 5-20x slower than one (measured on
    the 2-core dev box next to a training job). Statistics are cached, so the cost is paid once."""
    return max(1, int(os.environ.get("AGENTX_LGBM_THREADS", "1")))


def fit_lgbm(columns: list[Column], y_train: np.ndarray, y_valid: np.ndarray, *, seed: int,
             rounds: int = 300, learning_rate: float = 0.05, num_leaves: int = 31,
             interaction_constraints: list[list[int]] | None = None):
    """A LightGBM classifier (a `lightgbm.Booster`) on train, early-stopped on validation (deterministic)."""
    import lightgbm as lgb

    x_train = np.column_stack([c.train for c in columns])
    x_valid = np.column_stack([c.valid for c in columns])
    categorical = [i for i, c in enumerate(columns) if c.feature.is_categorical]
    params = {"objective": "binary", "learning_rate": learning_rate, "num_leaves": num_leaves,
              "min_data_in_leaf": 20, "verbosity": -1, "seed": seed, "deterministic": True,
              "force_col_wise": True, "num_threads": threads()}
    if interaction_constraints is not None:
        params["interaction_constraints"] = interaction_constraints
    train = lgb.Dataset(x_train, y_train, categorical_feature=categorical, free_raw_data=False)
    valid = lgb.Dataset(x_valid, y_valid, reference=train, categorical_feature=categorical)
    return lgb.train(params, train, num_boost_round=rounds, valid_sets=[valid],
                     callbacks=[lgb.early_stopping(30, verbose=False)])


def permutation_drops(booster, columns: list[Column], y_valid: np.ndarray, *, seed: int,
                      repeats: int = PERMUTATION_REPEATS) -> tuple[float, list[float]]:
    """Validation AUC of the model, and its mean drop when each column is shuffled."""
    x_valid = np.column_stack([c.valid for c in columns])
    base = auc(y_valid, booster.predict(x_valid))
    rng = np.random.default_rng(seed)
    drops = []
    for j in range(len(columns)):
        total = 0.0
        for _ in range(repeats):
            shuffled = x_valid.copy()
            shuffled[:, j] = rng.permutation(shuffled[:, j])
            total += base - auc(y_valid, booster.predict(shuffled))
        drops.append(total / repeats)
    return base, drops


def compute_stats(train: pd.DataFrame, valid: pd.DataFrame, catalog: list[CatalogFeature], label: str, *,
                  version: str = "", seed: int = 0, max_rows: int = MAX_ROWS) -> StatsTable:
    """Every statistic for every catalog feature (see the module docstring)."""
    train = sample_rows(train, max_rows, seed)
    return stats_from_columns(encode(train, valid, catalog), labels(train, label), labels(valid, label),
                              version=version, seed=seed)


def sample_rows(train: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    return train.sample(max_rows, random_state=seed) if len(train) > max_rows else train


def labels(frame: pd.DataFrame, label: str) -> np.ndarray:
    values = frame[label].to_numpy("int64")
    if not np.isin(values, (0, 1)).all() or len(np.unique(values)) < 2:
        raise ValueError(f"the label column {label!r} must hold both 0 and 1 (and nothing else)")
    return values


def stats_from_columns(columns: dict[str, Column], y_train: np.ndarray, y_valid: np.ndarray, *,
                       version: str = "", seed: int = 0) -> StatsTable:
    started = time.perf_counter()
    modelled = [c for c in columns.values() if not c.feature.leaky]
    gains: dict[str, float | None] = {name: None for name in columns}
    drops: dict[str, float | None] = dict(gains)
    model_auc = None
    if modelled:
        booster = fit_lgbm(modelled, y_train, y_valid, seed=seed)
        raw = booster.feature_importance("gain")
        total = float(raw.sum()) or 1.0
        model_auc, perm = permutation_drops(booster, modelled, y_valid, seed=seed)
        for c, g, d in zip(modelled, raw, perm):
            gains[c.feature.name], drops[c.feature.name] = float(g) / total, d
    assoc, methods = associations(columns)
    stats = {}
    for name, c in columns.items():
        ranked = sorted(assoc[name].items(), key=lambda kv: -kv[1])[:PARTNERS]
        stats[name] = FeatureStat(name, gains[name], drops[name], mutual_info(c.bins, y_train),
                                  c.missing_rate, c.cardinality,
                                  tuple((other, value, methods[name][other]) for other, value in ranked))
    excluded = tuple(c.feature.name for c in columns.values() if c.feature.leaky)
    return StatsTable(version, stats, assoc, model_auc, excluded, {"train": len(y_train), "valid": len(y_valid)},
                      time.perf_counter() - started)


def associations(columns: dict[str, Column]) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, str]]]:
    names = list(columns)
    assoc: dict[str, dict[str, float]] = {n: {} for n in names}
    methods: dict[str, dict[str, str]] = {n: {} for n in names}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            value, method = association(columns[a], columns[b])
            assoc[a][b] = assoc[b][a] = value
            methods[a][b] = methods[b][a] = method
    return assoc, methods


# -- rows for the knowledge base -----------------------------------------------------------

PER_FEATURE = ("gain", "permutation", "mutual_info", "missing_rate", "cardinality", "association")


def stats_rows(table: StatsTable) -> list[dict]:
    """`feature_stats` rows (name, stat, value, detail); every detail carries the version."""
    rows = [{"name": "*", "stat": "stats_run", "value": table.model_auc,
             "detail": {"version": table.version, "excluded": list(table.excluded), "rows": table.rows,
                        "seconds": round(table.seconds, 3)}}]
    for s in table.stats.values():
        for stat in PER_FEATURE[:-1]:
            rows.append({"name": s.name, "stat": stat, "value": getattr(s, stat),
                         "detail": {"version": table.version}})
        top = max(table.association[s.name].values(), default=0.0)
        rows.append({"name": s.name, "stat": "association", "value": top,
                     "detail": {"version": table.version, "assoc": table.association[s.name],
                                "partners": [list(p) for p in s.partners]}})
    return rows


def stats_from_rows(rows: list[dict]) -> StatsTable | None:
    """Rebuild a StatsTable from its rows (one version); None when the run row is missing."""
    run = next((r for r in rows if r["stat"] == "stats_run"), None)
    if run is None:
        return None
    values: dict[str, dict] = {}
    for r in rows:   # other rows of the version (interaction candidates) are not per-feature statistics
        if r["name"] != "*" and r["stat"] in PER_FEATURE:
            values.setdefault(r["name"], {})[r["stat"]] = r
    stats, assoc = {}, {}
    for name, by_stat in values.items():
        detail = by_stat["association"]["detail"]
        assoc[name] = {k: float(v) for k, v in detail["assoc"].items()}
        stats[name] = FeatureStat(name, by_stat["gain"]["value"], by_stat["permutation"]["value"],
                                  by_stat["mutual_info"]["value"], by_stat["missing_rate"]["value"],
                                  int(by_stat["cardinality"]["value"]),
                                  tuple((p[0], float(p[1]), p[2]) for p in detail["partners"]))
    meta = run["detail"]
    return StatsTable(meta["version"], stats, assoc, run["value"], tuple(meta["excluded"]), meta["rows"],
                      meta["seconds"])

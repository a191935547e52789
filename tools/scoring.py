"""The evaluator owns the metric: predictions are checked and scored here, in the harness.

The kernel writes `predictions/<split>.csv` (id, score); this module joins them to labels
the kernel never saw and computes AUC and logloss. A prediction file that is missing, has
missing, duplicate or unknown ids, NaNs, or scores outside [0, 1] makes the run invalid:
an `InvalidPredictions` with the reason, never a number. So do scores that are (nearly) the
same for every row of a split (`constant`: nothing was learned or a placeholder was
written), and a prediction file whose scores do not belong to their ids (`misaligned`:
`check_alignment` compares it with what the model's own predict() gives those rows).
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np

from tools.memo import Recent
from tools.ranking import is_ranking, ranking_metric
from tools.splits import EVAL_SPLITS, Splits, _csv, _quote

EPS = 1e-7
CONSTANT_STD = 1e-6        # scores with a smaller standard deviation on a split are "constant"
ALIGN_ABS_TOL = 1e-3       # file vs predict(): largest absolute difference still "the same score"
ALIGN_RANK_MARGIN = 0.1    # for a noisy predict(): how far below its own agreement the file may fall


class InvalidPredictions(ValueError):
    """The predictions break the contract; `kind` is 'missing_rows', 'nan', 'format', ..."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True)
class Labelled:
    ids: np.ndarray
    labels: np.ndarray
    scores: np.ndarray


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties given their average rank."""
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=float)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    _, first, counts = np.unique(scores[order], return_index=True, return_counts=True)
    ranks = np.empty(len(scores))
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def logloss(labels: np.ndarray, scores: np.ndarray) -> float:
    p = np.clip(np.asarray(scores, dtype=float), EPS, 1 - EPS)
    y = np.asarray(labels, dtype=float)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


METRICS = {"auc": auc, "logloss": logloss}     # over all rows; ranking metrics need users (tools/ranking.py)


def metric_value(name: str, labels: np.ndarray, scores: np.ndarray, users: np.ndarray | None = None) -> float:
    """`name` (auc, logloss, ndcg@K, recall@K, mrr) of these rows; a ranking metric needs their users."""
    if name in METRICS:
        return METRICS[name](labels, scores)
    if not is_ranking(name):
        raise ValueError(f"unknown metric {name!r}")
    if users is None:
        raise ValueError(f"{name} ranks each user's rows: it needs the user column ([data] user_column)")
    return ranking_metric(name, labels, scores, users)


def join_predictions(splits: Splits, run_dir: Path, split: str) -> Labelled:
    """Labels for exactly the rows the kernel was given, joined to its predictions.

    Remembered for the last few (splits, file, size, mtime): a judgement with one more seed
    and a rollout join the same finished runs again."""
    pred_path = run_dir / "predictions" / f"{split}.csv"
    if not pred_path.is_file():
        raise InvalidPredictions("missing_file", f"the entrypoint wrote no predictions/{split}.csv")
    key = (str(splits.root), split, *(_stamp(p) for p in (pred_path, run_dir / f"{split}.csv")))
    return _JOINED.get(key, lambda: _join(splits, run_dir, pred_path, split))


_JOINED: Recent[Labelled] = Recent(keep=64)


def _stamp(path: Path) -> tuple[str, int, int]:
    stat = path.stat() if path.is_file() else None
    return str(path), stat.st_size if stat else -1, stat.st_mtime_ns if stat else -1


def _join(splits: Splits, run_dir: Path, pred_path: Path, split: str) -> Labelled:
    pred_ids, scores = _read_predictions(pred_path, splits.id_column, split)
    given = _given_ids(run_dir / f"{split}.csv", splits.id_column)
    truth_ids, truth_labels = _truth(splits, split)
    keep = np.isin(truth_ids, given)                      # the rows the kernel was given, in id order
    truth_ids, truth_labels = truth_ids[keep], truth_labels[keep]

    null_ids = np.asarray([i == "" for i in pred_ids], dtype=bool) if pred_ids.dtype.kind in "OU" \
        else np.zeros(len(pred_ids), dtype=bool)
    pred_ids, scores = pred_ids[~null_ids], scores[~null_ids]
    distinct = np.unique(pred_ids)
    if len(distinct) < len(pred_ids):
        raise InvalidPredictions("duplicate_rows", f"{len(pred_ids) - len(distinct)} duplicate ids in "
                                 f"predictions/{split}.csv")
    missing = int((~_isin(truth_ids, pred_ids)).sum())
    unknown = int((~_isin(pred_ids, truth_ids)).sum()) + int(null_ids.sum())
    if missing or unknown:
        raise InvalidPredictions("missing_rows", f"predictions/{split}.csv: {missing} of the {len(truth_ids)} "
                                 f"rows missing, {unknown} unknown ids")
    order = np.argsort(pred_ids, kind="mergesort")
    scores = scores[order][np.searchsorted(pred_ids[order], truth_ids)]
    bad = ~np.isfinite(scores)
    if bad.any():
        raise InvalidPredictions("nan", f"{int(bad.sum())} scores in predictions/{split}.csv are NaN, "
                                 "infinite or not numbers")
    if scores.min() < 0 or scores.max() > 1:
        raise InvalidPredictions("format", f"scores in predictions/{split}.csv must be probabilities in [0, 1]; "
                                 f"range is [{scores.min():.4g}, {scores.max():.4g}]")
    return Labelled(truth_ids, truth_labels, scores)


def _read_predictions(path: Path, id_column: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(ids, scores) of a prediction file. Ids become integers (or floats) when every one
    parses, text otherwise; a score that is empty or not a number becomes NaN."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = csv.reader(f)
            header = [h.strip() for h in next(rows, [])]
            if not {id_column, "score"} <= set(header):
                raise InvalidPredictions("format", f"predictions/{split}.csv needs columns {id_column},score; "
                                         f"it has {', '.join(sorted(h for h in header if h))}")
            at_id, at_score = header.index(id_column), header.index("score")
            width = max(at_id, at_score) + 1
            ids, texts = [], []
            for row in rows:
                if not row:
                    continue
                if len(row) < width:
                    raise InvalidPredictions("format", f"predictions/{split}.csv: a row has {len(row)} "
                                             f"fields, the header {len(header)}")
                ids.append(row[at_id].strip())
                texts.append(row[at_score].strip())
    except (csv.Error, UnicodeDecodeError) as exc:
        raise InvalidPredictions("format", f"predictions/{split}.csv is not a readable CSV: {exc}") from None
    id_array = np.asarray(ids, dtype=object)
    for kind in (np.int64, np.float64):
        try:
            id_array = np.asarray(ids, dtype=str).astype(kind) if ids else np.empty(0, dtype=np.int64)
            break
        except ValueError:
            continue
    scores = np.full(len(texts), np.nan)
    try:
        scores = np.asarray(texts, dtype=str).astype(np.float64) if texts else scores
    except ValueError:                     # one bad cell: parse one by one, NaN where unusable
        for i, text in enumerate(texts):
            try:
                scores[i] = float(text)
            except ValueError:
                pass
    return id_array, scores


def _isin(values: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """np.isin that treats ids of different kinds (numbers vs text) as different, not as an error."""
    try:
        return np.isin(values, pool)
    except TypeError:
        return np.zeros(len(values), dtype=bool)


# Labels of a split (ids sorted) and the ids a run directory was given: the same for every
# run of a splits version and tier, so read once.
_TRUTH: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
_GIVEN: Recent[np.ndarray] = Recent(keep=16)


def _truth(splits: Splits, split: str) -> tuple[np.ndarray, np.ndarray]:
    key = (str(splits.root), split)
    if key not in _TRUTH:
        ids, labels = duckdb.connect().execute(
            f"SELECT {_quote(splits.id_column)}, {_quote(splits.label_column)} FROM {_csv(splits.file(split))} "
            "ORDER BY 1").fetchnumpy().values()
        _TRUTH[key] = (np.asarray(ids), np.asarray(labels, dtype=float))
    return _TRUTH[key]


def _given_ids(path: Path, id_column: str) -> np.ndarray:
    def read() -> np.ndarray:
        (ids,) = duckdb.connect().execute(f"SELECT {_quote(id_column)} FROM {_csv(path)}").fetchnumpy().values()
        return np.asarray(ids)
    return _GIVEN.get(hashlib.sha1(path.read_bytes()).hexdigest(), read)


def score_run(splits: Splits, run_dir: Path, metrics: list[str], *, user_column: str | None = None,
              reject_constant: bool = False) -> dict[tuple[str, str], float]:
    """{(split, metric): value} for valid and test, or InvalidPredictions. The harness passes
    `reject_constant`: a split scored with one value for every row is then invalid too.
    Ranking metrics (ndcg@K, recall@K, mrr) rank rows within each user of `user_column`."""
    scored = {}
    for split in EVAL_SPLITS:
        joined = join_predictions(splits, run_dir, split)
        spread = float(np.std(joined.scores)) if len(joined.scores) > 1 else float("inf")
        if reject_constant and spread < CONSTANT_STD:
            raise InvalidPredictions("constant", f"predictions/{split}.csv gives every one of its "
                                     f"{len(joined.scores)} rows the same score ({joined.scores[0]:.6g}; "
                                     f"standard deviation {spread:.2g} < {CONSTANT_STD:g})")
        users = None
        if user_column is not None and any(is_ranking(name) for name in metrics):
            users = users_of(splits, joined.ids, user_column, split)
        for name in metrics:
            scored[(split, name)] = metric_value(name, joined.labels, joined.scores, users)
    return scored


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = (np.argsort(np.argsort(x, kind="mergesort"), kind="mergesort").astype(float) for x in (a, b))
    if ra.std() == 0 or rb.std() == 0:
        return 1.0 if np.array_equal(a, b) else 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def check_alignment(run_dir: Path, id_column: str, check: dict | None, split: str = "test") -> None:
    """Raise InvalidPredictions('misaligned') when predictions/<split>.csv disagrees with predict().

    `check` is what the harness-owned REPORT cell measured in the kernel: row ids of a batch
    of the split's rows and the scores the returned model's predict() gave them in two calls
    ("first", "last"). Rows absent from the file are left to the missing-rows check. When
    predict() is deterministic (its two calls agree within ALIGN_ABS_TOL), any file score
    further than ALIGN_ABS_TOL from predict()'s is a mismatch. When it is not (dropout left
    on, GPU non-determinism beyond the tolerance), the file must rank the rows about as well
    as predict() agrees with itself (Spearman within ALIGN_RANK_MARGIN). Without a check
    (no predict(), or it failed) there is nothing to compare and nothing is raised.
    """
    if not isinstance(check, dict) or not isinstance(check.get("ids"), list) or not check["ids"]:
        return
    with open(run_dir / "predictions" / f"{split}.csv", newline="") as f:
        written = {row[id_column]: row["score"] for row in csv.DictReader(f)}
    ids, first, last = check["ids"], check.get("first") or [], check.get("last") or []
    if not (len(ids) == len(first) == len(last)):
        raise InvalidPredictions("misaligned", f"predict() returned {len(first)} scores for {len(ids)} rows")
    keep = [i for i, row_id in enumerate(ids) if str(row_id) in written]
    if len(keep) < 2:
        return
    texts = [written[str(ids[i])].strip() for i in keep]
    file_scores = np.asarray([float(t) for t in texts])
    # a file may round its scores ("%.2f"): a difference within the rounding is no mismatch
    rounding = max(0.5 * 10.0 ** -len(t.partition(".")[2]) if "e" not in t.lower() else 0.0 for t in texts)
    first_a, last_a = np.asarray(first, dtype=float)[keep], np.asarray(last, dtype=float)[keep]
    if not (np.isfinite(first_a).all() and np.isfinite(last_a).all()):
        raise InvalidPredictions("misaligned", "predict() gives non-finite scores for rows whose written "
                                 f"scores in predictions/{split}.csv are finite")
    noise = float(np.max(np.abs(first_a - last_a)))
    diff = np.abs(file_scores - first_a)
    if noise <= ALIGN_ABS_TOL:
        tolerance = ALIGN_ABS_TOL + rounding
        bad = diff > tolerance
        if bad.any():
            where = int(np.argmax(diff))
            raise InvalidPredictions(
                "misaligned", f"{int(bad.sum())} of {len(keep)} checked rows of predictions/{split}.csv differ from "
                f"the model's predict() by more than {tolerance:g} (max {diff[where]:.4g}: row "
                f"{ids[keep[where]]} written {file_scores[where]:.6g}, predict() {first_a[where]:.6g}); scores and "
                "ids are out of step, or the file was not written by the model main() returned")
        return
    agree, own = _spearman(file_scores, first_a), _spearman(first_a, last_a)
    if agree < min(0.99, own - ALIGN_RANK_MARGIN):
        raise InvalidPredictions(
            "misaligned", f"predictions/{split}.csv ranks {len(keep)} checked rows with Spearman {agree:.3f} "
            f"against the model's predict(), which agrees with itself at {own:.3f} (predict() is not "
            f"deterministic: calls differ by up to {noise:.3g}); scores and ids are out of step")


def units_of(splits: Splits, ids: np.ndarray, column: str | None, split: str = "test") -> np.ndarray:
    """The resampling unit of each given row id: its value in `column` (a user or a cluster),
    or, with no such column, the row id itself (each row its own unit)."""
    return np.asarray(ids) if column is None else users_of(splits, ids, column, split)


def users_of(splits: Splits, ids: np.ndarray, user_column: str, split: str = "test") -> np.ndarray:
    """The user of each given row id (in the order of `ids`), from the harness's own split file."""
    con = duckdb.connect()
    id_col = _quote(splits.id_column)
    rows = con.execute(
        f"SELECT w.id, t.{_quote(user_column)} FROM unnest(?) WITH ORDINALITY AS w(id, pos) "
        f"JOIN {_csv(splits.file(split))} t ON t.{id_col} = w.id ORDER BY w.pos", [ids.tolist()]).fetchall()
    if len(rows) != len(ids):
        raise ValueError(f"{len(ids) - len(rows)} row ids have no {split} row")
    return np.asarray([user for _, user in rows])


def popularity_scores(splits: Splits, item_column: str, run_dir: Path, split: str = "test",
                      prior_strength: float = 10.0) -> Labelled:
    """The reference every model must beat: an item's smoothed click rate in train."""
    con = duckdb.connect()
    label, item, id_col = _quote(splits.label_column), _quote(item_column), _quote(splits.id_column)
    prior = con.execute(f"SELECT avg({label}) FROM {_csv(splits.file('train'))}").fetchone()[0]
    rows = con.execute(
        f"WITH rate AS (SELECT {item} AS item, (sum({label}) + {prior_strength} * {prior}) / "
        f"(count(*) + {prior_strength}) AS p FROM {_csv(splits.file('train'))} GROUP BY 1), "
        f"given AS (SELECT {id_col} AS id FROM {_csv(run_dir / f'{split}.csv')}) "
        f"SELECT t.{id_col}, t.{label}, coalesce(r.p, {prior}) FROM {_csv(splits.file(split))} t "
        f"LEFT JOIN rate r ON r.item = t.{item} WHERE t.{id_col} IN (SELECT id FROM given) ORDER BY 1"
    ).fetchnumpy()
    ids, labels, scores = rows.values()
    return Labelled(np.asarray(ids), np.asarray(labels, dtype=float), np.asarray(scores, dtype=float))

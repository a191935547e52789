"""A recorded world for the evolution benchmark: real training runs of workspaces/adult-income.

    python benchmarks/evolution_world.py [--quick]

Each configuration of the bundled adult-income template (a recipe or knob setting: the
model switch, logreg's C, gradient-boosting trees, a feature dropped or added) is trained
once per seed on the real data and the real split, and the results are cached; a replay
loop (benchmarks/evolution.py) then draws seeds from these recorded runs instead of
training. `load_world()` builds the world on first use (minutes) and loads it from the
cache after (instantly).

What a run is, and why its numbers are the harness's:
- Data: the template's protected `data.py` is imported and its `prepare(cache_dir, out_dir)`
  called with `agentx.paths.cache_dir() / "datasets"`, as tools/splits.py does; its output
  is byte-for-byte deterministic, so train/valid/test are the harness's full-tier rows
  (the full tier samples nothing).
- Training: the template's own `train.py` is loaded as a fresh module per configuration,
  its knob constants (MODEL, C, LEARNING_RATE, MAX_DEPTH, MAX_ITER, FEATURES) set to the
  configuration's values, and, as `main(run_dir)` does, `np.random.seed(seed)`,
  `threadpool_limits(1)`, `build_model(seed).fit(train[FEATURES], label)`, then
  `Predictor.predict` on valid and test. The fit is what `seconds` records.
- Scoring: scores are rounded to 8 decimals (main() writes them with "%.8f") and scored
  with the harness's own AUC (tools/scoring.auc) against all valid / test rows.
- Seeds 0, 1, 2, ... are what the evaluator uses for its paired control/treatment runs.
  Gradient boosting uses the seed (random_state=seed with MAX_FEATURES=0.8 draws features
  per split), so its runs differ by seed; logistic regression (lbfgs) is deterministic, its
  seeds record the same AUC (only the seconds differ). That is the real harness's
  behaviour, not a shortcut of this world.

API: `load_world(quick=False, progress=...) -> World` (configs, baseline id, metric "auc",
min_effect 0.002, seeds); each `Config` has id, arm, family, params (the knob values that
differ from train.py's) and valid / test AUC and fit seconds per seed, in the world's seed
order. `true_effect(world, id)`: mean over seeds of test(config) - test(baseline), paired by
seed. `recorded_scores(world)`: every run's per-row test predictions, for replaying the
evaluator's own paired bootstrap (tools.stats.paired_effect) rather than per-seed AUCs alone
(logreg's seeds are identical, so its uncertainty is all in which test rows were drawn).

Cache: `cache_dir()/evolution-world/{name}-{hash}.json` (and `.npz`, the test predictions),
the hash over the configuration list, the seeds, train.py's and data.py's content and the
scikit-learn version; a change to any of them builds a new world. The splits data.py writes
are kept in `evolution-world/splits-<data.py sha>/`. One process trains, one run at a time:
the full world takes about 80 s on a 2-core machine, the quick one about 20 s.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import os
import statistics
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agentx.paths import cache_dir

TEMPLATE = ROOT / "workspaces" / "adult-income"
FORMAT = 1                       # bump when the JSON layout or the way a run is made changes
FULL_SEEDS = (0, 1, 2, 3)
QUICK_SEEDS = (0, 1, 2)
BASELINE_ID = "baseline"

# The baseline's features (train.py's FEATURES); the constants below are checked against
# train.py when a world is built, so a changed template fails loudly instead of silently
# recording another world under an old name.
BASE_FEATURES = ["age", "workclass", "education", "education_num", "marital_status", "occupation",
                 "relationship", "capital_gain", "capital_loss", "hours_per_week"]
BASE_KNOBS = {"MODEL": "logreg", "C": 0.1, "LEARNING_RATE": 0.05, "MAX_DEPTH": 3, "MAX_ITER": 200}


def _without(*names: str) -> list[str]:
    return [f for f in BASE_FEATURES if f not in names]


def _with(*names: str) -> list[str]:
    return [*BASE_FEATURES, *names]


HGB = {"MODEL": "hgb"}


def _hgb(arm: str, family: str, lr: float, depth: int, trees: int) -> tuple[str, str, str, dict]:
    """An hgb configuration: id from its boosting knobs, params only the knobs that differ
    from train.py's (MODEL always)."""
    params = {**HGB}
    for knob, value in (("LEARNING_RATE", lr), ("MAX_DEPTH", depth), ("MAX_ITER", trees)):
        if value != BASE_KNOBS[knob]:
            params[knob] = value
    return f"hgb_lr{lr:g}_d{depth}_i{trees}", arm, family, params


# (id, arm, family, params that differ from the baseline). Arms are what a bandit policy
# chooses between; families group arms the way recipe families group recipes. The notes
# say what each arm turned out to be (test AUC effect over the logreg baseline, measured).
FULL_CONFIGS: list[tuple[str, str, str, dict]] = [
    (BASELINE_ID, "baseline", "baseline", {}),
    # model: switch to gradient boosting at train.py's hgb settings or with one knob moved:
    # helps, far above min_effect (+0.011 to +0.022)
    _hgb("model", "model", 0.05, 3, 200),
    _hgb("model", "model", 0.1, 3, 200),
    _hgb("model", "model", 0.05, 3, 100),
    _hgb("model", "model", 0.05, 2, 200),
    _hgb("model", "model", 0.05, 4, 200),
    # hgb_small: boosting with little capacity (slow learning rate, few or shallow trees):
    # from a clear loss (-0.0125) to gains just around min_effect (+0.0016 to +0.0025),
    # where false ships and missed ships happen
    _hgb("hgb_small", "boosting", 0.01, 3, 200),
    _hgb("hgb_small", "boosting", 0.02, 3, 100),
    _hgb("hgb_small", "boosting", 0.03, 2, 100),
    _hgb("hgb_small", "boosting", 0.01, 4, 100),
    _hgb("hgb_small", "boosting", 0.05, 2, 50),
    _hgb("hgb_small", "boosting", 0.02, 2, 100),
    _hgb("hgb_small", "boosting", 0.01, 2, 100),
    # hgb_trees: more or sharper boosting: helps (+0.012 to +0.024), less when it overfits
    # (learning rate 0.3, depth 8) or learns slowly
    _hgb("hgb_trees", "boosting", 0.1, 5, 200),
    _hgb("hgb_trees", "boosting", 0.05, 5, 300),
    _hgb("hgb_trees", "boosting", 0.1, 4, 300),
    _hgb("hgb_trees", "boosting", 0.2, 6, 300),
    _hgb("hgb_trees", "boosting", 0.3, 8, 400),
    _hgb("hgb_trees", "boosting", 0.02, 4, 200),
    # logreg_c: the baseline's regularisation: flat at C >= 0.03, hurts below (to -0.011)
    ("c0.001", "logreg_c", "regularization", {"C": 0.001}),
    ("c0.003", "logreg_c", "regularization", {"C": 0.003}),
    ("c0.01", "logreg_c", "regularization", {"C": 0.01}),
    ("c0.03", "logreg_c", "regularization", {"C": 0.03}),
    ("c1", "logreg_c", "regularization", {"C": 1.0}),
    ("c10", "logreg_c", "regularization", {"C": 10.0}),
    # drop_feature: the baseline minus one feature: flat (either education column: the
    # other carries the same information) to a clear loss (capital_gain -0.017)
    *((f"drop_{f}", "drop_feature", "features", {"FEATURES": _without(f)}) for f in BASE_FEATURES),
    # add_feature: the two columns the baseline leaves out: flat on logreg (+0.0002 to +0.0004)
    ("add_fnlwgt", "add_feature", "features", {"FEATURES": _with("fnlwgt")}),
    ("add_native_country", "add_feature", "features", {"FEATURES": _with("native_country")}),
    ("add_fnlwgt_native_country", "add_feature", "features", {"FEATURES": _with("fnlwgt", "native_country")}),
    # hgb_features: the hgb model with a feature added or dropped: hgb's gain (+0.017) or,
    # without capital gains (and losses), a loss (-0.002, -0.011)
    ("hgb_add_fnlwgt", "hgb_features", "features", {**HGB, "FEATURES": _with("fnlwgt")}),
    ("hgb_add_native_country", "hgb_features", "features", {**HGB, "FEATURES": _with("native_country")}),
    ("hgb_drop_relationship", "hgb_features", "features", {**HGB, "FEATURES": _without("relationship")}),
    ("hgb_drop_capital_gain", "hgb_features", "features", {**HGB, "FEATURES": _without("capital_gain")}),
    ("hgb_drop_capital_gain_loss", "hgb_features", "features",
     {**HGB, "FEATURES": _without("capital_gain", "capital_loss")}),
]

QUICK_IDS = [
    BASELINE_ID,
    "hgb_lr0.05_d3_i200", "hgb_lr0.1_d3_i200",                      # model
    "hgb_lr0.01_d3_i200", "hgb_lr0.03_d2_i100", "hgb_lr0.01_d2_i100",  # hgb_small
    "hgb_lr0.1_d5_i200", "hgb_lr0.3_d8_i400",                       # hgb_trees
    "c0.001", "c0.01", "c1",                                        # logreg_c
    "drop_age", "drop_education_num", "drop_capital_gain",          # drop_feature
    "add_native_country",                                           # add_feature
    "hgb_drop_capital_gain",                                        # hgb_features
]


# --- the world --------------------------------------------------------------------------

@dataclass(frozen=True)
class Config:
    """One configuration and its recorded runs: valid/test AUC and fit seconds per seed, in
    the world's seed order."""

    id: str
    arm: str
    family: str
    params: dict
    valid: list[float]
    test: list[float]
    seconds: list[float]

    def mean_valid(self) -> float:
        return statistics.fmean(self.valid)

    def mean_test(self) -> float:
        return statistics.fmean(self.test)


@dataclass(frozen=True)
class World:
    configs: list[Config]
    baseline: str                          # a config id
    metric: str = "auc"
    min_effect: float = 0.002
    name: str = "full"
    seeds: tuple[int, ...] = FULL_SEEDS
    build_seconds: float = 0.0             # wall time of the build (data, training, scoring)
    path: Path | None = field(default=None, compare=False)

    def config(self, config_id: str) -> Config:
        for c in self.configs:
            if c.id == config_id:
                return c
        raise KeyError(f"no configuration {config_id!r} in the {self.name} world")

    def arms(self) -> dict[str, list[Config]]:
        """Configurations by arm, in the world's order (the baseline's arm included)."""
        out: dict[str, list[Config]] = {}
        for c in self.configs:
            out.setdefault(c.arm, []).append(c)
        return out


def true_effect(world: World, config_id: str) -> float:
    """Mean over seeds of test(config) - test(baseline), paired by seed."""
    config, base = world.config(config_id), world.config(world.baseline)
    return statistics.fmean(t - b for t, b in zip(config.test, base.test, strict=True))


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def world_specs(quick: bool) -> tuple[str, list[tuple[str, str, str, dict]], tuple[int, ...]]:
    """(name, configuration specs, seeds) of the quick or the full world."""
    ids = [spec[0] for spec in FULL_CONFIGS]
    if len(set(ids)) != len(ids) or BASELINE_ID not in ids:
        raise ValueError("configuration ids must be unique and include the baseline")
    if not quick:
        return "full", FULL_CONFIGS, FULL_SEEDS
    by_id = {spec[0]: spec for spec in FULL_CONFIGS}
    return "quick", [by_id[i] for i in QUICK_IDS], QUICK_SEEDS


def load_world(quick: bool = False, progress: Callable[[str], None] = _stderr) -> World:
    """The quick or full world: from the cache, else trained now (progress lines while it
    trains; by default on stderr) and cached."""
    name, specs, seeds = world_specs(quick)
    path = world_path(name, specs, seeds)
    if path.is_file():
        return _from_json(json.loads(path.read_text()), path)
    progress(f"building the {name} world: {len(specs)} configurations x {len(seeds)} seeds of "
             f"{TEMPLATE.name}, once; cached at {path}")
    data, arrays = build(name, specs, seeds, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    _write_atomic(scores_path(path), buf.getvalue())           # first: a world's JSON implies its scores
    _write_atomic(path, json.dumps(data, indent=1).encode())
    progress(f"{name} world built in {data['build_seconds']:.0f}s: {path}")
    return _from_json(data, path)


def scores_path(path: Path) -> Path:
    """The world's per-row test scores, next to its JSON."""
    return path.with_suffix(".npz")


@dataclass(frozen=True)
class RecordedScores:
    """Every recorded run's test predictions, for the evaluator's own statistics
    (tools.stats.paired_effect(control, treatment, labels, units): a list per arm of one
    score array per seed, aligned with labels; units = row_ids, since adult-income's
    bootstrap resamples rows)."""

    labels: np.ndarray                 # (rows,) 0/1, the test split in row_id order
    row_ids: np.ndarray                # (rows,)
    scores: dict[str, np.ndarray]      # config id -> (seeds, rows), the world's seed order


def recorded_scores(world: World) -> RecordedScores:
    """Load the world's test predictions (about 10 MB for the full world)."""
    if world.path is None or not scores_path(world.path).is_file():
        raise FileNotFoundError(f"the {world.name} world has no recorded scores next to {world.path}")
    with np.load(scores_path(world.path)) as npz:
        ids = [str(i) for i in npz["config_ids"]]
        return RecordedScores(npz["labels"], npz["row_ids"], dict(zip(ids, npz["scores"], strict=True)))


def world_path(name: str, specs, seeds) -> Path:
    blob = json.dumps({
        "format": FORMAT, "configs": specs, "seeds": list(seeds),
        "train.py": _sha256(TEMPLATE / "train.py"), "data.py": _sha256(TEMPLATE / "data.py"),
        "sklearn": _sklearn_version(),
    }, sort_keys=True)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:12]
    return cache_dir() / "evolution-world" / f"{name}-{digest}.json"


def _from_json(data: dict, path: Path | None) -> World:
    configs = [Config(c["id"], c["arm"], c["family"], c["params"], c["valid"], c["test"], c["seconds"])
               for c in data["configs"]]
    return World(configs, data["baseline"], data["metric"], data["min_effect"], data["name"],
                 tuple(data["seeds"]), data["build_seconds"], path)


# --- building: real runs ------------------------------------------------------------------

def build(name: str, specs, seeds, progress: Callable[[str], None]) -> tuple[dict, dict[str, np.ndarray]]:
    """Train every configuration with every seed, one run at a time: the world's JSON and
    its arrays (test labels, row ids, config ids, scores[config, seed, row])."""
    import pandas as pd
    from threadpoolctl import threadpool_limits

    from tools.scoring import auc

    manifest = tomllib.loads((TEMPLATE / "agentx.toml").read_text())
    metric = manifest["metric"]["primary"]
    if metric != "auc":
        raise ValueError(f"{TEMPLATE.name}: the world records AUC, the template's metric is {metric}")
    label = manifest["data"]["label_column"]
    started = time.monotonic()
    folder = prepare_splits(progress)
    frames = {split: pd.read_csv(folder / f"{split}.csv") for split in ("train", "valid", "test")}
    progress(f"splits {folder}: " + ", ".join(f"{s} {len(f)} rows" for s, f in frames.items()))
    labels = {split: frames[split][label].to_numpy() for split in ("valid", "test")}
    _check_baseline(_load_train(0))

    configs, fits, scores = [], 0.0, []
    with threadpool_limits(1):          # main() limits the kernel to one OpenMP/BLAS thread
        for i, (config_id, arm, family, params) in enumerate(specs, 1):
            t0 = time.monotonic()
            module = _load_train(i)
            for knob, value in params.items():
                if knob not in BASE_KNOBS and knob != "FEATURES":
                    raise ValueError(f"{config_id}: {knob} is not a knob of {TEMPLATE.name}")
                setattr(module, knob, list(value) if knob == "FEATURES" else value)
            record = {"id": config_id, "arm": arm, "family": family, "params": params,
                      "valid": [], "test": [], "seconds": []}
            for seed in seeds:
                np.random.seed(seed)
                fit0 = time.perf_counter()
                pipeline = module.build_model(seed).fit(frames["train"][module.FEATURES],
                                                        frames["train"][label].to_numpy())
                record["seconds"].append(round(time.perf_counter() - fit0, 3))
                predictor = module.Predictor(pipeline)
                for split in ("valid", "test"):
                    predicted = np.round(predictor.predict(frames[split]), 8)   # main() writes "%.8f"
                    record[split].append(auc(labels[split], predicted))
                scores.append(predicted)
            fits += sum(record["seconds"])
            configs.append(record)
            progress(f"config {i}/{len(specs)} {config_id} ({arm}): valid "
                     f"{statistics.fmean(record['valid']):.4f} test {statistics.fmean(record['test']):.4f} "
                     f"in {time.monotonic() - t0:.1f}s (elapsed {time.monotonic() - started:.0f}s)")
    arrays = {"labels": labels["test"].astype(np.int8),
              "row_ids": frames["test"][manifest["data"]["id_column"]].to_numpy(),
              "config_ids": np.array([c["id"] for c in configs]),
              "scores": np.stack(scores).reshape(len(specs), len(seeds), -1)}
    return {
        "format": FORMAT, "name": name, "template": TEMPLATE.name, "baseline": BASELINE_ID,
        "metric": metric, "min_effect": float(manifest["metric"]["min_effect"]), "seeds": list(seeds),
        "train_py_sha256": _sha256(TEMPLATE / "train.py"), "sklearn": _sklearn_version(),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "build_seconds": round(time.monotonic() - started, 1),
        "fit_seconds": round(fits, 1), "configs": configs,
    }, arrays


def prepare_splits(progress: Callable[[str], None]) -> Path:
    """train/valid/test (with labels) written by the template's data.py, as the harness
    calls it (prepare(cache_dir()/"datasets", out_dir)); once per data.py version."""
    folder = cache_dir() / "evolution-world" / f"splits-{_sha256(TEMPLATE / 'data.py')[:16]}"
    if (folder / "DONE").is_file():
        return folder
    progress(f"preparing the {TEMPLATE.name} splits with its data.py")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    spec = importlib.util.spec_from_file_location("_evolution_world_data", TEMPLATE / "data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.prepare(cache_dir() / "datasets", staging)
    (staging / "DONE").write_text("")
    try:
        staging.rename(folder)
    except OSError:                      # another process got there first: use theirs
        import shutil
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _load_train(i: int):
    """A fresh copy of the template's train.py module (its knobs at train.py's values)."""
    name = f"_evolution_world_train_{i}"
    spec = importlib.util.spec_from_file_location(name, TEMPLATE / "train.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module           # its @dataclass looks its module up while defining it
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
    return module


def _check_baseline(module) -> None:
    actual = {knob: getattr(module, knob) for knob in BASE_KNOBS}
    if actual != BASE_KNOBS or list(module.FEATURES) != BASE_FEATURES:
        raise ValueError(f"{TEMPLATE / 'train.py'}'s defaults changed ({actual}, FEATURES "
                         f"{module.FEATURES}); update BASE_KNOBS / BASE_FEATURES and the configurations")


def _sklearn_version() -> str:
    return importlib.metadata.version("scikit-learn")     # without importing it: loading stays instant


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o644)
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- the table ------------------------------------------------------------------------------

def table(world: World) -> str:
    head = (f"{'config':<26} {'arm':<13} {'valid':>7} {'test':>7} {'effect':>8} {'sd':>7} "
            f"{'seconds':>7}")
    lines = [head, "-" * len(head)]
    for c in world.configs:
        sd = statistics.stdev(c.test) if len(c.test) > 1 else 0.0
        lines.append(f"{c.id:<26} {c.arm:<13} {c.mean_valid():7.4f} {c.mean_test():7.4f} "
                     f"{true_effect(world, c.id):+8.4f} {sd:7.4f} {statistics.fmean(c.seconds):7.2f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the smaller world (fewer configurations and seeds)")
    args = parser.parse_args()
    t0 = time.monotonic()
    world = load_world(quick=args.quick)
    loaded = time.monotonic() - t0
    print(f"{world.name} world: {len(world.configs)} configurations x {len(world.seeds)} seeds "
          f"{list(world.seeds)}, metric {world.metric}, min_effect {world.min_effect}, baseline {world.baseline}")
    print("effect = mean over seeds of test(config) - test(baseline), paired by seed; "
          "sd = the config's test AUC over seeds; seconds = mean fit")
    print(table(world))
    print(f"built in {world.build_seconds:.0f}s (training, once); this call took {loaded:.1f}s; cache {world.path}")


if __name__ == "__main__":
    main()

"""One training run, judged by the harness: materialise, execute in a kernel, check, score.

The agent's code only ever runs inside the kernel. Everything that decides whether a run
counts happens here, in the harness process: which rows the kernel gets (no labels for
valid and test), whether protected files changed (hashed before and after), whether the
predictions are complete and finite, and the metrics themselves.
"""

from __future__ import annotations

import ast
import hashlib
import json
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agentx.paths import state_dir
from agentx.workspace import Manifest
from tools.pool import KernelPool
from tools.sandbox import ExecutionResult, Sandbox
from tools.scoring import InvalidPredictions, auc, popularity_scores, score_run
from tools.splits import Splits, materialise, prepare_splits

# Kernel status -> the failure kind lessons and reports use.
FAILURE_KIND = {"error": "crash", "timeout": "timeout", "memory": "memory", "died": "died"}

BOOT = """\
import importlib, os, sys, time
sys.path.insert(0, os.getcwd())
_agentx_t0 = time.perf_counter()
_agentx_model = getattr(importlib.import_module({module!r}), {function!r})({run_dir!r})
_agentx_train_s = time.perf_counter() - _agentx_t0
"""

# Harness-owned measurement in the kernel: parameter count and inference latency of the
# trained model on a fixed batch of the run's own test rows.
REPORT = """\
def _agentx_report(model, batch_csv, repeats=30, rows=256):
    import json, time
    out = {{"train_seconds": _agentx_train_s, "num_params": getattr(model, "num_params", None),
           "device": str(getattr(model, "device", "cpu")), "p95_latency_ms": None}}
    predict = getattr(model, "predict", None)
    if callable(predict):
        import pandas as pd
        batch = pd.read_csv(batch_csv).head(rows)
        for _ in range(3):
            predict(batch)
        times = []
        for _ in range(repeats):
            t = time.perf_counter(); predict(batch); times.append((time.perf_counter() - t) * 1000)
        times.sort()
        out["p95_latency_ms"] = times[min(len(times) - 1, int(0.95 * len(times)))]
    return json.dumps(out)
_agentx_report(_agentx_model, {batch_csv!r})
"""


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    status: str                     # ok | invalid | error | timeout | memory | died
    failure_kind: str | None = None
    failure_detail: str | None = None
    metrics: dict[tuple[str, str], float] = field(default_factory=dict)
    kernel_start_s: float = 0.0
    exec_s: float = 0.0
    wall_s: float = 0.0
    reused: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def metric(self, split: str, name: str) -> float | None:
        return self.metrics.get((split, name))


def protected_digest(root: Path, rules: list[str]) -> dict[str, str]:
    """sha256 of every file under the protected rules (a missing file hashes as 'absent')."""
    digest = {}
    for rule in rules:
        target = root / rule
        files = sorted(p for p in target.rglob("*") if p.is_file()) if target.is_dir() else [target]
        for path in files:
            rel = str(path.relative_to(root))
            digest[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "absent"
    return digest


def _changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


class Harness:
    """Runs the workspace's entrypoint on a checkout and records the outcome in the KB."""

    def __init__(self, workspace: Path, manifest: Manifest, kb, cache: Path, *,
                 python: str = sys.executable, extra_env: dict[str, str] | None = None,
                 memory_limit_mb: int | None = 8192, progress: Callable[[str], None] = lambda _: None,
                 warm_kernels: bool = False):
        self.workspace = Path(workspace)
        self.manifest = manifest
        self.kb = kb
        self.cache = Path(cache)
        self.python = python
        self.extra_env = dict(extra_env or {})
        self.memory_limit_mb = memory_limit_mb
        self.progress = progress
        self._splits: Splits | None = None
        # Warm kernels (tools/pool.py): start-up and library imports happen before a run needs them.
        self.pool = KernelPool(python=python, extra_env=self.extra_env, memory_limit_mb=memory_limit_mb,
                               preload=manifest.train.preload) if warm_kernels else None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()

    @property
    def splits(self) -> Splits:
        if self._splits is None:
            self.progress("preparing data splits (the protected data module, run by the harness)")
            self._splits = prepare_splits(self.workspace, self.manifest, self.cache)
        return self._splits

    def reusable(self, commit: str, tier: str, seed: int) -> RunOutcome | None:
        """A finished, valid run of the same commit, tier and seed: no need to train it again."""
        rows = self.kb.query(
            "SELECT id, kernel_start_s, exec_s, wall_s FROM runs WHERE commit_sha = ? AND tier = ? "
            "AND seed = ? AND status = 'ok' ORDER BY finished_at DESC LIMIT 1", [commit, tier, seed])
        if not rows:
            return None
        row = rows[0]
        return RunOutcome(row["id"], "ok", metrics=self.kb.metrics_for(row["id"]), reused=True,
                          kernel_start_s=row["kernel_start_s"] or 0.0, exec_s=row["exec_s"] or 0.0,
                          wall_s=row["wall_s"] or 0.0)

    def run(self, checkout: Path, commit: str, *, tier: str, seed: int, arm: str,
            experiment_id: str | None = None, reuse: bool = False) -> RunOutcome:
        if reuse and (found := self.reusable(commit, tier, seed)):
            self.progress(f"reusing run {found.run_id} ({arm}, {tier}, seed {seed})")
            return found
        started = time.perf_counter()
        tier_spec = getattr(self.manifest.tiers, tier)
        run_id = f"R-{uuid.uuid4().hex[:10]}"
        run_dir = state_dir(self.workspace) / "runs" / run_id
        splits = self.splits
        materialise(splits, run_dir, tier, tier_spec, seed, run_id)
        self.kb.add_run(id=run_id, experiment_id=experiment_id, arm=arm, commit_sha=commit, seed=seed,
                        tier=tier, status="running", run_dir=str(run_dir))
        rules = self.manifest.paths.protected
        reference = protected_digest(self.workspace, rules)
        self.progress(f"{run_id}: {arm} {tier} seed {seed} in a fresh kernel")

        result, report = self._execute(checkout, run_dir, tier_spec.timeout_s)
        # The checkout must match the base after the run (neither the branch nor the kernel may
        # change a protected path), and the base itself must be untouched.
        tampered = sorted(set(_changed(reference, protected_digest(checkout, rules)))
                          | set(_changed(reference, protected_digest(self.workspace, rules))))
        outcome = self._judge(run_id, run_dir, result, report, tampered, tier)
        outcome = RunOutcome(**{**outcome.__dict__, "wall_s": time.perf_counter() - started,
                                "kernel_start_s": report.get("kernel_start_s", 0.0),
                                "exec_s": result.duration_s})
        self._record(outcome, report)
        return outcome

    def _execute(self, checkout: Path, run_dir: Path, timeout_s: float) -> tuple[ExecutionResult, dict]:
        module, function = self.manifest.train.module, self.manifest.train.function
        deadline = time.perf_counter() + timeout_s
        if self.pool is not None:
            box, kernel_start_s = self.pool.take(checkout)
        else:
            box = Sandbox(checkout, python=self.python, extra_env=self.extra_env, memory_limit_mb=self.memory_limit_mb)
            kernel_start_s = box.start()
        with box:
            result = box.execute(BOOT.format(module=module, function=function, run_dir=str(run_dir)),
                                 timeout_s=max(1.0, deadline - time.perf_counter()))
            report: dict = {"kernel_start_s": kernel_start_s}
            if result.ok:
                measured = box.execute(REPORT.format(batch_csv=str(run_dir / "test.csv")), timeout_s=60)
                if measured.ok and measured.result_text:
                    report.update(json.loads(ast.literal_eval(measured.result_text)))
        (run_dir / "kernel.log").write_text(result.stdout + result.stderr + (result.traceback or ""))
        return result, report

    def _judge(self, run_id: str, run_dir: Path, result: ExecutionResult, report: dict,
               tampered: list[str], tier: str) -> RunOutcome:
        if tampered:
            return RunOutcome(run_id, "invalid", "tamper", "protected paths changed: " + ", ".join(tampered))
        if not result.ok:
            detail = "\n".join(filter(None, [result.detail, result.traceback or result.stderr]))[-2000:]
            return RunOutcome(run_id, result.status, FAILURE_KIND[result.status], detail)
        try:
            metrics = score_run(self.splits, run_dir, [self.manifest.metric.primary, *self.manifest.metric.secondary])
        except InvalidPredictions as exc:
            return RunOutcome(run_id, "invalid", exc.kind, exc.detail)
        if getattr(self.manifest.tiers, tier).eval_rows is None:   # a reference only on the whole slice
            popular = popularity_scores(self.splits, self.manifest.data.item_column, run_dir)
            metrics[("test", "popularity_auc")] = auc(popular.labels, popular.scores)
        for name in ("train_seconds", "num_params", "p95_latency_ms"):
            if isinstance(report.get(name), (int, float)):
                metrics[("run", name)] = float(report[name])
        return RunOutcome(run_id, "ok", metrics=metrics)

    def _record(self, outcome: RunOutcome, report: dict) -> None:
        self.kb.finish_run(outcome.run_id, status=outcome.status, failure_kind=outcome.failure_kind,
                           failure_detail=outcome.failure_detail, kernel_start_s=outcome.kernel_start_s,
                           exec_s=outcome.exec_s, wall_s=outcome.wall_s, device=report.get("device", "cpu"))
        by_split: dict[str, dict[str, float]] = {}
        for (split, name), value in outcome.metrics.items():
            by_split.setdefault(split, {})[name] = value
        for split, values in by_split.items():
            self.kb.add_metrics(outcome.run_id, split, values)
        self.kb.log_event("run_finished", {"run_id": outcome.run_id, "status": outcome.status,
                                           "failure_kind": outcome.failure_kind, "wall_s": outcome.wall_s})

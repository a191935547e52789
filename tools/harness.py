"""One training run, judged by the harness: materialise, execute in a kernel, check, score.

The agent's code only ever runs inside the kernel, and the kernel runs inside the OS
sandbox (tools/confine.py: its code read-only, one capped writable run directory, no view
of the labels, the KB, the main checkout or home, its own PID and network namespaces)
unless the harness was made with `sandboxed=False` (`--unsandboxed`; every run row then
says `sandbox = 'none'`). Each run gets a fresh kernel and a slot from the harness's
executor (tools/executors: this machine, one lane per free GPU, by default; a Ray cluster
with `executor="ray..."`): the code and the run's label-free rows are staged there, the
entrypoint runs, and the run directory comes back to `.agentx/runs/<run id>`. Everything
that decides whether a run counts happens here, in the harness process, whatever the
executor: which rows the kernel
gets (no labels for valid and test), whether protected files equal main's committed blobs
(before a kernel is spent, and after), whether the predictions are complete and finite,
and the metrics themselves.

Detectors, in the order `_judge` applies them (the first that fires names the failure):

- tamper: a protected path (data module, manifest, ...) differs from the blobs of main's
  head commit (git objects, never the working tree), in the code to run (checked before a
  kernel starts, and after the run) or in the main checkout after the run; or the run
  changed the valid/test rows it was given (compared with the harness's cached copy),
  which would let it choose the rows it is scored on. In the sandbox none of these can be
  written; the checks matter for `--unsandboxed` runs and for branches that edit a
  protected file.
- leak: before any workspace code runs, the BOOT cell installs a Python audit hook
  (`sys.addaudithook`: it cannot be removed). It records `open` (also `os.open`, pathlib
  and pandas reads), `os.listdir`, `os.scandir` (`os.walk`, `Path.rglob`), `glob.glob`,
  `os.chdir`, link/rename/copy events on a path under a harness-owned one: the cache
  (labelled splits, raw datasets), `Splits.root` and its parent, the KB file, the audit
  logs, other runs' directories. The run's own directory and the checkout are allowed;
  where rules nest the deepest wins (a checkout at the workspace root does not allow
  `.agentx/runs`). `subprocess.Popen`, `os.system`, `os.exec*`, `os.posix_spawn` and
  `os.spawn*` count when their command line or cwd names such a path (literally, as
  `~/...` or `$AGENTX_CACHE_DIR`). Hits are appended at once to a harness-owned log
  outside the run directory (it survives a timeout or a killed kernel) and kept in the
  kernel, whose list a harness-owned cell reads after the run; the harness takes both.
  NOT caught: native code that bypasses audit events (ctypes into libc, extensions that
  open files themselves: duckdb's or pyarrow's CSV readers, `np.fromfile`), a subprocess
  whose command line does not name the path (a script reading `$AGENTX_CACHE_DIR`
  itself: the child has no hook), probes without opening (`os.stat`, `os.path.exists`),
  and code that sabotages the hook's list and log from inside the same process. It is a
  tripwire for mistakes and naive label hunting, not a security boundary; the sandbox is
  the boundary. Inside it none of the watched paths exists (the kernel is handed the
  cache's path in $AGENTX_CACHE_DIR as a decoy), so the hook names the attempt while the
  sandbox makes it fail.
- disk: the run directory went over `[sandbox] run_dir_mb`, a write inside the kernel or
  in the harness failed for lack of space, or the disk had less than the cap plus 1 GB
  free before the run (then no kernel starts). The detail shows the free space.
- crash / timeout / memory / died: the kernel's own status (tools/sandbox.py).
- missing_file, format, duplicate_rows, missing_rows, nan, constant: the prediction files,
  checked in tools/scoring.py (`constant`: scores with near-zero spread on a split).
- misaligned: the harness-owned REPORT cell calls the returned model's `predict()` on the
  first rows of the run's test.csv (the latency batch) and sends back those scores with
  their row ids; they must match what the entrypoint wrote for the same ids
  (`tools.scoring.check_alignment`: a max abs difference over 1e-3 when predict() is
  deterministic; a rank correlation far below predict()'s own run-to-run agreement when
  it is not). A model without a working predict() skips this check; the evaluator's
  latency guardrail then has no measurement and vetoes.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agentx.errors import UserError
from agentx.paths import state_dir
from agentx.workspace import Manifest
from tools.confine import Confinement, probe
from tools.executors import Executor, KernelConfig, KernelJob, RunResult, RunSpec, open_executor
from tools.executors.node import confinement_for
from tools.pool import Slot
from tools.staging import changed, entrypoint_file, protected_digest
from tools.scoring import (InvalidPredictions, check_alignment, metric_value, popularity_scores, score_run,
                           users_of)
from tools.derived import DerivedError, check, column_types, load_catalog_or_none, requested, with_derived
from tools.splits import EVAL_SPLITS, Splits, prepare_splits, run_config, tier_rows

# Kernel status -> the failure kind lessons and reports use. `lost` is not the code's: the node
# running it died, or no node took it (tools/executors/ray_cluster.py); see RunLost.
FAILURE_KIND = {"error": "crash", "timeout": "timeout", "memory": "memory", "died": "died", "disk": "disk",
                "lost": "lost"}

DISK_RESERVE_MB = 1024              # free space a run needs besides its run directory's cap


class RunLost(RuntimeError):
    """A run the executor lost after its retries (a Ray node died mid-run, or no node took
    it in time). Raised by the evaluator and the developer instead of judging the code on
    it: a lost run is no evidence about the code, so it is never a veto, a repair or a
    failure of the experiment's recipe. The loop stops the experiment (or, where it does
    not catch this, the command); running the command again resumes, and the runs that
    finished are reused."""

    def __init__(self, outcome: "RunOutcome"):
        super().__init__(f"run {outcome.run_id} was lost: {outcome.failure_detail}; the experiment was not judged "
                         "on it: check the cluster (`ray status`) and run the same command again to resume "
                         "(finished runs are reused)")
        self.outcome = outcome


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    status: str                     # ok | invalid | error | timeout | memory | died | disk | lost
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

    @property
    def lost(self) -> bool:
        """The executor lost the run (its node died, or none took it): no fault of the code."""
        return self.status == "lost"

    def metric(self, split: str, name: str) -> float | None:
        return self.metrics.get((split, name))


class Harness:
    """Runs the workspace's entrypoint on a checkout and records the outcome in the KB."""

    def __init__(self, workspace: Path, manifest: Manifest, kb, cache: Path, *,
                 python: str = sys.executable, extra_env: dict[str, str] | None = None,
                 memory_limit_mb: int | None = 8192, progress: Callable[[str], None] = lambda _: None,
                 warm_kernels: bool = False, sandboxed: bool = True, executor: str = "local"):
        """`sandboxed=False` runs kernels without the OS sandbox (`--unsandboxed`): every run
        row, verdict and pull request then says so. With it, a machine without bubblewrap
        makes the first run (or warm kernels, at once) raise SandboxUnavailable. `executor`
        says where kernels run (tools/executors: "local", "ray", "ray://HOST:PORT",
        "ray:HOST:PORT"); scoring stays here whatever it says."""
        self.workspace = Path(workspace)
        self._manifest = manifest
        self.kb = kb
        self.cache = Path(cache)
        self.python = python
        # A decoy for label hunters: the cache's real path, which does not exist inside the
        # sandbox; code that looks there is caught by the audit hook as a leak.
        self._extra_env = {"AGENTX_CACHE_DIR": str(self.cache), **(extra_env or {})}
        self.progress = progress
        # tier name -> fields that override the manifest's, plus "memory_mb" (a lower kernel memory
        # cap for that tier): the active harness version's micro settings (agents/harness_spec.py;
        # set by agentx.context.Workspace.open)
        self.tier_overrides: Callable[[str], dict] = lambda _: {}
        self._splits: Splits | None = None
        self._splits_head: str | None = None
        self._splits_lock = threading.RLock()
        self._repo = None
        self._popularity_cache: dict[str, float] = {}
        self._reference: tuple[str, dict[str, str]] | None = None   # (main's head, its protected blobs)
        self._sandboxed, self._memory_limit_mb = sandboxed, memory_limit_mb
        self._executor_spec, self._warm = executor or "local", warm_kernels
        self.executor: Executor = self._open_executor()

    def kernel_config(self) -> KernelConfig:
        """How this harness's kernels are made, wherever they run (a remote node uses its own python)."""
        spec = self.manifest.sandbox
        return KernelConfig(python=self.python if self._executor_spec == "local" else None, env=self.extra_env,
                            memory_limit_mb=self._memory_limit_mb, preload=tuple(self.manifest.train.preload),
                            warm=self._warm, sandboxed=self._sandboxed, network=spec.network,
                            run_mb=spec.run_dir_mb, tmp_mb=spec.tmp_mb)

    @property
    def hidden(self) -> dict[str, Path]:
        """Folders a local kernel must not see."""
        return {"the workspace": self.workspace, "the cache": self.cache}

    def _open_executor(self) -> Executor:
        """Where kernels run (warm kernels start now: start-up and imports happen before a run needs them)."""
        if self._sandboxed and self._warm and self._executor_spec == "local":
            probe()                                # no sandbox: say so now, not in a pool thread
        self._config = self.kernel_config()
        return open_executor(self._executor_spec, self._config, slots=self.slots, hidden=self.hidden,
                             progress=self.progress)

    def _reopen(self) -> None:
        self.executor.close()
        self.executor = self._open_executor()

    @property
    def manifest(self) -> Manifest:
        return self._manifest

    @manifest.setter
    def manifest(self, value: Manifest) -> None:
        """A changed manifest; when it changes how kernels are made (its [sandbox] or preload),
        the executor is opened again."""
        self._manifest = value
        if getattr(self, "_config", None) is not None and self.kernel_config() != self._config:
            self._reopen()

    @property
    def sandboxed(self) -> bool:
        return self._sandboxed

    @sandboxed.setter
    def sandboxed(self, value: bool) -> None:
        """Kernels made from now on are (not) confined: the executor is opened again."""
        if value != self._sandboxed:
            self._sandboxed = value
            self._reopen()

    @property
    def extra_env(self) -> dict[str, str]:
        return self._extra_env

    @extra_env.setter
    def extra_env(self, value: dict[str, str]) -> None:
        """What kernels made from now on get besides the allowlist (the executor is opened again)."""
        self._extra_env = dict(value)
        self._reopen()

    @property
    def memory_limit_mb(self) -> int | None:
        return self._memory_limit_mb

    @memory_limit_mb.setter
    def memory_limit_mb(self, value: int | None) -> None:
        if value != self._memory_limit_mb:
            self._memory_limit_mb = value
            self._reopen()

    @property
    def isolation(self) -> str:
        """What confines this harness's kernels: 'bwrap', or 'none' (--unsandboxed)."""
        return "bwrap" if self.sandboxed else "none"

    @property
    def slots(self) -> Path:
        return state_dir(self.workspace) / "slots"

    def confinement(self, slot: Slot) -> Confinement | None:
        """The sandbox of a local kernel working in `slot` (None when unsandboxed)."""
        config = KernelConfig(sandboxed=self.sandboxed, network=self.manifest.sandbox.network,
                              run_mb=self.manifest.sandbox.run_dir_mb, tmp_mb=self.manifest.sandbox.tmp_mb)
        return confinement_for(config, slot, self.python, self.hidden)

    def close(self) -> None:
        self.executor.close()

    def gpu_minutes(self, since: float | None = None) -> float:
        """Minutes kernels holding a GPU spent executing, over the runs started since `since`
        (epoch seconds; None: all): what a GPU-minutes budget counts (agentx/state.py)."""
        import datetime as dt

        start = dt.datetime.fromtimestamp(since or 0.0, dt.UTC).replace(tzinfo=None)
        rows = self.kb.query("SELECT coalesce(sum(exec_s), 0) AS s FROM runs WHERE device LIKE 'cuda%' "
                             "AND started_at >= ?", [start])
        return float(rows[0]["s"]) / 60.0

    @property
    def splits(self) -> Splits:
        """The splits of main's head, made by the data module read from its git objects, once
        per main head and only after its protected files matched the trusted ledger
        (tools/trust.py: ProtectedChangedError otherwise)."""
        from tools.trust import verify_protected

        with self._splits_lock:           # parallel experiments: one of them prepares, the others wait
            if self._splits is None or self._splits_head != self.repo.head():
                head = verify_protected(self.repo, self.kb, self.manifest)
                self.progress("preparing data splits (the protected data module of main, run by the harness)")
                self._splits, self._splits_head = prepare_splits(self.repo, head, self.manifest, self.cache), head
            return self._splits

    @property
    def repo(self):
        """The workspace's git repository (opened once, without hooks: tools/git_safe.py)."""
        from tools.git_repo import WorkspaceRepo

        if self._repo is None:
            self._repo = WorkspaceRepo(self.workspace)
        return self._repo

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
        phases: dict[str, float] = {}   # where the harness's own time goes (the orchestration benchmark)

        def lap(name: str, since: float) -> float:
            now = time.perf_counter()
            phases[name] = round(phases.get(name, 0.0) + now - since, 4)
            return now

        tier_spec = self.tier(tier)
        module = self.manifest.train.module
        has_entrypoint = entrypoint_file(Path(checkout), module) is not None
        if not has_entrypoint and entrypoint_file(self.workspace, module) is None:
            raise UserError(f"the entrypoint {self.manifest.train.entrypoint!r} ([train] entrypoint in agentx.toml) "
                            f"names module {module!r}, which is neither in {checkout} nor in {self.workspace}; "
                            "fix the manifest or add the module")
        run_id = f"R-{uuid.uuid4().hex[:10]}"
        run_dir = state_dir(self.workspace) / "runs" / run_id
        splits = self.splits
        t = lap("materialise", started)
        self.kb.add_run(id=run_id, experiment_id=experiment_id, arm=arm, commit_sha=commit, seed=seed,
                        tier=tier, status="running", run_dir=str(run_dir), sandbox=self.isolation,
                        network=self.sandboxed and self.manifest.sandbox.network)
        t = lap("kb", t)
        rules = self.manifest.paths.protected
        reference = self.protected_reference()
        # The code to run must carry the base's protected files: checked before a kernel is spent.
        early = changed(reference, protected_digest(Path(checkout), rules))
        if early:
            outcome = RunOutcome(run_id, "invalid", "tamper", "protected paths differ from the base commit: "
                                 + ", ".join(early))
        elif (short := self._short_of_disk()) is not None:
            outcome = RunOutcome(run_id, "disk", "disk", short)
        elif not has_entrypoint:
            outcome = RunOutcome(run_id, "error", "crash", f"the entrypoint module {module!r} is missing from "
                                 "this commit (it was deleted or renamed); no kernel was started")
        else:
            outcome = None
        rows = None                      # the tier's rows, with the derived columns the code's features knobs list
        if outcome is None:
            try:
                rows = self._rows(Path(checkout), splits, tier_spec)
            except DerivedError as exc:
                outcome = RunOutcome(run_id, "invalid", "derived", f"{exc}; no kernel was started")
        t = lap("protect", t)
        if outcome is not None:
            self._record(outcome, {}, phases)
            return outcome
        self.progress(f"{run_id}: {arm} {tier} seed {seed} in a fresh kernel"
                      + ("" if self.sandboxed else " (unsandboxed)"))
        done = self.executor.execute(self._spec(Path(checkout), run_id, run_dir, tier, tier_spec, seed, rows))
        result, report = done.result, {**done.report, "node": done.node, "attempts": done.attempts,
                                       "device": done.device}
        t = lap("kernel", t)
        if done.attempts > 1:
            self.progress(f"{run_id}: retried after a lost node ({done.attempts} attempts)")
        if done.lost is not None:             # the node died or never took it: not the code's doing
            outcome = RunOutcome(run_id, "lost", "lost", done.lost)
        elif result is None:                  # the harness itself could not write (a full disk)
            outcome = RunOutcome(run_id, "disk", "disk", done.disk)
        else:
            # Neither the code the kernel ran nor the main checkout may have changed a protected path.
            tampered = sorted(set(changed(reference, done.after))
                              | set(changed(reference, protected_digest(self.workspace, rules))))
            # the rows it was given to score: writing fewer (or other) rows into them would make
            # the missing-rows check, and every later join, judge a different slice
            given = rows
            tampered += [f"{run_id}/{split}.csv" for split in EVAL_SPLITS
                         if not (run_dir / f"{split}.csv").is_file()
                         or not filecmp.cmp(run_dir / f"{split}.csv", given / f"{split}.csv", shallow=False)]
            t = lap("protect", t)
            outcome = self._judge(run_id, run_dir, result, report, tampered, done.touched, tier)
        t = lap("score", t)
        outcome = RunOutcome(**{**outcome.__dict__, "wall_s": time.perf_counter() - started,
                                "kernel_start_s": report.get("kernel_start_s", 0.0),
                                "exec_s": report.get("exec_s", result.duration_s if result else 0.0)})
        self._record(outcome, report, phases)
        return outcome

    def tier(self, name: str):
        """The manifest's tier of that name; a UserError listing the tiers otherwise."""
        names = list(type(self.manifest.tiers).model_fields)
        if name not in names:
            raise UserError(f"unknown tier {name!r}: this workspace has {', '.join(names)}")
        spec = getattr(self.manifest.tiers, name)
        # an evolved harness may only tighten a tier (a shorter timeout), never loosen the manifest's
        overrides = {k: v for k, v in self.tier_overrides(name).items()
                     if k in type(spec).model_fields and (k != "timeout_s" or v < spec.timeout_s)}
        return spec.model_copy(update=overrides) if overrides else spec

    def protected_reference(self) -> dict[str, str]:
        """The protected files' blobs in main's head commit (from git objects, never the
        working tree), read once per main head."""
        head = self.repo.head()
        if self._reference is None or self._reference[0] != head:
            self._reference = (head, self.repo.blobs(head, self.manifest.paths.protected))
        return self._reference[1]

    def _short_of_disk(self) -> str | None:
        """Why a run cannot start for lack of disk (None when it can): the run directory's cap
        is polled, so the disk must hold the cap plus DISK_RESERVE_MB besides."""
        need = self.manifest.sandbox.run_dir_mb + DISK_RESERVE_MB
        try:
            free = shutil.disk_usage(state_dir(self.workspace)).free / 2**20
        except OSError:
            return None
        if free >= need:
            return None
        return (f"not started: a run needs {need / 1024:.1f} GB free (its run directory's cap plus a reserve), "
                f"and {free / 1024:.1f} GB are free on the disk of {state_dir(self.workspace)}; free some space "
                "or lower [sandbox] run_dir_mb in agentx.toml")

    def _audit_watch(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """What the kernel's audit hook watches: every harness-owned path a run has no business
        in, and the words that name them on a command line. Confined (and on any other node),
        none of them exists in the kernel's view; the hook then only names the attempt."""
        state = state_dir(self.workspace)
        watched = [self.cache, self.splits.root, self.splits.root.parent, state / "runs", state / "audit"]
        kb_path = getattr(self.kb, "path", None)
        if kb_path and kb_path != ":memory:":
            watched += [Path(kb_path), Path(f"{kb_path}.wal")]
        forms = sorted({form for p in watched for form in (os.path.abspath(p), os.path.realpath(p))})
        home = os.path.expanduser("~")
        needles = forms + ["~" + f[len(home):] for f in forms if f.startswith(home + os.sep)]
        needles += ["$AGENTX_CACHE_DIR", "${AGENTX_CACHE_DIR}"]
        return tuple(forms), tuple(needles)

    def _spec(self, checkout: Path, run_id: str, run_dir: Path, tier: str, tier_spec, seed: int,
              rows: Path) -> RunSpec:
        """The run as an executor gets it: label-free rows, the code, the job."""
        watched, needles = self._audit_watch()
        train = self.manifest.train
        job = KernelJob(run_id=run_id, module=train.module, function=train.function,
                        id_column=self.manifest.data.id_column, protected=tuple(self.manifest.paths.protected),
                        timeout_s=tier_spec.timeout_s, memory_mb=self.tier_overrides(tier).get("memory_mb"),
                        watched=watched, needles=needles)
        return RunSpec(job, checkout, rows, run_config(run_id, seed, tier, tier_spec), run_dir,
                       label_column=self.splits.label_column)

    def _rows(self, checkout: Path, splits: Splits, tier_spec) -> Path:
        """The folder of rows this code's run gets: the tier's rows, plus a column for each
        derived entry (product(a,b), ...) its features knobs list (tools/derived.py), checked
        against main's catalog; DerivedError for one the harness will not compute."""
        rows = tier_rows(splits, tier_spec)
        derived = requested(checkout, self.manifest)
        if not derived:
            return rows
        catalog = load_catalog_or_none(checkout, self.manifest)   # protected: main's, checked above
        check(derived, catalog, column_types(rows / "train.csv"), id_column=splits.id_column,
              label_column=splits.label_column)
        return with_derived(rows, derived, splits.root / "derived", id_column=splits.id_column)

    def _judge(self, run_id: str, run_dir: Path, result, report: dict,
               tampered: list[str], touched: list[dict], tier: str) -> RunOutcome:
        if tampered:
            return RunOutcome(run_id, "invalid", "tamper", "protected paths changed: " + ", ".join(tampered))
        if touched:
            shown = "; ".join(f"{hit['event']} {hit['path']}" for hit in touched[:8])
            return RunOutcome(run_id, "invalid", "leak", f"the run's code touched {len(touched)} harness-owned "
                              f"path(s) (labels, other runs, the KB): {shown}")
        if not result.ok:
            detail = "\n".join(filter(None, [result.detail, result.traceback or result.stderr]))[-2000:]
            return RunOutcome(run_id, result.status, FAILURE_KIND[result.status], detail)
        try:
            metrics = score_run(self.splits, run_dir, self.manifest.metric.names,
                                user_column=self.manifest.data.user_column, reject_constant=True)
            check_alignment(run_dir, self.splits.id_column, report.get("check"))
        except InvalidPredictions as exc:
            return RunOutcome(run_id, "invalid", exc.kind, exc.detail)
        # a reference only on the whole slice, and only where the manifest names an item column
        if getattr(self.manifest.tiers, tier).eval_rows is None and self.manifest.data.item_column is not None:
            metrics[("test", f"popularity_{self.manifest.metric.primary}")] = self._popularity(run_dir)
        for name in ("train_seconds", "num_params", "p95_latency_ms"):
            if isinstance(report.get(name), (int, float)):
                metrics[("run", name)] = float(report[name])
        return RunOutcome(run_id, "ok", metrics=metrics)

    def _popularity(self, run_dir: Path) -> float:
        """The popularity reference's primary metric on the whole test slice: the same for every
        run of these splits, so computed once per harness."""
        key = self.splits.key
        if key not in self._popularity_cache:
            data = self.manifest.data
            popular = popularity_scores(self.splits, data.item_column, run_dir)
            users = users_of(self.splits, popular.ids, data.user_column) if data.user_column else None
            self._popularity_cache[key] = metric_value(self.manifest.metric.primary, popular.labels, popular.scores, users)
        return self._popularity_cache[key]

    def _record(self, outcome: RunOutcome, report: dict, phases: dict[str, float]) -> None:
        """The outcome, its metrics and a run_finished event: one KB transaction."""
        by_split: dict[str, dict[str, float]] = {}
        for (split, name), value in outcome.metrics.items():
            by_split.setdefault(split, {})[name] = value
        with self.kb.session() as kb:
            kb.finish_run(outcome.run_id, status=outcome.status, failure_kind=outcome.failure_kind,
                          failure_detail=outcome.failure_detail, kernel_start_s=outcome.kernel_start_s,
                          exec_s=outcome.exec_s, wall_s=outcome.wall_s, device=report.get("device", "cpu"),
                          peak_rss_mb=report.get("peak_rss_mb"))
            for split, values in by_split.items():
                kb.add_metrics(outcome.run_id, split, values)
            kb.log_event("run_finished", {"run_id": outcome.run_id, "status": outcome.status,
                                          "failure_kind": outcome.failure_kind, "wall_s": outcome.wall_s,
                                          "kernel_start_s": outcome.kernel_start_s, "exec_s": outcome.exec_s,
                                          "phases": phases, "executor": self.executor.name,
                                          "node": report.get("node"), "attempts": report.get("attempts"),
                                          "transfer_s": report.get("transfer_s")})

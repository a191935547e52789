"""`agentx check`: is this repository ready for agentx? A checklist, one line per check.

Each line is `ok` (with what was found), `FAIL` (with one line of fix) or `skipped` (an
earlier failure means it cannot run). The checks, in order:

1. manifest     agentx.toml parses (agentx/workspace.py says which key is wrong and why)
2. git          a git repository with a commit on main and no uncommitted change to an
                editable or protected file (agentx/committed.py)
3. data module  the harness runs main's committed data module (`Harness.splits`, which
                first compares the protected files with the trusted ledger) and it writes
                train/valid/test with the id and label columns
4. columns      the split files have the id and label columns, and the user, item and
                cluster columns [data] declares
5. catalog      the feature catalog ([features] catalog) parses and every feature it lists
                is a column of the split files (no such file: ok, with what it would enable)
6. knobs        every declared knob reads back a value its spec allows, from main's head
                commit (a features knob: names from its candidates)
7. entrypoint   the entrypoint's module is in main's head commit and imports, with its
                function, in a child process confined like a kernel (never in agentx's)
8. micro run    one micro-tier run of main's head in the real (sandboxed) harness
9. predictions  that run's predictions exist and the harness scored them

No manifest or no repository skips everything after it; a data module that fails skips
the columns and the catalog's column check; a failed data module or entrypoint skips the
micro run; a failed micro run skips the predictions. A bad catalog or knob skips nothing:
runs do not need them, the search and feature selection do. Uncommitted changes skip nothing: the later checks use the commit.
Like `agentx baseline`, the check holds the workspace lock and records its run in the KB.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import duckdb

from agentx.committed import UncommittedChangesError, require_committed
from agentx.context import Workspace
from agentx.errors import UserError
from agentx.workspace import MANIFEST, DataSpec, Manifest, load_manifest
from agents.knob_search import feature_candidates
from tools.feature_catalog import load_catalog
from tools.git_repo import GitRepoError, WorkspaceRepo
from tools.harness import Harness, RunOutcome
from tools.knobs import check_value, read_knob
from tools.pool import Slot
from tools.sandbox import scrub_env
from tools.splits import SPLITS, Splits, _csv
from tools.staging import entrypoint_file, stage_code

CHECKS = ("manifest", "git", "data module", "columns", "catalog", "knobs", "entrypoint", "micro run", "predictions")
# Failure kinds of a run whose kernel finished but whose prediction files broke the contract.
PREDICTION_KINDS = {"missing_file", "format", "duplicate_rows", "missing_rows", "nan", "constant", "misaligned"}
HINTS = {"crash": "fix the error in the entrypoint",
         "timeout": "the micro tier must finish within [tiers.micro] timeout_s: fewer rows or epochs, or raise it",
         "memory": "the run went over the harness's memory cap: use less memory"}
IMPORT_TIMEOUT_S = 180.0
IMPORT = """
import importlib, sys, traceback
try:
    module = importlib.import_module({module!r})
except BaseException:
    traceback.print_exc()
    sys.exit(1)
if not callable(getattr(module, {function!r}, None)):
    sys.exit("module {module} defines no function {function}()")
"""

Status = Literal["ok", "FAIL", "skipped"]


@dataclass(frozen=True)
class CheckLine:
    name: str
    status: Status
    detail: str            # ok: what was found; FAIL: the fix; skipped: why it did not run

    @property
    def text(self) -> str:
        return f"{self.status:<8}{self.name:<13}{self.detail}"


@dataclass
class Checklist:
    """The lines so far, in order; `say` is told each line as it is decided."""

    say: Callable[[CheckLine], None] = lambda _: None
    lines: list[CheckLine] = field(default_factory=list)

    def add(self, name: str, status: Status, detail: str) -> bool:
        line = CheckLine(name, status, detail)
        self.lines.append(line)
        self.say(line)
        return status == "ok"

    def skip_rest(self, why: str) -> Checklist:
        done = {line.name for line in self.lines}
        for name in CHECKS:
            if name not in done:
                self.add(name, "skipped", why)
        return self

    @property
    def passed(self) -> bool:
        return all(line.status == "ok" for line in self.lines)

    @property
    def summary(self) -> str:
        count = {s: sum(line.status == s for line in self.lines) for s in ("ok", "FAIL", "skipped")}
        if self.passed:
            return f"all {count['ok']} checks passed: the workspace is ready (next: agentx baseline)"
        return f"{count['FAIL']} failed, {count['skipped']} skipped, {count['ok']} ok"


def check_workspace(root: Path, *, sandboxed: bool = True, wait: bool = False,
                    say: Callable[[CheckLine], None] = lambda _: None,
                    progress: Callable[[str], None] = lambda _: None) -> Checklist:
    """Run the checklist on the workspace at `root`. A UserError escapes only when the
    workspace cannot be opened for a reason of the moment (another command holds its lock)."""
    checks = Checklist(say)
    root = Path(root).resolve()
    manifest = _manifest(checks, root)
    if manifest is None:
        return checks.skip_rest(f"needs a manifest that parses ({MANIFEST})")
    if not _git(checks, root, manifest):
        return checks.skip_rest("needs a git repository with a commit")
    with Workspace.open(root, progress, warm_kernels=False, lock=True, wait=wait, sandboxed=sandboxed) as ws:
        splits = _data(checks, ws.harness)
        if splits is None:
            checks.add("columns", "skipped", "needs the data module's files")
        else:
            _columns(checks, splits, manifest.data)
        checkout, commit = ws.base_checkout()
        _catalog(checks, checkout, manifest, splits)
        _knobs(checks, checkout, manifest)
        imported = _entrypoint(checks, ws.harness, root, checkout)
        if splits is None or not imported:
            return checks.skip_rest("needs " + " and ".join(
                n for n, ok in (("the data module", splits is not None), ("the entrypoint", imported)) if not ok))
        outcome = _micro_run(checks, ws, checkout, commit)
        if outcome is not None:
            _predictions(checks, ws, outcome)
        return checks.skip_rest("needs a micro run whose kernel finished")


def _manifest(checks: Checklist, root: Path) -> Manifest | None:
    try:
        manifest = load_manifest(root)
    except UserError as exc:
        checks.add("manifest", "FAIL", str(exc))
        return None
    checks.add("manifest", "ok", f"{MANIFEST} parses (workspace {manifest.workspace.name!r}, "
                                 f"entrypoint {manifest.train.entrypoint})")
    return manifest


def _git(checks: Checklist, root: Path, manifest: Manifest) -> bool:
    """False when there is no repository or no commit (nothing later can run)."""
    try:
        repo = WorkspaceRepo(root)
        if not repo.repo.head.is_valid():
            checks.add("git", "FAIL", f"{root} has no commit yet: commit the workspace "
                                      "(git add -A && git commit -m 'workspace')")
            return False
        head = repo.head()
    except GitRepoError as exc:
        checks.add("git", "FAIL", str(exc))
        return False
    try:
        require_committed(repo, manifest.paths)
    except UncommittedChangesError as exc:
        checks.add("git", "FAIL", f"{exc} (the checks below use the commit)")
        return True
    checks.add("git", "ok", f"{repo.main_branch} at {head[:10]}, no uncommitted change to editable or "
                            "protected files")
    return True


def _data(checks: Checklist, harness: Harness) -> Splits | None:
    try:
        splits = harness.splits
    except UserError as exc:
        checks.add("data module", "FAIL", str(exc))
        return None
    checks.add("data module", "ok", f"{harness.manifest.data.module} of main's head wrote "
                                    f"{', '.join(f'{s}.csv' for s in SPLITS)}")
    return splits


def _columns(checks: Checklist, splits: Splits, data: DataSpec) -> bool:
    """The id and label columns, and every column [data] declares, in every split file."""
    needed = {"id_column": data.id_column, "label_column": data.label_column, "user_column": data.user_column,
              "item_column": data.item_column, "cluster_column": data.cluster_column}
    con = duckdb.connect()
    rows = {}
    for split in SPLITS:
        columns = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {_csv(splits.file(split))}").fetchall()]
        for key, column in needed.items():
            if column is not None and column not in columns:
                return checks.add("columns", "FAIL", f"{split}.csv has no {column!r} column ([data] {key}; its "
                                  f"columns: {', '.join(columns)}): write it in the data module, or change or "
                                  f"remove {key} in {MANIFEST}")
        rows[split] = con.execute(f"SELECT count(*) FROM {_csv(splits.file(split))}").fetchone()[0]
    declared = ", ".join(f"{k} {v!r}" for k, v in needed.items() if v is not None)
    absent = [k for k in ("user_column", "item_column") if needed[k] is None]
    note = f" (none: {', '.join(absent)}, see docs/contracts.md)" if absent else ""
    return checks.add("columns", "ok", f"{' / '.join(str(rows[s]) for s in SPLITS)} rows; {declared}{note}")


def _catalog(checks: Checklist, checkout: Path, manifest: Manifest, splits: Splits | None) -> bool:
    """The feature catalog parses, and (with splits) each of its features is a column."""
    if not (checkout / manifest.features.catalog).is_file():
        return checks.add("catalog", "ok", f"no {manifest.features.catalog} (feature selection and features "
                                           f"knobs need one: `agentx adopt` writes a starter)")
    try:
        features = load_catalog(checkout, manifest)
    except UserError as exc:                    # one line, named as in the repository (not the checkout's path)
        problem = " ".join(str(exc).replace(f"{checkout}/", "").split())
        return checks.add("catalog", "FAIL", f"{problem} (fix it and commit it, then `agentx trust`: it is protected)")
    groups = sorted({f.group for f in features})
    if splits is None:
        return checks.add("catalog", "ok", f"{len(features)} features in {len(groups)} groups (columns not "
                                           f"checked: the data module failed)")
    columns = set(_columns_of(splits.file("train")))
    missing = [f.name for f in features if f.name not in columns]
    if missing:
        return checks.add("catalog", "FAIL", f"{manifest.features.catalog} lists {', '.join(missing)}, which "
                          f"train.csv lacks: write those columns in the data module, or remove the entries")
    return checks.add("catalog", "ok", f"{len(features)} features in {len(groups)} groups "
                                       f"({', '.join(groups)}), every one a column of the splits")


def _knobs(checks: Checklist, checkout: Path, manifest: Manifest) -> bool:
    """Every declared knob reads back a value its spec allows."""
    if not manifest.knobs:
        return checks.add("knobs", "ok", f"no [knobs.*] in {MANIFEST} (the default brain can only try the "
                                         f"workspace's recipes; docs/contracts.md shows how to declare knobs)")
    problems, values = [], []
    try:
        candidates = feature_candidates(checkout, manifest)
    except UserError as exc:
        return checks.add("knobs", "FAIL", str(exc))
    for name, spec in manifest.knobs.items():
        try:
            value = check_value(spec, read_knob(checkout, spec))
            if spec.type == "features":
                unknown = [f for f in value if f not in candidates[name]]
                if unknown:
                    raise UserError(f"knob {name}: {', '.join(unknown)} not in the feature catalog")
                values.append(f"{name}: {len(value)} features")
            else:
                values.append(f"{name}={value!r}")
        except UserError as exc:
            problems.append(str(exc))
    if problems:
        return checks.add("knobs", "FAIL", "; ".join(problems) + f" (fix the value, or the knob's spec in {MANIFEST})")
    return checks.add("knobs", "ok", f"{len(values)} knobs read back valid values ({', '.join(values)})")


def _columns_of(path: Path) -> list[str]:
    with duckdb.connect() as con:
        return [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {_csv(path)}").fetchall()]


def _entrypoint(checks: Checklist, harness: Harness, root: Path, checkout: Path) -> bool:
    train = harness.manifest.train
    if entrypoint_file(checkout, train.module) is None:
        where = ("it is in the working tree but not committed: commit it" if entrypoint_file(root, train.module)
                 else f"add {train.module.replace('.', '/')}.py, or fix [train] entrypoint in {MANIFEST}")
        return checks.add("entrypoint", "FAIL", f"[train] entrypoint {train.entrypoint!r} names module "
                          f"{train.module!r}, which main's head commit does not have; {where}")
    try:
        error = import_error(harness, checkout)
    except UserError as exc:                    # no sandbox to import it in
        return checks.add("entrypoint", "FAIL", str(exc))
    if error is not None and error.startswith(f"module {train.module} defines no function"):
        return checks.add("entrypoint", "FAIL", f"{error}: define it, or fix [train] entrypoint in {MANIFEST}")
    if error is not None:
        return checks.add("entrypoint", "FAIL", f"`import {train.module}` fails: {error}; fix the module or "
                          f"install what it needs for {harness.python}")
    return checks.add("entrypoint", "ok", f"{train.entrypoint} imports "
                      f"({'in the sandbox' if harness.sandboxed else 'unsandboxed'})")


def import_error(harness: Harness, checkout: Path, timeout_s: float = IMPORT_TIMEOUT_S) -> str | None:
    """Import the entrypoint's module from `checkout` and look up its function, in a child
    process confined like a kernel (unless the harness is unsandboxed). None when that works;
    otherwise the error's last line. Raises SandboxUnavailable when no sandbox can be made."""
    train = harness.manifest.train
    slot = Slot.create(harness.slots)
    try:
        stage_code(checkout, slot.work, link=harness.sandboxed)
        argv = [harness.python, "-c", IMPORT.format(module=train.module, function=train.function)]
        confinement = harness.confinement(slot)
        if confinement is None:
            env = {**scrub_env(os.environ), **harness.extra_env}
            command, cwd = argv, slot.work
        else:
            private = slot.root / "private"
            private.mkdir()
            env = confinement.environment(harness.python, harness.extra_env, private)
            command, cwd = confinement.command(argv, python=harness.python, private=private, env=env), slot.work
        try:
            done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s,
                                  check=False)
        except subprocess.TimeoutExpired:
            return f"the import took more than {timeout_s:.0f} s"
    finally:
        slot.remove()
    if done.returncode == 0:
        return None
    lines = [line.strip() for line in (done.stderr or done.stdout).splitlines() if line.strip()]
    return lines[-1] if lines else f"exit code {done.returncode}"


def _micro_run(checks: Checklist, ws: Workspace, checkout: Path, commit: str) -> RunOutcome | None:
    """The run, when its kernel finished (its predictions are the next check's); None otherwise."""
    try:
        outcome = ws.harness.run(checkout, commit, tier="micro", seed=0, arm="baseline")
    except UserError as exc:
        checks.add("micro run", "FAIL", str(exc))
        return None
    if outcome.ok or outcome.failure_kind in PREDICTION_KINDS:
        checks.add("micro run", "ok", f"run {outcome.run_id} of {commit[:10]} finished in {outcome.wall_s:.1f} s "
                                      f"({'in the sandbox' if ws.harness.sandboxed else 'unsandboxed'})")
        return outcome
    lines = [line.strip() for line in (outcome.failure_detail or "").splitlines() if line.strip()]
    hint = HINTS.get(outcome.failure_kind or "", "")
    log = Path(ws.kb.get_run(outcome.run_id)["run_dir"]) / "kernel.log"
    checks.add("micro run", "FAIL", f"{outcome.failure_kind}: {lines[-1] if lines else outcome.status}"
               + (f"; {hint}" if hint else "") + (f" (log: {log})" if log.is_file() else ""))
    return None


def _predictions(checks: Checklist, ws: Workspace, outcome: RunOutcome) -> bool:
    metric = ws.manifest.metric.primary
    run_dir = Path(ws.kb.get_run(outcome.run_id)["run_dir"])
    if not outcome.ok:
        return checks.add("predictions", "FAIL", f"{outcome.failure_kind}: {(outcome.failure_detail or '')[-400:]}"
                          f" (the entrypoint writes predictions/valid.csv and predictions/test.csv with columns "
                          f"{ws.manifest.data.id_column},score: every given row once, a finite score in [0, 1])")
    files = [run_dir / "predictions" / f"{split}.csv" for split in ("valid", "test")]
    scored = {split: outcome.metric(split, metric) for split in ("valid", "test")}
    if not all(f.is_file() for f in files) or None in scored.values():
        return checks.add("predictions", "FAIL", f"run {outcome.run_id} was not scored on valid and test; "
                          f"look in {run_dir}")
    return checks.add("predictions", "ok", f"scored by the harness: valid {metric} {scored['valid']:.4f}, "
                                           f"test {metric} {scored['test']:.4f} (micro tier)")

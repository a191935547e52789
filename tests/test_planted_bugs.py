"""Planted defects end with the right failure kind; the harness's new detectors raise no false alarm.

Fast tests: the detectors on the tiny stdlib workspace (audit hook, alignment, constant
scores) and every defect's edit on a copy of the template. Slow tests: every defect of
tools/planted.py as a branch of a real MovieLens workspace, run through the real harness.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from agentx.workspace import load_manifest
from knowledge import KnowledgeBase
from tests.conftest import SHARED_CACHE, wrap_main
from tools.git_repo import WorkspaceRepo, resolve_template
from tools.cells import AUDIT_LOG
from tools.harness import Harness
from tools.planted import BUGS, PlantError, get_bug, plant
from tools.scoring import InvalidPredictions, check_alignment, score_run
from tools.splits import Splits, materialise

MICRO_TIMEOUT_S = 10        # the endless loop is caught in seconds, the honest run fits easily
MEMORY_CAP_MB = 1536          # the honest micro kernel needs ~700 MB; a blow-up gets here fast


def with_timeout(manifest, tier: str, seconds: float):
    spec = getattr(manifest.tiers, tier).model_copy(update={"timeout_s": seconds})
    return manifest.model_copy(update={"tiers": manifest.tiers.model_copy(update={tier: spec})})


# -- the detectors on the tiny workspace (about a second per run) ---------------------------

@pytest.fixture
def tiny(tiny_template, tmp_path):
    base = tmp_path / "ws"
    WorkspaceRepo.init_from_template(base, tiny_template)   # the harness runs main's committed data module
    cache = tmp_path / "cache"
    harness = Harness(base, load_manifest(base), KnowledgeBase(":memory:"), cache, memory_limit_mb=1024)

    def run(body: str = "", **kwargs):
        path = tmp_path / f"checkout-{len(list(tmp_path.glob('checkout-*')))}"
        shutil.copytree(base, path)
        if body:
            with open(path / "train.py", "a") as f:
                f.write("\n" + wrap_main(body) + "\n")
        return harness.run(path, "c0ffee", tier="micro", seed=0, arm="treatment", **kwargs)

    return harness, run


def test_honest_tiny_run_has_no_leak_and_is_aligned(tiny):
    harness, run = tiny
    outcome = run("import os, json, csv\nlen(os.listdir(run_dir)); json.load(open(os.path.join(run_dir, 'run.json')))")
    assert outcome.ok, outcome.failure_detail
    assert harness.splits.root.is_relative_to(harness.cache)     # the hook did watch the splits


def test_touching_harness_paths_is_a_leak(tiny):
    harness, run = tiny
    splits, cache = harness.splits, harness.cache
    # listing the splits folder, a glob under it, pathlib's rglob and read_text, a relative open after
    # chdir, a shell command naming it: each is one audit event the hook must record
    # (in the sandbox none of those paths exists: each attempt fails, so each is tried on its own)
    attempts = [f"os.listdir({str(splits.root.parent)!r})",
                f"glob.glob({str(splits.root.parent)!r} + '/*/test.csv')",
                f"[p.read_text() for p in Path({str(cache)!r}).rglob('DONE')]",
                f"os.chdir({str(splits.root)!r}); open('test.csv').read()",
                f"open({str(splits.file('test'))!r}).read()",
                f"subprocess.run(['true', {str(splits.root)!r} + '/test.csv'])"]
    outcome = run("import glob, os, subprocess\nfrom pathlib import Path\nhere = os.getcwd()\n"
                  + "".join(f"try:\n    {a}\nexcept OSError:\n    pass\nos.chdir(here)\n" for a in attempts))
    assert outcome.status == "invalid" and outcome.failure_kind == "leak" and not outcome.metrics
    assert str(cache) in outcome.failure_detail
    audit = Path(harness.kb.get_run(outcome.run_id)["run_dir"]) / AUDIT_LOG
    events = [json.loads(line) for line in audit.read_text().splitlines()]
    assert {e["event"] for e in events} >= {"os.listdir", "glob.glob", "os.scandir", "os.chdir", "open",
                                            "subprocess.Popen"}
    assert {"event": "open", "path": str(splits.file("test"))} in events
    assert not any(e["path"].startswith(str(Path(harness.kb.get_run(outcome.run_id)["run_dir"]))) for e in events)


def test_reading_another_runs_directory_is_a_leak(tiny):
    harness, run = tiny
    first = run()
    assert first.ok, first.failure_detail
    other = Path(harness.kb.get_run(first.run_id)["run_dir"])
    # run from the workspace root itself: the checkout is allowed, but .agentx/runs inside it is not
    with open(harness.workspace / "train.py", "a") as f:
        f.write("\n" + wrap_main(f"open({str(other / 'predictions' / 'test.csv')!r}).read()") + "\n")
    outcome = harness.run(harness.workspace, "c0ffee", tier="micro", seed=0, arm="treatment")
    assert outcome.failure_kind == "leak" and first.run_id in outcome.failure_detail
    assert outcome.run_id not in outcome.failure_detail        # its own run directory is allowed


def test_leak_is_reported_even_when_the_kernel_is_killed(tiny):
    """The hook appends to a harness-owned log at once: a kernel killed after a timeout keeps its record."""
    harness, run = tiny
    harness.manifest = with_timeout(harness.manifest, "micro", 2)
    outcome = run(f"import glob, signal\nglob.glob({str(harness.splits.root)!r} + '/*.csv')\n"
                  "signal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass")
    assert outcome.failure_kind == "leak" and "glob.glob" in outcome.failure_detail


def test_constant_and_misordered_tiny_predictions_are_invalid(tiny):
    _, run = tiny
    constant = run("import os\np = os.path.join(run_dir, 'predictions', 'valid.csv')\n"
                   "rows = open(p).read().splitlines()\n"
                   "open(p, 'w').write('\\n'.join([rows[0]] + [r.split(',')[0] + ',0.25' for r in rows[1:]]))")
    assert constant.failure_kind == "constant" and "valid.csv" in constant.failure_detail
    # swap the scores of two rows with different scores: only the alignment check can see it
    swapped = run("import os, csv\np = os.path.join(run_dir, 'predictions', 'test.csv')\n"
                  "rows = list(csv.reader(open(p)))\nbody = rows[1:]\n"
                  "j = next(k for k in range(1, len(body)) if body[k][1] != body[0][1])\n"
                  "body[0][1], body[j][1] = body[j][1], body[0][1]\n"
                  "csv.writer(open(p, 'w', newline='')).writerows([rows[0]] + body)")
    assert swapped.failure_kind == "misaligned" and "2 of 20 checked rows" in swapped.failure_detail


# -- the alignment and constant checks as functions -----------------------------------------

def write_test_predictions(run_dir: Path, ids, scores) -> None:
    (run_dir / "predictions").mkdir(parents=True, exist_ok=True)
    lines = ["row_id,score"] + [f"{i},{s:.8f}" for i, s in zip(ids, scores)]
    (run_dir / "predictions" / "test.csv").write_text("\n".join(lines) + "\n")


def test_check_alignment_tolerates_noise_but_not_misordering(tmp_path):
    rng = np.random.default_rng(0)
    ids, scores = list(range(100, 356)), rng.random(256)
    write_test_predictions(tmp_path, ids, scores)
    jitter = scores + rng.normal(0, 1e-5, 256)                   # GPU-sized run-to-run noise
    check_alignment(tmp_path, "row_id", {"ids": ids, "first": jitter.tolist(), "last": scores.tolist()})
    check_alignment(tmp_path, "row_id", None)                     # no predict(): nothing to compare
    (tmp_path / "predictions" / "test.csv").write_text(           # scores rounded to 2 decimals
        "row_id,score\n" + "".join(f"{i},{s:.2f}\n" for i, s in zip(ids, scores)))
    check_alignment(tmp_path, "row_id", {"ids": ids, "first": scores.tolist(), "last": scores.tolist()})
    write_test_predictions(tmp_path, ids, scores)
    with pytest.raises(InvalidPredictions) as info:               # sorted scores, unsorted ids
        check_alignment(tmp_path, "row_id", {"ids": ids, "first": list(np.sort(scores)[::-1]),
                                             "last": list(np.sort(scores)[::-1])})
    assert info.value.kind == "misaligned"
    # predict() with dropout left on: calls disagree by ~0.05; an aligned file passes, a shuffled one fails
    noisy = lambda: (scores + rng.normal(0, 0.05, 256)).tolist()  # noqa: E731
    check_alignment(tmp_path, "row_id", {"ids": ids, "first": noisy(), "last": noisy()})
    write_test_predictions(tmp_path, ids, rng.permutation(scores))
    with pytest.raises(InvalidPredictions, match="Spearman"):
        check_alignment(tmp_path, "row_id", {"ids": ids, "first": noisy(), "last": noisy()})


def test_constant_scores_and_empty_cells(tmp_path):
    root = tmp_path / "splits"
    root.mkdir()
    for split, start in (("train", 0), ("valid", 1000), ("test", 2000)):
        rows = [f"{start + i},{i % 7},{int(i % 3 == 0)}" for i in range(60)]
        (root / f"{split}.csv").write_text("row_id,item_id,label\n" + "\n".join(rows) + "\n")
    splits = Splits(root, "row_id", "label")
    from agentx.workspace import TierSpec
    run_dir = tmp_path / "run"
    materialise(splits, run_dir, "full", TierSpec(epochs=1, timeout_s=5), 0, "R-x")
    for split, start in (("valid", 1000), ("test", 2000)):
        (run_dir / "predictions" / f"{split}.csv").write_text(
            "row_id,score\n" + "\n".join(f"{start + i},0.3" for i in range(60)) + "\n")
    assert score_run(splits, run_dir, ["auc"])[("test", "auc")] == 0.5   # plain scoring: unchanged
    with pytest.raises(InvalidPredictions) as info:
        score_run(splits, run_dir, ["auc"], reject_constant=True)
    assert info.value.kind == "constant"
    # pandas writes NaN as an empty cell: that is a NaN, not a zero
    (run_dir / "predictions" / "valid.csv").write_text(
        "row_id,score\n" + "\n".join(f"{1000 + i},{'' if i == 5 else i / 100}" for i in range(60)) + "\n")
    with pytest.raises(InvalidPredictions) as info:
        score_run(splits, run_dir, ["auc"], reject_constant=True)
    assert info.value.kind == "nan" and "1 scores" in info.value.detail


# -- the planted defects -------------------------------------------------------------------

def test_every_defect_edits_the_template_and_anchors_are_checked(tmp_path):
    template = resolve_template("movielens-ctr")
    assert len(BUGS) >= 10 and len({b.name for b in BUGS}) == len(BUGS)
    assert sum(b.tier == "micro" for b in BUGS) >= 8
    for bug in BUGS:
        copy = tmp_path / bug.name
        shutil.copytree(template, copy, ignore=shutil.ignore_patterns("__pycache__"))
        before = {p.name: p.read_text() for p in copy.glob("*.py")}
        bug.apply(copy)
        changed = [name for name, text in before.items() if (copy / name).read_text() != text]
        assert len(changed) == 1, (bug.name, changed)
        source = (copy / changed[0]).read_text()
        if bug.name == "syntax_error":
            with pytest.raises(SyntaxError):
                compile(source, changed[0], "exec")
        else:                                  # every other defect is valid Python that fails at run time
            compile(source, changed[0], "exec")
        for name in before:                    # a template without the anchor text: never silently skipped
            (copy / name).write_text("# rewritten\n")
        with pytest.raises(PlantError):
            bug.apply(copy)


@pytest.fixture(scope="module")
def movielens(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted") / "ws"
    repo = WorkspaceRepo.init_from_template(root, "movielens-ctr")
    manifest = with_timeout(load_manifest(root), "micro", MICRO_TIMEOUT_S)
    harness = Harness(root, manifest, KnowledgeBase(":memory:"), SHARED_CACHE, memory_limit_mb=MEMORY_CAP_MB,
                      warm_kernels=True)
    try:
        yield repo, harness
    finally:
        harness.close()


@pytest.mark.slow
def test_honest_branch_passes_every_detector(movielens):
    repo, harness = movielens
    worktree = repo.create_experiment("honest", "no-op")
    (worktree.path / "README.md").write_text((worktree.path / "README.md").read_text() + "\nHonest branch.\n")
    run = harness.run(worktree.path, repo.commit(worktree, "Touch the README"), tier="micro", seed=0, arm="treatment")
    assert run.ok, f"{run.failure_kind}: {run.failure_detail}"
    assert 0.0 < run.metric("test", "auc") < 1.0 and run.metric("run", "p95_latency_ms") > 0
    audit = Path(harness.kb.get_run(run.run_id)["run_dir"]) / AUDIT_LOG
    assert audit.is_file() and audit.read_text() == ""            # the hook ran and saw nothing


@pytest.mark.slow
@pytest.mark.parametrize("name", [b.name for b in BUGS if b.tier == "micro"])
def test_planted_defect_is_caught_at_micro(movielens, name):
    repo, harness = movielens
    bug = get_bug(name)
    worktree, head = plant(repo, bug)
    assert repo.changed_paths(worktree.branch)                    # it is a real branch with a commit
    run = harness.run(worktree.path, head, tier="micro", seed=0, arm="treatment")
    assert run.failure_kind == bug.expected_kind, f"{name}: {run.status} {run.failure_kind}: {run.failure_detail}"
    assert run.status != "ok" and not run.metrics
    (row,) = harness.kb.query("SELECT status, failure_kind FROM runs WHERE id = ?", [run.run_id])
    assert row["failure_kind"] == bug.expected_kind
    if name == "label_leak":
        assert "splits/*/test.csv" in run.failure_detail
    if name == "endless_loop":
        assert run.exec_s < MICRO_TIMEOUT_S + 5     # interrupted at the deadline (kernel wait not counted)


@pytest.mark.slow
def test_data_size_defect_is_caught_at_full(movielens):
    repo, harness = movielens
    bug = get_bug("quadratic_memory")
    worktree, head = plant(repo, bug)
    run = harness.run(worktree.path, head, tier="full", seed=0, arm="treatment")
    assert bug.tier == "full" and run.status == "memory" and run.failure_kind == "memory", run.failure_detail

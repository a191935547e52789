"""The harness trusts committed files only: no hooks or repository-set commands in agentx's
git calls, trees exported from git objects, the data module of a commit, and a ledger of
the protected files a person trusted (real git repositories in temp dirs)."""
from __future__ import annotations

import os
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentx.cli import app
from agentx.errors import UserError
from agentx.workspace import load_manifest
from knowledge import KnowledgeBase
from tests.conftest import TINY_DATA
from tools.git_repo import GitRepoError, WorkspaceRepo
from tools.harness import Harness
from tools.splits import prepare_splits
from tools.trust import ProtectedChangedError, changes, trust, verify_protected

HOOKS = ("pre-commit", "prepare-commit-msg", "commit-msg", "post-commit", "post-checkout", "post-merge",
         "pre-merge-commit", "reference-transaction", "pre-auto-gc")


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


@pytest.fixture
def ws(tiny_template, tmp_path) -> WorkspaceRepo:
    return WorkspaceRepo.init_from_template(tmp_path / "ws", tiny_template)


def plant_hooks(ws: WorkspaceRepo, marker: Path) -> None:
    """Every hook, a filter driver and an fsmonitor command of the repository touch `marker`."""
    for name in HOOKS:
        executable(ws.root / ".git" / "hooks" / name, f"#!/bin/sh\necho {name} >> {marker}\n")
    executable(ws.root.parent / "monitor.sh", f"#!/bin/sh\necho fsmonitor >> {marker}\nexit 1\n")
    git(ws.root, "config", "core.fsmonitor", str(ws.root.parent / "monitor.sh"))
    git(ws.root, "config", "filter.evil.clean", f"sh -c 'echo clean >> {marker}; cat'")
    git(ws.root, "config", "filter.evil.smudge", f"sh -c 'echo smudge >> {marker}; cat'")
    git(ws.root, "config", "merge.evil.driver", f"sh -c 'echo merge >> {marker}'")
    (ws.root / ".gitattributes").write_text("*.py filter=evil merge=evil\n")
    git(ws.root, "-c", "core.hooksPath=/dev/null", "add", ".gitattributes")
    git(ws.root, "-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", "commit", "-qm", "attributes")
    marker.unlink(missing_ok=True)


def test_agentx_git_calls_run_no_hooks_filters_or_fsmonitor(ws, tmp_path):
    marker = tmp_path / "ran"
    plant_hooks(ws, marker)
    assert ws.is_clean()
    exp = ws.create_experiment("E0001", "wider")                      # worktree add: post-checkout, smudge
    (exp.path / "train.py").write_text((exp.path / "train.py").read_text() + "\n# wider\n")
    ws.commit(exp, "Widen")                                           # pre-commit ... post-commit, clean
    base = ws.base_worktree(ws.head())                                # worktree add --detach
    assert ws.base_worktree(ws.head()) == base                        # reset --hard, clean -fd
    ws.merge(exp.branch, "Merge E0001")                               # temp worktree, merge, post-merge
    assert ws.diff(exp.branch, ws.head()) == ""                       # diff: no external diff driver
    ws.export_tree(ws.head(), tmp_path / "export")
    ws.blobs(ws.head(), ["data.py"])
    assert not marker.exists(), marker.read_text()
    # The planted commands are real: plain git runs them.
    git(ws.root, "commit", "--allow-empty", "-qm", "plain")
    ran = marker.read_text().split()
    assert {"pre-commit", "post-commit", "fsmonitor"} <= set(ran)


def test_a_merge_driver_set_in_the_repo_config_is_a_conflict_not_a_silent_resolution(ws, tmp_path):
    marker = tmp_path / "ran"
    plant_hooks(ws, marker)
    exp = ws.create_experiment("E0002", "edit")
    (exp.path / "train.py").write_text("# ours\n")
    ws.commit(exp, "Edit train")
    (ws.root / "train.py").write_text("# theirs\n")
    git(ws.root, "-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", "-c", "filter.evil.clean=",
        "commit", "-qam", "main edits train")
    with pytest.raises(GitRepoError, match="train.py"):
        ws.merge(exp.branch, "Merge E0002", allow_moved=True)
    assert not marker.exists()


# --- export_tree and blobs -----------------------------------------------------------------

def test_export_tree_writes_exactly_the_committed_files(ws, tmp_path):
    (ws.root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (ws.root / "run.sh").chmod(0o755)
    (ws.root / "pkg").mkdir()
    (ws.root / "pkg" / "util.py").write_bytes(b"X = 1\n")
    os.symlink("util.py", ws.root / "pkg" / "alias.py")
    # attributes that git archive / checkout-index would apply; an exact export ignores them
    (ws.root / ".gitattributes").write_text("*.py eol=crlf\ntrain.py export-ignore\n")
    git(ws.root, "add", ".")
    git(ws.root, "commit", "-qm", "more files")
    commit = ws.head()
    (ws.root / "data.py").write_text("raise SystemExit('planted')\n")    # uncommitted
    (ws.root / "untracked.py").write_text("x = 1\n")
    dest = tmp_path / "export"
    assert ws.export_tree(commit, dest) == git(ws.root, "rev-parse", f"{commit}^{{tree}}").strip()
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*"))
    committed = sorted(git(ws.root, "ls-tree", "-r", "--name-only", commit).split())
    assert files == sorted(set(committed) | {"pkg"})
    for path in committed:
        blob = subprocess.run(["git", "cat-file", "blob", f"{commit}:{path}"], cwd=ws.root, check=True,
                              capture_output=True).stdout
        got = os.readlink(dest / path).encode() if (dest / path).is_symlink() else (dest / path).read_bytes()
        assert got == blob, path
    assert os.access(dest / "run.sh", os.X_OK) and not os.access(dest / "data.py", os.X_OK)
    assert (dest / "pkg" / "alias.py").read_bytes() == b"X = 1\n"       # as committed: no eol=crlf applied
    assert (dest / "train.py").is_file()                                  # export-ignore does not apply
    with pytest.raises(GitRepoError, match="not an empty folder"):
        ws.export_tree(commit, dest)


def test_export_tree_refuses_a_link_out_of_the_tree(ws, tmp_path):
    os.symlink("/etc/passwd", ws.root / "passwd")
    git(ws.root, "add", "passwd")
    git(ws.root, "commit", "-qm", "link out")
    with pytest.raises(GitRepoError, match="outside the tree"):
        ws.export_tree(ws.head(), tmp_path / "export")


def test_export_tree_is_fast_for_the_movielens_template(tmp_path):
    ws = WorkspaceRepo.init_from_template(tmp_path / "ml", "movielens-ctr")
    ws.export_tree(ws.head(), tmp_path / "warm")
    took = []
    for i in range(5):
        started = time.perf_counter()
        ws.export_tree(ws.head(), tmp_path / f"e{i}")
        took.append(time.perf_counter() - started)
    print(f"export_tree movielens-ctr: best {min(took) * 1000:.1f} ms, worst {max(took) * 1000:.1f} ms")
    assert min(took) < 0.25                # ~10 ms idle; generous for a busy shared machine


def test_blobs_of_protected_rules(ws):
    (ws.root / "conf").mkdir()
    (ws.root / "conf" / "a.yaml").write_text("a: 1\n")
    git(ws.root, "add", "conf")
    git(ws.root, "commit", "-qm", "conf")
    (ws.root / "data.py").write_text("# uncommitted\n")
    found = ws.blobs(ws.head(), ["data.py", "conf", "missing.py", "agentx.toml"])
    assert found == {"agentx.toml": git(ws.root, "rev-parse", "HEAD:agentx.toml").strip(),
                     "conf/a.yaml": git(ws.root, "rev-parse", "HEAD:conf/a.yaml").strip(),
                     "data.py": git(ws.root, "rev-parse", "HEAD:data.py").strip(),
                     "missing.py": "absent"}


# --- the data module of a commit --------------------------------------------------------------

HELPED_DATA = "from helpers import ROWS\n" + textwrap.dedent(TINY_DATA).replace("range(600)", "range(ROWS)")


def test_prepare_splits_runs_the_committed_data_module_not_the_working_tree(ws, tmp_path):
    (ws.root / "data.py").write_text(HELPED_DATA)
    (ws.root / "helpers.py").write_text("ROWS = 600\n")
    git(ws.root, "add", ".")
    git(ws.root, "commit", "-qm", "data module with a helper")
    manifest, commit = load_manifest(ws.root), ws.head()
    honest = prepare_splits(ws, commit, manifest, tmp_path / "cache-a")
    marker = tmp_path / "planted"
    plant = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
    (ws.root / "data.py").write_text(plant + HELPED_DATA.replace("rng.random() < 0.2", "rng.random() < 0.9"))
    (ws.root / "helpers.py").write_text(plant + "ROWS = 900\n")
    planted = prepare_splits(ws, commit, manifest, tmp_path / "cache-b")
    assert not marker.exists()
    for split in ("train", "valid", "test"):
        assert planted.file(split).read_bytes() == honest.file(split).read_bytes()
    assert planted.key == honest.key
    import sys
    assert "helpers" not in sys.modules                       # the commit's modules are not kept
    assert not list((tmp_path / "cache-b" / "code").rglob("__pycache__"))


def test_a_change_to_any_protected_file_makes_new_splits(ws, tmp_path):
    manifest = load_manifest(ws.root)
    first = prepare_splits(ws, ws.head(), manifest, tmp_path / "cache")
    (ws.root / "train.py").write_text((ws.root / "train.py").read_text() + "\n# editable\n")
    git(ws.root, "commit", "-qam", "edit train")
    assert prepare_splits(ws, ws.head(), manifest, tmp_path / "cache").key == first.key
    (ws.root / "agentx.toml").write_text((ws.root / "agentx.toml").read_text() + "\n# protected\n")
    git(ws.root, "commit", "-qam", "edit manifest")
    assert prepare_splits(ws, ws.head(), manifest, tmp_path / "cache").key != first.key


# --- the ledger of trusted protected files ------------------------------------------------

def commit_as_experiment_code(ws: WorkspaceRepo, path: str, text: str, subject: str) -> str:
    (ws.root / path).write_text(text)
    git(ws.root, "add", path)
    git(ws.root, "-c", "user.name=Mallory", "-c", "user.email=m@x", "commit", "-qm", subject)
    return git(ws.root, "rev-parse", "--short", "HEAD").strip()


def test_a_commit_to_the_data_module_on_main_is_refused_until_a_person_trusts_it(ws, tmp_path):
    kb = KnowledgeBase(":memory:")
    manifest = load_manifest(ws.root)
    harness = Harness(ws.root, manifest, kb, tmp_path / "cache")
    first = harness.splits                                    # trust on first use
    assert {r["path"]: r["trusted_by"] for r in kb.trusted_protected()} == {
        "data.py": "first use", "agentx.toml": "first use"}
    assert [e["payload"]["by"] for e in kb.events("protected_trusted")] == ["first use"]
    assert harness.splits is first                            # once per main head
    short = commit_as_experiment_code(ws, "data.py", textwrap.dedent(TINY_DATA).replace("0.2", "0.9"),
                                      "Rebalance the split")
    with pytest.raises(ProtectedChangedError) as caught:
        _ = harness.splits
    message = str(caught.value)
    assert isinstance(caught.value, UserError) and "\n" not in message
    assert "data.py" in message and "agentx.toml" not in message
    assert f"{short} Mallory: Rebalance the split" in message
    assert f"agentx trust --workspace {ws.root}" in message
    with pytest.raises(ProtectedChangedError):                # a fresh harness refuses too
        _ = Harness(ws.root, manifest, kb, tmp_path / "cache").splits
    head, found = trust(repo := WorkspaceRepo(ws.root), kb, manifest)
    assert [c.path for c in found] == ["data.py"] and head == repo.head()
    assert harness.splits.key != first.key                    # the trusted module's splits
    assert changes(repo, kb, manifest)[2] == []


def test_an_uncommitted_change_is_not_what_the_harness_checks_or_runs(ws, tmp_path):
    kb = KnowledgeBase(":memory:")
    manifest = load_manifest(ws.root)
    assert verify_protected(ws, kb, manifest) == ws.head()
    (ws.root / "data.py").write_text("raise SystemExit('planted')\n")
    assert verify_protected(ws, kb, manifest) == ws.head()


def test_a_protected_file_added_or_deleted_on_main_is_a_change(ws):
    kb = KnowledgeBase(":memory:")
    manifest = load_manifest(ws.root)
    verify_protected(ws, kb, manifest)
    git(ws.root, "rm", "-q", "data.py")
    git(ws.root, "commit", "-qm", "drop data")
    with pytest.raises(ProtectedChangedError, match=r"data\.py \([0-9a-f]+ agentx: drop data\)"):
        verify_protected(ws, kb, manifest)


def test_cli_init_records_the_ledger_and_trust_needs_a_person(tiny_template, tmp_path):
    runner = CliRunner()
    root = tmp_path / "cli-ws"
    result = runner.invoke(app, ["init", str(root), "--template", str(tiny_template)])
    assert result.exit_code == 0, result.output
    kb = KnowledgeBase.for_workspace(root)
    assert {r["trusted_by"] for r in kb.trusted_protected()} == {"agentx init"}
    ws, manifest = WorkspaceRepo(root), load_manifest(root)
    short = commit_as_experiment_code(ws, "data.py", textwrap.dedent(TINY_DATA) + "\n# moved\n", "Tweak data")
    with pytest.raises(ProtectedChangedError, match="data.py"):
        verify_protected(ws, kb, manifest)
    refused = runner.invoke(app, ["trust", "--workspace", str(root)])
    assert refused.exit_code == 2 and "needs a person" in refused.output
    with pytest.raises(ProtectedChangedError):
        verify_protected(ws, kb, manifest)
    result = runner.invoke(app, ["trust", "--workspace", str(root), "--yes"])
    assert result.exit_code == 0, result.output
    assert "data.py: " in result.output and f"{short} Mallory: Tweak data" in result.output
    assert verify_protected(ws, kb, manifest) == ws.head()
    assert {r["trusted_by"] for r in kb.trusted_protected()} == {"agentx trust"}
    again = runner.invoke(app, ["trust", "--workspace", str(root)])
    assert again.exit_code == 0 and "nothing to do" in again.output
    assert "trust" in runner.invoke(app, ["trust", "--help"]).output

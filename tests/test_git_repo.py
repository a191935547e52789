"""WorkspaceRepo against real git repositories in temp dirs, with no global git config."""
from __future__ import annotations

import subprocess
from pathlib import Path

import git
import pytest

from tools.git_repo import (
    MainMovedError,
    MergeConflictError,
    NotAGitRepoError,
    NothingToCommitError,
    WorkspaceExistsError,
    WorkspaceRepo,
    Worktree,
    GitRepoError,
    resolve_template,
    sanitize_slug,
)


@pytest.fixture(autouse=True)
def no_global_git_identity(tmp_path, monkeypatch):
    """Commits must work on a machine with no ~/.gitconfig and no system config."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "no-global-gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def template(tmp_path) -> Path:
    root = tmp_path / "tiny-template"
    (root / "pkg" / "__pycache__").mkdir(parents=True)
    (root / "pkg" / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"\0")
    (root / "agentx.toml").write_text('[workspace]\nname = "tiny"\n')
    (root / "model.py").write_text("HIDDEN = 8\n\ndef build():\n    return HIDDEN\n")
    (root / "train.py").write_text("def main(run_dir):\n    return None\n")
    (root / "pkg" / "util.py").write_text("X = 1\n")
    (root / ".gitignore").write_text("*.log")  # no trailing newline on purpose
    return root


@pytest.fixture
def ws(tmp_path, template) -> WorkspaceRepo:
    return WorkspaceRepo.init_from_template(tmp_path / "ws", template)


def run_git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def commit_on_main(ws: WorkspaceRepo, name: str, text: str) -> str:
    (ws.root / name).write_text(text)
    run_git(ws.root, "add", name)
    run_git(ws.root, "commit", "-q", "-m", f"edit {name}")
    return ws.head()


def test_init_copies_template_and_makes_one_clean_commit(ws, template):
    assert (ws.root / "model.py").read_text() == (template / "model.py").read_text()
    assert (ws.root / "pkg" / "util.py").exists()
    assert not (ws.root / "pkg" / "__pycache__").exists()
    assert ws.main_branch == "main" and ws.repo.active_branch.name == "main"
    commits = list(ws.repo.iter_commits("main"))
    assert len(commits) == 1
    assert commits[0].message.strip() == "Create workspace from template tiny-template"
    assert commits[0].author.email == "agentx@localhost"
    assert ws.head() == commits[0].hexsha
    assert ws.head("main") == commits[0].hexsha
    assert ws.repo.git.config("--local", "user.name") == "agentx"
    ignore_lines = (ws.root / ".gitignore").read_text().splitlines()
    assert ignore_lines == ["*.log", ".agentx/", "__pycache__/"]
    assert ws.is_clean()
    assert sorted(ws.repo.git.ls_files().splitlines()) == [
        ".gitignore", "agentx.toml", "model.py", "pkg/util.py", "train.py"
    ]


def test_init_refuses_non_empty_dest_and_names_existing_workspace(tmp_path, template, ws):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(WorkspaceExistsError, match="not empty"):
        WorkspaceRepo.init_from_template(busy, template)
    assert sorted(p.name for p in busy.iterdir()) == ["notes.txt"]
    with pytest.raises(WorkspaceExistsError, match="already an agentx workspace"):
        WorkspaceRepo.init_from_template(ws.root, template)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert WorkspaceRepo.init_from_template(empty, template).root == empty


def test_template_names_resolve_under_workspaces_package(tmp_path):
    import workspaces

    assert resolve_template("movielens-ctr") == Path(workspaces.__file__).resolve().parent / "movielens-ctr"
    with pytest.raises(GitRepoError, match="template not found"):
        WorkspaceRepo.init_from_template(tmp_path / "x", "no-such-template")
    assert not (tmp_path / "x").exists()


def test_opening_a_non_repo_gives_a_clear_error(tmp_path, ws):
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(NotAGitRepoError, match="is not a git repository"):
        WorkspaceRepo(plain)
    with pytest.raises(NotAGitRepoError, match="is not a git repository"):
        WorkspaceRepo(tmp_path / "missing")
    with pytest.raises(NotAGitRepoError):
        WorkspaceRepo(ws.root / "pkg")  # a subfolder is not the repository's top
    assert WorkspaceRepo.open(ws.root).head() == ws.head()


def test_sanitize_slug():
    assert sanitize_slug("Add DCN Cross-Layer (v2)!") == "add-dcn-cross-layer-v2"
    long = sanitize_slug("a" * 39 + " bbbbbb")
    assert long == "a" * 39 and len(long) <= 40
    assert sanitize_slug("***") == "experiment"


def test_create_experiment_branch_and_worktree(ws):
    base = ws.head()
    wt = ws.create_experiment("e7", "Bigger Hidden Layer!")
    assert wt == Worktree(ws.root / ".agentx/worktrees/e7-bigger-hidden-layer",
                          "agentx/e7-bigger-hidden-layer", base, "e7")
    assert git.Repo(wt.path).active_branch.name == wt.branch
    assert (wt.path / "model.py").exists()
    assert str(wt.path) in run_git(ws.root, "worktree", "list")
    assert ws.is_clean()  # .agentx/ stays ignored in the user's checkout
    assert ws.experiments() == [wt]
    with pytest.raises(GitRepoError, match="already exists"):
        ws.create_experiment("e7", "bigger hidden layer")
    with pytest.raises(ValueError, match="experiment id"):
        ws.create_experiment("../evil", "x")


def test_commit_carries_a_parseable_trailer(ws):
    wt = ws.create_experiment("e1", "wider")
    with pytest.raises(NothingToCommitError):
        ws.commit(wt, "nothing yet", "e1")
    (wt.path / "model.py").write_text("HIDDEN = 32\n\ndef build():\n    return HIDDEN\n")
    (wt.path / "notes.md").write_text("new file\n")
    sha = ws.commit(wt, "Widen hidden layer to 32", "e1")
    assert ws.head(wt.branch) == sha
    message = ws.repo.commit(sha).message
    assert message.startswith("Widen hidden layer to 32\n\nExperiment-Id: e1")
    parsed = subprocess.run(["git", "interpret-trailers", "--parse"], input=message,
                            capture_output=True, text=True, check=True).stdout
    assert parsed.strip() == "Experiment-Id: e1"
    assert ws.trailer_experiments() == {sha: "e1"}
    assert ws.find_commits("e1") == [sha] and ws.find_commits("e2") == []
    assert ws.head("main") == wt.base_commit and ws.is_clean()


def test_diff_shows_only_the_changed_file_even_after_main_moves(ws):
    wt = ws.create_experiment("e2", "lr")
    (wt.path / "train.py").write_text("LR = 0.01\n\ndef main(run_dir):\n    return None\n")
    ws.commit(wt, "Set learning rate", "e2")
    commit_on_main(ws, "model.py", "HIDDEN = 16\n")
    diff = ws.diff(wt.branch)
    assert "+LR = 0.01" in diff and "model.py" not in diff
    assert ws.changed_paths(wt.branch) == ["train.py"]
    assert "train.py" in ws.diff_stat(wt.branch) and "1 file changed" in ws.diff_stat(wt.branch)
    assert sorted(ws.changed_paths(wt.branch, base="main")) == ["model.py", "train.py"]


def test_base_worktree_is_detached_reused_and_restored(ws):
    first = ws.head()
    path = ws.base_worktree("main")
    assert path == ws.root / ".agentx/worktrees" / f"base-{first[:12]}"
    assert git.Repo(path).head.is_detached and git.Repo(path).head.commit.hexsha == first
    (path / "model.py").write_text("tampered\n")
    (path / "scratch.txt").write_text("leftover\n")
    assert ws.base_worktree(first) == path
    assert (path / "model.py").read_text().startswith("HIDDEN = 8") and not (path / "scratch.txt").exists()
    assert run_git(ws.root, "worktree", "list").count(str(path)) == 1
    second = commit_on_main(ws, "model.py", "HIDDEN = 16\n")
    assert ws.base_worktree("main").name == f"base-{second[:12]}"
    assert ws.is_clean()


def test_remove_worktree_and_prune(ws):
    wt = ws.create_experiment("e3", "drop")
    (wt.path / "uncommitted.txt").write_text("x")
    ws.remove_worktree(wt, delete_branch=True)
    assert not wt.path.exists()
    assert str(wt.path) not in run_git(ws.root, "worktree", "list")
    assert wt.branch not in {h.name for h in ws.repo.heads}

    kept = ws.create_experiment("e4", "keep")
    ws.remove_worktree(kept.path)  # by path; the branch stays
    assert not kept.path.exists() and kept.branch in {h.name for h in ws.repo.heads}

    stale = ws.create_experiment("e5", "stale")
    base = ws.base_worktree("main")
    subprocess.run(["rm", "-rf", str(stale.path)], check=True)  # folder vanished behind git's back
    stray = ws.worktrees_dir / "stray"
    stray.mkdir()
    assert ws.prune() == [stray]
    listing = run_git(ws.root, "worktree", "list")
    assert str(stale.path) not in listing and str(base) in listing and not stray.exists()
    with pytest.raises(GitRepoError, match="main checkout"):
        ws.remove_worktree(ws.root)


def test_merge_makes_a_merge_commit(ws):
    wt = ws.create_experiment("e6", "ship")
    (wt.path / "model.py").write_text("HIDDEN = 64\n")
    tip = ws.commit(wt, "Use 64 units", "e6")
    before = ws.head()
    merged = ws.merge(wt.branch, "Merge e6: 64 units")
    commit = ws.repo.commit(merged)
    assert [p.hexsha for p in commit.parents] == [before, tip]
    assert commit.message.strip() == "Merge e6: 64 units"
    assert ws.head("main") == merged and (ws.root / "model.py").read_text() == "HIDDEN = 64\n"
    assert ws.is_clean()


def test_merge_refuses_when_main_moved_unless_allowed(ws):
    wt = ws.create_experiment("e8", "late")
    (wt.path / "train.py").write_text("EPOCHS = 3\n")
    ws.commit(wt, "More epochs", "e8")
    old = wt.base_commit
    new = commit_on_main(ws, "model.py", "HIDDEN = 16\n")
    with pytest.raises(MainMovedError, match=f"main moved from {old[:12]} to {new[:12]}") as err:
        ws.merge(wt.branch, "Merge e8")
    assert (err.value.old, err.value.new) == (old, new) and ws.head() == new
    merged = ws.merge(wt.branch, "Merge e8", allow_moved=True)
    assert ws.repo.commit(merged).parents[0].hexsha == new
    assert (ws.root / "train.py").read_text() == "EPOCHS = 3\n"


def test_merge_conflict_aborts_and_leaves_main_alone(ws):
    wt = ws.create_experiment("e9", "clash")
    (wt.path / "model.py").write_text("HIDDEN = 128\n")
    ws.commit(wt, "128 units", "e9")
    moved = commit_on_main(ws, "model.py", "HIDDEN = 4\n")
    with pytest.raises(MergeConflictError, match="model.py"):
        ws.merge(wt.branch, "Merge e9", allow_moved=True)
    assert ws.head() == moved and ws.is_clean()
    assert not (ws.root / ".git" / "MERGE_HEAD").exists()


def test_merge_when_main_is_not_checked_out(ws):
    run_git(ws.root, "checkout", "-q", "-b", "mine")
    wt = ws.create_experiment("e10", "elsewhere")
    (wt.path / "model.py").write_text("HIDDEN = 2\n")
    ws.commit(wt, "2 units", "e10")
    merged = ws.merge(wt.branch, "Merge e10")
    assert ws.head("main") == merged and ws.repo.active_branch.name == "mine"
    assert (ws.root / "model.py").read_text().startswith("HIDDEN = 8")
    assert not (ws.worktrees_dir / "merge-main").exists()


def test_plain_repo_gets_agentx_dir_excluded_locally(tmp_path):
    root = tmp_path / "user-repo"
    root.mkdir()
    run_git(root, "init", "-q", "-b", "master")
    (root / "a.py").write_text("A = 1\n")
    run_git(root, "add", "a.py")
    run_git(root, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-q", "-m", "init")
    ws = WorkspaceRepo(root)
    assert ws.main_branch == "master"
    wt = ws.create_experiment("e1", "try")
    (wt.path / "a.py").write_text("A = 2\n")
    sha = ws.commit(wt, "change a", "e1")  # falls back to the agentx identity
    assert ws.repo.commit(sha).author.email == "agentx@localhost"
    assert ws.is_clean() and not (root / ".gitignore").exists()

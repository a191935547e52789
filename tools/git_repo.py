"""Git tools for workspaces (the model repositories agentx experiments on).

A `WorkspaceRepo` is the side-effect object the rest of agentx receives. Every experiment
is a branch `agentx/<exp_id>-<slug>` checked out in its own git worktree under
`<root>/.agentx/worktrees/`, so the user's own checkout is never switched or dirtied.
Control arms train in detached worktrees at a base commit (`base_worktree`). Commits made
for an experiment carry an `Experiment-Id: <exp_id>` git trailer, which is how commits are
found again (`trailer_experiments`, `find_commits`).

Commits made here never prompt: they use the repository's identity when one is
configured, otherwise `agentx <agentx@localhost>`, and they are never GPG-signed.
Every repository here, worktrees included, is opened with `tools.git_safe.open_repo`: no
hook of the repository runs (pre-commit, post-commit, post-checkout, post-merge, ...), nor
any filter or merge driver the repository's own config sets (see tools/git_safe.py for
what that does and does not cover). What the harness trusts is read from git objects:
`export_tree` and `blobs`, never a working tree.
"""
from __future__ import annotations

import functools
import re
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import git

from agentx.errors import UserError
from tools import git_safe
from tools.git_safe import open_repo

BRANCH_PREFIX = "agentx/"
TRAILER_KEY = "Experiment-Id"
MANIFEST = "agentx.toml"
IGNORED_LINES = (".agentx/", "__pycache__/")
AGENTX_NAME, AGENTX_EMAIL = "agentx", "agentx@localhost"
_EXP_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_NO_DRIVERS = ("--no-ext-diff", "--no-textconv")   # diff drivers are config-set commands


class GitRepoError(UserError, RuntimeError):
    """A git operation on a workspace could not be done; the message says why."""


class NotAGitRepoError(GitRepoError):
    pass


class WorkspaceExistsError(GitRepoError):
    pass


class NothingToCommitError(GitRepoError):
    pass


class MainMovedError(GitRepoError):
    def __init__(self, branch: str, old: str, new: str):
        self.branch, self.old, self.new = branch, old, new
        super().__init__(
            f"main moved from {old[:12]} to {new[:12]} since {branch} was branched; "
            "re-evaluate against the new main or pass allow_moved=True"
        )


class MergeConflictError(GitRepoError):
    def __init__(self, branch: str, paths: list[str]):
        self.branch, self.paths = branch, paths
        super().__init__(f"merging {branch} conflicts in: {', '.join(paths) or '(unknown)'}; merge aborted")


@dataclass(frozen=True)
class Worktree:
    """An experiment's checkout: its folder, branch and the commit it was branched from."""

    path: Path
    branch: str
    base_commit: str
    exp_id: str


def sanitize_slug(slug: str) -> str:
    """Lowercase, runs of anything outside [a-z0-9] become '-', at most 40 characters."""
    cleaned = re.sub(r"[^a-z0-9]+", "-", slug.lower()).strip("-")[:40].rstrip("-")
    return cleaned or "experiment"


def resolve_template(template: str | Path) -> Path:
    """A template name (a folder of the `workspaces` package) or an explicit folder path."""
    if isinstance(template, Path) or "/" in template or "\\" in template:
        path = Path(template)
    else:
        import workspaces  # the package folder holds the bundled templates

        path = Path(workspaces.__file__).resolve().parent / template
    if not path.is_dir():
        raise GitRepoError(f"workspace template not found: {path}")
    return path


def _append_ignores(gitignore: Path) -> None:
    existing = gitignore.read_text().splitlines() if gitignore.exists() else []
    missing = [line for line in IGNORED_LINES if line not in {e.strip() for e in existing}]
    if missing:
        prefix = "\n" if existing and not gitignore.read_text().endswith("\n") else ""
        with gitignore.open("a") as f:
            f.write(prefix + "\n".join(missing) + "\n")


class WorkspaceRepo:
    """A workspace git repository: experiment branches, worktrees, diffs, merges."""

    def __init__(self, root: str | Path):
        root = Path(root)
        try:
            self.repo = open_repo(root)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise NotAGitRepoError(
                f"{root} is not a git repository (its top folder); "
                "create a workspace with `agentx init` or run `git init` there"
            ) from None
        if self.repo.bare or self.repo.working_tree_dir is None:
            raise NotAGitRepoError(f"{root} is a bare git repository; a workspace needs a checkout")
        self.root = Path(self.repo.working_tree_dir).resolve()

    @classmethod
    def open(cls, root: str | Path) -> WorkspaceRepo:
        return cls(root)

    @classmethod
    def init_from_template(cls, dest: str | Path, template: str | Path = "movielens-ctr") -> WorkspaceRepo:
        """Copy a template into `dest` (new or empty), `git init` on main, commit it."""
        dest = Path(dest)
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            if (dest / ".git").exists() and (dest / MANIFEST).exists():
                raise WorkspaceExistsError(
                    f"{dest} is already an agentx workspace; open it with WorkspaceRepo.open({str(dest)!r})"
                )
            raise WorkspaceExistsError(f"{dest} exists and is not empty; choose a new or empty folder")
        src = resolve_template(template)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".git", ".agentx")
        shutil.copytree(src, dest, ignore=ignore, dirs_exist_ok=True)
        _append_ignores(dest / ".gitignore")
        repo = git.Repo.init(dest, initial_branch="main")
        with repo.config_writer() as config:
            config.set_value("user", "name", AGENTX_NAME)
            config.set_value("user", "email", AGENTX_EMAIL)
        ws = cls(dest)
        ws.repo.git.add(A=True)
        ws._commit(ws.repo, f"Create workspace from template {src.name}")
        return ws

    # --- refs -----------------------------------------------------------------------

    @property
    def main_branch(self) -> str:
        heads = {h.name for h in self.repo.heads}
        for name in ("main", "master"):
            if name in heads:
                return name
        if self.repo.head.is_detached:
            raise GitRepoError(f"{self.root} has no main or master branch and HEAD is detached")
        return self.repo.active_branch.name

    @property
    def worktrees_dir(self) -> Path:
        return self.root / ".agentx" / "worktrees"

    def head(self, ref: str | None = None) -> str:
        """The full sha of `ref` (default: the main branch)."""
        ref = ref or self.main_branch
        try:
            return self.repo.git.rev_parse("--verify", "--quiet", f"{ref}^{{commit}}")
        except git.GitCommandError:
            raise GitRepoError(f"unknown revision {ref!r} in {self.root}") from None

    def is_clean(self) -> bool:
        """True when the main checkout has no changes and no untracked files."""
        return not self.repo.git.status("--porcelain")

    def base_of(self, branch: str) -> str:
        """The commit an experiment branch was created at (merge-base with main otherwise)."""
        recorded = self._config_get(f"branch.{branch}.agentxbase")
        if recorded:
            return recorded
        return self.repo.git.merge_base(self.main_branch, self.head(branch))

    # --- experiments ------------------------------------------------------------------

    def create_experiment(self, exp_id: str, slug: str, base: str | None = None) -> Worktree:
        """Branch `agentx/<exp_id>-<slug>` at `base`, checked out in its own worktree."""
        if not _EXP_ID.fullmatch(exp_id):
            raise ValueError(f"experiment id {exp_id!r} must match {_EXP_ID.pattern}")
        name = f"{exp_id}-{sanitize_slug(slug)}"
        branch, path = BRANCH_PREFIX + name, self.worktrees_dir / name
        base_sha = self.head(base)
        if branch in {h.name for h in self.repo.heads}:
            raise GitRepoError(f"branch {branch} already exists")
        if path.exists():
            raise GitRepoError(f"worktree folder {path} already exists; remove it or call prune()")
        self._ensure_ignored()
        self.repo.git.worktree("add", "-q", "-b", branch, str(path), base_sha)
        self.repo.git.config(f"branch.{branch}.agentxbase", base_sha)
        self.repo.git.config(f"branch.{branch}.agentxexp", exp_id)
        return Worktree(path=path, branch=branch, base_commit=base_sha, exp_id=exp_id)

    def experiments(self) -> list[Worktree]:
        """The experiment worktrees that exist now (e.g. to resume after a restart)."""
        found = []
        for path, entry in self._worktree_entries().items():
            branch = entry.get("branch", "").removeprefix("refs/heads/")
            exp_id = self._config_get(f"branch.{branch}.agentxexp") if branch else None
            if exp_id:
                found.append(Worktree(path, branch, self.base_of(branch), exp_id))
        return found

    def commit(self, worktree: Worktree, message: str, exp_id: str | None = None) -> str:
        """Stage everything in the worktree and commit with an Experiment-Id trailer."""
        exp_id = exp_id or worktree.exp_id
        wt = open_repo(worktree.path)
        wt.git.add(A=True)
        if not wt.git.diff("--cached", "--name-only"):
            raise NothingToCommitError(f"nothing to commit in {worktree.path} ({worktree.branch})")
        return self._commit(wt, f"{message.rstrip()}\n\n{TRAILER_KEY}: {exp_id}\n")

    # --- diffs --------------------------------------------------------------------------

    def diff(self, branch: str, base: str | None = None) -> str:
        """Unified diff of `branch` against its base commit (or `base`)."""
        return self.repo.git.diff(*_NO_DRIVERS, self._base(branch, base), self.head(branch))

    def diff_stat(self, branch: str, base: str | None = None) -> str:
        return self.repo.git.diff(*_NO_DRIVERS, "--stat", self._base(branch, base), self.head(branch))

    def changed_paths(self, branch: str, base: str | None = None) -> list[str]:
        out = self.repo.git.diff("--name-only", self._base(branch, base), self.head(branch))
        return out.splitlines()

    # --- committed trees (what the harness trusts) -------------------------------------

    def tree(self, commit: str) -> str:
        """The sha of `commit`'s tree (equal trees: equal files)."""
        return self.repo.git.rev_parse("--verify", f"{self.head(commit)}^{{tree}}")

    def export_tree(self, commit: str, dest: str | Path) -> str:
        """Write exactly `commit`'s committed files into `dest` (new or empty, no .git); return
        the tree sha. Read from git objects: no working tree, filters or attributes."""
        try:
            return git_safe.export_tree(self.repo, self.head(commit), Path(dest))
        except (git_safe.UnsafeTreeError, FileExistsError) as exc:
            raise GitRepoError(f"cannot export {commit[:12]} to {dest}: {exc}") from None

    def blobs(self, commit: str, rules: list[str]) -> dict[str, str]:
        """path -> blob sha of every file under `rules` (files or folders) in `commit`;
        a rule that names nothing there maps to 'absent'."""
        return git_safe.blobs(self.repo, self.head(commit), rules)

    def commits_touching(self, path: str, until: str, since: str | None = None,
                         limit: int = 5) -> list[tuple[str, str, str]]:
        """(short sha, author, subject) of the newest commits in since..until that changed `path`."""
        span = f"{since}..{until}" if since else until
        out = self.repo.git.log(f"--max-count={limit}", "--format=%h%x1f%an%x1f%s", span, "--", path,
                                env={"GIT_LITERAL_PATHSPECS": "1"})
        return [tuple(line.split("\x1f", 2)) for line in out.splitlines() if line.count("\x1f") == 2]

    def is_ancestor(self, older: str, newer: str) -> bool:
        try:
            self.repo.git.merge_base("--is-ancestor", older, newer)
            return True
        except git.GitCommandError:   # exit 1: not an ancestor; 128: an unknown commit
            return False

    # --- worktrees ----------------------------------------------------------------------

    def base_worktree(self, commit: str) -> Path:
        """A detached worktree at `commit`, reused (and restored to clean) if present."""
        sha = self.head(commit)
        path = self.worktrees_dir / f"base-{sha[:12]}"
        entry = self._worktree_entries().get(path.resolve())
        if entry and entry.get("HEAD") == sha and path.is_dir():
            wt = open_repo(path)
            wt.git.reset("--hard", "-q", sha)
            wt.git.clean("-fdq")
            return path
        if entry or path.exists():
            self.remove_worktree(path)
        self._ensure_ignored()
        self.repo.git.worktree("add", "-q", "--detach", str(path), sha)
        return path

    def remove_worktree(self, worktree_or_path: Worktree | str | Path, delete_branch: bool = False) -> None:
        """Remove a worktree (discarding its uncommitted changes), optionally its branch."""
        is_wt = isinstance(worktree_or_path, Worktree)
        path = Path(worktree_or_path.path if is_wt else worktree_or_path).resolve()
        if path == self.root.resolve():
            raise GitRepoError("refusing to remove the main checkout")
        entry = self._worktree_entries().get(path)
        inside = self.worktrees_dir.resolve() in path.parents
        if entry is None and not inside:
            raise GitRepoError(f"{path} is not a worktree of {self.root}")
        if entry is not None:
            self.repo.git.worktree("remove", "--force", str(path))
        if path.exists() and inside:
            shutil.rmtree(path)
        self.repo.git.worktree("prune")
        if delete_branch:
            branch = worktree_or_path.branch if is_wt else (entry or {}).get("branch", "")
            branch = branch.removeprefix("refs/heads/")
            if branch and branch in {h.name for h in self.repo.heads}:
                self.repo.git.branch("-D", branch)

    def prune(self) -> list[Path]:
        """Drop stale worktree entries and folders under .agentx/worktrees git no longer knows."""
        self.repo.git.worktree("prune")
        known = set(self._worktree_entries())
        removed = []
        if self.worktrees_dir.is_dir():
            for child in sorted(self.worktrees_dir.iterdir()):
                if child.resolve() not in known:
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
                    removed.append(child)
        return removed

    # --- merge and trailers -------------------------------------------------------------

    def merge(self, branch: str, message: str, allow_moved: bool = False) -> str:
        """Merge `branch` into main with a merge commit; returns the merge commit's sha."""
        main = self.main_branch
        base, now = self.base_of(branch), self.head(main)
        if base != now and not allow_moved:
            raise MainMovedError(branch, base, now)
        checked_out = {e.get("branch"): p for p, e in self._worktree_entries().items()}
        where = checked_out.get(f"refs/heads/{main}")
        temp = None
        if where is None:
            temp = self.worktrees_dir / "merge-main"
            self._ensure_ignored()
            self.repo.git.worktree("add", "-q", str(temp), main)
            where = temp
        try:
            target = open_repo(where)
            if target.is_dirty(untracked_files=False):
                raise GitRepoError(f"{where} has uncommitted changes on {main}; commit or stash them first")
            try:
                self._commit(target, message, merge=self.head(branch))
            except git.GitCommandError:
                conflicted = target.git.diff("--name-only", "--diff-filter=U").splitlines()
                if (Path(target.git_dir) / "MERGE_HEAD").exists():
                    target.git.merge("--abort")
                raise MergeConflictError(branch, conflicted) from None
            return target.head.commit.hexsha
        finally:
            if temp is not None:
                self.remove_worktree(temp)

    def trailer_experiments(self) -> dict[str, str]:
        """{commit sha: exp_id} for every commit on any branch with an Experiment-Id trailer."""
        fmt = f"--format=%H%x1f%(trailers:key={TRAILER_KEY},valueonly)%x1e"
        found = {}
        for record in self.repo.git.log("--all", fmt).split("\x1e"):
            sha, _, value = record.strip().partition("\x1f")
            if value.strip():
                found[sha] = value.strip().splitlines()[0].strip()
        return found

    def find_commits(self, exp_id: str) -> list[str]:
        return [sha for sha, found in self.trailer_experiments().items() if found == exp_id]

    # --- helpers ------------------------------------------------------------------------

    def _commit(self, repo: git.Repo, message: str, merge: str | None = None) -> str:
        env = {}
        if not self._config_get("user.email"):
            env = {"GIT_AUTHOR_NAME": AGENTX_NAME, "GIT_AUTHOR_EMAIL": AGENTX_EMAIL,
                   "GIT_COMMITTER_NAME": AGENTX_NAME, "GIT_COMMITTER_EMAIL": AGENTX_EMAIL}
        if merge:
            repo.git.merge("--no-ff", "--no-edit", "--no-gpg-sign", "-q", "-m", message, merge, env=env)
        else:
            repo.git.commit("--no-gpg-sign", "-q", "-m", message, env=env)
        return repo.head.commit.hexsha

    def _base(self, branch: str, base: str | None) -> str:
        return self.head(base) if base else self.base_of(branch)

    def _config_get(self, key: str) -> str | None:
        try:
            return self.repo.git.config("--get", key) or None
        except git.GitCommandError:  # exit 1: the key is not set
            return None

    def _worktree_entries(self) -> dict[Path, dict[str, str]]:
        """Registered worktrees: resolved path -> {"HEAD", "branch"?, "detached"?, ...}."""
        entries: dict[Path, dict[str, str]] = {}
        for block in self.repo.git.worktree("list", "--porcelain").split("\n\n"):
            fields = dict((line.split(" ", 1) + [""])[:2] for line in block.splitlines() if line)
            if "worktree" in fields:
                entries[Path(fields.pop("worktree")).resolve()] = fields
        return entries

    def _ensure_ignored(self) -> None:
        """Keep .agentx/ out of `git status`: repos not made by init get a local exclude."""
        if self.repo.ignored(".agentx/worktrees"):
            return
        exclude = Path(self.repo.common_dir) / "info" / "exclude"
        exclude.parent.mkdir(parents=True, exist_ok=True)
        text = exclude.read_text() if exclude.exists() else ""
        exclude.write_text(text + ("" if text.endswith("\n") or not text else "\n") + ".agentx/\n")


# Experiments in flight at once (--parallel) share one repository: its worktree list, refs and
# GitPython's long-lived cat-file processes are not safe to drive from two threads at once.
# Every public method holds the repository's lock (one per checkout root, re-entrant, shared by
# every WorkspaceRepo of that root in this process); git calls are short next to a run.
_REPO_LOCKS: dict[Path, threading.RLock] = {}
_REPO_LOCKS_GUARD = threading.Lock()


def _repo_lock(root: Path) -> threading.RLock:
    with _REPO_LOCKS_GUARD:
        return _REPO_LOCKS.setdefault(root, threading.RLock())


def _serialised(method):
    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with _repo_lock(self.root):
            return method(self, *args, **kwargs)
    return locked


for _name, _member in list(vars(WorkspaceRepo).items()):
    if callable(_member) and not _name.startswith("_") and not isinstance(_member, (classmethod, staticmethod)):
        setattr(WorkspaceRepo, _name, _serialised(_member))

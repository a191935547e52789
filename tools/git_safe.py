"""Git as the trusted side uses it: no hooks, no repository-configured commands, committed
trees read from git objects.

A workspace's `.git` may have been written by code agentx does not trust (experiment code
that ran `git commit`, or wrote `.git/hooks/post-commit` or `.git/config`). `open_repo`
opens a repository whose every git call (GitPython's own included; git passes `-c` values
on to the git processes it starts) runs with:

- `core.hooksPath=/dev/null`: no hook runs (pre-commit, post-commit, post-checkout,
  post-merge, reference-transaction, pre-auto-gc, ...), wherever hooks are configured;
- `core.fsmonitor=false`: no file-system monitor command;
- `log.showSignature=false`, `commit.gpgSign=false`, `tag.gpgSign=false`: no gpg program;
- `gc.auto=0`, `maintenance.auto=false`: no background gc or maintenance process;
- every filter driver (`filter.<name>.clean|smudge|process`) set in the repository's own
  config (`.git/config`, a worktree's config, and files they include) is emptied, which
  git reads as "no filter", and every merge driver (`merge.<name>.driver`) set there
  becomes `false`, so a merge it would have resolved is a conflict instead. The config
  files are stat'ed before every call and listed again when one changed (~0.1 ms; a
  listing is one more git call), so a driver added while a repo object is open counts.

NOT covered: drivers from the person's global or system config are honoured (git-lfs
lives there); diff drivers and `diff.external` apply only to patch output, so callers
that print diffs pass `--no-ext-diff --no-textconv` (tools/git_repo.py does); a config
file rewritten within one call's run, or with the same inode, size and mtime, is missed;
submodules are not opened this way. The harness needs none of this for what it trusts:
that comes from `export_tree` and `blobs`.

`export_tree` and `blobs` read a commit's tree from git objects (`ls-tree` and the object
database), never a working tree, index or attributes: what they return is exactly what
was committed, byte for byte (no smudge filters, no end-of-line conversion, no
`export-ignore`/`export-subst`, which `git archive` and `checkout-index` would apply).
"""

from __future__ import annotations

import os
import posixpath
import re
import threading
from pathlib import Path

import git

SAFE_CONFIG = ("core.hooksPath=/dev/null", "core.fsmonitor=false", "log.showSignature=false",
               "commit.gpgSign=false", "tag.gpgSign=false", "gc.auto=0", "maintenance.auto=false")
_DRIVERS = r"^(filter|merge)\..+\.(clean|smudge|process|driver)$"
_REPO_SCOPES = ("local", "worktree")
ABSENT = "absent"
_LINK, _GITLINK, _EXEC = "120000", "160000", "100755"


class UnsafeTreeError(ValueError):
    """A committed tree that cannot be written out as it is (a path or link leaving it)."""


def open_repo(path: str | Path) -> git.Repo:
    """A GitPython repository whose git calls run no hooks and no repository-set commands."""
    return SafeRepo(path)


class SafeGit(git.Git):
    """`git.Git` whose every call carries SAFE_CONFIG and `-c` values that neutralise the
    filter and merge drivers the repository's config sets. The repository's config files
    (and the files they include) are stat'ed before each call and listed again when one
    changed, so a driver written while a long-lived repo object is open is caught too."""

    def __init__(self, working_dir: str | os.PathLike | None = None):
        super().__init__(working_dir)
        self._watched: dict[str, tuple | None] = {}   # config file -> its stat signature
        self._git_dirs: list[str] = []
        self._lock = threading.RLock()
        self._refreshing = threading.local()          # the refresh's own git calls skip the check
        self.set_persistent_git_options(c=list(SAFE_CONFIG))

    def _call_process(self, method: str, *args, **kwargs):
        if not getattr(self._refreshing, "on", False):
            with self._lock:
                if not self._git_dirs or self._stale():
                    self._refresh()
        return super()._call_process(method, *args, **kwargs)

    def _stale(self) -> bool:
        return any(_signature(path) != seen for path, seen in self._watched.items())

    def _refresh(self) -> None:
        self._refreshing.on = True
        try:
            if not self._git_dirs:
                found = self.rev_parse("--absolute-git-dir", "--git-common-dir").splitlines()
                self._git_dirs = [self._absolute(d) for d in found]
            files = {os.path.join(self._git_dirs[-1], "config"), os.path.join(self._git_dirs[0], "config.worktree")}
            neutral = []
            listing = self.config("--list", "--show-origin", "--show-scope", "-z", strip_newline_in_stdout=False)
            for scope, origin, key in _entries(listing):
                if scope not in _REPO_SCOPES:
                    continue
                if origin.startswith("file:"):
                    files.add(self._absolute(origin[len("file:"):]))
                if re.match(_DRIVERS, key):
                    neutral.append(f"{key}=false" if key.endswith(".driver") else f"{key}=")
            self._watched = {path: _signature(path) for path in sorted(files)}
            self.set_persistent_git_options(c=[*SAFE_CONFIG, *neutral])
        finally:
            self._refreshing.on = False

    def _absolute(self, path: str) -> str:
        return os.path.normpath(os.path.join(self._working_dir or os.getcwd(), path))


class SafeRepo(git.Repo):
    """A `git.Repo` that runs git through SafeGit."""

    GitCommandWrapperType = SafeGit


def _entries(listing: str) -> list[tuple[str, str, str]]:
    """(scope, origin, key) of `git config --list --show-origin --show-scope -z` output."""
    fields = listing.split("\0")
    return [(fields[i], fields[i + 1], fields[i + 2].split("\n", 1)[0]) for i in range(0, len(fields) - 2, 3)]


def _signature(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def tree_entries(repo: git.Repo, commit: str, rules: list[str] | None = None) -> list[tuple[str, str, str]]:
    """(mode, object sha, path) of every file, link and submodule in `commit` (under `rules`)."""
    args = ["-r", "-z", "--full-tree", f"{commit}^{{tree}}"]
    if rules:
        args += ["--", *rules]
    out = repo.git.ls_tree(*args, env={"GIT_LITERAL_PATHSPECS": "1"}, strip_newline_in_stdout=False)
    entries = []
    for record in out.split("\0"):
        if record:
            meta, _, path = record.partition("\t")
            mode, _kind, sha = meta.split()
            entries.append((mode, sha, path))
    return entries


def blobs(repo: git.Repo, commit: str, rules: list[str]) -> dict[str, str]:
    """path -> blob sha of every file under `rules` in `commit`; a rule naming nothing -> 'absent'."""
    found = {path: sha for _, sha, path in tree_entries(repo, commit, rules)
             if any(_covers(rule, path) for rule in rules)}
    for rule in rules:
        if not any(_covers(rule, path) for path in found):
            found[rule.rstrip("/")] = ABSENT
    return dict(sorted(found.items()))


def export_tree(repo: git.Repo, commit: str, dest: Path) -> str:
    """Write exactly the committed tree of `commit` into `dest` (new or empty; no `.git`).

    Returns the tree's sha. Regular files keep their executable bit; a submodule becomes an
    empty folder; a symbolic link is written as one only when it is relative and stays
    inside the tree (others raise UnsafeTreeError, like `tarfile`'s "data" filter). Paths
    with '.', '..' or '.git' parts raise UnsafeTreeError: git refuses to check such trees
    out, but a hand-made tree object can hold them."""
    tree = repo.git.rev_parse("--verify", f"{commit}^{{tree}}")
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FileExistsError(f"{dest} exists and is not an empty folder")
    dest.mkdir(parents=True, exist_ok=True)
    links = []
    for mode, sha, path in tree_entries(repo, tree):
        _check_path(path)
        target = dest.joinpath(*path.split("/"))
        if mode == _LINK:
            links.append((path, target, _read(repo, sha).decode("utf-8", "surrogateescape")))
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if mode == _GITLINK:
            target.mkdir()
            continue
        with open(target, "xb") as f:         # exclusive: never through something already there
            f.write(_read(repo, sha))
        os.chmod(target, 0o755 if mode == _EXEC else 0o644)
    for path, target, link in links:            # last: no file is ever written through a link
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), link))
        if posixpath.isabs(link) or resolved == ".." or resolved.startswith("../"):
            raise UnsafeTreeError(f"{path} is a link to {link!r}, outside the tree")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(link, target)
    return tree


def _read(repo: git.Repo, sha: str) -> bytes:
    return repo.odb.stream(bytes.fromhex(sha)).read()


def _check_path(path: str) -> None:
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..") or p.lower() == ".git" for p in parts):
        raise UnsafeTreeError(f"the tree holds a path git would not check out: {path!r}")


def _covers(rule: str, path: str) -> bool:
    rule = rule.rstrip("/")
    return path == rule or path.startswith(rule + "/")

"""Training commands train committed code only.

agentx trains commits (main's head, experiment branches), never the files in the main
checkout. An uncommitted edit to an editable or protected file would therefore be silently
ignored (or, for a protected file, confuse the harness's checks), so training commands
refuse to start while the main checkout has one. Untracked files outside those paths, and
`.agentx/`, are fine.
"""

from __future__ import annotations

from agentx.errors import UserError
from agentx.workspace import PathRules
from tools.git_repo import WorkspaceRepo

SHOWN = 8     # files named in the message before "and N more"


class UncommittedChangesError(UserError):
    """The main checkout has uncommitted changes to files agentx trains or protects."""


def uncommitted_paths(repo: WorkspaceRepo, rules: PathRules) -> list[str]:
    """Files under the editable or protected paths that differ from main's head in the main
    checkout (staged, unstaged, deleted, renamed or untracked), sorted."""
    out = repo.repo.git.status("--porcelain=v1", "-z", "--untracked-files=all")
    entries = out.split("\0")
    paths: set[str] = set()
    i = 0
    while i < len(entries):
        entry = entries[i]
        i += 1
        if len(entry) < 4:
            continue
        status, path = entry[:2], entry[3:]
        paths.add(path)
        if "R" in status or "C" in status:      # -z puts a rename's source in the next field
            paths.add(entries[i])
            i += 1
    covered = (p for p in paths if not p.startswith(".agentx/"))
    return sorted(p for p in covered if rules.is_protected(p) or rules.is_editable(p))


def require_committed(repo: WorkspaceRepo, rules: PathRules) -> None:
    """Raise UncommittedChangesError (one line naming the files) if `uncommitted_paths` finds any."""
    paths = uncommitted_paths(repo, rules)
    if not paths:
        return
    named = ", ".join(paths[:SHOWN]) + (f" and {len(paths) - SHOWN} more" if len(paths) > SHOWN else "")
    raise UncommittedChangesError(
        f"{repo.root} has uncommitted changes to {named}; agentx trains committed code only: "
        "commit them (`git commit`) or stash them (`git stash`)")

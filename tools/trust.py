"""Trusted protected files: how agentx tells a person's change from experiment code's.

Experiment code runs with the workspace checked out; where it could reach `.git` (no
sandbox, or a sandbox bug) it could commit a change to a protected file (the data module,
the manifest) straight onto main, and the harness, which runs main's data module, would
then score every run with splits the experiment chose. git cannot tell who made a commit
(author names are whatever the committer typed), so agentx keeps its own ledger: the blob
sha of every protected file as a person last accepted it, in the KB (`trusted_protected`),
which kernels never see. Only `agentx init` and `agentx trust` (a person at a terminal, or
`--yes`) write it, plus trust on first use: a workspace whose ledger is empty records what
main holds the first time the harness needs it (a `protected_trusted` event says so).

`verify_protected` compares main's protected blobs (read from git objects, never the
working tree) with the ledger and raises ProtectedChangedError, naming each changed path
and the commits on main that changed it, until a person runs `agentx trust`.

NOT protected: a change made before the ledger was first written (trust on first use
trusts it), a person who runs `agentx trust --yes` without reading, and a KB file that
untrusted code can write (the sandbox keeps kernels away from it).

It lives in tools/, next to the harness that calls it and the git and splits code it
guards; the CLI (agentx/cli.py) calls `changes` and `trust` for `agentx trust`.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentx.errors import UserError
from agentx.workspace import Manifest
from tools.git_repo import WorkspaceRepo
from tools.git_safe import ABSENT

EVENT = "protected_trusted"
FIRST_USE = "first use"


@dataclass(frozen=True)
class Change:
    """A protected path whose blob on main differs from the trusted one."""

    path: str
    trusted: str          # blob sha, or 'absent'
    now: str
    since: str            # the commit it was trusted at ('' when it never was)
    commits: tuple[tuple[str, str, str], ...]   # (short sha, author, subject), newest first
    on_main: bool = True  # False: the trusted commit is no longer an ancestor of main

    def describe(self) -> str:
        shown = "; ".join(f"{sha} {author}: {subject}" for sha, author, subject in self.commits)
        where = "" if self.on_main or not self.since else f", trusted commit {self.since[:10]} is not on main"
        return f"{self.path} ({shown or 'no commit on main names it'}{where})"


class ProtectedChangedError(UserError):
    """Main's protected files differ from the ones a person trusted; the message says which."""

    def __init__(self, workspace: str, changes: list[Change]):
        self.changes = changes
        super().__init__(
            "protected files on main changed since a person trusted them: "
            + ", ".join(c.describe() for c in changes)
            + f". If you made this change, run `agentx trust --workspace {workspace}`; otherwise revert it on main "
            "(experiment code may have committed it)")


def protected_blobs(repo: WorkspaceRepo, commit: str, manifest: Manifest,
                    also: list[str] | None = None) -> dict[str, str]:
    """path -> blob of the manifest's protected paths (and `also`: paths the ledger holds) in `commit`."""
    rules = list(dict.fromkeys([*manifest.paths.protected, *(also or [])]))
    return repo.blobs(commit, rules)


def changes(repo: WorkspaceRepo, kb, manifest: Manifest) -> tuple[str, dict[str, str], list[Change]]:
    """(main's head, its protected blobs, what differs from the ledger); no changes when the
    ledger is empty (nothing was trusted yet)."""
    return _compare(repo, {row["path"]: row for row in kb.trusted_protected()}, manifest)


def _compare(repo: WorkspaceRepo, ledger: dict[str, dict], manifest: Manifest
             ) -> tuple[str, dict[str, str], list[Change]]:
    head = repo.head()
    now = protected_blobs(repo, head, manifest, list(ledger))
    if not ledger:
        return head, now, []
    found = []
    for path in sorted(now.keys() | ledger.keys()):
        row = ledger.get(path)
        trusted, current = (row["blob"] if row else ABSENT), now.get(path, ABSENT)
        if trusted != current:
            since = row["commit_sha"] if row else ""
            on_main = not since or repo.is_ancestor(since, head)
            commits = repo.commits_touching(path, head, since if on_main and since else None)
            found.append(Change(path, trusted, current, since, tuple(commits), on_main))
    return head, now, found


def record(repo: WorkspaceRepo, kb, blobs: dict[str, str], commit: str, by: str) -> None:
    """Write the ledger and log a `protected_trusted` event."""
    kb.trust_protected(blobs, commit, by)
    kb.log_event(EVENT, {"commit": commit, "by": by, "workspace": str(repo.root), "blobs": blobs})


def verify_protected(repo: WorkspaceRepo, kb, manifest: Manifest) -> str:
    """Main's head sha when its protected files match the ledger (an empty ledger is filled:
    trust on first use); ProtectedChangedError otherwise."""
    ledger = {row["path"]: row for row in kb.trusted_protected()}
    head, now, found = _compare(repo, ledger, manifest)
    if found:
        raise ProtectedChangedError(str(repo.root), found)
    if not ledger:
        record(repo, kb, now, head, FIRST_USE)
    return head


def trust(repo: WorkspaceRepo, kb, manifest: Manifest, by: str = "agentx trust") -> tuple[str, list[Change]]:
    """Record main's protected files as trusted now; returns (head, what changed since the last trust)."""
    head, now, found = changes(repo, kb, manifest)
    record(repo, kb, now, head, by)
    return head, found

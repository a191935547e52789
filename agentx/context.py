"""An opened workspace: its manifest, knowledge base, git repo and harness, built once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agentx.paths import cache_dir
from agentx.workspace import Manifest, load_manifest
from knowledge import KnowledgeBase
from knowledge.cards import seed_cards
from tools.git_repo import WorkspaceRepo
from tools.harness import Harness


@dataclass
class Workspace:
    root: Path
    manifest: Manifest
    kb: KnowledgeBase
    repo: WorkspaceRepo
    harness: Harness

    @classmethod
    def open(cls, root: Path | str, progress: Callable[[str], None] = lambda _: None, *,
             warm_kernels: bool = True) -> Workspace:
        """Open a workspace; with `warm_kernels` the next run's kernel starts in the background."""
        root = Path(root).resolve()
        manifest = load_manifest(root)
        repo = WorkspaceRepo(root)
        kb = KnowledgeBase.for_workspace(root)
        if not kb.query("SELECT 1 FROM research_cards LIMIT 1"):
            seed_cards(kb)                     # the shipped research cards the brainstorm reads
        harness = Harness(root, manifest, kb, cache_dir(), progress=progress, warm_kernels=warm_kernels)
        return cls(root, manifest, kb, repo, harness)

    def close(self) -> None:
        self.harness.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def base_checkout(self, commit: str | None = None) -> tuple[Path, str]:
        """A detached worktree at `commit` (default: main's head) and its sha."""
        sha = commit or self.repo.head()
        return self.repo.base_worktree(sha), sha

"""An opened workspace: its manifest, knowledge base, git repo, harness and recipes, built once."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agents.harness_spec import tier_overrides
from agents.recipes.registry import RecipeRegistry, registry_for
from agentx.committed import require_committed
from agentx.lock import WorkspaceLock, lock_workspace
from agentx.paths import cache_dir, state_dir
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
    recipes: RecipeRegistry          # the recipe sets the manifest names (agents/recipes/registry.py)
    lock: WorkspaceLock | None = None

    @classmethod
    def open(cls, root: Path | str, progress: Callable[[str], None] = lambda _: None, *,
             warm_kernels: bool = True, lock: bool = False, wait: bool = False,
             committed_only: bool = False, sandboxed: bool = True, executor: str = "local") -> Workspace:
        """Open a workspace; with `warm_kernels` the next run's kernel starts in the background.

        Commands that train or write take the workspace `lock` (`agentx/lock.py`; with `wait`
        they wait for another holder instead of refusing); training commands pass
        `committed_only` to refuse uncommitted edits to editable or protected files.
        `sandboxed=False` (`--unsandboxed`) runs experiment code without the OS sandbox; with
        it, a machine where no sandbox can be made refuses here (warm kernels) or at the
        first run, with one line saying how to install bubblewrap. `executor` says where
        kernels run (tools/executors.parse_executor: "local", the default, "ray",
        "ray://HOST:PORT" or "ray:HOST:PORT"); a bad spec, Ray not installed or a cluster
        that cannot be reached is a UserError of one line. Scoring stays on this machine."""
        root = Path(root).resolve()
        manifest = load_manifest(root)
        recipes = registry_for(manifest)
        repo = WorkspaceRepo(root)
        if committed_only:
            require_committed(repo, manifest.paths)
        kb = KnowledgeBase.for_workspace(root)
        held = lock_workspace(root, kb, wait=wait, say=progress) if lock else None
        if held is not None:   # kernel slots only live while their (locked) process does: any left are a killed one's
            shutil.rmtree(state_dir(root) / "slots", ignore_errors=True)
        try:
            if not kb.query("SELECT 1 FROM research_cards LIMIT 1"):
                seed_cards(kb)                     # the shipped research cards the brainstorm reads
            if not sandboxed and warm_kernels:
                progress("WARNING: --unsandboxed: experiment code runs without the OS sandbox; it can read "
                         "labels and change files, and every verdict will say so")
            harness = Harness(root, manifest, kb, cache_dir(), progress=progress, warm_kernels=warm_kernels,
                              sandboxed=sandboxed, executor=executor)
            harness.tier_overrides = lambda tier: tier_overrides(kb, tier)
        except BaseException:
            if held is not None:
                held.release()
            raise
        return cls(root, manifest, kb, repo, harness, recipes, held)

    def close(self) -> None:
        try:
            self.harness.close()
        finally:
            if self.lock is not None:
                self.lock.release()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def base_checkout(self, commit: str | None = None) -> tuple[Path, str]:
        """A detached worktree at `commit` (default: main's head) and its sha."""
        sha = commit or self.repo.head()
        return self.repo.base_worktree(sha), sha

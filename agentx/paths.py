"""Where agentx keeps user state. One variable moves it all: AGENTX_CACHE_DIR."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Datasets and prepared splits (never inside a workspace: kernels run there)."""
    if explicit := os.environ.get("AGENTX_CACHE_DIR"):
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "agentx"


def state_dir(workspace: Path) -> Path:
    """`<workspace>/.agentx/`: the KB, run directories, worktrees, checkpoints (git-ignored)."""
    return Path(workspace) / ".agentx"

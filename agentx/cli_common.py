"""What every command shares: the console, progress lines, the workspace option, clean errors."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

# Piped or logged output (CI, nohup) gets wide tables instead of rich's 80-column default.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 150)

WorkspaceOpt = Annotated[Path, typer.Option("--workspace", "-w", help="the workspace (a git repo with agentx.toml)")]


def progress(message: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {message}")


def fail(exc: Exception) -> NoReturn:
    console.print(f"[red]error:[/red] {escape(str(exc))}")   # messages may hold [brackets] (TOML tables)
    raise typer.Exit(2)


def open_workspace(workspace: Path, *, warm_kernels: bool = False):
    """Open a workspace; commands that train pass warm_kernels=True (and close it after)."""
    from agentx.context import Workspace

    return Workspace.open(workspace, progress=progress, warm_kernels=warm_kernels)

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
WaitOpt = Annotated[bool, typer.Option("--wait", help="if another agentx command is training or changing this "
                                       "workspace, wait for it to finish instead of refusing to start")]


UnsandboxedOpt = Annotated[bool, typer.Option(
    "--unsandboxed", help="run experiment code WITHOUT the OS sandbox (bubblewrap), where none can be made; "
    "it could then read the held-out labels or change files, and every verdict, pull request and report says "
    "'unsandboxed'")]


def check_tier(tier: str) -> str:
    """A typer callback for --tier: an unknown tier (not one of the manifest's [tiers.*]
    tables) is one line of error and exit 2, not a traceback."""
    from agentx.workspace import Tiers

    if tier not in Tiers.model_fields:
        console.print(f"[red]error:[/red] unknown tier {escape(repr(tier))}: valid tiers are "
                      f"{', '.join(Tiers.model_fields)}", soft_wrap=True)
        raise typer.Exit(2)
    return tier


def progress(message: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {message}")


def fail(exc: Exception) -> NoReturn:
    # messages may hold [brackets] (TOML tables); one line however long (soft_wrap)
    console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
    raise typer.Exit(2)


def open_workspace(workspace: Path, *, warm_kernels: bool = False, lock: bool = False, wait: bool = False,
                   committed_only: bool = False, unsandboxed: bool = False, executor: str = "local"):
    """Open a workspace (close it after). Commands that train pass warm_kernels, lock and
    committed_only; commands that change it pass lock; `wait` is their --wait option;
    `executor` is --executor (tools/executors: local, ray, ray://HOST:PORT, ray:HOST:PORT)."""
    from agentx.context import Workspace

    return Workspace.open(workspace, progress=progress, warm_kernels=warm_kernels, lock=lock, wait=wait,
                          committed_only=committed_only, sandboxed=not unsandboxed, executor=executor)

"""`agentx recipes`: every recipe and knob of a workspace, whether it applies to main now, and why not."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from agentx.cli_common import WorkspaceOpt, console, fail, open_workspace
from agentx.errors import UserError


def _show(value: Any) -> str:
    return "-" if value is None else json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def recipe_table(result) -> Table:
    table = Table(title=escape(f"recipes (sets: {', '.join(result.sets) or 'none named in agentx.toml [recipes]'})"))
    for column in ("recipe", "set", "kind", "family", "applies", "left", "why not / what is left"):
        table.add_column(column, justify="right" if column == "left" else "left")
    for r in result.recipes:
        table.add_row(r.name, r.recipe_set, r.kind, r.family, "yes" if r.applicable else "[red]no[/red]",
                      f"{r.left}/{r.settings}", escape(r.note))
    return table


def knob_table(result) -> Table:
    table = Table(title=escape("knobs (agentx.toml [knobs.*])"))
    for column in ("knob", "where", "type", "current", "applies", "why not"):
        table.add_column(column)
    for k in result.knobs:
        table.add_row(k.name, f"{k.file}:{k.key}", k.type, escape(_show(k.current)),
                      "yes" if k.applicable else "[red]no[/red]", escape(k.reason or "-"))
    return table


def recipes(workspace: WorkspaceOpt,
            as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of tables")] = False) -> None:
    """List the workspace's recipes and knobs: does each apply to main's code now, and why not.

    The recipes are those of the sets agentx.toml names under \\[recipes] (bundled with agentx,
    or installed plugins). Each is dry-run at every point of its parameter grid on a scratch
    copy of main's files (the workspace is not changed): 'applies' when at least one point
    does, else the default's reason; 'left' counts the untried points that apply, which is
    what the heuristic brain may still propose. A knob applies when its current value can be
    read. The last line sums it up, as `agentx run` does when it runs out of proposals."""
    from agents.applicability import summary, survey

    try:
        with open_workspace(workspace) as ws:
            result = survey(ws)
    except UserError as exc:
        fail(exc)
    if as_json:
        print(json.dumps(result.as_dict(), default=str, indent=2))
        return
    if result.recipes:
        console.print(recipe_table(result))
    if result.knobs:
        console.print(knob_table(result))
    console.print(escape(summary(result)), soft_wrap=True)

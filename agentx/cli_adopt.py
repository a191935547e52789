"""`agentx adopt PATH`: a starter manifest and feature catalog for an existing model repository."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from agentx.cli_common import console, fail
from agentx.errors import UserError


def adopt(
    path: Annotated[Path, typer.Argument(help="the top folder of an existing git repository with a data module "
                                              "and an entrypoint (docs/contracts.md)")],
    data: Annotated[str | None, typer.Option("--data", help="the data module, a .py file relative to PATH that "
                                             "defines prepare(cache_dir, out_dir); default: the one .py file "
                                             "that defines prepare")] = None,
    entrypoint: Annotated[str | None, typer.Option("--entrypoint", help="module:function called as "
                                                   "function(run_dir); default: the one module with a "
                                                   "main(run_dir)")] = None,
    id_column: Annotated[str, typer.Option("--id-column", help="the row id column of the data module's "
                                           "files")] = "row_id",
    label_column: Annotated[str, typer.Option("--label-column", help="the 0/1 label column")] = "label",
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing agentx.toml and "
                                        "features.yaml")] = False,
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="seconds the data module may take")] = 600.0,
) -> None:
    """Write a starter agentx.toml and features.yaml into an existing model repository.

    Finds the data module and the entrypoint (or takes --data / --entrypoint), runs the data
    module ONCE in a child process (not in agentx's own: its code is not trusted yet) into a
    temporary folder, and reads the columns of train.csv: the id and label columns, user_id and
    item_id when present, and every other column as a feature-catalog entry with a guessed type.
    The manifest gets an AUC metric, micro and full tiers, editable and protected paths, and
    commented-out \\[knobs] and \\[recipes] examples; guesses are marked TODO. Refuses when
    agentx.toml exists, unless --force. Nothing is committed: read, edit, declare knobs, commit,
    then `agentx check`."""
    from agentx.adopt import adopt as write_starter
    from agentx.adopt import next_steps

    try:
        adoption = write_starter(path, data=data, entrypoint=entrypoint, id_column=id_column,
                                 label_column=label_column, force=force, timeout_s=timeout)
    except UserError as exc:
        fail(exc)
    a = adoption
    console.print(f"data module {a.data_module}, entrypoint {a.entrypoint}, {a.train_rows} train rows")
    roles = ", ".join(f"{role} {name}" for role in ("id", "label", "user", "item") if (name := a.column(role)))
    console.print(f"columns: {escape(roles)}; {len(a.features)} catalog entries "
                  f"({', '.join(f'{c.name} ({c.type})' for c in a.features)})", soft_wrap=True)
    console.print(escape(f"editable: {', '.join(a.editable)}; protected: {', '.join(a.protected)}"), soft_wrap=True)
    for written in a.written:
        console.print(f"wrote {written}")
    console.print("next:")
    for step in next_steps(a):
        console.print(escape(step), soft_wrap=True)

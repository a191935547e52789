"""`agentx run`, `agentx ask` and `agentx pr ...`: the loop and the review flow from the shell."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markdown import Markdown
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table

from agentx.app import RunOptions
from agentx.cli_common import UnsandboxedOpt, WaitOpt, WorkspaceOpt, check_tier, console, fail, open_workspace, progress
from agentx.errors import UserError

LlmOpt = Annotated[str, typer.Option("--llm", help="brain: 'heuristic' (default, no LLM), 'openai:<model>', "
                                     "'anthropic:<model>' or 'openai-compatible:<base_url>#<model>'")]
ParallelOpt = Annotated[int | None, typer.Option(min=1, help="experiments in flight at once (one kernel and one "
                                                 "device each; default: one per free GPU, else 1)")]
GpuMinutesOpt = Annotated[float | None, typer.Option("--gpu-minutes", help="stop starting new work once runs have "
                                                     "used this many GPU minutes")]
ExecutorOpt = Annotated[str, typer.Option("--executor", help="where runs execute: 'local' (default: sandboxed "
                                          "kernels on this machine), 'ray' (a local Ray cluster) or "
                                          "'ray://HOST:PORT' (an existing one)")]
SeedsOpt = Annotated[int | None, typer.Option(min=1, help="paired seeds per arm before the first judgement "
                                              "(default: the active harness version's, 2 until evolved)")]
MaxSeedsOpt = Annotated[int | None, typer.Option(min=1, help="seeds an inconclusive result may grow to (default: "
                                                 "the harness version's, 3 until evolved)")]
EvolveOpt = Annotated[int, typer.Option(min=0, help="run a harness-evolution step every N experiments (0: never)")]
DollarsOpt = Annotated[float | None, typer.Option("--llm-dollars", help="stop spending on LLM calls past this")]
EvalTierOpt = Annotated[str, typer.Option("--tier", callback=check_tier, help="tier the arms are compared at: "
                                          "full (default) or micro (a quick smoke run whose numbers mean little)")]

def results_table(rows: list[dict], title: str = "experiments") -> Table:
    table = Table(title=title)
    for column in ("id", "title", "decision", "control", "treatment", "delta", "95% CI", "branch"):
        table.add_column(column, justify="right" if column in ("control", "treatment", "delta") else "left")
    f = lambda v, spec=".4f": "-" if v is None else format(v, spec)  # noqa: E731
    for r in rows:
        ci = "-" if r["ci_low"] is None else f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]"
        decision = r["decision"] or r["status"]
        if r["decision"] and (r["sandbox"] or "none") != "bwrap":
            decision += " (unsandboxed)"
        table.add_row(r["id"], r["title"], decision, f(r["control"]), f(r["treatment"]),
                      f(r["delta"], "+.4f"), ci, r["branch"] or "-")
    return table


def one_line_fix(exc: Exception) -> str:
    """An error of the LLM layer or the KB lock as one line that ends with what to do about it."""
    from agentx.llm import BudgetExceeded, LLMError

    text = " ".join(str(exc).split())
    if isinstance(exc, LLMError):
        text += ("; check the model name (--llm), the provider's API key and that the provider is reachable, "
                 "or run with --llm heuristic")
    elif isinstance(exc, BudgetExceeded):
        text += "; raise --llm-dollars or run with --llm heuristic"
    return text


def loop(workspace: Path, options: RunOptions, *, wait: bool = False) -> None:
    """Run the loop (agentx/app.py) and print what it did; exit 1 when no experiment of this
    invocation got a verdict, 2 (one line, no traceback) on bad input, LLM provider errors and
    a locked KB."""
    from agentx import app
    from agentx.llm import BudgetExceeded, LLMError, MissingAPIKeyError
    from knowledge import KnowledgeBase, KnowledgeBaseLocked
    from tools.harness import RunLost

    try:
        summary = app.run(workspace, options, source="cli", say=progress, wait=wait)
    except (UserError, ValueError) as exc:
        fail(exc)
    except (MissingAPIKeyError, LLMError, BudgetExceeded, KnowledgeBaseLocked) as exc:
        fail(UserError(one_line_fix(exc)))
    except RunLost as exc:           # a Ray node died with the run: no evidence either way about the code
        fail(UserError(" ".join(str(exc).split())))     # it says to run the same command again
    root = Path(workspace).resolve()
    kb = KnowledgeBase.for_workspace(root)
    rows = app.experiment_rows(kb, ids=summary.experiments)
    console.print(results_table(rows, f"this run ({'resumed ' if summary.resumed else ''}{summary.thread_id})"))
    if summary.stop_reason:
        console.print(f"stopped: {escape(summary.stop_reason)}", soft_wrap=True)
    console.print(f"knowledge base: {root / '.agentx' / 'kb.duckdb'}; review: agentx pr list --workspace {root}")
    if summary.no_verdict:
        console.print(f"[red]no verdict:[/red] {escape(summary.no_verdict)}", soft_wrap=True)
        raise typer.Exit(1)


def run(workspace: WorkspaceOpt,
        experiments: Annotated[int | None, typer.Option(min=1, help="stop after this many experiments")] = 3,
        until: Annotated[str | None, typer.Option(help="stop starting new work at this local time, HH:MM")] = None,
        budget_minutes: Annotated[float | None, typer.Option(help="stop starting new work after M minutes")] = None,
        llm: LlmOpt = "heuristic", llm_dollars: DollarsOpt = None, gpu_minutes: GpuMinutesOpt = None,
        parallel: ParallelOpt = None, seeds: SeedsOpt = None, max_seeds: MaxSeedsOpt = None,
        tier: EvalTierOpt = "full", wait: WaitOpt = False, unsandboxed: UnsandboxedOpt = False,
        evolve_every: EvolveOpt = 5, executor: ExecutorOpt = "local") -> None:
    """Run the closed loop (brainstorm -> develop -> evaluate -> record) until a budget ends.

    Run the same command again after an interruption (Ctrl-C, kill, reboot): it resumes the
    unfinished run without redoing finished experiments.

    Exit status: 0 when at least one experiment of this invocation got a verdict (ship, reject,
    inconclusive or vetoed); 1 when none did: every one failed or stopped, or none ran (the
    brain had no untried proposals, or a budget ended first); the last line says why. 2 on bad
    input or an error that stops the command (a missing API key, a failing LLM provider, a busy
    workspace or knowledge base), in one line that says what to do."""
    loop(workspace, RunOptions(brain=llm, experiments=experiments, until=until, budget_minutes=budget_minutes,
                               llm_dollars=llm_dollars, gpu_minutes=gpu_minutes, parallel=parallel, seeds=seeds,
                               max_seeds=max_seeds, tier=tier, unsandboxed=unsandboxed, evolve_every=evolve_every,
                               executor=executor), wait=wait)


def ask(request: Annotated[str, typer.Argument(help='what to try, e.g. "try a cross network on the ranker"')],
        workspace: WorkspaceOpt, llm: LlmOpt = "heuristic", llm_dollars: DollarsOpt = None,
        seeds: SeedsOpt = None, max_seeds: MaxSeedsOpt = None, wait: WaitOpt = False,
        unsandboxed: UnsandboxedOpt = False) -> None:
    """Turn a request in plain words into one experiment and run it through the loop.

    Exit status: 0 when the experiment got a verdict (ship, reject, inconclusive or vetoed); 1
    when it did not (it failed or stopped before a verdict, or none ran); the last line says
    why. 2 on bad input (a request no recipe matches) or an error that stops the command (a
    missing API key, a failing LLM provider, a busy workspace or knowledge base), in one line
    that says what to do."""
    loop(workspace, RunOptions(brain=llm, experiments=1, llm_dollars=llm_dollars, parallel=1, seeds=seeds,
                               max_seeds=max_seeds, request=request, key="ask", unsandboxed=unsandboxed,
                               evolve_every=0), wait=wait)


def reviewer() -> str:
    """Who reviews from this shell: the login name (recorded on the pull request)."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


pr_app = typer.Typer(no_args_is_help=True, help="Review the pull requests experiments produce: list, show, approve, reject.")


@pr_app.command("list")
def pr_list(workspace: WorkspaceOpt,
            all_: Annotated[bool, typer.Option("--all", help="include drafts, merged and rejected")] = False) -> None:
    """Open pull requests (shipped experiments); --all for every state."""
    from knowledge import KnowledgeBase

    prs = KnowledgeBase.for_workspace(workspace).pull_requests(None if all_ else "open")
    if not prs:
        console.print("no pull requests" + ("" if all_ else " open (--all shows drafts and closed ones)"))
        return
    table = Table(title="pull requests")
    for column in ("#", "state", "experiment", "title", "branch"):
        table.add_column(column)
    for p in prs:
        table.add_row(str(p["id"]), p["state"], p["experiment_id"], p["title"], p["branch"])
    console.print(table)


@pr_app.command("show")
def pr_show(number: Annotated[int, typer.Argument(help="pull request number")], workspace: WorkspaceOpt,
            diff: Annotated[bool, typer.Option(help="show the full diff")] = True) -> None:
    """The description, the evidence and the diff of one pull request."""
    from agentx import pr

    try:
        ws = open_workspace(workspace)
        request = pr.get(ws, number)
    except UserError as exc:
        fail(exc)
    console.print(f"#{request['id']} [{request['state']}] {request['title']}  ({request['branch']})")
    console.print(Markdown(request["body"] or ""))
    if diff:
        console.print(Syntax(ws.repo.diff(request["branch"], request["base_commit"]), "diff", word_wrap=True))


@pr_app.command("approve")
def pr_approve(number: Annotated[int, typer.Argument(help="pull request number")], workspace: WorkspaceOpt,
               force: Annotated[bool, typer.Option("--force", help="merge even when the experiment was not judged "
                                                   "ship (failed, rejected, vetoed, inconclusive, no verdict) or main "
                                                   "moved since its base; the override is recorded on the pull "
                                                   "request and in the KB")] = False,
               wait: WaitOpt = False) -> None:
    """Merge the branch into the workspace's main.

    Only an experiment judged 'ship' on the current main merges: one that failed, was rejected,
    vetoed or inconclusive, or whose base is no longer main's head, is refused (exit 2) unless
    --force is given."""
    from agentx import app

    try:
        approval = app.approve(workspace, number, force=force, reviewer=reviewer(), wait=wait)
    except UserError as exc:
        fail(exc)
    for override in approval.overrides:
        console.print(f"[yellow]warning:[/yellow] --force overrode: {escape(override)}", soft_wrap=True)
    console.print(f"merged #{number} into main at {approval.commit[:10]}")


@pr_app.command("reject")
def pr_reject(number: Annotated[int, typer.Argument(help="pull request number")], workspace: WorkspaceOpt,
              reason: Annotated[str, typer.Option(help="why; recorded as a lesson the brainstorm reads")],
              wait: WaitOpt = False) -> None:
    """Close without merging and record the reason as a lesson."""
    from agentx import app

    try:
        app.reject(workspace, number, reason, reviewer=reviewer(), wait=wait)
    except UserError as exc:
        fail(exc)
    console.print(f"rejected #{number}; the reason is now a lesson")

"""`agentx select-features`: a MoFA feature selection, its reasons, its constraint check, and
(with --run) the experiment that tests it. The work is in `agentx/mofa.py`; this prints."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agentx.cli_common import UnsandboxedOpt, WaitOpt, WorkspaceOpt, console, fail
from agentx.cli_loop import DollarsOpt, EvalTierOpt, LlmOpt, MaxSeedsOpt, SeedsOpt, one_line_fix
from agentx.errors import UserError


def _f(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def selection_table(report: dict) -> Table:
    table = Table(title=f"feature selection: {report['selection']['brain']}")
    for column in ("feature", "group", "kept", "reason", "relevance", "gain", "perm", "MI", "miss", "card",
                   "top partner", "cost"):
        table.add_column(column, justify="left" if column in ("feature", "group", "kept", "reason", "top partner")
                         else "right")
    for r in report["selection"]["features"]:
        partner = f"{r['partners'][0][0]} {r['partners'][0][1]:.2f}" if r["partners"] else "-"
        table.add_row(escape(r["feature"]), escape(r["group"]), "[green]kept[/green]" if r["kept"] else "dropped",
                      escape(r["reason"]), _f(r["relevance"], ".2f"), _f(r["gain"], ".3f"),
                      _f(r["permutation"], "+.4f"), _f(r["mutual_info"], ".4f"), _f(r["missing_rate"], ".2f"),
                      _f(r["cardinality"], "d"), escape(partner), f"{r['serving_cost']:g}")
    return table


def checks_table(checks: list[dict]) -> Table:
    table = Table(title="constraint check")
    for column in ("constraint", "value", "limit", "ok", "detail"):
        table.add_column(column)
    for c in checks:
        table.add_row(escape(c["name"]), str(c["value"]), str(c["limit"]), "ok" if c["ok"] else "[red]VIOLATED[/red]",
                      escape(c["detail"]))
    return table


def print_report(report: dict) -> None:
    stats = report["statistics"]
    console.print(f"statistics {stats['version']} ({'cached in the KB' if stats['cached'] else 'computed now'}, "
                  f"{stats['rows']['train']} train / {stats['rows']['valid']} valid rows; validation AUC of the "
                  f"statistics model {_f(stats['model_auc'], '.4f')})")
    console.print(selection_table(report))
    console.print(checks_table(report["selection"]["checks"]))
    repairs = report["selection"]["repairs"]
    console.print("repair: " + ("nothing to repair" if not repairs else ""))
    for line in repairs:
        console.print(f"  - {escape(line)}")
    for line in report["selection"]["steps"]:
        console.print(f"[dim]step: {escape(line)}[/dim]")
    if report["crosses"]:
        console.print("interaction candidates (a pair of numeric features becomes the derived entry product(a,b), "
                      "which the harness computes: `--run --crosses N` adds the best N to the features knob, and "
                      "`agentx run` proposes them; others are catalog entries a person may add to features.yaml):")
        for c in report["crosses"]:
            derived = f" -> {c['derived']}" if c.get("derived") else ""
            console.print(escape(f"  {c['name']}{derived}: valid logloss {c['gain']:+.4f} over the additive pair "
                                 f"(AUC {c['auc_additive']:.4f} -> {c['auc_joint']:.4f})"))
            if not derived:
                console.print(escape("    - " + json.dumps(c["entry"])), soft_wrap=True)
    kept = report["selection"]["kept"]
    console.print(f"kept {len(kept)}: {escape(', '.join(kept))}  "
                  f"({'valid' if report['selection']['valid'] else '[red]INVALID[/red]'}; "
                  f"{report['seconds']:.1f} s)")


def select_features(
    workspace: WorkspaceOpt,
    budget: Annotated[int | None, typer.Option("--budget", "-k", min=1, help="keep at most K features "
                                               "(default: budget under \\[features.constraints] in agentx.toml)")] = None,
    llm: LlmOpt = "heuristic",
    llm_dollars: DollarsOpt = None,
    must_include: Annotated[list[str] | None, typer.Option("--must-include", help="a feature that must be kept "
                                                           "(repeatable; adds to agentx.toml's)")] = None,
    forbid: Annotated[list[str] | None, typer.Option("--forbid", help="a feature that must not be kept "
                                                     "(repeatable; leaky catalog entries always are)")] = None,
    run: Annotated[bool, typer.Option("--run", help="also test the selection: it becomes a feature_subset "
                                      "experiment (branch, micro tier, control vs treatment over paired seeds) "
                                      "through the same loop as `agentx ask`; the verdict is printed")] = False,
    crosses: Annotated[int, typer.Option("--crosses", min=0, help="with --run on a workspace with a features "
                                         "knob: also add the N best discovered crosses of two kept numeric features "
                                         "as derived entries product(a,b), which the harness computes "
                                         "(tools/derived.py)")] = 0,
    seeds: SeedsOpt = 2, max_seeds: MaxSeedsOpt = 3, tier: EvalTierOpt = "full",
    recompute: Annotated[bool, typer.Option("--recompute", help="recompute the statistics even when the KB "
                                            "has them for these splits and this catalog")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object instead of tables "
                                          "(progress goes to stderr)")] = False,
    wait: WaitOpt = False,
    unsandboxed: UnsandboxedOpt = False,
) -> None:
    """Select features with MoFA: statistics, constraints, a brain's selection with reasons.

    Statistics (LightGBM gain, validation permutation drop, mutual information, missing rate,
    cardinality, associated partners) are computed on train and validation once per data and
    catalog version and kept in the KB. The offline brain (constrained greedy mRMR) is the
    default; --llm SPEC asks an LLM (buckets, merge, add/swap refinement). Hard constraints
    are enforced in code either way, with a repair step whose log is printed.

    Exit status: 0 when the selection is valid and, with --run, its experiment got a verdict
    (ship, reject, inconclusive or vetoed); 1 when the selection breaks a constraint, or when
    the --run experiment got no verdict (it failed or stopped, or none ran), with the reason on
    the last line; 2 on bad input or an error that stops the command, in one line."""
    from agents.evaluator import EvalSettings
    from agentx import mofa
    from agentx.context import Workspace
    from agentx.llm import BudgetExceeded, LLMError, MissingAPIKeyError
    from knowledge import KnowledgeBaseLocked

    out = Console(stderr=True, highlight=False) if as_json else console
    say = lambda message: out.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {message}")  # noqa: E731
    started = time.perf_counter()
    try:   # not open_workspace(): with --json, the harness's progress lines must stay off stdout
        # --run trains: it takes the workspace lock and needs committed code; without it, read-only
        ws = Workspace.open(workspace, progress=say, warm_kernels=run, lock=run, wait=wait, committed_only=run,
                            sandboxed=not unsandboxed)
    except (UserError, KnowledgeBaseLocked) as exc:
        fail(exc)
    try:
        if run:
            mofa.check_runnable(ws)   # before any statistics: can this workspace run a selection?
        stats = mofa.workspace_stats(ws, recompute=recompute, progress=say)
        problem = mofa.build_problem(ws, stats, budget=budget, must_include=tuple(must_include or ()),
                                     forbidden=tuple(forbid or ()))
        brain = mofa.make_brain(ws.kb, llm, dollar_cap=llm_dollars)
        selection = brain.select(problem)
        mofa.record_selection(ws.kb, selection, problem, stats.version)
        report = {"statistics": {"version": stats.version, "cached": stats.cached, "rows": stats.table.rows,
                                 "model_auc": stats.table.model_auc},
                  "constraints": problem.constraints.describe(), "selection": selection.as_dict(problem),
                  "crosses": [{"name": c.name, "gain": c.gain, "auc_additive": c.auc_additive,
                               "auc_joint": c.auc_joint, "entry": c.entry, "derived": mofa.derived_name(stats, c)}
                              for c in stats.crosses],
                  "seconds": time.perf_counter() - started, "experiment": None}
        if not as_json:
            print_report(report)
        if run and selection.valid:
            report["experiment"] = _run(ws, mofa, selection, stats.version,
                                        EvalSettings(tier=tier, seeds=seeds, max_seeds=max(seeds, max_seeds)), say,
                                        mofa.crosses_of(stats, selection, crosses))
    except (UserError, ValueError) as exc:
        fail(exc)
    except (MissingAPIKeyError, LLMError, BudgetExceeded, KnowledgeBaseLocked) as exc:
        fail(UserError(one_line_fix(exc)))
    finally:
        ws.close()
    if as_json:
        print(json.dumps(report, default=str, indent=2))
    elif report["experiment"]:
        _print_experiment(report["experiment"])
    if not selection.valid:
        raise typer.Exit(1)
    if run and (reason := no_verdict(report["experiment"])):
        out.print(f"[red]no verdict:[/red] {escape(reason)}", soft_wrap=True)
        raise typer.Exit(1)


def no_verdict(experiment: dict | None) -> str | None:
    """Why the --run experiment was not judged; None when it got a verdict."""
    if experiment is None or experiment.get("id") is None:
        return f"no experiment ran ({(experiment or {}).get('stop_reason') or 'nothing was started'})"
    if experiment["verdict"] is None:
        return f"experiment {experiment['id']} {experiment['status']} before a verdict; " \
               f"`agentx show {experiment['id']}` says why"
    return None


def _run(ws, mofa, selection, version: str, settings, say, crosses: list | None = None) -> dict:
    from knowledge.reads import is_tried

    proposal = mofa.proposal_for(ws, selection, version, crosses or [])
    if proposal.recipe is not None and is_tried(ws.kb, proposal.recipe, proposal.params):
        say("this exact selection was tried before; running it again as a new experiment")
    say(f"running the selection as an experiment: {proposal.title}")
    result = mofa.run_selection(ws, proposal, settings, say)
    exp_id = result.finished[-1] if result.finished else None
    if exp_id is None:
        return {"id": None, "stop_reason": result.stop_reason}
    experiment = ws.kb.get_experiment(exp_id)
    verdicts = ws.kb.verdicts(exp_id)
    lessons = ws.kb.lessons(exp_id)
    verdict = verdicts[-1] if verdicts else None
    keys = ("decision", "metric", "tier", "control", "treatment", "delta", "ci_low", "ci_high", "valid_delta",
            "n_seeds", "rationale")
    return {"id": exp_id, "title": experiment["title"], "status": experiment["status"],
            "branch": experiment["branch"], "verdict": {k: verdict[k] for k in keys} if verdict else None,
            "lesson": lessons[-1]["text"] if lessons else None}


def _print_experiment(experiment: dict) -> None:
    if experiment.get("id") is None:
        console.print(f"no experiment ran ({experiment.get('stop_reason')})")
        return
    v = experiment["verdict"]
    console.print(f"experiment {experiment['id']} ({experiment['status']}) on {experiment['branch']}")
    if v is None:
        console.print(f"no verdict: {escape(experiment.get('lesson') or '')}")
        return
    ci = "-" if v["ci_low"] is None else f"[{v['ci_low']:+.4f}, {v['ci_high']:+.4f}]"
    console.print(f"verdict: [bold]{v['decision']}[/bold]  test {v['metric']} control {_f(v['control'], '.4f')} "
                  f"treatment {_f(v['treatment'], '.4f')} delta {_f(v['delta'], '+.4f')} 95% CI {ci} "
                  f"({v['n_seeds']} seeds, {v['tier']} tier); valid delta {_f(v['valid_delta'], '+.4f')}")
    console.print(escape(v["rationale"] or ""))

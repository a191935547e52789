"""`agentx show EXP` and `agentx lessons`: one experiment's whole evidence, and what was learned.

Both read the workspace's knowledge base only (no kernels, no data): `agentx.app.experiment_report`
gathers every field into one dict, which `--json` prints as is and the table view renders.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from agentx.app import experiment_report
from agentx.cli_common import WorkspaceOpt, console, fail
from agentx.errors import UserError

JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON (every field) instead of tables")]


def _f(value, spec: str = "+.4f") -> str:
    if value is None:
        return "-"
    return value if isinstance(value, str) else format(value, spec)


def _render(report: dict) -> None:
    e = report["experiment"]
    recipe = " ".join(filter(None, [e.get("recipe") or "free-form", json.dumps(e["params"] or {})]))
    console.print(f"[bold]{e['id']}[/bold] {escape(e['title'])}  [dim]({e['status']}, recipe {escape(recipe)})[/dim]")
    console.print(f"hypothesis: {escape(e.get('hypothesis') or '-')}")
    console.print(f"branch: {report['branch'] or '-'}  base {(report['base_commit'] or '')[:10]}  "
                  f"head {(report['head_commit'] or '')[:10]}  PR: "
                  + (f"#{report['pull_request']['id']} {report['pr_state']}" if report["pull_request"] else "-"))
    if report["decision"] is None:
        console.print("no verdict: the experiment did not reach evaluation")
    else:
        offline = (f" (offline: {report['offline_decision']})"
                   if report["offline_decision"] and report["offline_decision"] != report["decision"] else "")
        console.print(f"[bold]decision: {report['decision']}[/bold]{offline}  test {report['metric']} "
                      f"{_f(report['control'], '.4f')} -> {_f(report['treatment'], '.4f')}, "
                      f"delta {_f(report['delta'])} 95% CI \\[{_f(report['ci_low'])}, {_f(report['ci_high'])}], "
                      f"valid delta {_f(report['valid_delta'])}, {report['tier']} tier, {report['n_seeds']} seeds")
        console.print(f"[dim]{escape(report['rationale'] or '')}[/dim]")
        if (report["sandbox"] or "none") != "bwrap":
            console.print(f"[red]unsandboxed:[/red] experiment code behind this verdict ran without the OS sandbox "
                          f"(sandbox: {report['sandbox'] or 'none'}); its result could have been gamed")
    if report["per_seed"]:
        table = Table(title="paired seeds (test)")
        for column in ("seed", "control", "treatment", "delta", "valid delta", "control run", "treatment run"):
            table.add_column(column, justify="left" if "run" in column else "right")
        for s in report["per_seed"]:
            table.add_row(str(s["seed"]), _f(s["control"], ".4f"), _f(s["treatment"], ".4f"), _f(s["delta"]),
                          _f(s["valid_delta"]), s["control_run"], s["treatment_run"])
        console.print(table)
    if report["guardrails"]:
        table = Table(title="guardrails")
        for column in ("guardrail", "measured", "limit", "ok"):
            table.add_column(column, justify="right" if column in ("measured", "limit") else "left")
        for g in report["guardrails"]:
            table.add_row(g["name"], _f(g["value"], ".4g"), _f(g["limit"], "g"),
                          "yes" if g["ok"] else "[red]NO[/red]")
        console.print(table)
    if report["rollout"]:
        table = Table(title=f"rollout ({report['rollout'][0]['backend']})")
        for column in ("stage", "share", "users t/c", "rows t/c", "control", "treatment", "ok", "reason"):
            table.add_column(column)
        for s in report["rollout"]:
            metrics = lambda values: ", ".join(f"{k} {_f(v, '.4f')}" for k, v in (values or {}).items())  # noqa: E731
            table.add_row(str(s["stage"]), f"{s['share']:.0%}", f"{s['n_users']}/{s['control_users']}",
                          f"{s['n_rows']}/{s['control_rows']}", metrics(s["control"]), metrics(s["treatment"]),
                          "yes" if s["ok"] else "[red]NO[/red]", escape(s["reason"] or ""))
        console.print(table)
    if report["lessons"]:
        console.print(lessons_table(report["lessons"], title="lessons"))


def lessons_table(rows: list[dict], title: str = "lessons") -> Table:
    table = Table(title=title)
    for column in ("exp", "family", "params", "outcome", "kind", "effect", "95% CI", "conditions", "lesson"):
        table.add_column(column, justify="right" if column == "effect" else "left")
    for r in rows:
        c = r.get("conditions") or {}
        ci = "-" if r["ci_low"] is None else f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]"
        where = (f"{c.get('workspace', '-')} @{(c.get('base_commit') or '')[:8]} {c.get('tier', '-')} "
                 f"{c.get('train_rows') or '?'} rows, seeds {c.get('seeds', '-')}")
        table.add_row(r["experiment_id"] or "-", r["recipe_family"] or "-", json.dumps(r["params"] or {}),
                      r["outcome"] or "-", r["failure_kind"] or "-", _f(r["effect"]), ci, escape(where),
                      escape(r["text"] or ""))
    return table


def show(experiment: Annotated[str, typer.Argument(help="experiment id, e.g. E0001")], workspace: WorkspaceOpt,
         as_json: JsonOpt = False) -> None:
    """One experiment: decision, effect and CI, per-seed values, guardrails, rollout stages, lessons, branch, PR."""
    from knowledge import KnowledgeBase

    try:
        report = experiment_report(KnowledgeBase.for_workspace(workspace), experiment.upper())
    except UserError as exc:
        fail(exc)
    if as_json:
        print(json.dumps(report, default=str, indent=2))
    else:
        _render(report)


def lessons(workspace: WorkspaceOpt, as_json: JsonOpt = False,
            family: Annotated[str | None, typer.Option(help="only this recipe family (e.g. 'free-form')")] = None,
            ) -> None:
    """What the experiments taught: recipe family, parameters, effect and CI, conditions, failure kind."""
    from knowledge import KnowledgeBase

    rows = KnowledgeBase.for_workspace(workspace).lessons(recipe_family=family)
    if as_json:
        print(json.dumps(rows, default=str, indent=2))
    elif rows:
        console.print(lessons_table(rows, title="lessons" + (f" ({family})" if family else "")))
    else:
        console.print("no lessons yet" + (f" for family {family!r}" if family else "")
                      + "; every finished experiment leaves one")

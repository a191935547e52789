"""`agentx evolve` and `agentx harness list|show|diff|rollback|export|import`: the versioned harness."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from agentx.cli_common import WaitOpt, WorkspaceOpt, console, fail, open_workspace
from agentx.errors import UserError

harness_app = typer.Typer(no_args_is_help=True, help=(
    "The versioned harness: the agents' prompt sections and playbooks, the heuristic brain's "
    "priors, the seed policy and the micro-tier timeout. Every experiment records the version "
    "that proposed it; `agentx evolve` proposes and gates new versions."))
VersionArg = Annotated[int, typer.Argument(help="version number (the N of vN in `agentx harness list`)")]


def evolve(workspace: WorkspaceOpt,
           llm: Annotated[str, typer.Option("--llm", help="proposer: 'heuristic' (default: the offline proposer, no "
                                            "LLM) or an LLM spec as for `agentx run`")] = "heuristic",
           wait: WaitOpt = False) -> None:
    """Run one harness-evolution step by hand and print the proposed deltas, the gate's evidence
    and each decision.

    The offline proposer compiles outcomes into playbook bullets, moves the brainstorm's prior
    means, calibrates the micro timeout and the initial paired seeds; an LLM proposer (--llm)
    proposes up to three bullet or section edits. Each candidate is replayed on held-back
    experiments and accepted only with no regression (policies: an off-policy estimate whose
    bootstrap lower bound is above zero). Rejected candidates are kept with the reason
    (`agentx harness list`)."""
    from agentx.brains import make_brains
    from agentx.cli_loop import one_line_fix
    from agentx.llm import BudgetExceeded, LLMError, MissingAPIKeyError
    from agents.harness_evolution import Evolver, LLMProposer, evolve as evolve_step

    try:
        with open_workspace(workspace, lock=True, wait=wait) as ws:
            evolver = Evolver()
            if llm != "heuristic":
                client = make_brains(ws.kb, llm).clients[0]
                evolver = Evolver(LLMProposer(client), client)
            step = evolve_step(ws, evolver)
    except UserError as exc:
        fail(exc)
    except (MissingAPIKeyError, LLMError, BudgetExceeded) as exc:
        fail(UserError(one_line_fix(exc)))
    for line in step.lines():
        console.print(escape(line), soft_wrap=True)
    from agents.harness_spec import active_version
    console.print(f"active harness: {active_version(ws.kb).short}")


@harness_app.command("list")
def harness_list(workspace: WorkspaceOpt) -> None:
    """Every version: status (active, accepted, rejected, rolled_back), parent, proposer, why,
    and how many experiments each proposed."""
    from agents.harness_spec import active_version, versions
    from knowledge import KnowledgeBase

    kb = KnowledgeBase.for_workspace(workspace)
    active_version(kb)
    used = {r["harness_version"]: r["n"] for r in kb.query(
        "SELECT harness_version, count(*) AS n FROM experiments GROUP BY harness_version")}
    table = Table(title="harness versions")
    for column in ("version", "hash", "status", "parent", "proposer", "experiments", "reason"):
        table.add_column(column)
    for v in versions(kb):
        table.add_row(f"v{v.id}", v.hash[:10], v.status, f"v{v.parent_id}" if v.parent_id else "-", v.proposer,
                      str(used.get(v.id, 0)), escape((v.reason or "")[:120]))
    console.print(table)


@harness_app.command("show")
def harness_show(workspace: WorkspaceOpt,
                 version: Annotated[int | None, typer.Argument(help="version number; default the active one")] = None,
                 ) -> None:
    """One version: its playbooks, policy, seed policy, micro settings, the delta that made it and
    the gate's evidence (prompt sections: `agentx harness diff`)."""
    from agents.harness_spec import active_version, get_version
    from knowledge import KnowledgeBase

    kb = KnowledgeBase.for_workspace(workspace)
    try:
        v = get_version(kb, version) if version is not None else active_version(kb)
    except UserError as exc:
        fail(exc)
    console.print(f"{v.short} [{v.status}] by {v.proposer}; parent {f'v{v.parent_id}' if v.parent_id else '-'}")
    console.print(f"reason: {escape(v.reason or '-')}", soft_wrap=True)
    spec = v.spec
    console.print(f"policy: {json.dumps(spec.policy.model_dump(), sort_keys=True)}", soft_wrap=True, markup=False)
    manifest = "the manifest's"
    console.print(f"seeds: {spec.seeds.initial} initial, {spec.seeds.max} max; micro timeout: "
                  f"{f'{spec.micro.timeout_s:g} s' if spec.micro.timeout_s is not None else manifest}, micro memory "
                  f"cap: {f'{spec.micro.memory_mb} MB' if spec.micro.memory_mb is not None else 'the harness default'}")
    for agent, bullets in spec.playbook.items():
        console.print(f"playbook of {agent}:")
        for b in bullets:
            console.print(f"  [{b.id}] {b.text} (helpful {b.helpful}, harmful {b.harmful}; {b.source})",
                          soft_wrap=True, markup=False, highlight=False)
    if v.delta:
        console.print("delta: " + json.dumps(v.delta, sort_keys=True), soft_wrap=True, markup=False)
    if v.evidence:
        console.print("gate evidence: " + json.dumps(v.evidence, sort_keys=True, default=str), soft_wrap=True,
                      markup=False)


@harness_app.command("diff")
def harness_diff(workspace: WorkspaceOpt, a: VersionArg,
                 b: Annotated[int | None, typer.Argument(help="second version; default the active one")] = None
                 ) -> None:
    """A unified diff of two versions' content (prompt sections, playbooks, policy, seeds, micro)."""
    from agents.harness_spec import active_version, diff_versions, get_version
    from knowledge import KnowledgeBase

    kb = KnowledgeBase.for_workspace(workspace)
    try:
        console.print(diff_versions(get_version(kb, a), get_version(kb, b) if b is not None else active_version(kb)),
                      markup=False, highlight=False, soft_wrap=True)
    except UserError as exc:
        fail(exc)


@harness_app.command("rollback")
def harness_rollback(workspace: WorkspaceOpt,
                     to: Annotated[int | None, typer.Option("--to", help="version to activate; default the active "
                                                            "one's parent")] = None,
                     wait: WaitOpt = False) -> None:
    """Make an earlier version active again; the next experiment uses it."""
    from agents.harness_spec import rollback

    try:
        with open_workspace(workspace, lock=True, wait=wait) as ws:
            left, now = rollback(ws.kb, to)
    except UserError as exc:
        fail(exc)
    console.print(f"rolled back: {left.short} -> {now.short} is active")


@harness_app.command("export")
def harness_export(workspace: WorkspaceOpt, file: Annotated[Path, typer.Argument(help="JSON file to write")],
                   version: Annotated[int | None, typer.Option(help="default the active one")] = None) -> None:
    """Write a version to a file another workspace can start from (`agentx harness import`)."""
    from agents.harness_spec import export_version
    from knowledge import KnowledgeBase

    try:
        v = export_version(KnowledgeBase.for_workspace(workspace), file, version)
    except UserError as exc:
        fail(exc)
    console.print(f"wrote {v.short} to {file}")


@harness_app.command("import")
def harness_import(workspace: WorkspaceOpt, file: Annotated[Path, typer.Argument(help="a file from `agentx harness "
                                                                                 "export`")],
                   wait: WaitOpt = False) -> None:
    """Start this workspace from another's evolved harness: the file's version becomes active
    (its hash is checked); `agentx harness rollback` undoes it."""
    from agents.harness_spec import import_version

    try:
        with open_workspace(workspace, lock=True, wait=wait) as ws:
            v = import_version(ws.kb, file)
    except UserError as exc:
        fail(exc)
    console.print(f"imported {file} as {v.short}, now active")

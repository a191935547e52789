"""Pull requests: the record of an experiment that a person reviews, approves or rejects.

A pull request is a KB row (branch, title, markdown description with hypothesis, diff stat
and evidence) rather than a hosted PR, so it works on any git repo; `approve` merges the
branch into the workspace's main, `reject` records the reviewer's reason as a lesson the
brainstorm reads.
"""

from __future__ import annotations

from agents.recipes import RECIPES
from agentx.errors import UserError
from tools.git_repo import MainMovedError


def _fmt(value, spec: str = "+.4f") -> str:
    return "-" if value is None else format(value, spec)


def describe(ws, experiment: dict, verdict: dict | None, brain: str) -> str:
    """The markdown body: what was tried, why, what changed, and the evidence."""
    lines = [f"## {experiment['title']}", "",
             f"**Hypothesis.** {experiment.get('hypothesis') or '-'}", "",
             f"- experiment: `{experiment['id']}` (source: {experiment.get('source')}; brain: {brain})",
             f"- recipe: `{experiment.get('recipe') or 'free-form'}` {experiment.get('params') or ''}",
             f"- branch: `{experiment['branch']}` on base `{(experiment.get('base_commit') or '')[:10]}`", "",
             "### Diff", "```", ws.repo.diff_stat(experiment["branch"]).strip() or "(empty)", "```", ""]
    if verdict is None:
        return "\n".join(lines + ["No verdict: the experiment did not reach evaluation."])
    if (verdict.get("sandbox") or "none") != "bwrap":
        lines += ["> **Unsandboxed.** Experiment code behind this verdict ran without the OS sandbox "
                  f"(sandbox: {verdict.get('sandbox') or 'none'}); a result it produced could have been gamed.", ""]
    lines += [f"### Evidence ({verdict['tier']} tier, test {verdict['metric']})", "",
              "| seed | control | treatment | delta | valid delta |", "|---:|---:|---:|---:|---:|"]
    for s in verdict.get("per_seed") or []:
        lines.append(f"| {s['seed']} | {_fmt(s['control'], '.4f')} | {_fmt(s['treatment'], '.4f')} | "
                     f"{_fmt(s['delta'])} | {_fmt(s['valid_delta'])} |")
    lines += ["", f"**Effect** {_fmt(verdict['delta'])} (95% CI [{_fmt(verdict['ci_low'])}, {_fmt(verdict['ci_high'])}]); "
              f"**decision: {verdict['decision']}**. {verdict.get('rationale') or ''}", "",
              "### Guardrails", "", "| guardrail | measured | limit | ok |", "|---|---:|---:|---|"]
    for g in verdict.get("guardrails") or []:
        value = g["value"] if isinstance(g["value"], str) else _fmt(g["value"], ".4g")
        lines.append(f"| {g['name']} | {value} | {g['limit']} | {'yes' if g['ok'] else '**no**'} |")
    return "\n".join(lines)


def open_pull_request(ws, experiment: dict, verdict: dict | None, brain: str) -> int:
    decision = verdict["decision"] if verdict else "failed"
    state = "open" if decision == "ship" else "draft"
    title = f"[{decision}] {experiment['title']}"
    return ws.kb.upsert_pull_request(experiment_id=experiment["id"], branch=experiment["branch"],
                                     base_commit=experiment.get("base_commit"), head_commit=experiment.get("head_commit"),
                                     title=title, body=describe(ws, experiment, verdict, brain), state=state)


def get(ws, pr_id: int) -> dict:
    pr = ws.kb.get_pull_request(pr_id)
    if pr is None:
        raise UserError(f"no pull request #{pr_id}; `agentx pr list` shows them")
    return pr


def approve(ws, pr_id: int) -> str:
    """Merge the branch into main; refuse if main moved since the experiment's base."""
    pr = get(ws, pr_id)
    if pr["state"] not in ("open", "draft"):
        raise UserError(f"pull request #{pr_id} is {pr['state']}; only open or draft ones can be approved")
    try:
        merged = ws.repo.merge(pr["branch"], f"Merge {pr['branch']}: {pr['title']}\n\nExperiment-Id: {pr['experiment_id']}")
    except MainMovedError as exc:
        raise UserError(f"refusing to merge #{pr_id}: {exc}. The evidence was measured against the old base, so it "
                        "no longer applies; re-run the experiment on the new main (agentx ask / run).") from None
    ws.kb.update_pull_request(pr_id, state="merged", merge_commit=merged)
    ws.kb.update_experiment(pr["experiment_id"], status="merged")
    ws.kb.log_event("pr_merged", {"pr": pr_id, "commit": merged}, experiment_id=pr["experiment_id"])
    return merged


def reject(ws, pr_id: int, reason: str) -> None:
    """Close without merging; the reason becomes a lesson the brainstorm reads."""
    pr = get(ws, pr_id)
    if pr["state"] == "merged":
        raise UserError(f"pull request #{pr_id} is already merged")
    experiment = ws.kb.get_experiment(pr["experiment_id"])
    ws.kb.update_pull_request(pr_id, state="rejected", review_reason=reason)
    ws.kb.update_experiment(pr["experiment_id"], status="rejected")
    recipe = RECIPES.get(experiment.get("recipe") or "")
    ws.kb.add_lesson(experiment_id=pr["experiment_id"], recipe_family=recipe.family if recipe else "free-form", params=experiment.get("params"),
                     outcome="rejected_by_reviewer", failure_kind="review",
                     conditions={"workspace": ws.manifest.workspace.name, "base_commit": pr["base_commit"]},
                     text=f"A reviewer rejected '{experiment['title']}': {reason}")
    ws.kb.log_event("pr_rejected", {"pr": pr_id, "reason": reason}, experiment_id=pr["experiment_id"])

"""Pull requests: the record of an experiment that a person reviews, approves or rejects.

A pull request is a KB row (branch, title, markdown description with hypothesis, diff stat
and evidence) rather than a hosted PR, so it works on any git repo; `approve` merges the
branch into the workspace's main (only an experiment judged ship, on a main that has not moved
since its base, unless `force` says otherwise, which is recorded), `reject` records the
reviewer's reason as a lesson the brainstorm reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


class NotShippable(UserError):
    """`approve` refused a pull request whose experiment was not judged `ship`."""


class BaseMoved(UserError):
    """`approve` refused a pull request because main moved since the experiment's base."""


def decision_of(ws, experiment_id: str) -> str:
    """What the evaluator decided (ship, reject, inconclusive, vetoed), or why there is no
    verdict (failed, stopped, abandoned, ...: the experiment's status)."""
    verdicts = ws.kb.verdicts(experiment_id)
    if verdicts:
        return verdicts[-1]["decision"]
    experiment = ws.kb.get_experiment(experiment_id) or {}
    return experiment.get("status") or "unknown"


def _refusal(pr_id: int, experiment_id: str, decision: str) -> str:
    """The one line that refuses a pull request whose experiment was not judged ship."""
    if decision in ("reject", "inconclusive", "vetoed"):
        what = f"was judged {decision!r}"
    elif decision in ("failed", "stopped", "abandoned"):
        what = f"has no verdict (it {decision} before evaluation)"
    else:
        what = f"has no verdict (status {decision!r})"
    return (f"refusing to merge #{pr_id}: experiment {experiment_id} {what}; only a 'ship' verdict merges. "
            f"`agentx pr approve {pr_id} --force` merges it anyway")


@dataclass(frozen=True)
class Approval:
    """A merged pull request: the merge commit on main and each check `force` overrode."""

    commit: str
    overrides: list[str] = field(default_factory=list)


def approve(ws, pr_id: int, *, force: bool = False) -> Approval:
    """Merge the branch into main; returns the merge commit and what `force` overrode.

    Refused (a `UserError`) unless the experiment's verdict is `ship` and main has not moved
    since the experiment's base. `force` merges anyway; each check it overrode is returned,
    recorded in the PR's review_reason and logged as a `pr_forced` KB event."""
    pr = get(ws, pr_id)
    if pr["state"] not in ("open", "draft"):
        raise UserError(f"pull request #{pr_id} is {pr['state']}; only open or draft ones can be approved")
    overrides = []
    decision = decision_of(ws, pr["experiment_id"])
    if decision != "ship":
        if not force:
            raise NotShippable(_refusal(pr_id, pr["experiment_id"], decision))
        overrides.append(f"decision {decision!r} (not ship)")
    base, head = ws.repo.base_of(pr["branch"]), ws.repo.head()
    if base != head:
        if not force:
            raise BaseMoved(f"refusing to merge #{pr_id}: main moved from {base[:12]} to {head[:12]} since "
                            f"{pr['branch']} was branched. The evidence was measured against the old base, so it no "
                            "longer applies; re-run the experiment on the new main (agentx ask / run), or "
                            f"`agentx pr approve {pr_id} --force` merges it anyway")
        overrides.append(f"main moved from {base[:12]} to {head[:12]} since the experiment's base")
    message = f"Merge {pr['branch']}: {pr['title']}\n\nExperiment-Id: {pr['experiment_id']}"
    try:
        merged = ws.repo.merge(pr["branch"], message, allow_moved=force)
    except MainMovedError as exc:     # main moved between the check above and the merge
        raise BaseMoved(f"refusing to merge #{pr_id}: main moved from {exc.old[:12]} to {exc.new[:12]}; re-run "
                        f"the experiment on the new main, or `agentx pr approve {pr_id} --force`") from None
    fields = {"state": "merged", "merge_commit": merged}
    if overrides:
        fields["review_reason"] = "approved with --force, overriding: " + "; ".join(overrides)
        ws.kb.log_event("pr_forced", {"pr": pr_id, "overrode": overrides}, experiment_id=pr["experiment_id"])
    ws.kb.update_pull_request(pr_id, **fields)
    ws.kb.update_experiment(pr["experiment_id"], status="merged")
    ws.kb.log_event("pr_merged", {"pr": pr_id, "commit": merged, "forced": bool(overrides)},
                    experiment_id=pr["experiment_id"])
    return Approval(merged, overrides)


def reject(ws, pr_id: int, reason: str) -> None:
    """Close without merging; the reason becomes a lesson the brainstorm reads."""
    pr = get(ws, pr_id)
    if pr["state"] == "merged":
        raise UserError(f"pull request #{pr_id} is already merged")
    experiment = ws.kb.get_experiment(pr["experiment_id"])
    ws.kb.update_pull_request(pr_id, state="rejected", review_reason=reason)
    ws.kb.update_experiment(pr["experiment_id"], status="rejected")
    ws.kb.add_lesson(experiment_id=pr["experiment_id"], recipe_family=ws.recipes.family(experiment.get("recipe")),
                     params=experiment.get("params"),
                     outcome="rejected_by_reviewer", failure_kind="review",
                     conditions={"workspace": ws.manifest.workspace.name, "base_commit": pr["base_commit"]},
                     text=f"A reviewer rejected '{experiment['title']}': {reason}")
    ws.kb.log_event("pr_rejected", {"pr": pr_id, "reason": reason}, experiment_id=pr["experiment_id"])

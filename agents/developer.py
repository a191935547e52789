"""Developer: a proposal becomes a commit on its own branch that passed the micro sandbox.

Two brains behind one interface (`implement`, `repair`):
- `HeuristicDeveloper` applies one of the workspace's recipes (`ws.recipes`) as an edit; it
  cannot repair, so a micro-tier failure ends the experiment (and becomes a lesson).
- `LLMDeveloper` writes the change itself from the proposal and the editable files, as a
  structured `CodeChange` (whole new file contents); on a micro failure it gets the
  traceback back and tries again, up to `max_repairs` times.

`develop()` is the orchestration both share: branch and worktree, change, commit with an
`Experiment-Id:` trailer, micro tier (after SandMLE: a few hundred rows, one epoch, seconds)
before any full-tier run is spent. It is idempotent, so a resumed run picks up where it was.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic import BaseModel, Field

from agents.interactions import INTERACTION_RECIPE
from agents.knob_search import KNOB_RECIPE, apply_knobs
from tools.knobs import KnobError
from agents.prompts import render_prompt
from agents.recipes import RecipeNotApplicable
from tools.git_repo import NothingToCommitError
from tools.git_safe import open_repo


class FileChange(BaseModel):
    path: str = Field(description="path relative to the repository root")
    content: str = Field(description="the complete new content of the file")


class CodeChange(BaseModel):
    summary: str = Field(description="one or two sentences: what changed and why")
    files: list[FileChange]


class ChangeRejected(Exception):
    """A change that cannot be committed: it touches protected paths, or there is nothing to apply."""


@dataclass(frozen=True)
class Developed:
    ok: bool
    head_commit: str | None
    failure_kind: str | None = None
    failure_detail: str | None = None
    repairs: int = 0


class HeuristicDeveloper:
    name = "heuristic brain: recipe edits (no LLM)"
    max_repairs = 0

    def implement(self, ws, experiment: dict, path) -> str:
        if experiment.get("recipe") in (KNOB_RECIPE, INTERACTION_RECIPE):   # declared knobs: only their values change
            try:
                changed = apply_knobs(path, ws.manifest, experiment.get("params") or {})
            except KnobError as exc:
                raise ChangeRejected(f"the knob values do not apply: {exc}") from None
            return f"Set knobs {json.dumps(experiment.get('params') or {}, sort_keys=True)} in {', '.join(changed)}"
        if not experiment.get("recipe"):
            raise ChangeRejected("the heuristic developer can only apply the workspace's recipes; this proposal is "
                                 "free-form (use an LLM brain for it)")
        try:
            recipe = ws.recipes.get(experiment["recipe"])
        except KeyError as exc:
            raise ChangeRejected(str(exc.args[0])) from None
        try:
            recipe.apply(path, experiment.get("params") or {})
        except RecipeNotApplicable as exc:
            raise ChangeRejected(f"recipe {experiment['recipe']} does not apply to this workspace: {exc}") from None
        return f"Apply recipe {experiment['recipe']} {json.dumps(experiment.get('params') or {}, sort_keys=True)}"

    def repair(self, ws, experiment: dict, path, kind: str, failure: str) -> str:
        raise NotImplementedError("the heuristic developer does not repair")


class LLMDeveloper:
    def __init__(self, client, max_repairs: int = 2):
        self.client = client
        self.max_repairs = max_repairs
        self.name = f"LLM brain ({client.provider}:{client.model_name})"

    def implement(self, ws, experiment: dict, path) -> str:
        prompt = render_prompt("develop", title=experiment["title"], hypothesis=experiment.get("hypothesis") or "",
                               recipe=experiment.get("recipe") or "(free-form)",
                               params=json.dumps(experiment.get("params") or {}),
                               entrypoint=ws.manifest.train.entrypoint, **_files_context(ws, path))
        change = self.client.decide("developer", prompt, CodeChange, experiment_id=experiment["id"])
        write_change(ws, path, change)
        return change.summary

    def repair(self, ws, experiment: dict, path, kind: str, failure: str) -> str:
        prompt = render_prompt("repair", title=experiment["title"], hypothesis=experiment.get("hypothesis") or "",
                               kind=kind, failure=failure[-4000:], **_files_context(ws, path))
        change = self.client.decide("developer", prompt, CodeChange, experiment_id=experiment["id"])
        write_change(ws, path, change)
        return change.summary


def _files_context(ws, path) -> dict[str, str]:
    rules = ws.manifest.paths
    files = "\n\n".join(f"### {rel}\n```python\n{(path / rel).read_text()}\n```"
                        for rel in rules.editable if (path / rel).is_file())
    return {"files": files, "editable": ", ".join(rules.editable), "protected": ", ".join(rules.protected)}


def write_change(ws, path, change: CodeChange) -> None:
    """Write an LLM's files, refusing any path the manifest does not let agents edit."""
    refused = [f.path for f in change.files if not ws.manifest.paths.is_editable(f.path)]
    if refused:
        raise ChangeRejected(f"the change edits paths agents may not edit: {', '.join(refused)}")
    if not change.files:
        raise ChangeRejected("the change has no files")
    for f in change.files:
        target = path / f.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f.content)


def develop(ws, experiment: dict, developer, *, micro_seed: int = 0) -> Developed:
    """Branch, change, commit, micro tier; repair while the brain can. Resumable."""
    exp_id = experiment["id"]
    worktree = next((w for w in ws.repo.experiments() if w.exp_id == exp_id), None)
    if worktree is None:
        worktree = ws.repo.create_experiment(exp_id, experiment["slug"] or "experiment", base=experiment["base_commit"])
    ws.kb.update_experiment(exp_id, branch=worktree.branch, status="developing")
    head = experiment.get("head_commit")
    if not head and ws.repo.head(worktree.branch) != experiment["base_commit"]:
        head = ws.repo.head(worktree.branch)   # committed just before an interruption
    if not head:
        checkout = open_repo(worktree.path)     # drop a half-applied change from an interrupted run
        checkout.git.reset("--hard")
        checkout.git.clean("-fd")
        try:
            summary = developer.implement(ws, experiment, worktree.path)
            head = _commit(ws, worktree, experiment, summary)
        except ChangeRejected as exc:
            return Developed(False, None, "contract", str(exc))
        ws.kb.update_experiment(exp_id, head_commit=head)
        ws.kb.log_event("developed", {"commit": head, "summary": summary}, experiment_id=exp_id)

    repairs = 0
    while True:
        micro = ws.harness.run(worktree.path, head, tier="micro", seed=micro_seed, arm="treatment",
                               experiment_id=exp_id, reuse=True)
        if micro.ok:
            return Developed(True, head, repairs=repairs)
        ws.kb.log_event("micro_failed", {"kind": micro.failure_kind, "detail": (micro.failure_detail or "")[-1500:],
                                         "attempt": repairs}, experiment_id=exp_id)
        if repairs >= developer.max_repairs:
            return Developed(False, head, micro.failure_kind, micro.failure_detail, repairs)
        repairs += 1
        try:
            summary = developer.repair(ws, experiment, worktree.path, micro.failure_kind, micro.failure_detail or "")
            head = _commit(ws, worktree, experiment, f"Repair ({micro.failure_kind}): {summary}")
        except ChangeRejected as exc:
            return Developed(False, head, "contract", str(exc), repairs)
        ws.kb.update_experiment(exp_id, head_commit=head)


def _commit(ws, worktree, experiment: dict, summary: str) -> str:
    """Commit the worktree's changes, refusing protected paths (the harness re-checks at run time)."""
    dirty = open_repo(worktree.path)
    paths = {item.a_path for item in dirty.index.diff(None)} | set(dirty.untracked_files)
    protected = sorted(p for p in paths if ws.manifest.paths.is_protected(p))
    if protected:
        raise ChangeRejected(f"the change touches protected paths: {', '.join(protected)}")
    message = f"{experiment['title']}\n\n{summary}\n\nHypothesis: {experiment.get('hypothesis') or '-'}"
    try:
        return ws.repo.commit(worktree, message, experiment["id"])
    except NothingToCommitError:
        raise ChangeRejected("the change left the files as they were") from None

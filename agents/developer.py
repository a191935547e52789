"""Developer: a proposal becomes a commit on its own branch that passed the micro sandbox.

Two brains behind one interface (`implement`, `repair`):
- `HeuristicDeveloper` applies one of the workspace's recipes (`ws.recipes`) as an edit; it
  cannot repair, so a micro-tier failure ends the experiment (and becomes a lesson).
- `LLMDeveloper` writes the change itself from the proposal and the editable files, as a
  structured `CodeChange`: search/replace edit blocks for existing files (the format aider
  and similar coding agents use), whole contents only for a new file. Blocks are applied
  strictly (`apply_change`): a block whose search text is not in its file exactly once, or a
  whole-file rewrite of an existing file, refuses the change and the model is told why and
  asked again (up to `edit_retries` times), so a commit changes exactly the lines its blocks
  named. On a micro failure it gets the traceback back and tries again (a repair, the same
  format), up to `max_repairs` times.

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
from agents.harness_spec import active_version
from agents.prompts import render_prompt
from agents.recipes import RecipeNotApplicable
from tools.git_repo import NothingToCommitError
from tools.harness import RunLost
from tools.git_safe import open_repo


class FileChange(BaseModel):
    path: str = Field(description="path of a NEW file, relative to the repository root")
    content: str = Field(description="the complete content of the new file")


class EditBlock(BaseModel):
    path: str = Field(description="path of an existing file, relative to the repository root")
    search: str = Field(description="text copied exactly from the current file (whitespace included), long "
                                    "enough to appear in it only once")
    replace: str = Field(description="the text that takes its place")


class CodeChange(BaseModel):
    summary: str = Field(description="one or two sentences: what changed and why")
    edits: list[EditBlock] = Field(default=[], description="search/replace blocks, applied in order: the way to "
                                                           "change an existing file")
    files: list[FileChange] = Field(default=[], description="whole contents, only for files that do not exist yet")


class EditRefused(ValueError):
    """Edit blocks that do not apply; the message is what the model is told."""


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
    def __init__(self, client, max_repairs: int = 2, edit_retries: int = 2):
        self.client = client
        self.max_repairs = max_repairs
        self.edit_retries = edit_retries
        self.name = f"LLM brain ({client.provider}:{client.model_name})"

    def implement(self, ws, experiment: dict, path) -> str:
        prompt = render_prompt("develop", active_version(ws.kb).spec, title=experiment["title"], hypothesis=experiment.get("hypothesis") or "",
                               recipe=experiment.get("recipe") or "(free-form)",
                               params=json.dumps(experiment.get("params") or {}),
                               entrypoint=ws.manifest.train.entrypoint, **_files_context(ws, path))
        return self._change(ws, experiment, path, prompt)

    def repair(self, ws, experiment: dict, path, kind: str, failure: str) -> str:
        prompt = render_prompt("repair", active_version(ws.kb).spec, title=experiment["title"], hypothesis=experiment.get("hypothesis") or "",
                               kind=kind, failure=failure[-4000:], **_files_context(ws, path))
        return self._change(ws, experiment, path, prompt)

    def _change(self, ws, experiment: dict, path, prompt: str) -> str:
        """Ask for a change and apply it; refused blocks go back to the model with the reason."""
        asked = prompt
        for attempt in range(self.edit_retries + 1):
            change = self.client.decide("developer", asked, CodeChange, experiment_id=experiment["id"])
            try:
                apply_change(ws, path, change)
                return change.summary
            except EditRefused as exc:
                ws.kb.log_event("edit_refused", {"attempt": attempt, "reason": str(exc)},
                                experiment_id=experiment["id"])
                if attempt == self.edit_retries:
                    raise ChangeRejected(f"the edit blocks did not apply after {attempt + 1} tries: {exc}") from None
                asked = (f"{prompt}\n\n# Your previous answer could not be applied\n{exc}\nNothing was changed. "
                         f"Answer again: copy each search text exactly from the current files above.")
        raise AssertionError("unreachable")


def _files_context(ws, path) -> dict[str, str]:
    rules = ws.manifest.paths
    files = "\n\n".join(f"### {rel}\n```python\n{(path / rel).read_text()}\n```"
                        for rel in rules.editable if (path / rel).is_file())
    return {"files": files, "editable": ", ".join(rules.editable), "protected": ", ".join(rules.protected)}


def apply_change(ws, path, change: CodeChange) -> list[str]:
    """Apply a change's edit blocks and new files to the checkout at `path`, all or nothing.

    ChangeRejected for a path agents may not edit or an empty change; EditRefused (which the
    model is told) for a block whose search text is not in its file exactly once, a block
    for a file that does not exist, or whole contents for a file that does."""
    paths = [e.path for e in change.edits] + [f.path for f in change.files]
    refused = sorted({p for p in paths if not ws.manifest.paths.is_editable(p)})
    if refused:
        raise ChangeRejected(f"the change edits paths agents may not edit: {', '.join(refused)}")
    if not paths:
        raise ChangeRejected("the change has no edits and no files")
    texts: dict[str, str] = {}
    problems = []
    for f in change.files:
        if (path / f.path).exists():
            problems.append(f"{f.path} exists: change it with edit blocks (search/replace), not whole contents")
        texts[f.path] = f.content
    for number, edit in enumerate(change.edits, 1):
        if edit.path not in texts:
            if not (path / edit.path).is_file():
                problems.append(f"edit {number}: {edit.path} does not exist (a new file goes in files, whole)")
                continue
            texts[edit.path] = (path / edit.path).read_text()
        found = texts[edit.path].count(edit.search) if edit.search else 0
        if found != 1:
            where = ("its search text is empty" if not edit.search else
                     f"its search text is not in {edit.path}" if found == 0 else
                     f"its search text appears {found} times in {edit.path}")
            problems.append(f"edit {number} ({edit.path}): {where}; it must appear exactly once: "
                            f"{edit.search[:200]!r}")
            continue
        texts[edit.path] = texts[edit.path].replace(edit.search, edit.replace, 1)
    if problems:
        raise EditRefused("; ".join(problems))
    for rel, text in texts.items():
        target = path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return sorted(texts)


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
        if micro.lost:                     # its node died: nothing to repair (tools/harness.RunLost)
            raise RunLost(micro)
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

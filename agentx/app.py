"""The application layer: the one place the loop is assembled, and what people can ask of it.

The CLI (agentx/cli_loop.py), the web app (agentx/web/) and the scheduler
(agentx/schedule.py) all come here: start a run or a request, approve or reject a pull
request, list and show what happened. Every such action is a row of the KB's request queue
(knowledge/queue.py). A CLI command is its own worker: it submits its row already running
and carries it out in its process. The web app and the scheduler only queue rows; the
workspace's one `Worker` (started by `agentx serve`) takes them in order, each under the
workspace lock, so one writer trains or merges at a time however many people click.

`loop_context` is where brains, budgets, the harness version's seeds and the evolver
become a `LoopContext`; `run_in` runs it; nothing else builds the loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from agentx.errors import UserError
from agentx.state import Budget, Proposal
from knowledge.queue import Request, RequestQueue

Say = Callable[[str], None]


class RunOptions(BaseModel):
    """What a run or a request asks for: the `agentx run` flags, as the queue stores them."""

    brain: str = Field("heuristic", description="'heuristic' or an LLM spec (openai:..., anthropic:..., ...)")
    experiments: int | None = 3
    until: str | None = None                 # HH:MM local time
    budget_minutes: float | None = None
    llm_dollars: float | None = None
    gpu_minutes: float | None = None
    parallel: int | None = 1                 # None: one per free device (the executor's slots)
    seeds: int | None = None                 # None: the active harness version's
    max_seeds: int | None = None
    tier: str = "full"
    unsandboxed: bool = False
    evolve_every: int = 5
    executor: str = "local"
    request: str | None = None               # a request in plain words, mapped by the brainstorm
    proposal: dict[str, Any] | None = None   # a proposal confirmed in chat: run exactly this one
    key: str | None = None                   # the loop thread's key: the same key resumes an unfinished run


@dataclass(frozen=True)
class RunSummary:
    """What one run did: its thread, the experiments it finished or started, why it stopped."""

    request_id: int
    thread_id: str
    resumed: bool
    experiments: list[str]
    stop_reason: str | None
    no_verdict: str | None                   # why none of them got a verdict; None when one did

    def as_dict(self) -> dict[str, Any]:
        return {"thread": self.thread_id, "resumed": self.resumed, "experiments": self.experiments,
                "stop_reason": self.stop_reason, "no_verdict": self.no_verdict}


class GivenProposal:
    """A brainstorm that proposes one proposal it was given, once (a chat confirmation, a MoFA selection)."""

    def __init__(self, proposal: Proposal, brain: str):
        self.proposal, self.given = proposal, False
        self.name = f"given proposal ({brain})"

    def propose(self, ws, k: int, request: str | None = None) -> list[Proposal]:
        if self.given:
            return []
        self.given = True
        return [self.proposal]


# -- the loop, assembled once ---------------------------------------------------------


def loop_context(ws, options: RunOptions, say: Say, *, brainstorm=None, request_id: int | None = None):
    """The `LoopContext` and `Budget` of a run with these options on an open workspace."""
    from agents.evaluator import EvalSettings
    from agents.harness_evolution import Evolver, LLMProposer
    from agents.harness_spec import active_version
    from agentx.brains import make_brains
    from agentx.graph import LoopContext

    brains = make_brains(ws.kb, options.brain, dollar_cap=options.llm_dollars)
    if options.proposal is not None and brainstorm is None:
        brainstorm = GivenProposal(Proposal(**options.proposal), brains.brainstorm.name)
    budget = Budget.build(experiments=options.experiments, until=options.until, minutes=options.budget_minutes,
                          llm_dollars=options.llm_dollars, gpu_minutes=options.gpu_minutes)
    harness = active_version(ws.kb)
    seeds = options.seeds or harness.spec.seeds.initial
    settings = EvalSettings(tier=options.tier, seeds=seeds, max_seeds=max(seeds, options.max_seeds or harness.spec.seeds.max))
    evolver = Evolver(LLMProposer(brains.clients[0]), brains.clients[0]) if brains.clients else Evolver()
    ctx = LoopContext(ws, brainstorm or brains.brainstorm, brains.developer, settings,
                      parallel=options.parallel or ws.harness.executor.default_parallel, progress=say,  # free devices
                      llm_clients=brains.clients, evolve_every=options.evolve_every, evolver=evolver,
                      seeds_from_harness=options.seeds is None and options.max_seeds is None, request_id=request_id)
    say(f"harness: {harness.short} ({harness.proposer}); evolution "
        + (f"every {options.evolve_every} experiments" if options.evolve_every else "off"))
    say(f"brains: brainstorm: {ctx.brainstorm.name}; developer: {ctx.developer.name}")
    return ctx, budget


def run_in(ws, options: RunOptions, say: Say, *, brainstorm=None, request_id: int | None = None):
    """Run (or resume) the loop on an open, locked workspace; returns the graph's LoopResult."""
    from agentx.graph import run_loop

    ctx, budget = loop_context(ws, options, say, brainstorm=brainstorm, request_id=request_id)
    key = options.key or (f"request-{request_id}" if request_id is not None else "run")
    return run_loop(ctx, budget, request=options.request, key=key)


def open_for_run(workspace: Path, options: RunOptions, say: Say, *, wait: bool = False):
    """The workspace opened to train: locked, warm kernels, committed code only."""
    from agentx.context import Workspace

    return Workspace.open(workspace, progress=say, warm_kernels=True, lock=True, wait=wait, committed_only=True,
                          sandboxed=not options.unsandboxed, executor=options.executor)


def summarise(ws, request_id: int, result) -> RunSummary:
    """The experiments this run finished (a resumed one's too) or started (they carry its request id)."""
    rows = experiment_rows(ws.kb, ids=result.finished, request_id=request_id)
    return RunSummary(request_id, result.thread_id, result.resumed, [r["id"] for r in rows], result.stop_reason,
                      no_verdict_reason(ws.kb, rows, result.stop_reason, ws.root))


def run(workspace: Path, options: RunOptions, *, source: str = "cli", say: Say = print,
        wait: bool = False) -> RunSummary:
    """Carry out a run or a request in this process (the CLI's way): a queue row of its own,
    the workspace locked for the whole run, progress both to `say` and to the KB."""
    from knowledge import KnowledgeBase

    queue = RequestQueue(KnowledgeBase.for_workspace(workspace))
    kind = "ask" if options.request or options.proposal else "run"
    if options.key is None:       # the same command run again after a kill resumes its unfinished loop
        options = options.model_copy(update={"key": kind})
    request_id = queue.submit(kind, options.model_dump(), source=source, running=True)
    return _carry_out(queue, request_id, workspace, options, say, wait=wait)


def _carry_out(queue: RequestQueue, request_id: int, workspace: Path, options: RunOptions, say: Say, *,
               wait: bool = False) -> RunSummary:
    tee = _tee(queue, request_id, say)
    try:
        ws = open_for_run(workspace, options, tee, wait=wait)
        try:
            result = run_in(ws, options, tee, request_id=request_id)
            summary = summarise(ws, request_id, result)
        finally:
            ws.close()
    except BaseException as exc:
        queue.finish(request_id, status="failed", error=" ".join(str(exc).split()) or type(exc).__name__)
        raise
    queue.finish(request_id, status="done", result=summary.as_dict())
    return summary


def _tee(queue: RequestQueue, request_id: int, say: Say) -> Say:
    def both(line: str) -> None:
        say(line)
        try:
            queue.say(request_id, line)
        except Exception:             # a progress line lost to a busy KB must not stop training  # noqa: BLE001
            pass
    return both


def no_verdict_reason(kb, rows: list[dict], stop_reason: str | None, workspace: Path) -> str | None:
    """Why no experiment of this invocation was judged; None when at least one got a verdict."""
    if any(r["decision"] for r in rows):
        return None
    if not rows:
        return f"no experiment ran ({stop_reason or 'nothing was proposed'})"
    outcomes = []
    for r in rows:
        lessons = kb.lessons(r["id"])
        kind = lessons[-1].get("failure_kind") if lessons else None
        outcomes.append(f"{r['id']} {r['status']}" + (f" ({kind})" if kind else ""))
    return f"{', '.join(outcomes)}; `agentx show {rows[0]['id']} --workspace {workspace}` says why"


# -- reviews --------------------------------------------------------------------------


def approve(workspace: Path, number: int, *, force: bool = False, reviewer: str | None = None,
            wait: bool = False, source: str = "cli"):
    """Merge a pull request (agentx/pr.py `approve`, same refusals); records the reviewer."""
    return _review(workspace, "approve", {"pr": number, "force": force, "reviewer": reviewer}, source, wait)


def reject(workspace: Path, number: int, reason: str, *, reviewer: str | None = None, wait: bool = False,
           source: str = "cli") -> None:
    """Close a pull request without merging; the reason becomes a lesson."""
    if not reason.strip():
        raise UserError("a rejection needs a reason (it becomes a lesson the brainstorm reads)")
    _review(workspace, "reject", {"pr": number, "reason": reason, "reviewer": reviewer}, source, wait)


def _review(workspace: Path, kind: str, payload: dict, source: str, wait: bool):
    from knowledge import KnowledgeBase

    queue = RequestQueue(KnowledgeBase.for_workspace(workspace))
    return _carry_out_review(queue, queue.submit(kind, payload, source=source, running=True), workspace, kind,
                             payload, wait=wait)


def _carry_out_review(queue: RequestQueue, request_id: int, workspace: Path, kind: str, payload: dict, *,
                      wait: bool = False):
    try:
        outcome = _do_review(workspace, kind, payload, wait=wait)
    except BaseException as exc:
        queue.finish(request_id, status="failed", error=" ".join(str(exc).split()))
        raise
    queue.finish(request_id, status="done", result={"merge_commit": outcome.commit} if outcome is not None else {})
    return outcome


def _do_review(workspace: Path, kind: str, payload: dict, *, wait: bool = False):
    from agentx import pr
    from agentx.context import Workspace

    with Workspace.open(workspace, warm_kernels=False, lock=True, wait=wait) as ws:
        if kind == "approve":
            outcome = pr.approve(ws, payload["pr"], force=payload.get("force", False))
        else:
            outcome = pr.reject(ws, payload["pr"], payload["reason"])
        if payload.get("reviewer"):
            ws.kb.update_pull_request(payload["pr"], reviewed_by=payload["reviewer"])
        return outcome


# -- the worker -----------------------------------------------------------------------


@dataclass
class Worker:
    """The one worker of a workspace: takes queued requests in order and carries each out
    under the workspace lock. A busy workspace (a CLI command holds the lock) leaves the
    request queued and is tried again at the next poll."""

    workspace: Path
    say: Say = lambda _: None
    poll_s: float = 1.0
    stop: threading.Event = field(default_factory=threading.Event)
    current: Request | None = None

    def __post_init__(self) -> None:
        from knowledge import KnowledgeBase

        self.queue = RequestQueue(KnowledgeBase.for_workspace(self.workspace))
        for request_id in self.queue.requeue_orphans():
            self.say(f"request {request_id} was left running by a process that is gone; queued again to resume")

    def run_pending(self) -> int:
        """Carry out queued requests until none is left (or the workspace is busy); returns how many."""
        from agentx.lock import WorkspaceBusyError

        done = 0
        while not self.stop.is_set() and (request := self.queue.claim_next()) is not None:
            self.current = request
            try:
                self._carry_out(request)
            except WorkspaceBusyError:
                self.queue.kb.query("UPDATE requests SET status = 'queued', worker = NULL, started_at = NULL "
                                    "WHERE id = ?", [request.id])
                return done
            except Exception as exc:  # noqa: BLE001  the request failed, and says why; the worker goes on
                self.say(f"request {request.id} failed: {' '.join(str(exc).split())}")
            finally:
                self.current = None
            done += 1
        return done

    def _carry_out(self, request: Request) -> None:
        say = lambda line: self.say(f"request {request.id}: {line}")  # noqa: E731
        if request.kind in ("run", "ask"):
            options = RunOptions(**request.payload)
            summary = _carry_out(self.queue, request.id, self.workspace, options, say)
            say(f"done: {', '.join(summary.experiments) or 'no experiment'}"
                + (f"; stopped: {summary.stop_reason}" if summary.stop_reason else ""))
            return
        _carry_out_review(self.queue, request.id, self.workspace, request.kind, request.payload)

    def serve_forever(self) -> None:
        while not self.stop.is_set():
            if not self.run_pending():
                self.stop.wait(self.poll_s)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name=f"agentx-worker-{self.workspace.name}", daemon=True)
        thread.start()
        return thread


def wait_for(queue: RequestQueue, request_id: int, timeout_s: float) -> Request | None:
    """The request once it has ended, or None if it is still open after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        request = queue.get(request_id)
        if request is not None and not request.open:
            return request
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.2)


# -- reads ----------------------------------------------------------------------------

EXPERIMENT_SQL = """
    SELECT e.id, e.title, e.status, v.decision, v.metric, v.control, v.treatment, v.delta, v.ci_low, v.ci_high,
           v.valid_delta, v.n_seeds, v.sandbox, e.recipe, e.params, e.source, e.branch, e.base_commit, e.head_commit,
           e.brain, e.harness_version, e.request_id, e.created_at,
           p.id AS pr, p.state AS pr_state
    FROM experiments e
    LEFT JOIN (SELECT * FROM verdicts QUALIFY row_number() OVER (PARTITION BY experiment_id ORDER BY id DESC) = 1) v
           ON v.experiment_id = e.id
    LEFT JOIN pull_requests p ON p.experiment_id = e.id"""


def experiment_rows(kb, *, decision: str | None = None, recipe: str | None = None, since=None,
                    ids: list[str] | None = None, request_id: int | None = None) -> list[dict]:
    """Every experiment with its latest verdict and PR, oldest first; filtered by decision
    (a verdict's decision, or an experiment status such as 'failed') and recipe; with `ids`
    and/or `request_id`, only those experiments and the ones that request made."""
    where, params = [], []
    if ids is not None or request_id is not None:
        where.append("(list_contains(?, e.id) OR e.request_id = ?)")
        params += [list(ids or []), request_id]
    if decision:
        where.append("coalesce(v.decision, e.status) = ?")
        params.append(decision)
    if recipe:
        where.append("coalesce(e.recipe, 'free-form') = ?")
        params.append(recipe)
    if since is not None:
        where.append("e.created_at >= ?")
        params.append(since)
    sql = EXPERIMENT_SQL + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY e.created_at, e.id"
    return kb.query(sql, params)


def experiment_report(kb, experiment_id: str) -> dict:
    """Everything known about one experiment: verdict, seeds, guardrails, rollout, lessons, branch, PR."""
    experiment = kb.get_experiment(experiment_id)
    if experiment is None:
        known = ", ".join(e["id"] for e in kb.experiments()[-5:]) or "none yet"
        raise UserError(f"no experiment {experiment_id!r} in this workspace (latest: {known}); "
                        "`agentx experiments` lists them")
    verdicts = kb.verdicts(experiment_id)
    verdict = verdicts[-1] if verdicts else None
    pr = kb.pull_request_for(experiment_id)
    runs = kb.runs(experiment_id)
    return {
        "experiment": experiment,
        "decision": verdict["decision"] if verdict else None,
        "offline_decision": verdict.get("offline_decision") if verdict else None,
        "metric": verdict["metric"] if verdict else None,
        "tier": verdict["tier"] if verdict else None,
        "control": verdict["control"] if verdict else None,
        "treatment": verdict["treatment"] if verdict else None,
        "delta": verdict["delta"] if verdict else None,
        "ci_low": verdict["ci_low"] if verdict else None,
        "ci_high": verdict["ci_high"] if verdict else None,
        "valid_delta": verdict["valid_delta"] if verdict else None,
        "n_seeds": verdict["n_seeds"] if verdict else None,
        "rationale": verdict["rationale"] if verdict else None,
        "sandbox": verdict.get("sandbox") if verdict else None,
        "per_seed": (verdict or {}).get("per_seed") or [],
        "guardrails": (verdict or {}).get("guardrails") or [],
        "rollout": kb.rollout_stages(experiment_id),
        "lessons": kb.lessons(experiment_id),
        "branch": experiment.get("branch"),
        "base_commit": experiment.get("base_commit"),
        "head_commit": experiment.get("head_commit"),
        "pull_request": ({k: pr[k] for k in ("id", "state", "title", "branch", "merge_commit", "review_reason")}
                         if pr else None),
        "pr_state": pr["state"] if pr else None,
        "runs": [{k: r[k] for k in ("id", "arm", "tier", "seed", "status", "failure_kind", "commit_sha",
                                    "wall_s", "exec_s", "sandbox", "network", "run_dir")} for r in runs],
        "verdict_history": [{k: v[k] for k in ("id", "decision", "delta", "ci_low", "ci_high", "n_seeds")}
                            for v in verdicts],
    }

"""The loop: brainstorm -> (develop -> evaluate -> record) x K -> [evolve_harness] -> brainstorm | END.

Nodes are small functions named as verbs; the agents' logic lives in `agents/`, side
effects enter through `LoopContext` (the workspace with its KB, repo and harness, and the
brains), passed as LangGraph's runtime context so that nothing unserialisable is
checkpointed. An experiment is a subgraph started by `Send`, so up to `parallel` of them
run at once, each in its own kernel. The graph is checkpointed in SQLite under
`<workspace>/.agentx/`; a killed run started again resumes, and finished experiments are
not redone (unfinished ones pick up their branch and reuse the runs already in the KB).

Nodes are plain (sync) functions: their work is kernels and git, which block; LangGraph
runs the `Send` fan-out in a thread pool.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send

from agents import developer as dev
from agents.evaluator import ControlFailed, EvalSettings, evaluate, roll_out, train_rows
from agents.harness_evolution import evolve
from agents.harness_spec import active_version
from agents.applicability import no_proposals_reason, survey
from agents.recipes import slug as recipe_slug
from agentx.brains import Brainstorm, Developer
from agentx.errors import UserError
from agentx.llm import BudgetExceeded, LLMError
from agentx.paths import state_dir
from agentx.pr import open_pull_request
from agentx.state import Budget, ExperimentState, LoopState, Proposal
from tools.git_repo import sanitize_slug


@dataclass
class LoopContext:
    ws: object                                   # agentx.context.Workspace
    brainstorm: Brainstorm                       # HeuristicBrainstorm | LLMBrainstorm | GivenProposal
    developer: Developer                         # HeuristicDeveloper | LLMDeveloper
    settings: EvalSettings = field(default_factory=EvalSettings)
    parallel: int = 1
    evolve_every: int = 5                        # experiments between evolution steps; 0: never
    evolver: object | None = None                # agents.harness_evolution.Evolver; None: the offline one
    seeds_from_harness: bool = False             # paired seeds from the active harness version, not `settings`
    progress: Callable[[str], None] = lambda _: None
    llm_clients: list = field(default_factory=list)
    request_id: int | None = None                # the queued request this loop carries out (agentx/app.py)

    def llm_spent(self) -> float:
        return sum(c.spent_dollars for c in self.llm_clients)

    def stop_reason(self, state) -> str | None:
        budget = Budget(**state["budget"])
        # GPU minutes: the KB's runs that held a GPU since the budget began (a query only when capped)
        gpu = self.ws.harness.gpu_minutes(since=budget.started_at) if budget.gpu_minutes is not None else 0.0
        return budget.stop_reason(started=state.get("started", 0), llm_spent=self.llm_spent(), gpu_spent=gpu)


# -- the outer loop ------------------------------------------------------------------


def brainstorm(state: LoopState, runtime: Runtime[LoopContext]) -> dict:
    ctx = runtime.context
    if reason := ctx.stop_reason(state):
        return {"queue": [], "stop_reason": reason}
    started = state.get("started", 0)
    remaining = Budget(**state["budget"]).remaining(started)
    k = ctx.parallel if remaining is None else min(ctx.parallel, remaining)
    proposals = ctx.brainstorm.propose(ctx.ws, k, state.get("request"))
    if not proposals:   # say why: which recipes do not apply, what is left untried
        return {"queue": [], "stop_reason": no_proposals_reason(survey(ctx.ws))}
    ids = [create_experiment(ctx.ws, p, brain=ctx.brainstorm.name, request_id=ctx.request_id) for p in proposals]
    for exp_id, p in zip(ids, proposals):
        ctx.progress(f"{exp_id}: proposed '{p.title}' ({p.rationale or p.source})")
    return {"queue": ids, "started": started + len(ids), "request": None}


def create_experiment(ws, proposal: Proposal, *, brain: str | None = None, request_id: int | None = None) -> str:
    recipe = ws.recipes.find(proposal.recipe)
    slug = recipe_slug(recipe, proposal.params) if recipe else sanitize_slug(proposal.title)
    decision = proposal.decision or {}
    return ws.kb.add_experiment(title=proposal.title, slug=slug, recipe=proposal.recipe, params=proposal.params,
                                hypothesis=proposal.hypothesis, proposal=proposal.model_dump(),
                                source=proposal.source, status="proposed", base_commit=ws.repo.head(),
                                harness_version=active_version(ws.kb).id,
                                arm=decision.get("arm") or proposal.recipe or "free-form",
                                propensity=decision.get("propensity"), decision_context=decision.get("context"),
                                brain=brain, request_id=request_id)


def fan_out(state: LoopState) -> list[Send] | str:
    if not state.get("queue"):
        return END
    return [Send("experiment", {"experiment_id": exp_id, "budget": state["budget"]}) for exp_id in state["queue"]]


def close_round(state: LoopState, runtime: Runtime[LoopContext]) -> dict:
    return {"since_evolve": state.get("since_evolve", 0) + len(state.get("queue", [])), "queue": [],
            "stop_reason": runtime.context.stop_reason(state)}


def after_round(state: LoopState, runtime: Runtime[LoopContext]) -> str:
    # an evolution step that is due runs even when the budget just ended (it learns from the
    # round that ended it); the brainstorm after it sees the budget and ends the loop
    every = runtime.context.evolve_every            # 0: never
    if every and state.get("since_evolve", 0) >= every:
        return "evolve_harness"
    return END if state.get("stop_reason") else "brainstorm"


def evolve_harness(state: LoopState, runtime: Runtime[LoopContext]) -> dict:
    ctx = runtime.context
    try:
        step = evolve(ctx.ws, ctx.evolver)
    except (LLMError, BudgetExceeded) as exc:   # the LLM proposer's provider or budget: skip this step
        ctx.ws.kb.log_event("evolve_harness_skipped", {"reason": str(exc)})
        ctx.progress(f"evolve: skipped ({exc})")
        return {"since_evolve": 0}
    for line in step.lines():
        ctx.progress(f"evolve: {line}")
    return {"since_evolve": 0}


# -- one experiment ------------------------------------------------------------------


def develop(state: ExperimentState, runtime: Runtime[LoopContext]) -> dict:
    ctx, exp_id = runtime.context, state["experiment_id"]
    if reason := Budget(**state["budget"]).stop_reason(started=0, llm_spent=ctx.llm_spent()):
        return {"outcome": "stopped", "failure_kind": "budget", "failure_detail": reason}
    experiment = ctx.ws.kb.get_experiment(exp_id)
    ctx.progress(f"{exp_id}: developing on a branch ({ctx.developer.name}); micro tier first")
    try:
        result = dev.develop(ctx.ws, experiment, ctx.developer)
    except (LLMError, BudgetExceeded) as exc:
        return {"outcome": "failed", "failure_kind": "llm", "failure_detail": str(exc)}
    if not result.ok:
        ctx.progress(f"{exp_id}: failed in development ({result.failure_kind})")
        return {"outcome": "failed", "failure_kind": result.failure_kind, "failure_detail": result.failure_detail}
    ctx.ws.kb.update_experiment(exp_id, status="developed")
    ctx.progress(f"{exp_id}: micro tier passed at {result.head_commit[:10]}")
    return {"outcome": "developed"}


def route_developed(state: ExperimentState) -> str:
    return "evaluate" if state["outcome"] == "developed" else "record"


def evaluate_experiment(state: ExperimentState, runtime: Runtime[LoopContext]) -> dict:
    ctx, exp_id = runtime.context, state["experiment_id"]
    if reason := Budget(**state["budget"]).stop_reason(started=0, llm_spent=ctx.llm_spent()):
        return {"outcome": "stopped", "failure_kind": "budget", "failure_detail": reason}
    experiment = ctx.ws.kb.get_experiment(exp_id)
    worktree = next(w for w in ctx.ws.repo.experiments() if w.exp_id == exp_id)
    settings = ctx.settings
    if ctx.seeds_from_harness:
        seeds = active_version(ctx.ws.kb).spec.seeds
        settings = replace(settings, seeds=seeds.initial, max_seeds=max(seeds.initial, seeds.max))
    ctx.progress(f"{exp_id}: evaluating control vs treatment, {settings.tier} tier, "
                 f"{settings.seeds}+ paired seeds")
    try:
        verdict = evaluate(ctx.ws, experiment, worktree.path, settings)
    except ControlFailed as exc:
        ctx.progress(f"{exp_id}: no verdict: {exc.detail.splitlines()[0]}")
        return {"outcome": "failed", "failure_kind": f"control_{exc.kind}", "failure_detail": exc.detail}
    if verdict.decision == "ship":
        ctx.progress(f"{exp_id}: offline ship; staged rollout to "
                     f"{' -> '.join(f'{s:.0%}' for s in ctx.settings.rollout_shares)} of users")
        verdict, rollout = roll_out(ctx.ws, experiment, verdict, settings)
        ctx.progress(f"{exp_id}: {rollout.reason}")
    ctx.ws.kb.add_verdict(**verdict.row(exp_id))
    ctx.ws.kb.update_experiment(exp_id, status="evaluated")
    ctx.progress(f"{exp_id}: {verdict.decision} (delta {verdict.delta if verdict.delta is None else f'{verdict.delta:+.4f}'}"
                 f", CI [{_f(verdict.ci_low)}, {_f(verdict.ci_high)}])")
    return {"outcome": "evaluated"}


def record(state: ExperimentState, runtime: Runtime[LoopContext]) -> dict:
    ctx, exp_id = runtime.context, state["experiment_id"]
    ws = ctx.ws
    experiment = ws.kb.get_experiment(exp_id)
    verdicts = ws.kb.verdicts(exp_id)
    verdict = verdicts[-1] if verdicts else None
    if state["outcome"] in ("failed", "stopped"):
        ws.kb.update_experiment(exp_id, status="failed" if state["outcome"] == "failed" else "stopped")
    ws.kb.add_lesson(**lesson(ws, experiment, verdict, state))
    if experiment.get("branch") and experiment.get("head_commit"):
        open_pull_request(ws, ws.kb.get_experiment(exp_id), verdict, ctx.developer.name)
    worktree = next((w for w in ws.repo.experiments() if w.exp_id == exp_id), None)
    if worktree is not None:
        ws.repo.remove_worktree(worktree)          # the branch stays; only the checkout goes
    ws.kb.log_event("experiment_recorded", {"outcome": state["outcome"],
                                            "decision": verdict["decision"] if verdict else None}, experiment_id=exp_id)
    return {"finished": [exp_id]}


def lesson(ws, experiment: dict, verdict: dict | None, state: ExperimentState) -> dict:
    """The structured lesson every experiment leaves, success or failure (the brainstorm reads them)."""
    tier = verdict["tier"] if verdict else "micro"
    runs = [(s["treatment_run"], s["seed"]) for s in (verdict or {}).get("per_seed") or []] or \
        [(r["id"], r["seed"]) for r in ws.kb.runs(experiment["id"], arm="treatment", tier=tier)]
    conditions = {"workspace": ws.manifest.workspace.name, "base_commit": experiment.get("base_commit"),
                  "head_commit": experiment.get("head_commit"), "recipe": experiment.get("recipe"),
                  "tier": tier, "seeds": sorted({seed for _, seed in runs}),
                  "train_rows": train_rows(ws, [run_id for run_id, _ in runs])}
    family = ws.recipes.family(experiment["recipe"]) if experiment.get("recipe") else "free-form"
    base = {"experiment_id": experiment["id"], "recipe_family": family,
            "params": experiment.get("params"), "conditions": conditions}
    if verdict is None:
        kind = state.get("failure_kind") or "unknown"
        return {**base, "outcome": "failure", "failure_kind": kind, "decision": state.get("outcome"),
                "evidence": {"detail": (state.get("failure_detail") or "")[-1000:]},
                "text": f"'{experiment['title']}' failed before evaluation ({kind}): "
                        f"{(state.get('failure_detail') or '')[-300:]}"}
    decision = verdict["decision"]
    outcome = {"ship": "win", "reject": "loss", "inconclusive": "neutral", "vetoed": "failure"}[decision]
    breached = [g for g in verdict.get("guardrails") or [] if not g["ok"]]
    kind = None
    if decision == "inconclusive":
        kind = "no-effect"
    elif decision == "vetoed":   # a failed treatment run names its own kind (crash, nan, tamper, ...)
        run_failure = next((g for g in breached if g["name"] == "run"), None)
        kind = run_failure["value"] if run_failure else "veto"
    evidence = {"metric": verdict["metric"], "valid_delta": verdict["valid_delta"], "n_seeds": verdict["n_seeds"],
                "offline_decision": verdict.get("offline_decision"),
                "breached": [{k: g.get(k) for k in ("name", "value", "limit")} for g in breached]}
    return {**base, "outcome": outcome, "failure_kind": kind, "decision": decision, "effect": verdict["delta"],
            "ci_low": verdict["ci_low"], "ci_high": verdict["ci_high"], "evidence": evidence,
            "text": f"'{experiment['title']}': {decision}, test {verdict['metric']} delta {_f(verdict['delta'])} "
                    f"[{_f(verdict['ci_low'])}, {_f(verdict['ci_high'])}], valid delta {_f(verdict['valid_delta'])}. "
                    f"{verdict['rationale']}"}


def _f(value) -> str:
    return "-" if value is None else f"{value:+.4f}"


# -- wiring --------------------------------------------------------------------------


def build_experiment_graph():
    graph = StateGraph(ExperimentState, context_schema=LoopContext)
    graph.add_node("develop", develop)
    graph.add_node("evaluate", evaluate_experiment)
    graph.add_node("record", record)
    graph.add_edge(START, "develop")
    graph.add_conditional_edges("develop", route_developed, ["evaluate", "record"])
    graph.add_edge("evaluate", "record")
    graph.add_edge("record", END)
    return graph.compile()


def build_graph(checkpointer=None):
    graph = StateGraph(LoopState, context_schema=LoopContext)
    graph.add_node("brainstorm", brainstorm)
    graph.add_node("experiment", build_experiment_graph())
    graph.add_node("close_round", close_round)
    graph.add_node("evolve_harness", evolve_harness)
    graph.add_edge(START, "brainstorm")
    graph.add_conditional_edges("brainstorm", fan_out, ["experiment", END])
    graph.add_edge("experiment", "close_round")
    graph.add_conditional_edges("close_round", after_round, ["evolve_harness", "brainstorm", END])
    graph.add_edge("evolve_harness", "brainstorm")
    return graph.compile(checkpointer=checkpointer)


@dataclass(frozen=True)
class LoopResult:
    thread_id: str
    resumed: bool
    finished: list[str]
    stop_reason: str | None


def run_loop(ctx: LoopContext, budget: Budget, *, request: str | None = None, key: str = "run") -> LoopResult:
    """Run (or resume) the loop under `key`: an unfinished thread of the same key resumes.
    The key -> thread registry is the KB's `loop_threads` table."""
    kb = ctx.ws.kb
    adopt_threads_file(ctx.ws.root, kb)
    with sqlite3.connect(checkpoint_path(ctx.ws.root), check_same_thread=False) as con:
        app = build_graph(SqliteSaver(con))
        known = kb.query("SELECT thread_id FROM loop_threads WHERE key = ?", [key])
        thread_id = known[0]["thread_id"] if known else None
        resumed = bool(thread_id) and bool(app.get_state({"configurable": {"thread_id": thread_id}}).next)
        if not resumed:
            thread_id = f"{key}-{uuid.uuid4().hex[:8]}"
            set_thread(kb, key, thread_id)
        config = {"configurable": {"thread_id": thread_id}, "recursion_limit": 10_000}
        kb.log_event("loop_resumed" if resumed else "loop_started", {"thread": thread_id, "key": key})
        if resumed:
            ctx.progress(f"resuming unfinished run {thread_id} (finished experiments are kept)")
        start = None if resumed else {"budget": budget.model_dump(), "request": request, "queue": [], "started": 0,
                                      "finished": [], "since_evolve": 0, "stop_reason": None}
        try:
            final = app.invoke(start, config, context=ctx)
        except UserError:
            # Bad input (a request no recipe matches, ...): nothing to resume, so the next
            # command under this key starts afresh instead of replaying the same input.
            kb.query("DELETE FROM loop_threads WHERE key = ?", [key])
            raise
    kb.log_event("loop_finished", {"thread": thread_id, "finished": final.get("finished", []),
                                   "stop_reason": final.get("stop_reason")})
    return LoopResult(thread_id, resumed, list(final.get("finished", [])), final.get("stop_reason"))


def set_thread(kb, key: str, thread_id: str) -> None:
    kb.query("INSERT INTO loop_threads (key, thread_id, updated_at) VALUES (?, ?, now() AT TIME ZONE 'UTC') "
             "ON CONFLICT (key) DO UPDATE SET thread_id = excluded.thread_id, updated_at = excluded.updated_at",
             [key, thread_id])


def adopt_threads_file(workspace: Path, kb) -> None:
    """A workspace from before m010 kept its registry in `.agentx/threads.json`: move it into the KB once."""
    legacy = state_dir(workspace) / "threads.json"
    if not legacy.is_file():
        return
    try:
        threads = json.loads(legacy.read_text() or "{}")
    except json.JSONDecodeError:
        threads = {}
    for key, thread_id in threads.items():
        if not kb.query("SELECT 1 FROM loop_threads WHERE key = ?", [key]):
            set_thread(kb, key, thread_id)
    legacy.unlink()


def checkpoint_path(workspace: Path) -> Path:
    return state_dir(workspace) / "checkpoints.sqlite"

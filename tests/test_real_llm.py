"""The LLM brains against a real model: SmolLM2-135M-Instruct served by llama.cpp on
127.0.0.1 (agentx/llm/local.py). A 135M model is a good adversary for our plumbing (it echoes
prompts, drifts from schemas, invents file names); these tests say nothing about the quality
of its ideas. What they require: every path ends cleanly (a valid decision, a recorded
failure, a clear one-line error), never a crash of the loop, and every call is logged with
its method, tokens and latency.

Slow tier: the runtime is built by `make setup` (pip caches the wheel) and the model is
fetched once into the cache.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from agentx.brains import make_brains
from agentx.cli import app
from agentx.context import Workspace
from agentx.graph import LoopContext, run_loop
from agentx.llm import local as lm
from agentx.state import Budget
from agents.evaluator import EvalSettings
from knowledge import KnowledgeBase
from tools.git_repo import WorkspaceRepo

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]   # a 135M model on 2 CPU cores: minutes


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not lm.runtime_ready():
        pytest.fail(f"{lm.RUNTIME_REQUIREMENT} is not installed: `make setup` builds it (or `agentx llm local "
                    f"--install-only`)")
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with lm.LocalServer(lm.model_file(), port=lm.free_port(), threads=2, log=log) as running:
        yield running


def logged_well(kb) -> list[dict]:
    calls = kb.llm_calls()
    assert calls, "no LLM call was logged"
    for call in calls:
        assert call["method"] in ("json_schema", "function_calling", "json_object") and call["latency_s"] > 0
        if call["error"] is None:
            assert call["input_tokens"] > 0 and call["output_tokens"] > 0, call
    return calls


def test_one_experiment_from_brainstorm_to_an_outcome_never_crashes_the_loop(server, tiny_template, tmp_path):
    WorkspaceRepo.init_from_template(tmp_path / "ws", tiny_template)
    with Workspace.open(tmp_path / "ws", warm_kernels=False) as ws:
        brains = make_brains(ws.kb, server.spec)
        ctx = LoopContext(ws, brains.brainstorm, brains.developer, EvalSettings(seeds=2, max_seeds=2, replicates=200),
                          llm_clients=brains.clients)
        result = run_loop(ctx, Budget(max_experiments=1))
        experiments = ws.kb.experiments()
        assert result.stop_reason, result
        for experiment in experiments:        # a commit that passed micro and was judged, or a recorded failure
            assert experiment["status"] in ("evaluated", "failed", "merged", "rejected"), experiment
            if experiment["status"] == "evaluated":
                micro = [r for r in ws.kb.runs(experiment["id"]) if r["tier"] == "micro" and r["status"] == "ok"]
                assert micro and ws.kb.verdicts(experiment["id"]), experiment
            else:
                assert ws.kb.lessons(experiment["id"]), experiment
        calls = logged_well(ws.kb)
        assert {c["method"] for c in calls} >= {"function_calling"}        # llama.cpp refuses json_schema
        print(f"{len(experiments)} experiment(s): {[e['status'] for e in experiments]}; {len(calls)} calls, "
              f"{sum(c['error'] is not None for c in calls)} failed")


def test_a_chat_request_ends_in_an_outcome_or_one_line(server, tiny_template, tmp_path):
    WorkspaceRepo.init_from_template(tmp_path / "ws", tiny_template)
    result = CliRunner().invoke(app, ["ask", "make the item click rates smoother", "--workspace",
                                      str(tmp_path / "ws"), "--llm", server.spec])
    assert result.exit_code in (0, 1, 2), result.output
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        assert len([line for line in result.output.splitlines() if line.startswith("error:")]) == 1, result.output
    logged_well(KnowledgeBase.for_workspace(tmp_path / "ws"))


def test_a_mofa_selection_satisfies_every_constraint_after_repair(server, tmp_path):
    from agentx import mofa
    from planted_cross_repo import adopted_planted_repo

    repo = adopted_planted_repo(tmp_path)
    with Workspace.open(repo, warm_kernels=False) as ws:
        stats = mofa.workspace_stats(ws)
        problem = mofa.build_problem(ws, stats, budget=5, must_include=("f1",), forbidden=("f9",))
        selection = mofa.make_brain(ws.kb, server.spec).select(problem)
        assert selection.valid, selection.checks
        assert len(selection.kept) <= 5 and "f1" in selection.kept and "f9" not in selection.kept
        assert set(selection.kept) <= {f.name for f in stats.catalog}
        logged_well(ws.kb)
        print(f"kept {selection.kept}; repairs: {selection.repairs}")


def test_evolve_with_the_real_model_ends_in_a_refusal_or_a_gated_decision(server, tiny_template, tmp_path):
    """`agentx evolve --llm` against the 135M model: its delta is refused with a logged reason, or
    gated (the replay asks the same model), or the command fails in one line; never a crash."""
    from test_knob_search import PRIOR_KNOB, add_knobs

    ws_dir = tmp_path / "ws"
    WorkspaceRepo.init_from_template(ws_dir, add_knobs(tiny_template, PRIOR_KNOB))
    runner = CliRunner()
    ran = runner.invoke(app, ["run", "--workspace", str(ws_dir), "--experiments", "6", "--tier", "micro",
                              "--evolve-every", "0"])
    assert ran.exit_code == 0, ran.output
    result = runner.invoke(app, ["evolve", "--workspace", str(ws_dir), "--llm", server.spec])
    kb = KnowledgeBase.for_workspace(ws_dir)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    if result.exit_code == 2:                  # the model never answered a valid delta: one line, no traceback
        assert "LLM call failed" in result.output and "Traceback" not in result.output, result.output
    else:
        assert result.exit_code == 0, result.output
        refused = kb.events("harness_delta_refused")
        decided = [v for v in kb.query("SELECT status, proposer, reason FROM harness_versions WHERE proposer LIKE 'llm%'")]
        assert refused or decided or "no candidate" in result.output, result.output
        assert all(v["status"] in ("active", "rejected") and v["reason"] for v in decided), decided
    assert [c for c in logged_well(kb) if c["agent"] == "evolution"]

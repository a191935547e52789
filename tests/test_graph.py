"""The loop graph: its shape, and whole experiments through it on a tiny real workspace."""

import pytest

from agentx.brains import make_brains
from agentx.context import Workspace
from agentx.graph import LoopContext, build_graph, run_loop
from agentx.state import Budget
from agents.evaluator import EvalSettings
from conftest import TINY_TRAIN
from fake_llm import FakeChatModel, edit_reply
from tools.git_repo import WorkspaceRepo


def test_graph_shape():
    graph = build_graph().get_graph(xray=True)
    edges = sorted((e.source, e.target, e.conditional) for e in graph.edges)
    expected = sorted([
        ("__start__", "brainstorm", False),
        ("brainstorm", "__end__", True),
        ("brainstorm", "experiment:develop", True),   # Send fan-out into the experiment subgraph
        ("experiment:develop", "experiment:evaluate", True),
        ("experiment:develop", "experiment:record", True),
        ("experiment:evaluate", "experiment:record", False),
        ("experiment:record", "close_round", False),
        ("close_round", "evolve_harness", True),
        ("close_round", "brainstorm", True),
        ("close_round", "__end__", True),
        ("evolve_harness", "brainstorm", False),
    ])
    assert edges == expected, edges  # the message shows the real edges


@pytest.fixture
def tiny_ws(tiny_template, tmp_path):
    WorkspaceRepo.init_from_template(tmp_path / "ws", tiny_template)
    with Workspace.open(tmp_path / "ws") as ws:
        yield ws


BETTER_TRAIN = TINY_TRAIN.replace("(clicks[k] + prior) / (seen[k] + 1)", "(clicks[k] + 2 * prior) / (seen[k] + 2)")
BROKEN_TRAIN = TINY_TRAIN.replace("def main(run_dir):", "def main(run_dir):\n    raise ValueError('shape (3,) vs (4,)')")


def llm_context(ws, model, **kw):
    brains = make_brains(ws.kb, "openai-compatible:http://127.0.0.1:9/v1#scripted", chat_model=model)
    return LoopContext(ws, brains.brainstorm, brains.developer, EvalSettings(seeds=2, max_seeds=2, replicates=200),
                       llm_clients=brains.clients, **kw)


def proposal(title="Stronger smoothing of item rates"):
    return {"proposals": [{"title": title, "hypothesis": "less noisy rates for rare items",
                           "recipe": None, "params": {}, "rationale": "free-form"}]}


def test_fake_llm_experiment_through_the_whole_graph(tiny_ws):
    model = FakeChatModel()
    model.enqueue(proposal())
    model.enqueue(edit_reply("prior weight 2", "train.py", TINY_TRAIN, BETTER_TRAIN))
    result = run_loop(llm_context(tiny_ws, model), Budget(max_experiments=1))

    assert result.finished == ["E0001"] and result.stop_reason == "experiment budget reached (1)"
    exp = tiny_ws.kb.get_experiment("E0001")
    assert exp["status"] == "evaluated" and exp["branch"].startswith("agentx/E0001-")
    assert "prior weight 2" in tiny_ws.repo.diff(exp["branch"]) or "2 * prior" in tiny_ws.repo.diff(exp["branch"])
    (verdict,) = tiny_ws.kb.verdicts("E0001")
    assert verdict["decision"] in ("ship", "reject", "inconclusive") and verdict["n_seeds"] == 2
    assert verdict["ci_low"] <= verdict["delta"] <= verdict["ci_high"]
    runs = tiny_ws.kb.runs("E0001")
    assert {(r["arm"], r["tier"]) for r in runs} == {("treatment", "micro"), ("control", "full"), ("treatment", "full")}
    assert [c["agent"] for c in tiny_ws.kb.llm_calls()] == ["brainstorm", "developer"]
    assert tiny_ws.kb.lessons("E0001") and tiny_ws.kb.pull_requests()[0]["experiment_id"] == "E0001"
    assert "## Stronger smoothing" in tiny_ws.kb.pull_requests()[0]["body"]
    assert not list((tiny_ws.root / ".agentx" / "worktrees").glob("E0001-*"))  # worktree cleaned, branch kept


def test_llm_developer_repairs_from_the_traceback(tiny_ws):
    model = FakeChatModel()
    model.enqueue(proposal())
    model.enqueue(edit_reply("first try", "train.py", TINY_TRAIN, BROKEN_TRAIN))
    model.enqueue(edit_reply("fixed", "train.py", BROKEN_TRAIN, BETTER_TRAIN))
    run_loop(llm_context(tiny_ws, model), Budget(max_experiments=1))
    repair_prompt = model.calls[2].messages[-1].text
    assert "shape (3,) vs (4,)" in repair_prompt and "crash" in repair_prompt
    assert tiny_ws.kb.get_experiment("E0001")["status"] == "evaluated"
    assert len(tiny_ws.kb.events("micro_failed")) == 1


def test_edit_of_a_protected_path_is_refused_before_any_run(tiny_ws):
    model = FakeChatModel()
    model.enqueue(proposal())
    model.enqueue({"summary": "move the goalposts", "files": [{"path": "data.py", "content": "def prepare(c, o): pass"}]})
    run_loop(llm_context(tiny_ws, model), Budget(max_experiments=1))
    exp = tiny_ws.kb.get_experiment("E0001")
    assert exp["status"] == "failed" and not tiny_ws.kb.runs("E0001")
    (lesson,) = tiny_ws.kb.lessons("E0001")
    assert lesson["failure_kind"] == "contract" and "data.py" in lesson["text"]


def test_budgets_stop_the_loop(tiny_ws):
    result = run_loop(llm_context(tiny_ws, FakeChatModel()), Budget(deadline=0.0))
    assert result.finished == [] and result.stop_reason.startswith("deadline reached")
    model = FakeChatModel()
    ctx = llm_context(tiny_ws, model)
    ctx.llm_clients[0]._spent = 5.0
    result = run_loop(ctx, Budget(llm_dollars=1.0), key="other")
    assert result.finished == [] and "LLM dollar cap" in result.stop_reason and not model.calls


def test_heuristic_brain_refuses_a_request_it_cannot_match(tiny_ws):
    from agents.brainstorm import NoMatchingRecipe

    brains = make_brains(tiny_ws.kb)
    with pytest.raises(NoMatchingRecipe, match="found no recipe"):
        brains.brainstorm.propose(tiny_ws, 1, "make it sing opera")


def test_a_failing_control_arm_fails_the_experiment_not_the_loop(tiny_template, tmp_path):
    """main's own code breaks at the full tier: no verdict can be made, the loop goes on."""
    broken_at_full = TINY_TRAIN.replace(
        "def main(run_dir):",
        "def main(run_dir):\n    import json, os\n"
        "    if json.load(open(os.path.join(run_dir, 'run.json')))['tier'] == 'full':\n"
        "        raise OSError('main is broken at full size')")
    (tiny_template / "train.py").write_text(broken_at_full)
    WorkspaceRepo.init_from_template(tmp_path / "ws", tiny_template)
    with Workspace.open(tmp_path / "ws") as ws:
        model = FakeChatModel()
        model.enqueue(proposal())
        model.enqueue(edit_reply("prior weight 2", "train.py", broken_at_full, BETTER_TRAIN))
        result = run_loop(llm_context(ws, model), Budget(max_experiments=1))
        assert result.finished == ["E0001"]
        assert ws.kb.get_experiment("E0001")["status"] == "failed" and not ws.kb.verdicts("E0001")
        (lesson,) = ws.kb.lessons("E0001")
        assert lesson["failure_kind"] == "control_crash" and "main is broken" in lesson["text"]

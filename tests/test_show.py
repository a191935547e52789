"""`agentx show` and `agentx lessons` on a real tiny workspace: one ship that passes its rollout, one
offline ship that the rollout vetoes; and the structured lesson of every kind of verdict."""

import json
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from agentx.cli import app
from agentx.context import Workspace
from agentx.graph import lesson, run_loop
from agentx.state import Budget
from conftest import TINY_TRAIN
from fake_llm import FakeChatModel, edit_reply
from knowledge import KnowledgeBase
from test_graph import llm_context, proposal
from tools.git_repo import WorkspaceRepo

# The template's model has the item effect backwards (clicks rise with the item id in the tiny
# data): item click rates beat it clearly, even on 100 test rows.
SCORE = "return self.rates.get(item, self.prior)"
WEAK_TRAIN = TINY_TRAIN.replace(SCORE, "return 0.6 - int(item) / 100")
# Same ranking as item rates (the offline AUC ships it), calibration ruined (logloss explodes).
OVERCONFIDENT_TRAIN = TINY_TRAIN.replace(SCORE, "return self.rates.get(item, self.prior) ** 8")
assert WEAK_TRAIN != TINY_TRAIN and OVERCONFIDENT_TRAIN != TINY_TRAIN


@pytest.fixture
def shown_ws(tiny_template, tmp_path):
    (tiny_template / "train.py").write_text(WEAK_TRAIN)
    with (tiny_template / "agentx.toml").open("a") as manifest:
        manifest.write("\n[guardrails]\nmax_params = 1000\nmax_p95_latency_ms = 2000.0\nmax_train_seconds = 60.0\n")
    WorkspaceRepo.init_from_template(tmp_path / "ws", tiny_template)
    with Workspace.open(tmp_path / "ws", warm_kernels=False) as ws:
        model = FakeChatModel()
        model.enqueue(proposal("Score by item click rates"))
        model.enqueue(edit_reply("item rates", "train.py", WEAK_TRAIN, TINY_TRAIN))
        model.enqueue(proposal("Sharpen the item click rates"))
        model.enqueue(edit_reply("rates to the 8th power", "train.py", WEAK_TRAIN, OVERCONFIDENT_TRAIN))
        run_loop(llm_context(ws, model), Budget(max_experiments=2))
        yield ws


def show_json(ws, exp_id):
    result = CliRunner().invoke(app, ["show", exp_id, "--json", "--workspace", str(ws.root)])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_show_and_lessons_expose_every_field(shown_ws):
    ws, runner = shown_ws, CliRunner()
    good, sharp = show_json(ws, "E0001"), show_json(ws, "E0002")

    # the good one: an offline ship that went through every stage of the replay rollout
    assert good["decision"] == "ship" and good["offline_decision"] == "ship", good["rationale"]
    assert good["ci_low"] > 0 and good["ci_low"] <= good["delta"] <= good["ci_high"] and good["metric"] == "auc"
    assert good["n_seeds"] == 2 and good["tier"] == "full" and good["valid_delta"] is not None
    assert [set(s) >= {"seed", "control", "treatment", "delta", "valid_delta", "control_run", "treatment_run"}
            for s in good["per_seed"]] == [True, True]
    assert all(s["control_run"].startswith("R-") and s["treatment_run"].startswith("R-") for s in good["per_seed"])
    assert [(s["stage"], s["share"], s["ok"]) for s in good["rollout"]] == [(1, 0.05, True), (2, 0.25, True),
                                                                          (3, 0.5, True)]
    assert all(set(s["control"]) == {"auc", "logloss"} and s["n_users"] + s["control_users"] > 0
               for s in good["rollout"])
    rails = {g["name"]: g for g in good["guardrails"]}
    assert (rails["max_params"]["value"], rails["max_params"]["limit"], rails["max_params"]["ok"]) == (30, 1000, True)
    assert 0 < rails["max_p95_latency_ms"]["value"] < 2000 and rails["max_train_seconds"]["limit"] == 60
    assert rails["protected_paths"]["ok"] and "data.py" in rails["protected_paths"]["limit"]
    assert rails["predictions"]["ok"] and rails["predictions"]["value"].startswith("complete, finite, aligned")
    rollout_line = rails["rollout"]
    assert rollout_line["ok"] and {"value", "limit"} <= set(rollout_line)
    assert good["branch"].startswith("agentx/E0001-") and good["pr_state"] == "open"
    assert good["pull_request"]["id"] == 1 and good["head_commit"] and good["base_commit"]
    (good_lesson,) = good["lessons"]
    assert good_lesson["outcome"] == "win" and good_lesson["decision"] == "ship"
    assert good_lesson["effect"] == pytest.approx(good["delta"])
    assert good_lesson["ci_low"] == pytest.approx(good["ci_low"])
    assert good_lesson["conditions"]["train_rows"] == 400 and good_lesson["conditions"]["seeds"] == [0, 1]
    assert good_lesson["conditions"]["workspace"] == "tiny" and good_lesson["conditions"]["tier"] == "full"

    # the sharp one: ships offline on AUC, the rollout's logloss guard halts it and vetoes the ship
    assert sharp["offline_decision"] == "ship" and sharp["decision"] == "vetoed", sharp["rationale"]
    halted = [s for s in sharp["rollout"] if not s["ok"]]
    assert len(halted) == 1 and halted[0]["stage"] == len(sharp["rollout"])       # the ramp stopped there
    stage = halted[0]["stage"]
    assert f"stage {stage}" in sharp["rationale"] and "logloss" in sharp["rationale"]
    breach = next(g for g in sharp["guardrails"] if not g["ok"])
    assert breach["name"] == f"rollout_stage_{stage}_logloss"
    assert breach["value"] > breach["harm_low"] > breach["limit"] == 0.01
    assert sharp["pr_state"] == "draft"
    (sharp_lesson,) = sharp["lessons"]
    assert sharp_lesson["outcome"] == "failure" and sharp_lesson["failure_kind"] == "veto"
    assert sharp_lesson["evidence"]["offline_decision"] == "ship"
    assert sharp_lesson["evidence"]["breached"][0]["name"] == breach["name"]

    stages = ws.kb.rollout_stages("E0002")
    assert [s["stage"] for s in stages] == [s["stage"] for s in sharp["rollout"]] and stages[0]["backend"] == "replay"

    human = runner.invoke(app, ["show", "e0002", "--workspace", str(ws.root)])
    assert human.exit_code == 0 and "decision: vetoed" in human.output and "(offline: ship)" in human.output
    assert "rollout (replay)" in human.output and f"rollout_stage_{stage}_logloss" in human.output
    assert "paired seeds" in human.output and "95% CI [+" in human.output
    assert sharp["per_seed"][0]["treatment_run"] in human.output

    listed = json.loads(runner.invoke(app, ["lessons", "--json", "--workspace", str(ws.root)]).output)
    assert [(r["experiment_id"], r["failure_kind"]) for r in listed] == [("E0001", None), ("E0002", "veto")]
    assert all({"recipe_family", "params", "effect", "ci_low", "ci_high", "conditions", "text"} <= set(r)
               for r in listed)
    assert all(r["conditions"]["base_commit"] == good["base_commit"] for r in listed)
    assert not json.loads(runner.invoke(app, ["lessons", "--json", "--family", "capacity",
                                              "--workspace", str(ws.root)]).output)
    table = runner.invoke(app, ["lessons", "--family", "free-form", "--workspace", str(ws.root)])
    assert table.exit_code == 0 and "E0002" in table.output and "veto" in table.output

    missing = runner.invoke(app, ["show", "E0042", "--workspace", str(ws.root)])
    assert missing.exit_code == 2 and "no experiment 'E0042'" in missing.output


def lesson_for(verdict, state=None, runs=()):
    kb = KnowledgeBase(":memory:")
    kb.add_experiment(id="E0001", title="try", base_commit="abc123", head_commit="def456")
    for run_id, seed in runs:
        kb.add_run(id=run_id, experiment_id="E0001", arm="treatment", seed=seed, tier="micro", status="ok")
    ws = SimpleNamespace(kb=kb, manifest=SimpleNamespace(workspace=SimpleNamespace(name="tiny")))
    return lesson(ws, kb.get_experiment("E0001"), verdict, state or {"outcome": "evaluated"})


def verdict(decision, guardrails=()):
    return {"decision": decision, "metric": "auc", "tier": "full", "delta": 0.001, "ci_low": -0.002,
            "ci_high": 0.004, "valid_delta": 0.0, "n_seeds": 2, "rationale": "r", "guardrails": list(guardrails),
            "per_seed": [], "offline_decision": None}


@pytest.mark.parametrize("decision, guardrails, outcome, kind", [
    ("ship", [], "win", None),
    ("reject", [], "loss", None),
    ("inconclusive", [], "neutral", "no-effect"),
    ("vetoed", [{"name": "max_p95_latency_ms", "ok": False, "value": 80.0, "limit": 50.0}], "failure", "veto"),
    ("vetoed", [{"name": "run", "ok": False, "value": "nan", "limit": "a valid run"}], "failure", "nan"),
    ("vetoed", [{"name": "run", "ok": False, "value": "tamper", "limit": "a valid run"}], "failure", "tamper"),
    ("vetoed", [{"name": "run", "ok": False, "value": "timeout", "limit": "a valid run"}], "failure", "timeout"),
])
def test_every_verdict_leaves_a_structured_lesson(decision, guardrails, outcome, kind):
    row = lesson_for(verdict(decision, guardrails))
    assert (row["outcome"], row["failure_kind"], row["decision"]) == (outcome, kind, decision)
    assert (row["effect"], row["ci_low"], row["ci_high"]) == (0.001, -0.002, 0.004)
    assert row["conditions"]["workspace"] == "tiny" and row["conditions"]["base_commit"] == "abc123"
    assert row["recipe_family"] == "free-form" and [b["name"] for b in row["evidence"]["breached"]] == \
        [g["name"] for g in guardrails]


def test_a_failure_before_evaluation_keeps_its_kind_and_the_seeds_it_ran():
    row = lesson_for(None, {"outcome": "failed", "failure_kind": "memory", "failure_detail": "RSS over 8 GiB"},
                     runs=[("R-1", 0)])
    assert (row["outcome"], row["failure_kind"]) == ("failure", "memory") and "RSS over 8 GiB" in row["text"]
    assert row["conditions"]["tier"] == "micro" and row["conditions"]["seeds"] == [0]
    assert row["conditions"]["train_rows"] is None           # that run left no run directory

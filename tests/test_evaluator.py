"""The evaluator's rules on a real tiny workspace: a guardrail breach vetoes and names the
guardrail, an inconclusive result gets more seeds before it is final, and a run cannot
choose the rows it is scored on."""

import pytest

from agentx.context import Workspace
from agentx.graph import run_loop
from agentx.state import Budget
from agents.evaluator import EvalSettings
from conftest import TINY_TRAIN, wrap_main
from fake_llm import FakeChatModel, edit_reply
from test_graph import BETTER_TRAIN, llm_context, proposal
from tools.git_repo import WorkspaceRepo

# The tiny data's item effect is strong: scoring items backwards is a clear loss at 2 seeds.
BACKWARDS_TRAIN = TINY_TRAIN.replace("return self.rates.get(item, self.prior)",
                                     "return 1 - self.rates.get(item, self.prior)")
assert BACKWARDS_TRAIN != TINY_TRAIN


def tiny_workspace(tiny_template, tmp_path, guardrails: str = ""):
    if guardrails:
        with (tiny_template / "agentx.toml").open("a") as manifest:
            manifest.write(f"\n[guardrails]\n{guardrails}\n")
    WorkspaceRepo.init_from_template(tmp_path / "ws", tiny_template)
    return Workspace.open(tmp_path / "ws", warm_kernels=False)


def one_experiment(ws, train_py: str, settings: EvalSettings | None = None) -> dict:
    model = FakeChatModel()
    model.enqueue(proposal())
    before = (ws.root / "train.py").read_text()          # main's file: the first answer's search text
    for attempt in range(3):      # the change, and a "repair" that keeps it for each of the 2 repair attempts
        content = train_py + ("" if attempt == 0 else f"\n# repair attempt {attempt}\n")
        model.enqueue(edit_reply(f"attempt {attempt}", "train.py", before, content))
        before = content
    ctx = llm_context(ws, model)
    if settings is not None:
        ctx.settings = settings
    run_loop(ctx, Budget(max_experiments=1))
    verdicts = ws.kb.verdicts("E0001")
    return verdicts[-1] if verdicts else {}


def test_a_latency_limit_below_the_measured_p95_vetoes_and_names_the_guardrail(tiny_template, tmp_path):
    # predict() on 256 rows takes far more than a nanosecond: the guardrail must fire
    with tiny_workspace(tiny_template, tmp_path, "max_p95_latency_ms = 0.000001") as ws:
        verdict = one_experiment(ws, BETTER_TRAIN)
        assert verdict["decision"] == "vetoed"
        (breached,) = [g for g in verdict["guardrails"] if not g["ok"]]
        assert breached["name"] == "max_p95_latency_ms" and breached["limit"] == 0.000001
        assert breached["value"] > breached["limit"]          # the measured p95, in ms
        assert "max_p95_latency_ms" in verdict["rationale"]
        (lesson,) = ws.kb.lessons("E0001")
        assert lesson["failure_kind"] == "veto" and lesson["evidence"]["breached"][0]["name"] == "max_p95_latency_ms"


def test_a_clear_loss_that_also_breaches_a_guardrail_is_a_reject_listing_the_breach(tiny_template, tmp_path):
    with tiny_workspace(tiny_template, tmp_path, "max_p95_latency_ms = 0.000001") as ws:
        verdict = one_experiment(ws, BACKWARDS_TRAIN)
        assert verdict["decision"] == "reject" and verdict["ci_high"] < 0
        assert [g["name"] for g in verdict["guardrails"] if not g["ok"]] == ["max_p95_latency_ms"]
        assert "guardrails breached too: max_p95_latency_ms" in verdict["rationale"]


def test_an_inconclusive_result_gets_more_seeds_before_its_final_decision(tiny_template, tmp_path):
    # A change that leaves every score as it was: delta 0 on every seed, a CI of [0, 0], which
    # neither clears the minimum effect nor excludes zero.
    same_scores = TINY_TRAIN + "\n# a comment: the model is unchanged\n"
    with tiny_workspace(tiny_template, tmp_path) as ws:
        verdict = one_experiment(ws, same_scores, EvalSettings(seeds=2, max_seeds=4, replicates=200))
        assert verdict["decision"] == "inconclusive" and verdict["n_seeds"] == 4
        assert [e["payload"]["seeds"] for e in ws.kb.events("more_seeds", experiment_id="E0001")] == [3, 4]
        treatment_seeds = sorted(r["seed"] for r in ws.kb.runs("E0001", arm="treatment", tier="full"))
        assert treatment_seeds == [0, 1, 2, 3]


def test_a_conclusive_result_is_final_at_the_first_judgement(tiny_template, tmp_path):
    with tiny_workspace(tiny_template, tmp_path) as ws:
        verdict = one_experiment(ws, BACKWARDS_TRAIN, EvalSettings(seeds=2, max_seeds=4, replicates=200))
        assert verdict["decision"] == "reject" and verdict["n_seeds"] == 2
        assert not ws.kb.events("more_seeds", experiment_id="E0001")


@pytest.mark.parametrize("split", ["test", "valid"])
def test_a_run_that_rewrites_the_rows_it_was_given_is_tampering(tiny_template, tmp_path, split):
    # Keep only the first 10 rows of the split and predict just those: without the harness's
    # own copy of the given rows, the missing-rows check would judge the smaller slice.
    cherry_pick = wrap_main(f"""
import os
for name in ("{split}.csv", os.path.join("predictions", "{split}.csv")):
    path = os.path.join(run_dir, name)
    lines = open(path).read().splitlines()[:11]
    open(path, "w").write("\\n".join(lines) + "\\n")
""")
    with tiny_workspace(tiny_template, tmp_path) as ws:
        one_experiment(ws, TINY_TRAIN + cherry_pick)
        runs = ws.kb.runs("E0001", arm="treatment")        # the micro run and 2 repair attempts, all refused
        assert [(r["tier"], r["status"], r["failure_kind"]) for r in runs] == [("micro", "invalid", "tamper")] * 3
        assert f"{split}.csv" in runs[0]["failure_detail"]
        assert ws.kb.lessons("E0001")[0]["failure_kind"] == "tamper"

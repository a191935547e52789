"""Harness evolution: versions, the off-policy gate, the LLM proposer through the replay gate
(scripted fake models that fail on any unscripted call), and rollback in a real loop."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from agentx.cli import app
from agentx.errors import UserError
from agents import harness_evolution as he
from agents import trajectories as tj
from agents.harness_spec import (Bullet, HarnessSpec, Policy, active_version, default_harness, export_version,
                                 get_version, import_version, rollback, save_version, split_sections, versions)
from agents.policy import ArmStats, choice_probabilities
from agents.prompts import prompt_names, render_prompt
from fake_llm import FakeChatModel
from knowledge import KnowledgeBase
from agentx.llm import LLMClient
from test_knob_search import PRIOR_KNOB, add_knobs
from tools.git_repo import WorkspaceRepo

WORLD = he.World(min_effect=0.002, metric="auc")


# -- versions ---------------------------------------------------------------------------------------


def test_default_harness_renders_every_prompt_exactly_as_the_shipped_template():
    values = {name: "X" for name in ("k", "request", "history", "recipes", "cards", "architecture", "metric",
                                     "title", "hypothesis", "recipe", "params", "entrypoint", "files", "contract",
                                     "kind", "failure", "task", "stage", "keep", "notes", "constraints",
                                     "candidates", "crosses", "selected", "checks", "trajectories", "playbook",
                                     "sections", "text", "editable", "protected", "message", "history", "question", "lessons")}
    for name in prompt_names():
        expected = render_prompt(name, **values)          # a KeyError here: add the new placeholder above
        assert default_harness().render(name, **values) == expected, name
    assert list(split_sections("a\n# One\nb\n## Two $x\nc\n")) == ["intro", "one", "two_x"]


def test_versions_are_content_hashed_and_rollback_restores_the_parent():
    kb = KnowledgeBase(":memory:")
    first = active_version(kb)
    assert first.status == "active" and first.hash == default_harness().content_hash()
    spec = first.spec.model_copy(update={"playbook": {"brainstorm": [Bullet(id="arm.x", text="x helps", source="t")]}})
    assert spec.content_hash() != first.hash
    second = save_version(kb, spec, parent_id=first.id, status="active", proposer="test", reason="why")
    assert active_version(kb).id == second and get_version(kb, first.id).status == "accepted"
    assert "[arm.x] x helps" in active_version(kb).spec.render("chat", request="r", recipes="-")
    left, now = rollback(kb)
    assert (left.id, now.id) == (second, first.id) and active_version(kb).id == first.id
    with pytest.raises(UserError, match="first version"):
        rollback(kb)
    rejected = save_version(kb, spec, parent_id=first.id, status="rejected", proposer="t", reason="worse")
    with pytest.raises(UserError, match="rejected by the gate"):
        rollback(kb, to=rejected)


def test_export_import_carries_a_harness_to_another_workspace_and_refuses_an_edited_file(tmp_path):
    source, target = KnowledgeBase(":memory:"), KnowledgeBase(":memory:")
    spec = active_version(source).spec.model_copy(update={"policy": Policy(arm_prior={"knobs": 0.004})})
    save_version(source, spec, parent_id=active_version(source).id, status="active", proposer="t", reason="r")
    exported = export_version(source, tmp_path / "h.json")
    imported = import_version(target, tmp_path / "h.json")
    assert imported.hash == exported.hash and active_version(target).spec.policy.arm_prior == {"knobs": 0.004}
    data = json.loads((tmp_path / "h.json").read_text())
    data["content"]["seeds"]["initial"] = 5
    (tmp_path / "h.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match="does not match its hash"):
        import_version(target, tmp_path / "h.json")


def test_the_spec_has_no_place_for_the_evaluator_and_frozen_files_are_hashed():
    with pytest.raises(ValueError):
        HarnessSpec.model_validate({**default_harness().content(), "guardrails": {"max_params": 10**9}})
    assert len(he.frozen_hash()) == 64


# -- the off-policy gate ------------------------------------------------------------------------------


def logged_decisions(n: int, seed: int = 0) -> list[tj.Trajectory]:
    """Decisions logged by the default policy among arms 'good' (true effect +0.006) and 'bad'
    (-0.006) and 'flat'; each trajectory carries the arms' posterior inputs and its propensity."""
    rng = np.random.default_rng(seed)
    policy = Policy()
    truth = {"good": 0.006, "bad": -0.006, "flat": 0.0}
    out = []
    for i in range(n):
        arms = [ArmStats(a, a) for a in truth]
        p = choice_probabilities(policy, arms)
        pick = int(rng.choice(len(arms), p=p / p.sum()))
        effect = truth[arms[pick].arm] + rng.normal(0, 0.001)
        out.append(tj.Trajectory(
            experiment_id=f"E{i:04d}", title=arms[pick].arm, rationale="", recipe=arms[pick].arm, params={},
            arm=arms[pick].arm, family=arms[pick].arm, harness_version=1, propensity=float(p[pick]),
            decision_context={"k": 1, "arms": [a.as_dict() for a in arms]}, status="evaluated",
            failure_kind=None, decision="ship" if effect > 0.003 else "reject" if effect < -0.003 else "inconclusive",
            effect=effect, ci_low=effect - 0.001, ci_high=effect + 0.001, valid_effect=effect))
    return out


def test_off_policy_gate_accepts_a_policy_that_favours_what_worked_and_rejects_the_reverse():
    held_back = logged_decisions(30)
    better = Policy(arm_prior={"good": 0.01, "bad": -0.01})
    worse = Policy(arm_prior={"good": -0.01, "bad": 0.01})
    good = he.off_policy_gate(Policy(), better, held_back)
    bad = he.off_policy_gate(Policy(), worse, held_back)
    assert good.accepted and good.evidence["diff_low_5%"] > 0, good.reason
    assert not bad.accepted and bad.evidence["diff"] < 0, bad.reason
    assert 1 <= good.evidence["ess"] <= 30 and "ESS" in good.reason
    few = he.off_policy_gate(Policy(), better, held_back[:2])
    assert not few.accepted and f"needs {he.MIN_OPE}" in few.reason


def test_offline_proposer_moves_priors_towards_outcomes_and_compiles_bullets():
    batch = logged_decisions(40, seed=1)
    candidates = {c.kind: c for c in he.OfflineProposer().propose(default_harness(), batch, WORLD)}
    priors = candidates["policy"].spec.policy.arm_prior
    assert priors["good"] > 0 > priors["bad"]
    bullets = {b.id: b for b in candidates["bullets"].spec.bullets("brainstorm")}
    assert " helps:" in bullets["arm.good"].text and bullets["arm.good"].helpful > 0
    assert " hurts:" in bullets["arm.bad"].text and bullets["arm.bad"].harmful > 0
    assert he.bullets_gate(candidates["bullets"], logged_decisions(10, seed=2), WORLD).accepted
    lying = logged_decisions(10, seed=3)
    lying = [t.__class__(**{**t.__dict__, "effect": -t.effect, "ci_low": -t.ci_high, "ci_high": -t.ci_low})
             for t in lying]
    assert not he.bullets_gate(candidates["bullets"], lying, WORLD).accepted


def test_seed_and_micro_calibration_from_observed_variance_and_run_times():
    noisy = [tj.Trajectory(experiment_id=f"E{i}", title="t", rationale="", recipe="r", params={}, arm="r",
                           family="f", harness_version=1, propensity=None, decision_context=None,
                           status="evaluated", failure_kind=None, decision="inconclusive", effect=0.0, ci_low=-0.01,
                           ci_high=0.01, valid_effect=0.0, seed_effects=[0.003 * ((-1) ** j) for j in range(3)],
                           micro_ok_s=[1.2, 0.9], micro_ok_mb=[420.0, 500.0]) for i in range(4)]
    candidates = {c.kind: c for c in he.OfflineProposer().propose(default_harness(), noisy, WORLD)}
    assert candidates["seeds"].spec.seeds.initial == tj.MAX_SEEDS           # sd 0.0035 vs min_effect 0.002
    assert candidates["micro"].spec.micro.timeout_s == 10.0                # 3 x 1.2 s, floored at 10 s
    assert candidates["micro"].spec.micro.memory_mb == 1500                # 3 x 500 MB
    assert he.seeds_gate(default_harness(), candidates["seeds"], noisy, WORLD).accepted
    assert he.micro_gate(candidates["micro"], noisy).accepted
    slow = [t.__class__(**{**t.__dict__, "micro_ok_s": [12.0]}) for t in noisy]
    assert not he.micro_gate(candidates["micro"], slow).accepted
    big = [t.__class__(**{**t.__dict__, "micro_ok_mb": [1600.0]}) for t in noisy]
    assert not he.micro_gate(candidates["micro"], big).accepted


# -- the LLM proposer and the replay gate -------------------------------------------------------------


def client_for(model: FakeChatModel, kb) -> LLMClient:
    return LLMClient(model, kb=kb, provider="openai-compatible", model_name="scripted", dollar_cap=None)


def evaluated(i: int, title: str, effect: float) -> tj.Trajectory:
    return tj.Trajectory(experiment_id=f"E{i:04d}", title=title, rationale="", recipe=None, params={}, arm="free-form",
                         family="free-form", harness_version=1, propensity=None, decision_context=None,
                         status="evaluated", failure_kind=None, decision="ship" if effect > 0 else "reject",
                         effect=effect, ci_low=effect - 0.001, ci_high=effect + 0.001, valid_effect=effect)


HELD_BACK = [evaluated(1, "Add a cross layer", 0.008), evaluated(2, "Drop the age feature", -0.006)]
GOOD_DELTA = {"ops": [{"op": "add_bullet", "agent": "brainstorm", "bullet_id": "crosses-win",
                       "text": "Cross layers won in E0001; dropping features lost", "rationale": "E0001, E0002"}]}


def pick(title: str) -> dict:
    return {"proposals": [{"title": title, "hypothesis": "h", "recipe": None, "params": {}, "rationale": "r"}]}


def test_llm_delta_accepted_when_the_replayed_brainstorm_chooses_better():
    kb = KnowledgeBase(":memory:")
    model = FakeChatModel()
    model.enqueue(GOOD_DELTA)
    client = client_for(model, kb)
    (candidate,) = he.LLMProposer(client).propose(default_harness(), [evaluated(9, "Tune the LR", 0.001)], WORLD)
    model.enqueue(pick("Drop the age feature")).enqueue(pick("Add a cross layer"))   # current, then candidate
    result = he.gate(default_harness(), candidate, HELD_BACK, WORLD, client=client)
    assert result.accepted and result.evidence["candidate"][0] > result.evidence["current"][0], result.reason
    assert "[crosses-win] Cross layers won" in model.calls[-1].messages[-1].content      # the candidate's prompt
    assert "crosses-win" not in model.calls[-2].messages[-1].content
    assert not model.queue


def test_llm_delta_rejected_when_the_replay_chooses_worse():
    kb = KnowledgeBase(":memory:")
    model = FakeChatModel()
    model.enqueue(GOOD_DELTA)
    client = client_for(model, kb)
    (candidate,) = he.LLMProposer(client).propose(default_harness(), [evaluated(9, "Tune the LR", 0.001)], WORLD)
    model.enqueue(pick("Add a cross layer")).enqueue(pick("Drop the age feature"))
    result = he.gate(default_harness(), candidate, HELD_BACK, WORLD, client=client)
    assert not result.accepted and "not above current's" in result.reason


@pytest.mark.parametrize("ops, why", [
    ([{"op": "edit_section", "prompt": "brainstorm", "section": "task", "text": "Propose ideas."}], "placeholders"),
    ([{"op": "edit_section", "prompt": "evolve", "section": "task", "text": "x"}], "may not be edited"),
    ([{"op": "delete_bullet", "agent": "brainstorm", "bullet_id": "nope"}], "has no bullet"),
    ([{"op": "add_bullet", "agent": "brainstorm", "bullet_id": "Bad Id!", "text": "t"}], "bullet_id|id"),
    ([{"op": "add_bullet", "agent": "brainstorm", "bullet_id": f"b{i}", "text": "t"} for i in range(4)], "at most 3"),
])
def test_malformed_llm_delta_is_refused_and_the_log_says_why(tmp_path, tiny_template, ops, why):
    WorkspaceRepo.init_from_template(tmp_path / "ws", tiny_template)
    from agentx.context import Workspace
    with Workspace.open(tmp_path / "ws") as ws:
        model = FakeChatModel()
        model.enqueue({"ops": ops})
        client = client_for(model, ws.kb)
        proposer = he.LLMProposer(client)
        trajectories = [evaluated(i, f"t{i}", 0.001) for i in range(20)]
        ws_like = SimpleNamespace(kb=ws.kb, manifest=ws.manifest, recipes=ws.recipes)
        original = tj.load
        tj.load = lambda *a, **k: trajectories
        try:
            step = he.evolve(ws_like, he.Evolver(proposer, client))
        finally:
            tj.load = original
        assert not step.decisions and step.refused
        (event,) = ws.kb.events("harness_delta_refused")
        import re
        assert re.search(why, event["payload"]["reason"]), event["payload"]["reason"]
        assert len(versions(ws.kb)) == 1


def test_an_edit_that_would_break_rendering_is_refused_and_a_good_small_edit_applies():
    spec = default_harness()
    task = spec.prompts["brainstorm"]["task"]
    bare = he.DeltaOp(op="edit_section", prompt="brainstorm", section="task", text=task + "Costs are in $ only.\n")
    with pytest.raises(he.DeltaRefused, match="no longer renders"):
        he.apply_ops(spec, [bare], "llm: test")
    fine = bare.model_copy(update={"text": task + "Costs are in $$ only.\n"})
    edited = he.apply_ops(spec, [fine], "llm: test")
    assert "Costs are in $ only." in edited.render("brainstorm", k=1, request="r", history="h", recipes="-",
                                                     cards="-", architecture="-", metric="auc")


# -- in the loop -----------------------------------------------------------------------------------


@pytest.mark.timeout(900)
def test_loop_records_harness_versions_evolves_and_rollback_reaches_the_next_experiment(tiny_template, tmp_path):
    ws_dir = tmp_path / "ws"
    WorkspaceRepo.init_from_template(ws_dir, add_knobs(tiny_template, PRIOR_KNOB))
    runner = CliRunner()
    result = runner.invoke(app, ["run", "--workspace", str(ws_dir), "--experiments", "4", "--evolve-every", "2",
                                 "--tier", "micro"])
    assert result.exit_code == 0, result.output
    kb = KnowledgeBase.for_workspace(ws_dir)
    assert "evolve: from v1" in result.output
    experiments = kb.experiments()
    assert len(experiments) == 4 and all(e["harness_version"] is not None for e in experiments)
    assert all(e["arm"] == "knobs" and 0 < e["propensity"] <= 1 for e in experiments)
    assert len(kb.events("evolve_harness")) == 2
    evolved = runner.invoke(app, ["evolve", "--workspace", str(ws_dir)])
    assert evolved.exit_code == 0 and "trajectories: proposer" in evolved.output, evolved.output
    assert "active harness: v" in evolved.output and len(kb.events("evolve_harness")) == 3
    # make a version active by hand, then roll back: the next experiment names the parent
    base = active_version(kb)
    spec = base.spec.model_copy(update={"playbook": {"brainstorm": [Bullet(id="hand", text="by hand", source="t")]}})
    child = save_version(kb, spec, parent_id=base.id, status="active", proposer="test", reason="by hand")
    shown = runner.invoke(app, ["harness", "show", str(child), "--workspace", str(ws_dir)])
    assert shown.exit_code == 0 and "[hand] by hand" in shown.output, shown.output
    listed = runner.invoke(app, ["harness", "list", "--workspace", str(ws_dir)])
    assert listed.exit_code == 0 and f"v{child}" in listed.output
    back = runner.invoke(app, ["harness", "rollback", "--workspace", str(ws_dir)])
    assert back.exit_code == 0 and f"v{child}" in back.output and f"v{base.id}" in back.output, back.output
    result = runner.invoke(app, ["run", "--workspace", str(ws_dir), "--experiments", "1", "--evolve-every", "0",
                                 "--tier", "micro"])
    assert result.exit_code == 0, result.output
    newest = max(kb.experiments(), key=lambda e: e["id"])
    assert newest["harness_version"] == base.id != child
    shown = runner.invoke(app, ["harness", "diff", "--workspace", str(ws_dir), str(base.id), str(child)])
    assert shown.exit_code == 0 and '"hand"' in shown.output

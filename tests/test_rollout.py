"""Staged replay rollout on synthetic scores: buckets, shares, halts, the veto it turns into, the KB record."""

import numpy as np
import pytest

from agents.evaluator import Verdict, apply_rollout
from knowledge import KnowledgeBase
from tools.rollout import STAGES, Guard, Observation, ReplayRollout, bucket_of, ramp

GUARDS = [Guard("auc", 0.002), Guard("logloss", 0.01)]


def synthetic(n_users=1500, rows_per_user=8, seeds=2, seed=0):
    """Users with their own click propensity; a control model that sees the signal through noise."""
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), rows_per_user)
    signal = rng.normal(size=len(users)) + 0.5 * rng.normal(size=n_users)[users]
    labels = (rng.random(len(users)) < 1 / (1 + np.exp(-signal))).astype(float)
    control = [1 / (1 + np.exp(-(0.7 * signal + rng.normal(0, 0.6, len(users))))) for _ in range(seeds)]
    return users, labels, control, signal, rng


def test_buckets_are_stable_per_experiment_and_shares_are_right():
    users = [f"u{i}" for i in range(20000)]
    first = [bucket_of("E0007", u) for u in users]
    assert first == [bucket_of("E0007", u) for u in users]            # same experiment: same arm, always
    assert min(first) == 0 and max(first) == 99
    other = np.array([bucket_of("E0008", u) for u in users])
    assert np.mean(other == np.array(first)) < 0.05                   # another experiment: re-drawn
    replay = ReplayRollout("E0007", users, np.zeros(len(users)), [np.zeros(len(users))], [np.zeros(len(users))])
    previous = np.zeros(len(users), dtype=bool)
    for share in STAGES:
        treated = replay.treated_users(share)
        assert abs(treated.mean() - share) < 0.01, (share, treated.mean())
        assert treated[previous].all()                                # the ramp is nested: nobody goes back
        previous = treated


def test_a_much_worse_logloss_halts_at_the_first_stage_and_vetoes_the_ship():
    users, labels, control, _, _ = synthetic()
    overconfident = [np.clip(c, 0, 1) ** 0.25 for c in control]       # same ranking, calibration ruined
    replay = ReplayRollout("E0001", users, labels, control, overconfident)
    rollout = ramp(replay, GUARDS)

    assert len(rollout.stages) == 1 and rollout.halted_at is rollout.stages[0]
    stage = rollout.stages[0]
    assert stage.share == 0.05 and not stage.ok and replay.halted           # the backend was told to roll back
    (breach,) = [c for c in stage.checks if not c["ok"]]
    assert breach["metric"] == "logloss" and breach["harm_low"] > 0.01 and breach["limit"] == 0.01
    assert "stage 1 (5% of users" in stage.reason and "logloss regression" in stage.reason
    with pytest.raises(RuntimeError, match="halted"):
        replay.observe(0.25)

    offline = Verdict("ship", "auc", "full", 0.70, 0.71, 0.01, 0.004, 0.016, rationale="CI above 0")
    final = apply_rollout(offline, rollout)
    assert final.decision == "vetoed" and final.offline_decision == "ship"
    assert "stage 1" in final.rationale and "logloss" in final.rationale
    assert final.guardrails[-1]["name"] == "rollout_stage_1_logloss" and not final.guardrails[-1]["ok"]
    assert offline.decision == "ship"                                 # the offline verdict is left as it was


def test_a_good_treatment_passes_all_three_stages_and_each_is_recorded():
    users, labels, control, signal, _ = synthetic()
    better = [1 / (1 + np.exp(-signal)) for _ in control]             # the true propensity
    rollout = ramp(ReplayRollout("E0002", users, labels, control, better), GUARDS)
    assert rollout.completed and [s.share for s in rollout.stages] == list(STAGES)
    shares = [s.n_users / (s.n_users + s.control_users) for s in rollout.stages]
    assert all(abs(got - want) < 0.04 for got, want in zip(shares, STAGES)), shares
    assert all(s.treatment["auc"] > s.control["auc"] for s in rollout.stages[1:])
    assert [s.n_rows for s in rollout.stages] == [8 * s.n_users for s in rollout.stages]

    kb = KnowledgeBase(":memory:")
    kb.add_experiment(id="E0002", title="better")
    assert kb.set_rollout_stages("E0002", rollout.backend, [s.row() for s in rollout.stages]) == 3
    assert kb.set_rollout_stages("E0002", rollout.backend, [s.row() for s in rollout.stages]) == 3  # a resume
    rows = kb.rollout_stages("E0002")
    assert [(r["stage"], r["share"], r["ok"], r["backend"]) for r in rows] == \
        [(1, 0.05, True, "replay"), (2, 0.25, True, "replay"), (3, 0.5, True, "replay")]
    assert set(rows[2]["control"]) == {"auc", "logloss"} and rows[2]["checks"][0]["metric"] == "auc"
    assert rows[2]["n_users"] == rollout.stages[2].n_users and rows[2]["control_rows"] > 0

    final = apply_rollout(Verdict("ship", "auc", "full", rationale="CI above 0"), rollout)
    assert final.decision == "ship" and final.guardrails[-1]["name"] == "rollout" and final.guardrails[-1]["ok"]


@pytest.mark.parametrize("experiment_id", ["E0101", "E0102", "E0103", "E0104"])
def test_identical_arms_pass_every_stage(experiment_id):
    """An A/A: the groups differ only in who landed where, which must not look like harm."""
    users, labels, control, _, _ = synthetic(seed=1)
    rollout = ramp(ReplayRollout(experiment_id, users, labels, control, [c.copy() for c in control]), GUARDS)
    assert rollout.completed, rollout.reason
    assert all(c["harm_low"] is not None and c["harm_low"] < c["limit"] for s in rollout.stages for c in s.checks)


def test_a_stage_too_small_to_measure_passes_with_the_reason_recorded():
    users = np.repeat(np.arange(30), 3)
    labels = np.tile([0.0, 1.0, 0.0], 30)
    scores = [np.full(90, 0.3)]
    rollout = ramp(ReplayRollout("E0003", users, labels, scores, [np.full(90, 0.9)]), GUARDS, shares=(0.05,))
    (stage,) = rollout.stages
    assert stage.ok and "not measurable" in stage.reason and "fewer than 5 users" in stage.reason


class ScriptedPlatform:
    """A stand-in A/B platform: reports what it is told, records the ramp it was asked for."""

    name = "scripted-platform"

    def __init__(self, harm_at):
        self.harm_at, self.asked, self.halted = harm_at, [], None

    def observe(self, share):
        self.asked.append(share)
        bad = share >= self.harm_at
        return Observation(100, 1000, 900, 9000, {"auc": 0.7, "logloss": 0.5},
                           {"auc": 0.69 if bad else 0.7, "logloss": 0.5}, {"auc": 0.008 if bad else -0.01,
                                                                           "logloss": -0.01})

    def halt(self, reason):
        self.halted = reason


def test_any_backend_drives_the_same_ramp():
    platform = ScriptedPlatform(harm_at=0.25)
    rollout = ramp(platform, GUARDS)
    assert platform.asked == [0.05, 0.25] and rollout.backend == "scripted-platform"
    assert rollout.halted_at.stage == 2 and "auc drop +0.0100" in platform.halted
    with pytest.raises(ValueError, match="increase"):
        ramp(platform, GUARDS, shares=(0.5, 0.25))

"""The brains' SQL-aggregated reads (knowledge/reads.py) against the per-row Python they
replace, the columns the store keeps for them, and the migration that fills those columns
for a KB that grew before it."""

from __future__ import annotations

import datetime as dt
import json
import typing

import pytest

from agents import knob_search
from agents.applicability import canonical, tried_configurations
from agents.brainstorm import outcomes
from knowledge import KnowledgeBase, reads
from knowledge.migrations import MIGRATIONS

FAILURE = -0.005
BEFORE_M007 = [m for m in MIGRATIONS if m.__name__ < "m007"]


def reference_outcomes(kb, sign: int, failure: float) -> dict[str, tuple[int, float]]:
    """The brainstorm's per-row rule in Python, each experiment judged by its latest verdict."""
    latest = {}
    for v in kb.verdicts():                    # ordered by id: the last one wins
        latest[v["experiment_id"]] = v
    prs = {p["experiment_id"]: p["state"] for p in kb.pull_requests()}
    out: dict[str, tuple[int, float]] = {}
    for e in kb.experiments():
        if e["recipe"] is None or e["status"] not in reads.FINISHED:
            continue
        v = latest.get(e["id"], {})
        if e["status"] == "failed" or v.get("decision") == "vetoed" or v.get("valid_delta") is None:
            reward = failure
        else:
            reward = sign * v["valid_delta"]
        if prs.get(e["id"]) == "rejected":
            reward = min(reward, failure)
        n, total = out.get(e["recipe"], (0, 0.0))
        out[e["recipe"]] = (n + 1, total + reward)
    return out


def as_pairs(result: dict[str, reads.ArmOutcome]) -> dict[str, tuple[int, float]]:
    return {recipe: (o.n, pytest.approx(o.total, abs=1e-12)) for recipe, o in result.items()}


def fill(kb) -> dict[str, str]:
    """A small history with every case the reward rule has; returns names -> experiment ids."""
    ids = {}

    def exp(name, recipe, status, params=None, verdicts=(), pr=None):
        ids[name] = kb.add_experiment(title=name, recipe=recipe, status=status, params=params)
        for decision, delta in verdicts:
            kb.add_verdict(experiment_id=ids[name], decision=decision, valid_delta=delta, metric="auc")
        if pr is not None:
            kb.upsert_pull_request(experiment_id=ids[name], branch=f"b/{name}", title=name, state=pr)

    exp("win", "dcn", "evaluated", {"layers": 2}, [("ship", 0.004)])
    exp("rerun", "dcn", "merged", {"layers": 3}, [("ship", 0.010), ("reject", -0.002)], pr="merged")
    exp("vetoed", "dcn", "evaluated", {"layers": 1}, [("vetoed", 0.02)])
    exp("crashed", "mlp", "failed", {"hidden": [64]}, [("ship", 0.03)])
    exp("no_effect", "mlp", "evaluated", {"hidden": [32]}, [("inconclusive", None)])
    exp("no_verdict", "mlp", "evaluated", {"hidden": [16]})
    exp("rejected_pr", "mlp", "rejected", {"hidden": [8]}, [("ship", 0.02)], pr="rejected")
    exp("rejected_loss", "mlp", "rejected", {"hidden": [4]}, [("reject", -0.03)], pr="rejected")
    exp("vetoed_then_fine", "knobs", "evaluated", {"C": 1.0}, [("vetoed", 0.01), ("ship", 0.006)])
    exp("queued", "dcn", "proposed", {"layers": 4})
    exp("running", "mlp", "running", {"hidden": [2]})
    exp("free_form", None, "evaluated", None, [("ship", 0.05)])
    return ids


@pytest.mark.parametrize("sign", [1, -1])
def test_recipe_outcomes_match_the_per_row_rule_with_the_latest_verdict(sign):
    kb = KnowledgeBase()
    fill(kb)
    got = reads.recipe_outcomes(kb, sign, FAILURE)
    assert as_pairs(got) == reference_outcomes(kb, sign, FAILURE)
    assert set(got) == {"dcn", "mlp", "knobs"}                       # no free-form, no unfinished-only recipe
    assert got["dcn"].n == 3 and got["mlp"].n == 5 and got["knobs"].n == 1
    # the re-run is judged by its second verdict (-0.002), not the first (+0.010)
    assert got["dcn"].total == pytest.approx(sign * 0.004 + sign * -0.002 + FAILURE)
    # the one that a veto then a ship judged is judged by the ship
    assert got["knobs"].total == pytest.approx(sign * 0.006)
    # a crash, no effect, no verdict, and two rejected PRs: each at most the failure reward
    assert got["mlp"].total == pytest.approx(3 * FAILURE + min(sign * 0.02, FAILURE) + min(sign * -0.03, FAILURE))


def test_recipe_outcomes_equal_the_old_outcomes_when_each_experiment_has_one_verdict():
    kb = KnowledgeBase()
    fill(kb)
    for v in kb.verdicts():                  # drop the superseded verdicts the old read double-counts
        if v["id"] != max(w["id"] for w in kb.verdicts(v["experiment_id"])):
            kb.query("DELETE FROM verdicts WHERE id = ?", [v["id"]])
    old: dict[str, tuple[int, float]] = {}
    for recipe, reward in outcomes(kb, -1):
        n, total = old.get(recipe, (0, 0.0))
        old[recipe] = (n + 1, total + reward)
    assert as_pairs(reads.recipe_outcomes(kb, -1, FAILURE)) == old


def test_a_later_verdict_and_a_pr_rejection_move_the_outcome():
    kb = KnowledgeBase()
    exp = kb.add_experiment(title="x", recipe="dcn", status="evaluated", params={"layers": 2})
    kb.add_verdict(experiment_id=exp, decision="ship", valid_delta=0.01)
    assert reads.recipe_outcomes(kb, 1, FAILURE)["dcn"].total == pytest.approx(0.01)
    kb.add_verdict(experiment_id=exp, decision="reject", valid_delta=-0.004)
    assert reads.recipe_outcomes(kb, 1, FAILURE)["dcn"].total == pytest.approx(-0.004)
    pr = kb.upsert_pull_request(experiment_id=exp, branch="b", title="x", state="open")
    assert reads.recipe_outcomes(kb, 1, FAILURE)["dcn"].total == pytest.approx(-0.004)
    kb.update_pull_request(pr, state="rejected")
    assert reads.recipe_outcomes(kb, 1, FAILURE)["dcn"].total == pytest.approx(FAILURE)
    kb.update_experiment(exp, status="failed")
    assert reads.recipe_outcomes(kb, 1, FAILURE)["dcn"] == reads.ArmOutcome(1, FAILURE)


def test_tried_params_finds_exactly_the_tried_keys():
    kb = KnowledgeBase()
    fill(kb)
    kb.add_experiment(title="tuple", recipe="mlp", params={"hidden": (128, 64), "act": "relu"})
    kb.add_experiment(title="no params", recipe="ensemble")
    tried = tried_configurations(kb)
    asked = {
        "dcn": [{"layers": n} for n in range(6)] + [{"layers": 2, "extra": 1}],
        "mlp": [{"hidden": [h]} for h in (2, 4, 8, 16, 32, 64, 128)] + [{"act": "relu", "hidden": [128, 64]},
                                                                      {"hidden": [64, 128], "act": "relu"}],
        "ensemble": [{}, {"members": 3}],
        "knobs": [{"C": 1.0}, {"C": 1}],
        "nothing": [{"layers": 2}],
    }
    wanted = {recipe: [reads.params_key(p) for p in points] for recipe, points in asked.items()}
    expected = {recipe: {k for k in keys if (recipe, k) in tried} for recipe, keys in wanted.items()}
    assert sum(map(len, expected.values())) == 13          # the fixture is not vacuous
    assert reads.tried_by_recipe(kb, wanted) == expected
    for recipe, keys in wanted.items():
        assert reads.tried_params(kb, recipe, keys) == expected[recipe]
    assert reads.params_key({"layers": 2}) == canonical({"layers": 2})
    assert reads.is_tried(kb, "mlp", {"act": "relu", "hidden": [128, 64]})
    assert not reads.is_tried(kb, "mlp", {"act": "relu", "hidden": [64, 128]})
    assert reads.is_tried(kb, "ensemble", None) and reads.is_tried(kb, "ensemble", {})
    assert not reads.is_tried(kb, "dcn", {"layers": 5})
    assert reads.tried_params(kb, "dcn", []) == set()


def test_tried_params_stays_exact_when_hashes_collide(monkeypatch):
    monkeypatch.setattr(reads, "config_hash", lambda recipe, key: None if recipe is None else 7)
    kb = KnowledgeBase()
    fill(kb)
    tried = tried_configurations(kb)
    wanted = {"dcn": [reads.params_key({"layers": n}) for n in range(6)],
              "mlp": [reads.params_key({"hidden": [h]}) for h in (2, 3, 4)]}
    assert set(kb.query("SELECT DISTINCT config_hash AS h FROM experiments WHERE recipe IS NOT NULL")[0].values()) == {7}
    expected = {recipe: {k for k in keys if (recipe, k) in tried} for recipe, keys in wanted.items()}
    assert expected == {"dcn": {reads.params_key({"layers": n}) for n in (1, 2, 3, 4)},
                        "mlp": {reads.params_key({"hidden": [h]}) for h in (2, 4)}}
    assert reads.tried_by_recipe(kb, wanted) == expected


def test_set_keys_treat_lists_of_strings_as_sets():
    kb = KnowledgeBase()
    kb.add_experiment(title="k", recipe="knobs", params={"FEATURES": ["b", "a", "c"], "C": 0.5})
    same = {"C": 0.5, "FEATURES": ["c", "b", "a"]}
    other = {"C": 0.5, "FEATURES": ["a", "b"]}
    assert reads.set_key(same) == reads.set_key({"FEATURES": ["a", "b", "c"], "C": 0.5}) != reads.params_key(same)
    assert reads.tried_params(kb, "knobs", [reads.set_key(same), reads.set_key(other)], as_sets=True) == {
        reads.set_key(same)}
    assert reads.tried_params(kb, "knobs", [reads.params_key(same)]) == set()       # exact: order matters
    assert reads.tried_params(kb, "interaction", [reads.set_key(same)], as_sets=True) == set()


def test_the_store_keeps_the_read_columns_current():
    kb = KnowledgeBase()
    exp = kb.add_experiment(title="x", recipe="dcn", params={"b": 1, "a": 2})
    row = kb.get_experiment(exp)
    assert row["params_key"] == '{"a": 2, "b": 1}' and row["config_hash"] == reads.config_hash("dcn", row["params_key"])
    kb.update_experiment(exp, params={"a": 3})
    assert reads.is_tried(kb, "dcn", {"a": 3}) and not reads.is_tried(kb, "dcn", {"a": 2, "b": 1})
    kb.update_experiment(exp, recipe="mlp")                          # the hash follows the recipe too
    assert reads.is_tried(kb, "mlp", {"a": 3}) and not reads.is_tried(kb, "dcn", {"a": 3})
    free = kb.add_experiment(title="free")
    assert kb.get_experiment(free)["config_hash"] is None and kb.get_experiment(free)["params_key"] == "{}"
    first = kb.add_verdict(experiment_id=exp, decision="ship", valid_delta=0.1)
    second = kb.add_verdict(experiment_id=exp, decision="reject", valid_delta=None)
    row = kb.get_experiment(exp)
    assert (row["verdict_id"], row["verdict_decision"], row["verdict_valid_delta"]) == (second, "reject", None)
    assert first < second


def test_migration_fills_the_columns_of_a_kb_that_grew_before_it(tmp_path):
    path = tmp_path / "kb.duckdb"
    old = KnowledgeBase(path, migrations=BEFORE_M007)
    assert "params_key" not in old.columns("experiments")
    ids = fill(old)
    old.add_experiment(title="odd", recipe="mlp", params={"hidden": [1], "act": "tanh"})
    old.add_experiment(title="unicode", recipe="dcn", params={"name": "café", "tags": ["z", "ä"]})
    expected_outcomes = reference_outcomes(old, -1, FAILURE)
    expected_tried = tried_configurations(old)
    rows_before = old.query("SELECT id, recipe, params FROM experiments ORDER BY id")
    old.release()

    kb = KnowledgeBase(path)
    assert {"m007_read_columns", "m008_read_indexes"} <= {
        r["name"] for r in kb.query("SELECT name FROM _migrations")}
    for row in rows_before:
        got = kb.query("SELECT params_key, params_set_key, config_hash, config_set_hash FROM experiments "
                       "WHERE id = ?", [row["id"]])[0]
        assert got == reads.key_columns(row["recipe"], row["params"])
    assert as_pairs(reads.recipe_outcomes(kb, -1, FAILURE)) == expected_outcomes
    wanted: dict[str, list[str]] = {}
    for recipe, key in expected_tried:
        wanted.setdefault(recipe, []).append(key)
    wanted["dcn"].append(reads.params_key({"layers": 99}))
    assert {(r, k) for r, keys in reads.tried_by_recipe(kb, wanted).items() for k in keys} == expected_tried
    rerun = kb.get_experiment(ids["rerun"])
    assert (rerun["verdict_decision"], rerun["verdict_valid_delta"], rerun["pr_state"]) == ("reject", -0.002, "merged")
    assert kb.get_experiment(ids["no_verdict"])["verdict_id"] is None
    assert {i["name"] for i in kb.query("SELECT index_name AS name FROM duckdb_indexes()")} >= {
        "experiments_config_hash", "experiments_config_set_hash", "experiments_recipe"}
    kb.release()


def m007_params_keys(con):
    """The draft of m007 that a few development KBs recorded (two columns, two indexes)."""
    con.execute("ALTER TABLE experiments ADD COLUMN params_key TEXT")
    con.execute("ALTER TABLE experiments ADD COLUMN params_set_key TEXT")
    con.execute("CREATE INDEX experiments_recipe_params_key ON experiments (recipe, params_key)")
    con.execute("CREATE INDEX experiments_recipe_params_set_key ON experiments (recipe, params_set_key)")


def test_migration_takes_over_a_kb_with_the_draft_m007(tmp_path):
    path = tmp_path / "kb.duckdb"
    draft = KnowledgeBase(path, migrations=[*BEFORE_M007, m007_params_keys])
    exp = draft.add_experiment(title="x", recipe="dcn", params={"layers": 2}, status="evaluated")
    draft.release()
    kb = KnowledgeBase(path)
    assert kb.get_experiment(exp)["params_key"] == '{"layers": 2}' and reads.is_tried(kb, "dcn", {"layers": 2})
    assert not {"experiments_recipe_params_key", "experiments_recipe_params_set_key"} & {
        r["name"] for r in kb.query("SELECT index_name AS name FROM duckdb_indexes()")}
    kb.release()


def test_windows_take_the_latest_by_creation_even_past_e9999():
    kb = KnowledgeBase()
    start = dt.datetime(2026, 1, 1)
    for n in (9997, 9998, 9999, 10000, 10001):            # as text, E9999 sorts after E10001
        kb.add_experiment(id=f"E{n}", title=str(n), recipe="knobs", status="evaluated", params={"C": n},
                          created_at=start + dt.timedelta(minutes=n))
        kb.add_verdict(experiment_id=f"E{n}", decision="ship", valid_delta=n / 1e6)
    kb.add_experiment(id="E10002", title="queued", recipe="knobs", status="proposed", params={"C": 0},
                      created_at=start + dt.timedelta(minutes=10002))
    assert [t.experiment_id for t in reads.recent_experiments(kb, 3)] == ["E10002", "E10001", "E10000"]
    assert [t.experiment_id for t in reads.recent_trials(kb, "knobs", 3)] == ["E9999", "E10000", "E10001"]
    assert [t.valid_delta for t in reads.recent_trials(kb, "knobs", 2)] == [0.01, 0.010001]
    assert len(reads.recent_experiments(kb, 100)) == 6 and reads.recent_experiments(kb, 0) == []
    assert reads.finished_count(kb, "knobs") == 5
    rows = reads.trajectory_rows(kb, 3)                     # the window, then its finished ones, oldest first
    assert [r["id"] for r in rows] == ["E10000", "E10001"] and rows[0]["valid_delta"] == 0.01

    tied = KnowledgeBase()                                  # one session, one creation time: allocation order
    with tied.session() as s:
        for n in (9998, 9999, 10000, 10001):
            s.add_experiment(id=f"E{n}", title=str(n), recipe="knobs", status="failed", created_at=start)
    assert [t.experiment_id for t in reads.recent_experiments(tied, 3)] == ["E10001", "E10000", "E9999"]
    assert [t.experiment_id for t in reads.recent_trials(tied, "knobs", 3)] == ["E9999", "E10000", "E10001"]


def test_windows_equal_a_sort_of_every_experiment():
    """The windows find where to start reading by counting back from the latest creation time;
    whatever the spacing (bursts, ties, a long gap), they are the top of a full sort."""
    kb = KnowledgeBase()
    start = dt.datetime(2026, 1, 1)
    offsets = [0, 0, 0, 1, 2, 3, 5, 8, 13, 600, 601, 601, 602, 86400, 86400, 86401, 90000, 90001, 90001]
    for i, seconds in enumerate(offsets * 3):
        kb.add_experiment(title=str(i), recipe="knobs" if i % 3 else "dcn", params={"i": i},
                          status="evaluated" if i % 4 else "proposed",
                          created_at=start + dt.timedelta(seconds=seconds + (i // len(offsets)) * 7))
    every = kb.query("SELECT id, recipe, status FROM experiments ORDER BY created_at DESC, length(id) DESC, id DESC")
    knobs = [r["id"] for r in every if r["recipe"] == "knobs" and r["status"] == "evaluated"]
    for limit in (1, 2, 3, 5, 8, 13, 30, 57, 100):
        assert [t.experiment_id for t in reads.recent_experiments(kb, limit)] == [r["id"] for r in every][:limit]
        assert [t.experiment_id for t in reads.recent_trials(kb, "knobs", limit)] == knobs[:limit][::-1]
        assert {r["id"] for r in reads.trajectory_rows(kb, limit)} == {
            r["id"] for r in every[:limit] if r["status"] == "evaluated"}


def test_trajectory_rows_join_each_experiments_latest_records():
    kb = KnowledgeBase()
    exp = kb.add_experiment(title="x", recipe="dcn", status="rejected", params={"layers": 2})
    kb.add_verdict(experiment_id=exp, decision="ship", valid_delta=0.01, delta=0.02)
    kb.add_verdict(experiment_id=exp, decision="reject", valid_delta=-0.01, delta=-0.02)
    kb.add_lesson(experiment_id=exp, recipe_family="cross", outcome="loss", failure_kind="old")
    kb.add_lesson(experiment_id=exp, recipe_family="cross", outcome="loss", failure_kind=None)
    kb.upsert_pull_request(experiment_id=exp, branch="b", title="x", state="rejected", review_reason="no")
    micro = kb.add_run(experiment_id=exp, arm="treatment", tier="micro", seed=0)
    kb.finish_run(micro, status="ok", exec_s=1.5)
    full = kb.add_run(experiment_id=exp, arm="treatment", tier="full", seed=0)
    kb.finish_run(full, status="ok", exec_s=9.0)
    [row] = reads.trajectory_rows(kb)
    assert (row["decision"], row["delta"], row["failure_kind"], row["recipe_family"]) == ("reject", -0.02, None, "cross")
    assert (row["pr_state"], row["review_reason"], row["micro_ok_s"], row["micro_status"], row["full_runs"]) == (
        "rejected", "no", [1.5], ["ok"], 1)


def test_tried_items_finds_the_names_in_a_list_param():
    kb = KnowledgeBase()
    kb.add_experiment(title="a", recipe="interaction", params={"FEATURES": ["x", "product(x,y)"], "C": 1})
    kb.add_experiment(title="b", recipe="interaction", params={"FEATURES": ["x", "product(y,z)"], "OTHER": ["q"]})
    kb.add_experiment(title="c", recipe="knobs", params={"FEATURES": ["product(a,b)"]})
    kb.add_experiment(title="d", recipe="interaction", params={"FEATURES": "not a list"})
    asked = ["product(x,y)", "product(y,z)", "product(a,b)", "q", "product(x,z)"]
    assert reads.tried_items(kb, "interaction", "FEATURES", asked) == {"product(x,y)", "product(y,z)"}
    assert reads.tried_items(kb, "interaction", "OTHER", asked) == {"q"}
    assert reads.tried_items(kb, "interaction", "FEATURES", []) == set()


def test_knob_search_builds_its_study_from_the_latest_trials_but_remembers_every_configuration(monkeypatch):
    kb = KnowledgeBase()
    for c in (0.5, 1.5, 2.5, 3.5):
        exp = kb.add_experiment(title="k", recipe=knob_search.KNOB_RECIPE, status="evaluated", params={"C": c})
        kb.add_verdict(experiment_id=exp, decision="ship", valid_delta=c / 100)
    trials = knob_search.prior_trials(kb, 1, limit=2)
    assert [(t.experiment_id, t.params, t.value) for t in trials] == [("E0003", {"C": 2.5}, 0.025),
                                                                     ("E0004", {"C": 3.5}, 0.035)]
    assert len(knob_search.prior_trials(kb, 1)) == 4
    taken = knob_search._Taken(kb)
    assert knob_search._key(None, {"C": 0.5}) in taken           # outside the window, still tried
    assert knob_search._key(None, {"C": 9.0}) not in taken
    taken.add(knob_search._key(None, {"C": 9.0}))
    assert knob_search._key(None, {"C": 9.0}) in taken
    monkeypatch.setattr(knob_search, "PRIOR_LIMIT", 2)

    class Metric:
        sign = 1

    class Manifest:
        metric = Metric()
        knobs: typing.ClassVar[dict] = {}     # the study reads no knob: the space is empty

    _, trials, total = knob_search.KnobSearch()._study(Manifest(), kb, {})
    assert (len(trials), total) == (2, 4)


def test_key_columns_match_what_the_brains_read_back():
    kb = KnowledgeBase()
    params = {"b": (1, 2), "a": {"z": 1.0, "y": None}, "c": "é"}
    exp = kb.add_experiment(title="x", recipe="r", params=params)
    back = kb.get_experiment(exp)["params"]
    assert reads.params_key(params) == canonical(back) == json.dumps(back, sort_keys=True)
    assert reads.key_columns("r", back) == reads.key_columns("r", params)
    assert reads.params_key([]) == reads.params_key(None) == "{}"

"""MoFA feature selection: statistics, constraints and repair, the offline brain, the LLM brain
driven by a scripted model (answers that break constraints and name unknown features)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agents.feature_constraints import (ConstraintError, Constraints, check, feasibility, repair,
                                        violations)
from agents.feature_selection import OfflineBrain, Problem, relevance
from agents.feature_selection_llm import LLMFeatureBrain
from agentx.mofa import make_brain
from agentx.workspace import FeatureConstraints, ManifestError, load_manifest, parse_manifest
from fake_llm import FakeChatModel
from knowledge import KnowledgeBase
from knowledge.features import load_stats, save_catalog, save_stats, versions
from tools.feature_catalog import CatalogError, CatalogFeature, parse_catalog
from tools.feature_crosses import analyse, cross_rows, crosses_from_rows
from tools.feature_stats import FeatureStat, StatsTable, cramers_v, mutual_info, stats_from_rows, stats_rows

SPEC = [("a", "user", "numeric", 0.2), ("a_copy", "user", "numeric", 0.2), ("b", "item", "numeric", 0.5),
        ("c", "context", "numeric", 0.3), ("d", "context", "numeric", 0.3),
        ("colour", "item", "categorical", 0.1), ("noise", "context", "numeric", 0.1),
        ("noise_id", "context", "categorical", 1.0), ("leak", "context", "numeric", 0.1)]
CATALOG = [CatalogFeature(name=n, definition=f"the {n} column", group=g, type=t, serving_cost=c, leaky=n == "leak")
           for n, g, t, c in SPEC]
INFORMATIVE = {"a", "b", "colour", "c", "d"}


def planted(n: int = 2400, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """a, b linear; colour by level; c x d only in interaction; a_copy ~ a; noise; a leak."""
    rng = np.random.default_rng(seed)
    a, b, c, d, noise = rng.normal(size=(5, n))
    colour = rng.integers(0, 4, n)
    logit = 1.5 * a + 1.0 * b + np.array([0.9, -0.9, 0.0, 0.0])[colour] + 1.5 * c * d
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    frame = pd.DataFrame({"a": a, "a_copy": a + 0.2 * rng.normal(size=n), "b": b, "c": c, "d": d,
                          "colour": np.array(["red", "green", "blue", "grey"])[colour], "noise": noise,
                          "noise_id": [f"id{i}" for i in rng.integers(0, 150, n)],
                          "leak": 2.0 * y + 0.3 * rng.normal(size=n), "label": y})
    cut = int(n * 0.7)
    return frame.iloc[:cut].reset_index(drop=True), frame.iloc[cut:].reset_index(drop=True)


@pytest.fixture(scope="module")
def analysed():
    train, valid = planted()
    return analyse(train, valid, CATALOG, "label", version="test-v1", seed=0)


def problem(stats, **constraints) -> Problem:
    budget = constraints.pop("budget", 5)
    return Problem(CATALOG, stats, Constraints.build(FeatureConstraints(**constraints), CATALOG, budget=budget))


# -- statistics ---------------------------------------------------------------------------

def test_statistics_separate_signal_from_noise_and_leave_the_leak_out_of_the_model(analysed):
    stats, _ = analysed
    s = stats.stats
    assert s["leak"].gain is None and s["leak"].permutation is None and stats.excluded == ("leak",)
    assert s["leak"].mutual_info > s["a"].mutual_info          # the leak is what MI loves most
    rel = relevance(stats, [f.name for f in CATALOG if f.name != "leak"])
    assert min(rel[n] for n in ("a", "b", "c", "d")) > max(rel["noise"], rel["noise_id"])
    assert s["c"].mutual_info < 0.01 < s["c"].permutation       # interaction-only: no marginal MI, real drop
    assert stats.assoc("a", "a_copy") > 0.9 and stats.assoc("a", "b") < 0.1
    assert s["a"].partners[0][:1] == ("a_copy",) and s["a"].partners[0][2] == "spearman"
    assert s["colour"].cardinality == 4 and s["noise_id"].cardinality == 150 and s["b"].missing_rate == 0.0
    assert 0.7 < stats.model_auc < 1.0 and stats.rows == {"train": 1680, "valid": 720}


def test_interaction_discovery_ranks_the_planted_cross_first(analysed):
    _, crosses = analysed
    assert set(crosses[0].parts) == {"c", "d"} and crosses[0].gain > 0.01
    assert crosses[0].auc_joint > crosses[0].auc_additive
    entry = crosses[0].entry
    assert entry["group"] == "interaction" and entry["type"] == "categorical" and entry["leaky"] is False
    assert entry["serving_cost"] == pytest.approx(0.6)
    parse_catalog([entry])      # a valid catalog entry as it stands


def test_information_measures_are_bias_corrected():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 3000)
    many = rng.integers(0, 300, 3000)              # independent of y, 300 levels
    assert mutual_info(many, y) < 0.01
    assert mutual_info(y + 1, y) == pytest.approx(np.log(2) - 0.5 / 3000 * 1, abs=0.01)
    assert cramers_v(many, rng.integers(0, 5, 3000)) < 0.05
    assert cramers_v(many, many % 3) > 0.9          # a function of the other (the correction shaves a little)


def test_statistics_round_trip_through_the_knowledge_base(analysed):
    stats, crosses = analysed
    kb = KnowledgeBase(":memory:")
    save_catalog(kb, [f.model_dump() for f in CATALOG])
    assert {f["name"]: f["leaky"] for f in kb.features()}["leak"] is True
    rows = stats_rows(stats) + cross_rows(crosses, stats.version)
    save_stats(kb, stats.version, rows)
    save_stats(kb, stats.version, rows)              # same version again: replaced, not doubled
    stored = load_stats(kb, stats.version)
    assert len(stored) == len(rows) and not load_stats(kb, "another-version")
    again = stats_from_rows(stored)
    assert again.stats == stats.stats and again.association == stats.association
    assert again.model_auc == stats.model_auc and again.excluded == stats.excluded
    assert [c.parts for c in crosses_from_rows(stored)] == [c.parts for c in crosses]
    assert versions(kb)[0]["version"] == stats.version
    with pytest.raises(ValueError, match="not of version"):
        save_stats(kb, "v2", rows)


def test_catalog_errors_name_the_entry():
    with pytest.raises(CatalogError, match="entry price: type"):
        parse_catalog([{"name": "price", "definition": "x", "group": "item", "type": "float", "serving_cost": 1.0}])
    entry = {"name": "a", "definition": "x", "group": "g", "type": "numeric", "serving_cost": 0.1}
    with pytest.raises(CatalogError, match="listed twice: a"):
        parse_catalog([entry, entry])


# -- constraints, check, repair -----------------------------------------------------------

def test_constraints_refuse_what_cannot_hold(analysed):
    stats, _ = analysed
    with pytest.raises(ConstraintError, match="no feature budget"):
        Constraints.build(FeatureConstraints(), CATALOG)
    with pytest.raises(ConstraintError, match="'leak' is both required and forbidden"):
        Constraints.build(FeatureConstraints(must_include=["leak"]), CATALOG, budget=3)
    with pytest.raises(ConstraintError, match="unknown feature 'nope' in forbidden.*unknown group 'bogus'"):
        Constraints.build(FeatureConstraints(forbidden=["nope"], group_max={"bogus": 1}), CATALOG, budget=3)
    with pytest.raises(ConstraintError, match="need 4 slots, the budget is 3"):
        feasibility(problem(stats, budget=3, group_min={"user": 2, "item": 2}).rules())
    with pytest.raises(ConstraintError, match="required features alone break serving_cost"):
        feasibility(problem(stats, must_include=["noise_id", "b"], max_serving_cost=1.2).rules())


def test_check_reports_every_violation(analysed):
    stats, _ = analysed
    rules = problem(stats, budget=3, group_max={"context": 1}, must_include=["b"], max_serving_cost=1.0,
                    max_correlation=0.9).rules()
    checks = {c.name: c for c in check(["a", "a_copy", "leak", "noise", "ghost", "a"], rules)}
    assert not checks["known features"].ok and checks["known features"].detail == "ghost"
    assert not checks["distinct"].ok and not checks["budget"].ok and checks["budget"].value == 4
    assert not checks["group_max[context]"].ok and not checks["must_include"].ok
    assert not checks["forbidden"].ok and checks["forbidden"].detail == "leak"
    assert not checks["max_correlation"].ok and checks["max_correlation"].detail == "a ~ a_copy"
    assert checks["serving_cost"].value == pytest.approx(0.6) and checks["serving_cost"].ok
    assert not violations(check(["a", "b", "c"], rules))


def test_repair_turns_any_proposal_into_a_valid_selection_and_says_what_it_did(analysed):
    stats, _ = analysed
    rules = problem(stats, budget=3, group_max={"context": 1}, max_serving_cost=1.5, max_correlation=0.9).rules()
    proposed = ["leak", "a_copy", "a", "a", "martian", "noise", "noise_id", "c", "b", "colour"]
    kept, log = repair(proposed, rules)
    assert not violations(check(kept, rules)) and len(kept) == 3
    said = "\n".join(str(r) for r in log)
    for fragment in ("dropped 'leak': leaky", "dropped 'a': named twice", "dropped 'martian': unknown feature",
                     "above the cap 0.9", "group context allows at most 1", "over the budget of 3"):
        assert fragment in said, said
    assert "a_copy" not in kept and "leak" not in kept


def test_repair_meets_a_group_minimum_by_swapping_out_the_weakest_spare(analysed):
    stats, _ = analysed
    rules = problem(stats, budget=2, group_min={"item": 1}).rules()
    kept, log = repair(["a", "c"], rules)
    assert any(rules.group(n) == "item" for n in kept) and len(kept) == 2
    assert any(r.action == "dropped" and "swapped out" in r.why for r in log)
    assert not violations(check(kept, rules))


# -- the offline brain --------------------------------------------------------------------

def test_offline_brain_keeps_the_signal_skips_copies_and_the_leak(analysed):
    stats, _ = analysed
    p = problem(stats, budget=5, max_correlation=0.9)
    selection = OfflineBrain().select(p)
    assert selection.valid and set(selection.kept) == INFORMATIVE
    assert set(selection.reasons) == {f.name for f in CATALOG}
    assert "leaky" in selection.reasons["leak"] and "above the cap" in selection.reasons["a_copy"]
    assert selection.reasons["a"].startswith("pick 1: relevance")
    tight = OfflineBrain().select(problem(stats, budget=3, must_include=["noise"], group_min={"item": 2}))
    assert "noise" in tight.kept and {"b", "colour"} <= set(tight.kept) and tight.valid


# -- the LLM brain, scripted ----------------------------------------------------------------

def decisions(keep: list[str], drop: list[str] = ()) -> dict:
    return {"decisions": [{"name": n, "keep": True, "reason": f"{n} carries signal"} for n in keep]
            + [{"name": n, "keep": False, "reason": f"{n} adds nothing"} for n in drop], "summary": "scripted"}


def test_llm_brain_answers_are_repaired_and_refinement_moves_checked(analysed):
    stats, crosses = analysed
    kb = KnowledgeBase(":memory:")
    model = FakeChatModel()
    # the merge answer breaks the constraints: the leak, a near-copy pair, too many, a made-up name
    model.enqueue(decisions(["leak", "a", "a_copy", "b", "noise_id", "colour", "d", "hyperspace_score"], ["noise"]))
    model.enqueue({"action": "swap", "add": "ghost_feature", "remove": "a", "reason": "sounds useful"})
    model.enqueue({"action": "add", "add": "noise", "reason": "fill up"})
    model.enqueue({"action": "swap", "add": "c", "remove": "colour", "reason": "c has a large permutation drop"})
    brain = make_brain(kb, "openai-compatible:http://127.0.0.1:9/v1#scripted", chat_model=model)
    assert isinstance(brain, LLMFeatureBrain)
    p = Problem(CATALOG, stats, Constraints.build(FeatureConstraints(max_correlation=0.9), CATALOG, budget=4),
                crosses=tuple(crosses))
    selection = brain.select(p)

    assert selection.valid and "leak" not in selection.kept and len(selection.kept) <= 4
    assert not {"a", "a_copy"} <= set(selection.kept)
    assert "c" in selection.kept and "colour" not in selection.kept          # the accepted swap
    log = "\n".join(selection.repairs)
    for fragment in ("merge: ignored 'hyperspace_score': not a candidate", "merge: ignored 'leak'", "above the cap 0.9",
                     "over the budget of 4", "refused swap 'ghost_feature' for 'a': 'ghost_feature' is not in "
                     "the catalog", "refused add 'noise': would break budget"):
        assert fragment in log, log
    assert selection.reasons["c"].startswith("added in refinement") and "leaky" in selection.reasons["leak"]
    merge_prompt = model.calls[0].messages[-1].text
    assert "\nleak |" not in merge_prompt and "Forbidden features were removed" in merge_prompt
    assert "keep at most 4" in merge_prompt and ("c_x_d" in merge_prompt or "d_x_c" in merge_prompt)
    assert "REFUSED" in model.calls[2].messages[-1].text                        # the model hears what failed
    calls = kb.llm_calls()
    assert len(calls) == 4 and {c["agent"] for c in calls} == {"feature_selection"}


def synthetic_stats(names: list[str]) -> StatsTable:
    """Statistics without data: relevance falls with the index; nothing associated."""
    stats = {n: FeatureStat(n, 1.0 / (i + 1), 0.1 / (i + 1), 0.05 / (i + 1), 0.0, 10) for i, n in enumerate(names)}
    return StatsTable("synthetic", stats, {n: {} for n in names}, 0.7)


def test_llm_brain_buckets_a_large_catalog_then_merges():
    names = [f"f{i:02d}" for i in range(45)]
    catalog = [CatalogFeature(name=n, definition=f"feature {n}", group="g", type="numeric", serving_cost=0.1)
               for n in names]
    p = Problem(catalog, synthetic_stats(names), Constraints.build(FeatureConstraints(), catalog, budget=3))
    model = FakeChatModel()
    model.enqueue(decisions(["f00", "f05", "f44", "not_a_feature"], ["f01"]))   # f44 is in the other bucket
    model.enqueue(decisions(["f30", "f40"]))
    model.enqueue(decisions(["f00", "f30", "f05", "f40"]))                       # one too many for K = 3
    model.enqueue({"action": "stop", "reason": "good enough"})
    brain = LLMFeatureBrain(_client(model))
    selection = brain.select(p)

    bucket_prompts = [model.calls[i].messages[-1].text for i in (0, 1)]
    for prompt in bucket_prompts:
        rows = [line for line in prompt.splitlines() if line.startswith("f") and " | g | " in line]
        assert 0 < len(rows) <= 40
    merge_rows = [line.split(" | ")[0] for line in model.calls[2].messages[-1].text.splitlines() if " | g | " in line]
    assert sorted(merge_rows) == ["f00", "f05", "f30", "f40"]
    assert selection.valid and selection.kept == ["f00", "f30", "f05"]
    log = "\n".join(selection.repairs)
    assert "bucket 1: ignored 'f44'" in log and "bucket 1: ignored 'not_a_feature'" in log
    assert "dropped 'f40': over the budget of 3" in log
    assert selection.steps[0].startswith("2 buckets over 45 candidates") and "stop" in selection.steps[-1]


def _client(model):
    from agentx.llm import LLMClient

    return LLMClient(model, kb=KnowledgeBase(":memory:"), provider="openai-compatible", model_name="scripted",
                     dollar_cap=None)


def test_manifest_constraints_section_loads_and_rejects_contradictions():
    template = Path(__file__).resolve().parents[1] / "workspaces" / "movielens-ctr"
    manifest = load_manifest(template)
    spec = manifest.features.constraints
    assert spec.budget == 6 and spec.group_min == {"user": 1, "item": 1} and spec.max_serving_cost == 3.0
    raw = tomllib.loads((template / "agentx.toml").read_text())
    for change, words in (({"group_min": {"user": 3}, "group_max": {"user": 1}}, "group_min exceeds group_max"),
                          ({"must_include": ["age"], "forbidden": ["age"]}, "both required and forbidden: age"),
                          ({"group_max": {"user": -1}}, "counts must be 0 or more"),
                          ({"max_corelation": 0.9}, "'features.constraints.max_corelation' is not a known"),
                          ({"max_correlation": 1.5}, "less than or equal to 1")):
        broken = {**raw, "features": {**raw["features"], "constraints": {**raw["features"]["constraints"], **change}}}
        with pytest.raises(ManifestError, match=words):
            parse_manifest(broken)

"""The knob brain: an Optuna study rebuilt from the KB proposes knob values; applied, they
become a branch whose diff changes only those values."""

import textwrap

import pytest
from optuna.trial import TrialState

from agents.knob_search import KNOB_RECIPE, KnobSearch, apply_knobs, prior_trials
from agentx.workspace import load_manifest
from knowledge import KnowledgeBase
from tools.git_repo import WorkspaceRepo
from tools.knobs import KnobError

PRIOR_KNOB = """
[knobs.PRIOR_WEIGHT]
file = "train.py"
name = "PRIOR_WEIGHT"
type = "float"
low = 0.1
high = 10.0
log = true
"""

FEATURES_KNOB = """
[knobs.FEATURES]
file = "train.py"
name = "FEATURES"
type = "features"
min_size = 2
"""

CATALOG = "".join(f"""
- name: {name}
  definition: {name} of the impression
  group: {group}
  type: categorical
  serving_cost: 1.0
""" for name, group in [("user_id", "user"), ("item_id", "item"), ("hour", "context"), ("device", "context")])


def add_knobs(template, knobs: str, features: bool = False):
    """The tiny template with PRIOR_WEIGHT (and FEATURES) as module constants the model uses."""
    train = (template / "train.py").read_text()
    train = train.replace("import csv, json, os\n",
                          "import csv, json, os\n\nPRIOR_WEIGHT = 1.0  # pseudo-observations of the mean click rate\n"
                          + ('FEATURES = [\n    "item_id",\n    "user_id",\n]\n' if features else ""))
    train = train.replace("(clicks[k] + prior) / (seen[k] + 1)",
                          "(clicks[k] + PRIOR_WEIGHT * prior) / (seen[k] + PRIOR_WEIGHT)")
    assert "PRIOR_WEIGHT * prior" in train
    (template / "train.py").write_text(train)
    (template / "agentx.toml").write_text((template / "agentx.toml").read_text() + knobs)
    if features:
        (template / "features.yaml").write_text(textwrap.dedent(CATALOG))
    return template


def finished(kb, params, valid_delta=None, *, status="evaluated", decision="inconclusive", earlier=None):
    """A knob experiment with its verdicts (an `earlier` verdict is superseded by the last)."""
    exp_id = kb.add_experiment(title="knobs", recipe=KNOB_RECIPE, params=params, status=status)
    for delta in ([earlier] if earlier is not None else []) + [valid_delta]:
        if status != "failed":
            kb.add_verdict(experiment_id=exp_id, decision=decision, valid_delta=delta, metric="auc")
    return exp_id


def test_study_from_kb_and_a_branch_that_changes_only_the_knob(tiny_template, tmp_path):
    repo = WorkspaceRepo.init_from_template(tmp_path / "ws", add_knobs(tiny_template, PRIOR_KNOB))
    manifest = load_manifest(repo.root)
    kb = KnowledgeBase.for_workspace(repo.root)
    first = finished(kb, {"PRIOR_WEIGHT": 0.5}, 0.004, earlier=-0.01)
    second = finished(kb, {"PRIOR_WEIGHT": 4.0}, -0.002, decision="reject")
    search = KnobSearch(sampler="tpe", seed=0)

    study, trials = search.study(repo.root, manifest, kb)
    assert [t.experiment_id for t in trials] == [first, second]
    assert [(t.params, t.value, t.state) for t in study.trials] == [
        ({"PRIOR_WEIGHT": 0.5}, 0.004, TrialState.COMPLETE), ({"PRIOR_WEIGHT": 4.0}, -0.002, TrialState.COMPLETE)]

    [proposal] = search.propose_for(repo.root, manifest, kb, k=1)
    value = proposal.params["PRIOR_WEIGHT"]
    assert proposal.recipe == "knobs" and set(proposal.params) == {"PRIOR_WEIGHT"}
    assert 0.1 <= value <= 10.0 and value not in (0.5, 4.0, 1.0)
    assert proposal.rationale.startswith("Optuna TPE sampler (one knob moved, the others held at main's values), "
                                         "2 prior trials from the KB (0 failed; best E0001")
    assert proposal.title == f"Set knobs PRIOR_WEIGHT={value:g}"

    worktree = repo.create_experiment("E0003", proposal.title)
    assert apply_knobs(worktree.path, manifest, proposal.params) == ["train.py"]
    repo.commit(worktree, proposal.title)
    assert repo.changed_paths(worktree.branch) == ["train.py"]
    changed = [line for line in repo.diff(worktree.branch).splitlines()
               if line.startswith(("+", "-")) and not line.startswith(("+++", "---"))]
    assert changed == ["-PRIOR_WEIGHT = 1.0  # pseudo-observations of the mean click rate",
                       f"+PRIOR_WEIGHT = {value!r}  # pseudo-observations of the mean click rate"]


def test_signs_failures_and_vetoes(tiny_template):
    root = add_knobs(tiny_template, PRIOR_KNOB)
    manifest = load_manifest(root)
    kb = KnowledgeBase()
    finished(kb, {"PRIOR_WEIGHT": 0.5}, 0.01)
    finished(kb, {"PRIOR_WEIGHT": 2.0}, status="failed")
    finished(kb, {"PRIOR_WEIGHT": 3.0}, 0.02, decision="vetoed")
    finished(kb, {"PRIOR_WEIGHT": 50.0}, 0.03)                         # outside today's range: left out
    kb.add_experiment(title="queued", recipe=KNOB_RECIPE, params={"PRIOR_WEIGHT": 7.0}, status="proposed")

    assert [t.value for t in prior_trials(kb, sign=-1)] == [-0.01, None, -0.02, -0.03]   # smaller is better
    study, _ = KnobSearch(seed=1).study(root, manifest, kb)
    assert [(t.params["PRIOR_WEIGHT"], t.state, t.value) for t in study.trials] == [
        (0.5, TrialState.COMPLETE, 0.01), (2.0, TrialState.FAIL, None), (3.0, TrialState.COMPLETE, 0.02)]
    assert [t.constraints for t in study.trials] == [{}, {}, {"vetoed": 1.0}]
    proposals = KnobSearch(sampler="random", seed=1).propose_for(root, manifest, kb, k=5)
    values = [p.params["PRIOR_WEIGHT"] for p in proposals]
    assert len(set(values)) == 5 and not set(values) & {0.5, 2.0, 3.0, 7.0, 1.0}
    assert all(p.rationale.startswith("Optuna random sampler (one knob moved, the others held at main's values), "
                                      "4 prior trials from the KB (1 failed") for p in proposals)


def test_same_history_same_proposal_new_history_new_draw(tiny_template):
    root = add_knobs(tiny_template, PRIOR_KNOB)
    manifest = load_manifest(root)
    kb = KnowledgeBase()
    once = KnobSearch(seed=3).propose_for(root, manifest, kb)
    assert KnobSearch(seed=3).propose_for(root, manifest, kb) == once
    finished(kb, once[0].params, 0.001)
    again = KnobSearch(seed=3).propose_for(root, manifest, kb)
    assert again[0].params != once[0].params


def test_features_knob_is_one_yes_no_per_catalog_name(tiny_template):
    root = add_knobs(tiny_template, PRIOR_KNOB + FEATURES_KNOB, features=True)
    manifest = load_manifest(root)
    kb = KnowledgeBase()
    finished(kb, {"PRIOR_WEIGHT": 2.0, "FEATURES": ["item_id", "hour"]}, 0.003)
    study, _ = KnobSearch().study(root, manifest, kb)
    assert study.trials[0].params == {"PRIOR_WEIGHT": 2.0, "features.FEATURES.user_id": False,
                                      "features.FEATURES.item_id": True, "features.FEATURES.hour": True,
                                      "features.FEATURES.device": False}
    proposals = KnobSearch(sampler="random", seed=7, scope="global").propose_for(root, manifest, kb, k=8)
    assert len(proposals) == 8
    for p in proposals:
        chosen = p.params["FEATURES"]
        assert len(chosen) >= 2 and set(chosen) <= {"user_id", "item_id", "hour", "device"}
    assert len({(p.params["PRIOR_WEIGHT"], tuple(p.params["FEATURES"])) for p in proposals}) == 8

    # applying keeps the names already there in their order: only the list's content changes
    before = (root / "train.py").read_text()
    assert apply_knobs(root, manifest, {"FEATURES": ["device", "user_id", "item_id"]}) == ["train.py"]
    after = (root / "train.py").read_text()
    assert after == before.replace('    "user_id",\n]', '    "user_id",\n    "device",\n]')
    assert apply_knobs(root, manifest, {"FEATURES": ["user_id", "device", "item_id"]}) == []


def test_exhausted_space_proposes_nothing(tiny_template):
    root = add_knobs(tiny_template, '\n[knobs.SHUFFLE]\nfile = "train.py"\nname = "SHUFFLE"\ntype = "bool"\n')
    (root / "train.py").write_text((root / "train.py").read_text() + "\nSHUFFLE = False\n")
    manifest = load_manifest(root)
    kb = KnowledgeBase()
    [only] = KnobSearch(seed=0).propose_for(root, manifest, kb, k=3)    # False is current: True is all there is
    assert only.params == {"SHUFFLE": True}
    finished(kb, {"SHUFFLE": True}, -0.001)
    assert KnobSearch(seed=0).propose_for(root, manifest, kb, k=3) == []


def test_unknown_knob_or_sampler_is_refused(tiny_template):
    root = add_knobs(tiny_template, PRIOR_KNOB)
    manifest = load_manifest(root)
    with pytest.raises(KnobError, match="no knob DEPTH in agentx.toml"):
        apply_knobs(root, manifest, {"DEPTH": 3})
    with pytest.raises(KnobError, match="outside"):
        apply_knobs(root, manifest, {"PRIOR_WEIGHT": 30.0})
    with pytest.raises(Exception, match="choose one of tpe, random, cmaes"):
        KnobSearch(sampler="grid")


def test_a_reordered_list_is_not_a_new_configuration(tiny_template):
    knob = FEATURES_KNOB.replace("min_size = 2", 'min_size = 1\nchoices = ["user_id", "item_id"]')
    root = add_knobs(tiny_template, knob, features=True)      # FEATURES = ["item_id", "user_id"] now
    proposals = KnobSearch(sampler="random", seed=0).propose_for(root, load_manifest(root), KnowledgeBase(), k=5)
    assert sorted(p.params["FEATURES"] for p in proposals) == [["item_id"], ["user_id"]]


def test_local_moves_change_one_knob_and_respect_when(tiny_template):
    """The default scope: each proposal moves one knob (or one feature in or out) next to main's
    values; a knob whose `when` does not hold for main is never moved."""
    gated = ('\n[knobs.SMOOTH]\nfile = "train.py"\nname = "SMOOTH"\ntype = "float"\nlow = 0.1\nhigh = 5.0\n'
             'when = { SHUFFLE = true }\n'
             '\n[knobs.SHUFFLE]\nfile = "train.py"\nname = "SHUFFLE"\ntype = "bool"\n')
    root = add_knobs(tiny_template, PRIOR_KNOB + FEATURES_KNOB + gated, features=True)
    (root / "train.py").write_text((root / "train.py").read_text() + "\nSMOOTH = 1.0\nSHUFFLE = False\n")
    manifest = load_manifest(root)
    kb = KnowledgeBase()
    main = {"PRIOR_WEIGHT": 1.0, "FEATURES": ["item_id", "user_id"], "SMOOTH": 1.0, "SHUFFLE": False}
    proposals = KnobSearch(seed=5).propose_for(root, manifest, kb, k=12)
    assert len(proposals) == 12
    moved = set()
    for p in proposals:
        changed = {name for name, value in p.params.items()
                   if (sorted(value) if name == "FEATURES" else value) != (sorted(main[name]) if name == "FEATURES"
                                                                          else main[name])}
        assert len(changed) == 1, p.params
        moved |= changed
        if changed == {"FEATURES"}:
            assert len(set(p.params["FEATURES"]) ^ set(main["FEATURES"])) == 1, p.params   # one name added, or one dropped
            assert p.title.startswith("Set knobs FEATURES ") and ("+" in p.title or "-" in p.title)
    assert moved == {"PRIOR_WEIGHT", "FEATURES", "SHUFFLE"}            # SMOOTH waits for SHUFFLE = true
    with pytest.raises(Exception, match="when names 'DEPTH'"):
        (root / "agentx.toml").write_text((root / "agentx.toml").read_text().replace("SHUFFLE = true", "DEPTH = 3"))
        load_manifest(root)

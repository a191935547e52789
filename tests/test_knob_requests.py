"""Chat requests that name knobs or features, on a repository that is not one of our
templates (the adopted click repo): "add feature X", "drop feature X", "set KNOB to V" become
exactly that change; a request that names something the workspace cannot change says so and
exits non-zero; `select-features --run` edits only the features knob."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from agents.knob_requests import UnmappableRequest, knob_request
from agentx.cli import app
from agentx.workspace import load_manifest
from knowledge import KnowledgeBase
from tools.git_repo import WorkspaceRepo

from click_repo import CONFIG, KNOBS, adopted_click_repo

# the model reads four of the six columns; the catalog (from `agentx adopt`) has all six
FOUR = CONFIG.replace("  - age_days\n", "").replace("  - discount\n", "")
GATED = KNOBS + '''
[knobs.penalty]
file = "conf/model.yaml"
name = "model.penalty"
type = "categorical"
choices = ["l2", "l1"]
'''


@pytest.fixture
def repo(tmp_path):
    return adopted_click_repo(tmp_path, FOUR, GATED)


def changed(proposal, before: dict) -> dict:
    return {k: v for k, v in proposal.params.items() if v != before[k]}


BEFORE = {"C": 1.0, "features": ["position", "price", "rating", "distance_km"], "penalty": "l2"}


@pytest.mark.parametrize("request_, knob, value, title", [
    ("add feature discount", "features", ["position", "price", "rating", "distance_km", "discount"],
     "Set knobs features +discount"),
    ("Add features discount and age_days", "features",
     ["position", "price", "rating", "distance_km", "discount", "age_days"], "Set knobs features +discount +age_days"),
    ("drop feature distance_km", "features", ["position", "price", "rating"], "Set knobs features -distance_km"),
    ("remove the price feature", "features", ["position", "rating", "distance_km"], "Set knobs features -price"),
    ("set C to 0.1", "C", 0.1, "Set knobs C=0.1"),
    ("C = 25", "C", 25.0, "Set knobs C=25"),
    ("set penalty to L1", "penalty", "l1", "Set knobs penalty=l1"),
])
def test_a_request_maps_onto_exactly_that_change(repo, request_, knob, value, title):
    proposal = knob_request(request_, repo, load_manifest(repo))
    assert proposal is not None and proposal.recipe == "knobs" and proposal.source == "chat"
    assert changed(proposal, BEFORE) == {knob: value}
    assert set(proposal.params) == set(BEFORE) and proposal.title == title
    assert request_ in proposal.rationale


def test_a_group_or_prefix_drops_every_feature_of_it(repo):
    catalog = (repo / "features.yaml").read_text().replace("group: TODO", "group: listing", 2)  # position, price
    (repo / "features.yaml").write_text(catalog)
    (repo / "agentx.toml").write_text((repo / "agentx.toml").read_text().replace("min_size = 3", "min_size = 2"))
    proposal = knob_request("drop the listing features", repo, load_manifest(repo))
    assert changed(proposal, BEFORE) == {"features": ["rating", "distance_km"]}
    proposal = knob_request("drop feature distance", repo, load_manifest(repo))     # prefix of distance_km
    assert changed(proposal, BEFORE) == {"features": ["position", "price", "rating"]}


@pytest.mark.parametrize("request_, says", [
    ("add feature segment", "segment is not a feature any features knob can take (candidates: age_days, "),
    ("add feature price", "features already has price; nothing to add"),
    ("drop feature gender", "gender names no feature the model reads now"),
    ("drop features position, price", "leaves 2 of features's features, fewer than its min_size 3"),
    ("set C to 1000", "outside [0.001, 100.0]"),
    ("set C to lots", "C is a float knob; 'lots' is not a number"),
    ("set depth to 3", "no knob named 'depth' in agentx.toml (knobs: C, features, penalty)"),
    ("set penalty to elasticnet", "penalty takes one of l2, l1; not 'elasticnet'"),
    ("set C to 1.0", "C is already 1.0; nothing to change"),
])
def test_a_request_that_cannot_be_done_says_exactly_why(repo, request_, says):
    with pytest.raises(Exception, match=None) as caught:
        knob_request(request_, repo, load_manifest(repo))
    assert says in str(caught.value), str(caught.value)


def test_requests_about_something_else_go_to_the_recipes(repo):
    manifest = load_manifest(repo)
    assert knob_request("try a cross network on the ranker", repo, manifest) is None
    assert knob_request("set up a deeper tower to learn more", repo, manifest) is None


@pytest.mark.slow
def test_ask_runs_the_mapped_change_and_refuses_the_unmappable(repo):
    runner = CliRunner()
    for request_, line in (("add feature discount", "+  - discount"), ("set C to 0.1", "+  C: 0.1")):
        result = runner.invoke(app, ["ask", request_, "--workspace", str(repo)])
        assert result.exit_code == 0, result.output
    kb, git = KnowledgeBase.for_workspace(repo), WorkspaceRepo(repo)
    first, second = kb.experiments()
    assert first["title"] == "Set knobs features +discount" and second["title"] == "Set knobs C=0.1"
    for experiment, line in ((first, "+  - discount"), (second, "+  C: 0.1          # inverse regularisation strength")):
        assert git.changed_paths(experiment["branch"]) == ["conf/model.yaml"]
        diff = [d for d in git.diff(experiment["branch"]).splitlines()
                if d.startswith(("+", "-")) and not d.startswith(("+++", "---"))]
        assert line in diff and len([d for d in diff if d.startswith("+")]) == 1, diff
        assert kb.verdicts(experiment["id"])[-1]["decision"] in ("ship", "reject", "inconclusive", "vetoed")

    refused = runner.invoke(app, ["ask", "add feature segment", "--workspace", str(repo)])
    assert refused.exit_code == 2 and "segment is not a feature" in refused.output, refused.output
    assert len(kb.experiments()) == 2


@pytest.mark.slow
def test_select_features_run_edits_only_the_features_knob(repo):
    result = CliRunner().invoke(app, ["select-features", "--workspace", str(repo), "--budget", "5", "--run"])
    assert result.exit_code in (0, 1), result.output
    kb, git = KnowledgeBase.for_workspace(repo), WorkspaceRepo(repo)
    (experiment,) = kb.experiments()
    assert experiment["recipe"] == "knobs" and experiment["title"].startswith("Set knobs features ")
    assert git.changed_paths(experiment["branch"]) == ["conf/model.yaml"]
    diff = [d for d in git.diff(experiment["branch"]).splitlines()
            if d.startswith(("+", "-")) and not d.startswith(("+++", "---"))]
    assert diff and all(d[1:].startswith("  - ") for d in diff), diff
    kept = experiment["params"]["features"]
    assert 3 <= len(kept) <= 5 and experiment["params"]["C"] == 1.0
    assert kb.verdicts(experiment["id"]), "the selection was judged"

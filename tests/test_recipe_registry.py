"""Recipes belong to workspaces: the registry built from a manifest's `[recipes] sets`, plugins
through entry points, `agentx recipes`, and the loop's line when nothing is left to propose."""

from __future__ import annotations

import json
import textwrap
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agents.applicability import survey
from agents.brainstorm import HeuristicBrainstorm, NoMatchingRecipe
from agents.developer import ChangeRejected, HeuristicDeveloper
from agents.recipes import RecipeRegistry, RecipeSet, RecipeSetError, registry_for
from agents.recipes.registry import available_sets, load_set
from agentx.cli import app
from agentx.context import Workspace
from agentx.workspace import ManifestError, load_manifest, parse_manifest
from conftest import TINY_MANIFEST
from tools.git_repo import WorkspaceRepo
from workspaces.recipes.feature_lists import FEATURE_SUBSET
from workspaces.recipes.movielens_ctr import recipe_set as movielens_ctr_set

TEMPLATE = Path(__file__).resolve().parents[1] / "workspaces" / "movielens-ctr"
TEMPLATE_RECIPES = {r.name for r in movielens_ctr_set().recipes} | {FEATURE_SUBSET.name}

PLUGIN_MODULE = '''
from pathlib import Path

from agents.recipes.core import Recipe, RecipeSet
from agents.recipes.edits import read, set_constant, write


def apply_prior(worktree: Path, params: dict) -> list[str]:
    text = read(worktree, "train.py")
    write(worktree, "train.py", set_constant(text, "train.py", "PRIOR_WEIGHT", float(params["weight"])))
    return ["train.py"]


def recipe_set():
    return RecipeSet("tiny-consts", "a train.py with a PRIOR_WEIGHT constant", (
        Recipe(name="prior_weight", family="regularisation", title="Prior weight", card="regularisation",
               hypothesis="Heavier smoothing helps rare items.", kind="config", space={"weight": [2.0, 4.0]},
               keywords=("prior", "smoothing"), apply=apply_prior, detail="{weight}"),))


def wrong_name():
    return RecipeSet("something-else", "", ())
'''


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def tiny_workspace(tiny_template: Path, dest: Path, extra: str = "", train_suffix: str = "") -> Path:
    (tiny_template / "agentx.toml").write_text(TINY_MANIFEST + extra)
    train = tiny_template / "train.py"
    train.write_text(train.read_text() + train_suffix)
    return WorkspaceRepo.init_from_template(dest, tiny_template).root


@pytest.fixture
def plugin(tmp_path, monkeypatch) -> Path:
    """An installed package declaring the recipe set 'tiny-consts' in the agentx.recipes group."""
    site = tmp_path / "site"
    info = site / "agentx_tiny_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: agentx-tiny-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[agentx.recipes]\ntiny-consts = agentx_tiny_recipes:recipe_set\n"
                                           "misnamed = agentx_tiny_recipes:wrong_name\n"
                                           "broken = agentx_no_such_module:recipe_set\n")
    (site / "agentx_tiny_recipes.py").write_text(textwrap.dedent(PLUGIN_MODULE))
    monkeypatch.syspath_prepend(str(site))
    return site


# -- the registry ------------------------------------------------------------------------

def test_the_template_names_its_sets_and_gets_every_recipe():
    registry = registry_for(load_manifest(TEMPLATE))
    assert registry.set_names == ["movielens-ctr", "feature-lists"]
    assert set(registry.names) == TEMPLATE_RECIPES and len(TEMPLATE_RECIPES) >= 18
    assert registry.origin("dcn_v2") == "movielens-ctr" and registry.origin("feature_subset") == "feature-lists"
    assert registry.family("dcn_v2") == "interaction" and registry.family(None) == "free-form"
    assert registry.family("knobs") == "free-form" and registry.find("knobs") is None


def test_a_manifest_without_recipe_sets_gets_no_recipes():
    registry = registry_for(parse_manifest(tomllib.loads(TINY_MANIFEST)))
    assert len(registry) == 0 and registry.set_names == [] and "dcn_v2" not in registry
    with pytest.raises(KeyError, match="no recipe 'dcn_v2' in this workspace's recipe sets \\(none named\\)"):
        registry.get("dcn_v2")


def test_unknown_or_clashing_sets_are_refused_with_what_there_is():
    manifest = parse_manifest(tomllib.loads(TINY_MANIFEST + '\n[recipes]\nsets = ["movielens"]\n'))
    with pytest.raises(RecipeSetError, match="no recipe set 'movielens'; available: feature-lists, movielens-ctr"):
        registry_for(manifest)
    with pytest.raises(ManifestError, match="recipes.sets.*distinct"):
        parse_manifest(tomllib.loads(TINY_MANIFEST + '\n[recipes]\nsets = ["a", "a"]\n'))
    twice = RecipeSet("copy", "", (FEATURE_SUBSET,))
    with pytest.raises(RecipeSetError, match="'feature_subset' is in both set 'feature-lists' and set 'copy'"):
        RecipeRegistry((RecipeSet("feature-lists", "", (FEATURE_SUBSET,)), twice))


def test_a_plugin_set_comes_from_its_entry_point(plugin, tiny_template, tmp_path):
    root = tiny_workspace(tiny_template, tmp_path / "ws", '\n[recipes]\nsets = ["tiny-consts"]\n',
                          "PRIOR_WEIGHT = 1.0\n")
    with Workspace.open(root, warm_kernels=False) as ws:
        assert ws.recipes.names == ["prior_weight"] and ws.recipes.origin("prior_weight") == "tiny-consts"
        (proposal,) = HeuristicBrainstorm().propose(ws, 1)
        assert (proposal.recipe, proposal.params, proposal.title) == ("prior_weight", {"weight": 2.0},
                                                                      "Prior weight (2)")
    with pytest.raises(RecipeSetError, match="returned the set 'something-else'"):
        load_set("misnamed", available_sets())
    with pytest.raises(RecipeSetError, match="'broken' \\(plugin agentx_no_such_module:recipe_set\\) does not load"):
        load_set("broken", available_sets())


def test_a_plugin_may_not_reuse_a_bundled_name(plugin):
    (plugin / "agentx_tiny_plugin-0.1.dist-info" / "entry_points.txt").write_text(
        "[agentx.recipes]\nmovielens-ctr = agentx_tiny_recipes:recipe_set\n")
    with pytest.raises(RecipeSetError, match="both bundled with agentx and declared by an installed plugin"):
        registry_for(load_manifest(TEMPLATE))


# -- the agents use the workspace's registry ---------------------------------------------

def test_without_the_templates_set_no_agent_finds_its_recipes(tiny_template, tmp_path):
    root = tiny_workspace(tiny_template, tmp_path / "ws")
    with Workspace.open(root, warm_kernels=False) as ws:
        assert len(ws.recipes) == 0 and HeuristicBrainstorm().propose(ws, 3) == []
        with pytest.raises(NoMatchingRecipe, match="this workspace has no recipes \\(agentx.toml names no"):
            HeuristicBrainstorm().propose(ws, 1, "try a cross network")
        with pytest.raises(ChangeRejected, match="no recipe 'dcn_v2' in this workspace's recipe sets"):
            HeuristicDeveloper().implement(ws, {"recipe": "dcn_v2", "params": {"layers": 2}}, ws.root)


def test_select_features_run_needs_a_features_knob_or_the_feature_lists_set(tiny_template, tmp_path):
    root = tiny_workspace(tiny_template, tmp_path / "ws")
    result = invoke("select-features", "--run", "--workspace", str(root))
    assert result.exit_code == 2 and "Traceback" not in result.output
    said = " ".join(result.output.split())
    assert "it sets the workspace's features knob" in said and "the feature_subset recipe of the 'feature-lists' set" \
        in said and "this workspace has neither: declare a features knob in agentx.toml" in said


# -- agentx recipes ------------------------------------------------------------------------

def test_recipes_on_a_workspace_without_sets_says_why(tiny_template, tmp_path):
    root = tiny_workspace(tiny_template, tmp_path / "ws")
    result = invoke("recipes", "--workspace", str(root), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["recipes"] == [] and report["sets"] == [] and {"movielens-ctr", "feature-lists"} <= set(
        report["available_sets"])
    assert "this workspace has no recipes (agentx.toml names no [recipes] sets" in report["summary"]
    table = invoke("recipes", "--workspace", str(root))
    assert table.exit_code == 0 and "agentx.toml names no [recipes] sets" in " ".join(table.output.split())


def test_recipes_on_the_template_lists_every_recipe_as_applicable(tmp_path):
    root = WorkspaceRepo.init_from_template(tmp_path / "ml", "movielens-ctr").root
    report = json.loads(invoke("recipes", "--workspace", str(root), "--json").output)
    rows = {r["name"]: r for r in report["recipes"]}
    assert set(rows) == TEMPLATE_RECIPES and all(r["applicable"] and r["left"] >= 1 for r in rows.values())
    assert rows["dcn_v2"]["recipe_set"] == "movielens-ctr" and rows["dcn_v2"]["left"] == rows["dcn_v2"]["settings"]
    assert report["summary"].startswith(f"0 of {len(rows)} recipes do not apply;")
    assert not WorkspaceRepo(root).repo.is_dirty(untracked_files=True)        # dry runs touch a scratch copy only


def test_recipes_counts_tried_settings_and_lists_knobs(tiny_template, tmp_path):
    knobs = ('\n[recipes]\nsets = ["movielens-ctr"]\n\n[knobs.prior]\nfile = "train.py"\nname = "PRIOR_WEIGHT"\n'
             'type = "float"\nlow = 0.5\nhigh = 8.0\n\n[knobs.gone]\nfile = "train.py"\nname = "MISSING"\n'
             'type = "int"\nlow = 1\nhigh = 4\n')
    root = tiny_workspace(tiny_template, tmp_path / "ws", knobs, "PRIOR_WEIGHT = 1.0\n")
    with Workspace.open(root, warm_kernels=False) as ws:
        ws.kb.add_experiment(title="t", recipe="dcn_v2", params={"layers": 2}, status="failed")
        result = survey(ws)
    dcn = next(r for r in result.recipes if r.name == "dcn_v2")
    assert (dcn.settings, dcn.untried, dcn.left, dcn.applicable) == (3, 2, 0, False)
    assert dcn.reason == f"model.py does not exist in {root}"
    assert {k.name: (k.applicable, k.current) for k in result.knobs} == {"prior": (True, 1.0), "gone": (False, None)}
    assert "MISSING" in next(k.reason for k in result.knobs if k.name == "gone")


# -- the loop says why it has nothing to propose -----------------------------------------------

def test_run_with_no_applicable_recipe_prints_why(tiny_template, tmp_path):
    root = tiny_workspace(tiny_template, tmp_path / "ws", '\n[recipes]\nsets = ["movielens-ctr", "feature-lists"]\n')
    result = invoke("run", "--experiments", "1", "--workspace", str(root))
    assert result.exit_code == 1, result.output
    output = " ".join(result.output.split())
    n = len(TEMPLATE_RECIPES)
    assert f"stopped: no untried proposals left: {n} of {n} recipes do not apply (" in output
    assert f"model.py does not exist in {root}" in output and "cannot find the constant" in output
    assert "0 untried recipe settings apply" in output and "no knobs declared" in output
    assert f"`agentx recipes --workspace {root}` lists each with its reason" in output

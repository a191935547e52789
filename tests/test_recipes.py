"""The movielens-ctr template's recipes (through the registry its manifest names) and the
research cards.

Fast tests edit copies of the real movielens-ctr template (milliseconds each). The slow
ones apply each recipe's default to a checkout and train it for real on the micro tier
with the harness (MovieLens is fetched into the shared cache on first use).
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from agents.recipes import InvalidParams, RecipeNotApplicable, all_params, describe, registry_for, slug
from agents.recipes.edits import get_constant, set_constant, wrap_method_return
from agentx.workspace import load_manifest
from knowledge import KnowledgeBase
from knowledge.cards import CardError, load_cards, parse_card, seed_cards

TEMPLATE = Path(__file__).resolve().parents[1] / "workspaces" / "movielens-ctr"
REGISTRY = registry_for(load_manifest(TEMPLATE))     # the recipe sets the template's agentx.toml names
RECIPES = {recipe.name: recipe for recipe in REGISTRY}
get_recipe = REGISTRY.get
SHARED_CACHE = Path(os.environ.get("AGENTX_CACHE_DIR") or Path.home() / ".cache" / "agentx")
REQUIRED_CARDS = {"dcn_v2", "fm", "deepfm", "ssr", "gatesid", "user_history", "feature_crosses",
                  "embedding_size", "mlp_shape", "regularisation", "lr_schedule", "batch_size",
                  "mofa", "sandmle", "ensembling"}


def copy_template(dest: Path) -> Path:
    shutil.copytree(TEMPLATE, dest, ignore=shutil.ignore_patterns(".agentx", "__pycache__"))
    return dest


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def git_checkout(dest: Path) -> Path:
    copy_template(dest)
    git(dest, "init", "-q")
    git(dest, "add", ".")
    git(dest, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base")
    return dest


def changed_lines(before: str, after: str) -> list[str]:
    return [line for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


# -- the registry ---------------------------------------------------------------------

def test_registry_has_enough_recipes_each_tied_to_a_shipped_card():
    cards = {card.id for card in load_cards()}
    assert len(RECIPES) >= 12
    assert sum(r.kind == "code" for r in RECIPES.values()) >= 5
    for name, recipe in RECIPES.items():
        assert recipe.name == name and get_recipe(name) is recipe
        assert recipe.card in cards, f"{name} points at a missing card {recipe.card}"
        assert recipe.keywords and recipe.hypothesis and recipe.title
    assert {r.name for r in REGISTRY.for_card("regularisation")} >= {"dropout", "weight_decay", "id_dropout"}
    with pytest.raises(KeyError, match="no recipe 'nope'"):
        get_recipe("nope")


def test_grid_is_the_ordered_product_with_the_default_first():
    history = get_recipe("user_history")
    grid = all_params(history)
    assert grid == [{"max_history": m, "pooling": p} for m in (50, 20, 100) for p in ("mean", "attention")]
    assert grid == all_params(history) and grid[0] == history.default
    assert len(all_params(get_recipe("id_dropout"))) == 9
    for recipe in RECIPES.values():
        points = all_params(recipe)
        assert points[0] == recipe.default
        assert len({repr(sorted(p.items())) for p in points}) == len(points)


def test_describe_and_slug():
    dcn = get_recipe("dcn_v2")
    assert describe(dcn, {"layers": 2}) == "DCN-v2 cross network (2 layers)"
    assert slug(dcn, {"layers": 3}) == "dcn_v2-layers3"
    assert slug(get_recipe("mlp_shape"), {"hidden": [256, 128, 64]}) == "mlp_shape-hidden256x128x64"
    assert describe(get_recipe("weight_decay"), {"weight_decay": 1e-4}) == "AdamW weight decay (wd=0.0001)"
    slugs = [slug(r, p) for r in RECIPES.values() for p in all_params(r)]
    assert len(set(slugs)) == len(slugs)
    for s in slugs:  # usable as a git branch name component
        assert re.fullmatch(r"[a-z0-9][a-z0-9._-]*[a-z0-9]", s) and ".." not in s, s
    with pytest.raises(InvalidParams, match="not in its grid"):
        describe(dcn, {"layers": 7})
    with pytest.raises(InvalidParams, match="takes parameters"):
        slug(dcn, {"depth": 2})


# -- edits on the real template ---------------------------------------------------------

@pytest.mark.parametrize("name", [n for n, r in RECIPES.items() if r.kind == "config"])
def test_config_recipe_changes_exactly_the_constant_lines(name, tmp_path):
    checkout = copy_template(tmp_path / "ws")
    before = (checkout / "train.py").read_text()
    recipe = get_recipe(name)
    assert recipe.apply(checkout, recipe.default) == ["train.py"]
    diff = changed_lines(before, (checkout / "train.py").read_text())
    removed = [line for line in diff if line.startswith("-")]
    added = [line for line in diff if line.startswith("+")]
    assert len(removed) == len(added) >= 1
    assert all(re.match(r"[-+][A-Z_]+ = ", line) for line in diff), diff
    if name not in ("drop_feature", "feature_subset"):  # these edit several feature lists (and ID_DROPOUT)
        assert len(removed) == 1
    assert (checkout / "model.py").read_text() == (TEMPLATE / "model.py").read_text()


def test_set_constant_keeps_the_comment_and_refuses_what_it_cannot_do():
    text = 'A = 1\nLR = 2e-3               # AdamW learning rate\nB = [1,\n     2]\nC = 1\nC = 2\n'
    out = set_constant(text, "train.py", "LR", 5e-3)
    assert out.splitlines()[1] == "LR = 0.005              # AdamW learning rate"
    assert changed_lines(text, out) == ["-LR = 2e-3               # AdamW learning rate",
                                        "+LR = 0.005              # AdamW learning rate"]
    with pytest.raises(RecipeNotApplicable, match="already 0.002"):
        set_constant(text, "train.py", "LR", 0.002)
    with pytest.raises(RecipeNotApplicable, match="cannot find the constant EPOCHS"):
        set_constant(text, "train.py", "EPOCHS", 3)
    with pytest.raises(RecipeNotApplicable, match="appears 2 times"):
        set_constant(text, "train.py", "C", 3)
    with pytest.raises(RecipeNotApplicable, match="several lines"):
        set_constant(text, "train.py", "B", [3])
    assert get_constant("ID = {'user_id': 0.1}  # rates\n", "t.py", "ID") == {"user_id": 0.1}


def test_wrap_method_return_twice_keeps_one_assignment():
    src = "class M:\n    def f(self, x):\n        return x + 1\n"
    once = wrap_method_return(src, "m.py", "M", "f", "out = out * 2")
    twice = wrap_method_return(once, "m.py", "M", "f", "out = out - 3")
    namespace: dict = {}
    exec(twice, namespace)
    assert namespace["M"]().f(1) == (1 + 1) * 2 - 3
    assert twice.count("out = x + 1") == 1 and twice.count("return") == 1


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_grid_point_applies_to_the_template_and_compiles(name, tmp_path):
    """The default always applies; another grid point may only be refused because the
    template already is at that point (a constant at that value, a feature (not) read)."""
    recipe = get_recipe(name)
    applied = 0
    for i, params in enumerate(all_params(recipe)):
        checkout = copy_template(tmp_path / f"ws{i}")
        try:
            changed = recipe.apply(checkout, params)
        except RecipeNotApplicable as exc:
            assert i > 0 and re.search(r"already|is in neither", exc.reason), exc.reason
            continue
        applied += 1
        assert changed and set(changed) <= {"model.py", "train.py"}
        for rel in ("model.py", "train.py"):
            text = (checkout / rel).read_text()
            compile(text, rel, "exec")
            assert (text != (TEMPLATE / rel).read_text()) == (rel in changed)
        if recipe.kind == "code":  # new code, not a constant: at least a few new lines
            added = sum(len([l for l in changed_lines((TEMPLATE / rel).read_text(), (checkout / rel).read_text())
                             if l.startswith("+")]) for rel in changed)
            assert added >= 3
    assert applied >= min(2, len(all_params(recipe)))


@pytest.mark.parametrize("name", [n for n, r in RECIPES.items() if r.kind == "code"])
def test_code_recipe_refuses_a_second_application(name, tmp_path):
    checkout = copy_template(tmp_path / "ws")
    recipe = get_recipe(name)
    recipe.apply(checkout, recipe.default)
    snapshot = {rel: (checkout / rel).read_text() for rel in ("model.py", "train.py")}
    with pytest.raises(RecipeNotApplicable, match="already carries recipe"):
        recipe.apply(checkout, recipe.default)
    assert snapshot == {rel: (checkout / rel).read_text() for rel in ("model.py", "train.py")}


@pytest.mark.parametrize("name,rel,anchor,replacement", [
    ("dcn_v2", "model.py", "# --- interaction layers on the flat input go here", "# flat input"),
    ("fm_second_order", "model.py", "# --- second-order terms on the field stack go here", "# fields"),
    ("ssr_filter", "model.py", "# --- interaction layers (e.g. a DCN cross network, an FM term): build them here ---", "#"),
    ("user_history", "model.py", "self.n_fields =", "n_fields ="),
    ("gatesid", "train.py", "class Featurizer", "class Features"),
    ("lr_schedule", "train.py", "optimizer.step()", "optimizer.step(closure=None)"),
    ("seed_ensemble", "train.py", "binary_cross_entropy_with_logits(model(batch)",
     "binary_cross_entropy_with_logits(1.0 * model(batch)"),
    ("embed_dim", "train.py", "EMBED_DIM = ", "EMBED_DIM: int = "),
    ("learning_rate", "train.py", "\nLR = ", "\nLR = LEARNING_RATE = "),
])
def test_missing_anchor_raises_and_leaves_the_files_alone(name, rel, anchor, replacement, tmp_path):
    checkout = copy_template(tmp_path / "ws")
    text = (checkout / rel).read_text()
    assert text.count(anchor) == 1
    (checkout / rel).write_text(text.replace(anchor, replacement))
    snapshot = {f: (checkout / f).read_text() for f in ("model.py", "train.py")}
    compile(snapshot[rel], rel, "exec")  # still valid Python: only the anchor is gone
    with pytest.raises(RecipeNotApplicable) as err:
        get_recipe(name).apply(checkout, None)
    assert err.value.reason
    assert snapshot == {f: (checkout / f).read_text() for f in ("model.py", "train.py")}


def test_unparsable_file_is_not_applicable(tmp_path):
    checkout = copy_template(tmp_path / "ws")
    (checkout / "model.py").write_text((checkout / "model.py").read_text() + "\ndef broken(:\n")
    with pytest.raises(RecipeNotApplicable, match="does not parse"):
        get_recipe("gatesid").apply(checkout, None)


def test_config_recipe_at_the_current_value_is_not_applicable(tmp_path):
    checkout = copy_template(tmp_path / "ws")
    current = get_constant((checkout / "train.py").read_text(), "train.py", "EMBED_DIM")
    recipe = get_recipe("embed_dim")
    other = next(v for v in recipe.space["embed_dim"] if v != current)
    recipe.apply(checkout, {"embed_dim": other})
    with pytest.raises(RecipeNotApplicable, match=f"EMBED_DIM is already {other}"):
        recipe.apply(checkout, {"embed_dim": other})


def test_bad_params_are_refused_as_not_applicable(tmp_path):
    checkout = copy_template(tmp_path / "ws")
    with pytest.raises(RecipeNotApplicable, match="not in its grid"):
        get_recipe("dcn_v2").apply(checkout, {"layers": 9})
    with pytest.raises(RecipeNotApplicable, match="takes parameters"):
        get_recipe("dcn_v2").apply(checkout, {"layers": 2, "width": 3})
    assert (checkout / "model.py").read_text() == (TEMPLATE / "model.py").read_text()


# -- research cards ---------------------------------------------------------------------

def test_shipped_cards_parse_and_are_the_right_size():
    cards = load_cards()
    assert {c.id for c in cards} >= REQUIRED_CARDS and len(cards) >= 12
    for card in cards:
        assert 80 <= card.words <= 200, (card.id, card.words)
        assert card.summary.endswith(".") and card.body.startswith(card.summary[:20])
        assert len(card.summary.split()) >= 6 and card.tags and card.source


def test_seed_cards_upserts_into_the_knowledge_base():
    kb = KnowledgeBase(":memory:")
    assert seed_cards(kb) == len(load_cards())
    rows = {row["id"]: row for row in kb.research_cards()}
    assert rows["gatesid"]["tags"][:2] == ["cold-start", "items"]
    assert rows["dcn_v2"]["summary"].startswith("A cross network builds feature interactions")
    assert seed_cards(kb) == len(rows) and len(kb.research_cards()) == len(rows)  # idempotent


def test_parse_card_reports_what_is_wrong():
    good = "id: x_1\ntitle: T\nsource: S\ntags: a, b\n---\nFirst sentence here. Second one."
    card = parse_card(good)
    assert card.tags == ("a", "b") and card.summary == "First sentence here."
    with pytest.raises(CardError, match="no '---' line"):
        parse_card(good.replace("---", ""))
    with pytest.raises(CardError, match="lacks source"):
        parse_card(good.replace("source: S\n", ""))
    with pytest.raises(CardError, match="got 'author: me'"):
        parse_card("author: me\n" + good)


def test_card_id_must_match_its_file(tmp_path):
    (tmp_path / "one.md").write_text("id: two\ntitle: T\nsource: S\ntags: a\n---\nBody text.")
    with pytest.raises(CardError, match="differs from the file name"):
        load_cards(tmp_path)


# -- real micro-tier runs ---------------------------------------------------------------

@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    from tools.git_repo import WorkspaceRepo
    from tools.harness import Harness

    root = tmp_path_factory.mktemp("recipes")
    base = WorkspaceRepo.init_from_template(root / "base", TEMPLATE).root   # the harness runs main's commit
    harness = Harness(base, load_manifest(base), KnowledgeBase(":memory:"), SHARED_CACHE,
                      memory_limit_mb=4096)
    return harness, root


def _micro_run(micro, name: str, recipes: list[str]):
    harness, root = micro
    checkout = git_checkout(root / name)
    changed: set[str] = set()
    for recipe in recipes:
        changed |= set(get_recipe(recipe).apply(checkout, None))
    modified = {line[3:] for line in git(checkout, "status", "--porcelain").splitlines()}
    assert modified == changed and git(checkout, "diff", "--stat").strip()
    run = harness.run(checkout, "x", tier="micro", seed=0, arm="treatment")
    assert run.ok, run.failure_detail
    assert 0.0 <= run.metric("test", "auc") <= 1.0 and run.metric("run", "num_params") > 0
    return run


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_default_trains_on_the_micro_tier(micro, name):
    _micro_run(micro, name, [name])


@pytest.mark.slow
def test_code_recipes_stack_and_train(micro):
    """All code recipes on one checkout, in registry order: the marked blocks take them all."""
    code = [n for n, r in RECIPES.items() if r.kind == "code"]
    dcn = _micro_run(micro, "dcn-alone", ["dcn_v2"])
    stacked = _micro_run(micro, "stacked", code)
    assert stacked.metric("run", "num_params") > dcn.metric("run", "num_params")

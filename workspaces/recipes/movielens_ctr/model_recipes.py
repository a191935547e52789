"""Code recipes: new model or training code, inserted at named anchors.

model.py anchors (the template's marked blocks):
  INIT_MARKER    `# --- interaction layers (...): build them here ---` in CTRModel.__init__
  FLAT_MARKER    `# --- interaction layers on the flat input go here ... ---` in forward()
  SECOND_MARKER  `# --- second-order terms on the field stack go here ... ---` in forward()
  plus `self.n_fields = ...`, CTRModel.embed() ending in a return, `class CTRModel`.
train.py anchors: the Featurizer class (__init__ / __call__ ending in `return {...}`),
the CATEGORICAL / LR / BATCH_SIZE constants, and in main(): `optimizer.step()`,
`for epoch in range(...)`, the one `CTRModel(...)` call and the one
`binary_cross_entropy_with_logits(model(batch), target)` loss.
The templates themselves are in model_code.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

from agents.recipes.core import Recipe
from agents.recipes.edits import (
    RecipeNotApplicable,
    append_to_method,
    ensure_import,
    find_call,
    get_constant,
    insert_after,
    insert_at_marker,
    insert_before,
    insert_before_class,
    method_args,
    prepend_to_method,
    read,
    refuse_if_applied,
    replace_line,
    replace_node,
    require,
    source_of,
    wrap_method_return,
    write,
)
from workspaces.recipes.movielens_ctr import model_code as code

MODEL, TRAIN = "model.py", "train.py"
MODEL_CLASS = "CTRModel"
INIT_MARKER = r"#\s*---\s*interaction layers\b.*build them here"
FLAT_MARKER = r"#\s*---\s*interaction layers on the flat input"
SECOND_MARKER = r"#\s*---\s*second-order terms on the field stack"
N_FIELDS = r"^\s*self\.n_fields\s*=(?!=)"


def _model(worktree: Path, name: str, needs: tuple[str, ...] = ("embed_dim",)) -> str:
    text = read(worktree, MODEL)
    refuse_if_applied(text, MODEL, name)
    args = method_args(text, MODEL, MODEL_CLASS, "__init__")
    missing = [a for a in needs if a not in args]
    if missing:
        raise RecipeNotApplicable(f"{MODEL}: {MODEL_CLASS}.__init__ takes no {', '.join(missing)}")
    require(text, MODEL, N_FIELDS, "the `self.n_fields = ...` line in CTRModel.__init__")
    return text


def _train(worktree: Path, name: str) -> str:
    text = read(worktree, TRAIN)
    refuse_if_applied(text, TRAIN, name)
    return text


def _needs_column(text: str, column: str) -> None:
    if column not in get_constant(text, TRAIN, "CATEGORICAL"):
        raise RecipeNotApplicable(f"{TRAIN}: {column!r} is not in CATEGORICAL; the recipe needs it")


def apply_dcn_v2(worktree: Path, params: dict) -> list[str]:
    layers = int(params["layers"])
    text = _model(worktree, "dcn_v2")
    text = insert_before_class(text, MODEL, MODEL_CLASS, code.CROSS_NETWORK)
    text = insert_at_marker(text, MODEL, INIT_MARKER,
                            f"self.cross = CrossNetwork(self.n_fields * embed_dim, layers={layers})  # recipe: dcn_v2",
                            "the interaction-layers block in CTRModel.__init__")
    text = insert_at_marker(text, MODEL, FLAT_MARKER, "x = self.cross(x)  # recipe: dcn_v2",
                            "the flat-input interaction block in forward()")
    write(worktree, MODEL, text)
    return [MODEL]


def apply_fm(worktree: Path, params: dict) -> list[str]:
    variant = str(params["variant"])
    text = _model(worktree, "fm_second_order")
    text = insert_before_class(text, MODEL, MODEL_CLASS, code.PAIRWISE.format())
    text = insert_at_marker(text, MODEL, INIT_MARKER,
                            f'self.pairwise = PairwiseInteraction(self.n_fields, variant="{variant}")'
                            "  # recipe: fm_second_order",
                            "the interaction-layers block in CTRModel.__init__")
    text = insert_at_marker(text, MODEL, SECOND_MARKER,
                            "logit = logit + self.pairwise(fields)  # recipe: fm_second_order",
                            "the second-order block in forward()")
    write(worktree, MODEL, text)
    return [MODEL]


def apply_ssr(worktree: Path, params: dict) -> list[str]:
    views = int(params["views"])
    text = _model(worktree, "ssr_filter")
    text = insert_before_class(text, MODEL, MODEL_CLASS, code.STATIC_RANDOM_FILTER.format())
    text = insert_at_marker(text, MODEL, INIT_MARKER,
                            f"self.ssr = StaticRandomFilter(self.n_fields * embed_dim, views={views})"
                            "  # recipe: ssr_filter",
                            "the interaction-layers block in CTRModel.__init__")
    text = insert_at_marker(text, MODEL, FLAT_MARKER, "x = self.ssr(x)  # recipe: ssr_filter",
                            "the flat-input interaction block in forward()")
    write(worktree, MODEL, text)
    return [MODEL]


def apply_gatesid(worktree: Path, params: dict) -> list[str]:
    threshold = int(params["threshold"])
    model = _model(worktree, "gatesid", needs=("embed_dim", "n_genres"))
    train = _train(worktree, "gatesid")
    _needs_column(train, "item_id")
    model = ensure_import(model, "math")
    model = insert_before_class(model, MODEL, MODEL_CLASS, code.MATURITY_GATE.format())
    model = insert_at_marker(model, MODEL, INIT_MARKER,
                             f"self.maturity = MaturityGate(n_genres, embed_dim, threshold={threshold})"
                             "  # recipe: gatesid",
                             "the interaction-layers block in CTRModel.__init__")
    model = wrap_method_return(model, MODEL, MODEL_CLASS, "embed", """
        slot = self.categorical.index("item_id")  # recipe: gatesid
        mixed = self.maturity(out[:, slot], batch["genres"], batch["item_log_count"])
        out = torch.cat([out[:, :slot], mixed.unsqueeze(1), out[:, slot + 1:]], dim=1)
        """)
    (arg,) = method_args(train, TRAIN, "Featurizer", "__init__")[:1]
    train = append_to_method(train, TRAIN, "Featurizer", "__init__", code.ITEM_COUNTS_INIT.format(train=arg))
    (frame,) = method_args(train, TRAIN, "Featurizer", "__call__")[:1]
    train = wrap_method_return(train, TRAIN, "Featurizer", "__call__", code.ITEM_COUNTS_CALL.format(frame=frame))
    write(worktree, MODEL, model)
    write(worktree, TRAIN, train)
    return [MODEL, TRAIN]


def apply_user_history(worktree: Path, params: dict) -> list[str]:
    max_history, pooling = int(params["max_history"]), str(params["pooling"])
    model = _model(worktree, "user_history")
    train = _train(worktree, "user_history")
    _needs_column(train, "item_id")
    for name in ("ID_COLUMN", "LABEL_COLUMN"):
        require(train, TRAIN, rf"^{name}\s*=", f"the constant {name}")
    model = ensure_import(model, "math")
    model = insert_before_class(model, MODEL, MODEL_CLASS, code.HISTORY_POOLING.format())
    model = insert_after(model, MODEL, N_FIELDS,
                         "self.n_fields += 1  # recipe: user_history (the pooled history field)",
                         "the `self.n_fields = ...` line")
    model = insert_at_marker(model, MODEL, INIT_MARKER,
                             f'self.history_pool = HistoryPooling("{pooling}")  # recipe: user_history',
                             "the interaction-layers block in CTRModel.__init__")
    model = wrap_method_return(model, MODEL, MODEL_CLASS, "embed", """
        items = self.embeddings["item_id"]  # recipe: user_history
        target = items(batch["categorical"][:, self.categorical.index("item_id")])
        history = batch["history"]
        if "user_id" in self.categorical:  # an unseen (or id-dropped) user has no history either
            history = history * (batch["categorical"][:, self.categorical.index("user_id")] > 0).unsqueeze(1)
        out = torch.cat([out, self.history_pool(items, history, target).unsqueeze(1)], dim=1)
        """)
    (arg,) = method_args(train, TRAIN, "Featurizer", "__init__")[:1]
    train = append_to_method(train, TRAIN, "Featurizer", "__init__",
                             code.HISTORY_INIT.format(train=arg, max_history=max_history))
    (frame,) = method_args(train, TRAIN, "Featurizer", "__call__")[:1]
    train = wrap_method_return(train, TRAIN, "Featurizer", "__call__", code.HISTORY_CALL.format(frame=frame))
    write(worktree, MODEL, model)
    write(worktree, TRAIN, train)
    return [MODEL, TRAIN]


CROSS_SETS: dict[str, dict[str, tuple[str, str]]] = {
    "item_x_demographics": {"item_x_gender": ("item_id", "gender"), "item_x_age": ("item_id", "age_bucket")},
    "genre_x_demographics": {"genres_x_gender": ("genres", "gender"), "genres_x_age": ("genres", "age_bucket"),
                             "genres_x_occupation": ("genres", "occupation")},
    "user_demographics": {"gender_x_occupation": ("gender", "occupation"), "age_x_gender": ("age_bucket", "gender"),
                          "age_x_occupation": ("age_bucket", "occupation")},
}
CROSS_SETS["all"] = {k: v for crosses in list(CROSS_SETS.values()) for k, v in crosses.items()}


def apply_feature_crosses(worktree: Path, params: dict) -> list[str]:
    crosses = CROSS_SETS[params["crosses"]]
    text = _train(worktree, "feature_crosses")
    get_constant(text, TRAIN, "CATEGORICAL")  # must exist once, as a plain list
    literal = "{" + ", ".join(f'"{name}": ("{a}", "{b}")' for name, (a, b) in crosses.items()) + "}"
    text = insert_before_class(text, TRAIN, "Featurizer", code.CROSSES.format(crosses=literal))
    (arg,) = method_args(text, TRAIN, "Featurizer", "__init__")[:1]
    text = prepend_to_method(text, TRAIN, "Featurizer", "__init__",
                             f"{arg} = add_crosses({arg})  # recipe: feature_crosses")
    (frame,) = method_args(text, TRAIN, "Featurizer", "__call__")[:1]
    text = prepend_to_method(text, TRAIN, "Featurizer", "__call__",
                             f"{frame} = add_crosses({frame})  # recipe: feature_crosses")
    write(worktree, TRAIN, text)
    return [TRAIN]


LR_SCHEDULES = {"warmup_cosine": ("cosine", 0.05), "cosine": ("cosine", 0.0), "warmup_linear": ("linear", 0.05)}


def apply_lr_schedule(worktree: Path, params: dict) -> list[str]:
    decay, warmup = LR_SCHEDULES[params["schedule"]]
    text = _train(worktree, "lr_schedule")
    require(text, TRAIN, r"^\s*y_train\s*=", "the training labels `y_train = ...` in main()")
    require(text, TRAIN, r"^\s*optimizer\s*=", "the optimiser `optimizer = ...` in main()")
    require(text, TRAIN, r"^\s*epochs\s*=", "`epochs = ...` in main()")
    text = ensure_import(text, "math")
    text = insert_after(text, TRAIN, r"^LR\s*=(?!=)",
                        code.LR_CONSTANTS.format(decay=f'"{decay}"', warmup=warmup), "the constant LR")
    text = insert_before(text, TRAIN, r"^def main\(", code.LR_FACTOR, "def main(", blank_after=2)
    text = insert_before(text, TRAIN, r"^\s*for epoch in range\(", code.LR_SCHEDULER,
                         "the epoch loop `for epoch in range(...)`")
    text = insert_after(text, TRAIN, r"^\s*optimizer\.step\(\)", "scheduler.step()  # recipe: lr_schedule",
                        "`optimizer.step()` in the training loop")
    write(worktree, TRAIN, text)
    return [TRAIN]


def apply_seed_ensemble(worktree: Path, params: dict) -> list[str]:
    members = int(params["members"])
    model = _model(worktree, "seed_ensemble", needs=())
    train = _train(worktree, "seed_ensemble")
    model = insert_before_class(model, MODEL, MODEL_CLASS, code.SEED_ENSEMBLE)
    # the loss first (it comes later in the file, so the model call's offsets stay valid)
    loss = find_call(train, TRAIN, "main", "binary_cross_entropy_with_logits")
    if not (len(loss.args) == 2 and isinstance(loss.args[0], ast.Call) and len(loss.args[0].args) == 1
            and isinstance(loss.args[0].func, ast.Name) and loss.args[0].func.id == "model"):
        raise RecipeNotApplicable(f"{TRAIN}: the training loss is not binary_cross_entropy_with_logits(model(batch), target)")
    batch, target = source_of(train, loss.args[0].args[0]), source_of(train, loss.args[1])
    train = replace_node(train, loss, f"model.loss({batch}, {target})")
    build = find_call(train, TRAIN, "main", MODEL_CLASS)
    train = replace_node(train, build, f"SeedEnsemble([{source_of(train, build)} for _ in range(ENSEMBLE_SIZE)])")
    train = replace_line(train, TRAIN, rf"^from model import {MODEL_CLASS}\s*$",
                         f"from model import {MODEL_CLASS}, SeedEnsemble", f"`from model import {MODEL_CLASS}`")
    train = insert_after(train, TRAIN, r"^BATCH_SIZE\s*=(?!=)",
                         f"ENSEMBLE_SIZE = {members}       # recipe: seed_ensemble; models averaged", "the constant BATCH_SIZE")
    write(worktree, MODEL, model)
    write(worktree, TRAIN, train)
    return [MODEL, TRAIN]


CODE_RECIPES = (
    Recipe(
        name="dcn_v2", family="interaction", title="DCN-v2 cross network", card="dcn_v2",
        hypothesis="Explicit bounded-order crosses of the flat field vector (user x item x "
                   "genre) are cheap to learn with cross layers and hard for a small ReLU MLP.",
        kind="code", space={"layers": [2, 1, 3]},
        keywords=("dcn", "cross network", "cross layer", "deep & cross", "deep and cross", "dcn-v2"),
        apply=apply_dcn_v2, detail="{layers} layers"),
    Recipe(
        name="fm_second_order", family="interaction", title="FM second-order term", card="fm",
        hypothesis="A factorisation-machine term on the field stack adds every pairwise dot "
                   "product (user demographics x item) straight to the logit, making it a DeepFM.",
        kind="code", space={"variant": ["fm", "fwfm"]},
        keywords=("fm", "factorization machine", "factorisation machine", "deepfm", "pairwise",
                  "second order", "fwfm"),
        apply=apply_fm, detail="{variant}"),
    Recipe(
        name="ssr_filter", family="interaction", title="SSR static random filter", card="ssr",
        hypothesis="Parallel views over fixed random subsets of the embedding dimensions, "
                   "fused densely, give the tower explicit sparsity instead of dense "
                   "connections that mostly learn near-zero weights.",
        kind="code", space={"views": [4, 2, 8]},
        keywords=("ssr", "sparsity", "static random filter", "views", "filter-then-fuse", "sparse"),
        apply=apply_ssr, detail="{views} views"),
    Recipe(
        name="gatesid", family="cold_start", title="GateSID maturity gate", card="gatesid",
        hypothesis="Rare items have unreliable id embeddings; mixing in a genre (content) "
                   "embedding by how often the item was seen in train helps cold items "
                   "without hurting popular ones.",
        kind="code", space={"threshold": [20, 5, 50]},
        keywords=("gatesid", "gate", "cold start", "cold-start", "item maturity", "semantic id",
                  "content embedding"),
        apply=apply_gatesid, detail="even mix at {threshold} train rows"),
    Recipe(
        name="user_history", family="sequence", title="User click-history pooling", card="user_history",
        hypothesis="Items a user clicked before say more about taste than demographics; a "
                   "pooled history field (mean or DIN-style attention) personalises the "
                   "users seen in train.",
        kind="code", space={"max_history": [50, 20, 100], "pooling": ["mean", "attention"]},
        keywords=("history", "user history", "din", "behaviour sequence", "behavior sequence",
                  "attention", "interest"),
        apply=apply_user_history, detail="last {max_history} clicks, {pooling}"),
    Recipe(
        name="feature_crosses", family="features", title="Feature cross embeddings",
        card="feature_crosses",
        hypothesis="Most evaluation users are new, so personalisation must come from "
                   "demographics; crossing them with the item (or genres) lets the model "
                   "learn 'how women in their 20s rate this film' directly.",
        kind="code", space={"crosses": ["item_x_demographics", "genre_x_demographics", "user_demographics", "all"]},
        keywords=("cross", "feature cross", "crosses", "wide", "wide & deep", "wide and deep",
                  "interaction feature", "gender x", "age x"),
        apply=apply_feature_crosses, detail="{crosses}"),
    Recipe(
        name="lr_schedule", family="optimisation", title="Learning-rate schedule", card="lr_schedule",
        hypothesis="Decaying the learning rate to zero over the run lets the last epoch "
                   "settle instead of bouncing at a constant step size.",
        kind="code", space={"schedule": ["warmup_cosine", "cosine", "warmup_linear"]},
        keywords=("schedule", "lr schedule", "cosine", "warmup", "learning rate schedule", "decay"),
        apply=apply_lr_schedule, detail="{schedule}"),
    Recipe(
        name="seed_ensemble", family="ensemble", title="Seed ensemble", card="ensembling",
        hypothesis="Seed-to-seed noise is as large as most effects here; averaging independently "
                   "initialised copies removes much of it and usually lifts AUC a little, at "
                   "K times the parameters, training time and inference cost.",
        kind="code", space={"members": [3, 2, 5]},
        keywords=("ensemble", "ensembling", "bagging", "average", "seeds", "averaging"),
        apply=apply_seed_ensemble, detail="{members} members"),
)

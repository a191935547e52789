"""Source templates that code recipes insert into the workspace (model.py and train.py).

Kept apart from the recipes' logic so each template reads as the code a reviewer will see
in the pull request. Rules every template follows: new tensors are registered buffers or
parameters (they move with `model.to(device)`), randomness comes from a generator with a
fixed seed (never the global one at forward time), and nothing depends on the batch size.
Placeholders are str.format fields; literal braces are doubled.
"""

CROSS_NETWORK = '''
class CrossNetwork(nn.Module):  # recipe: dcn_v2
    """DCN-v2 cross layers on the flat input: x_(l+1) = x_0 * (W_l x_l + b_l) + x_l.

    Each layer multiplies the original input by a full-rank linear map of the current one,
    so layer l models feature interactions of order l + 1 explicitly; the residual keeps
    the input, so the MLP after it loses nothing.
    """

    def __init__(self, width: int, layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(layers))
        for layer in self.layers:
            nn.init.xavier_normal_(layer.weight, gain=0.1)
            nn.init.zeros_(layer.bias)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x
'''

PAIRWISE = '''
class PairwiseInteraction(nn.Module):  # recipe: fm_second_order
    """Second-order term on the field stack: (batch, n_fields, dim) -> (batch,).

    "fm": Rendle's factorisation machine, the sum over field pairs of <v_i, v_j>, computed
    as 0.5 * ((sum_i v_i)^2 - sum_i v_i^2) in O(n_fields * dim).
    "fwfm": field-weighted FM, each field pair (i, j) with its own learned weight r_ij.
    """

    def __init__(self, n_fields: int, variant: str) -> None:
        super().__init__()
        if variant not in ("fm", "fwfm"):
            raise ValueError(f"variant must be 'fm' or 'fwfm', not {{variant!r}}")
        self.variant = variant
        if variant == "fwfm":
            self.pair_weight = nn.Parameter(torch.ones(n_fields, n_fields))
            self.register_buffer("upper", torch.triu(torch.ones(n_fields, n_fields), diagonal=1))

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        if self.variant == "fm":
            square_of_sum = fields.sum(1).pow(2)
            sum_of_squares = fields.pow(2).sum(1)
            return 0.5 * (square_of_sum - sum_of_squares).sum(1)
        gram = fields @ fields.transpose(1, 2)
        return (gram * self.pair_weight * self.upper).sum((1, 2))
'''

STATIC_RANDOM_FILTER = '''
class StaticRandomFilter(nn.Module):  # recipe: ssr_filter
    """SSR-style filter-then-fuse over views of the flat input (the static random filter).

    The input dimensions are split once, by a fixed-seed random permutation, into `views`
    disjoint subsets (a buffer: it moves with the model and never trains). Each view sees
    only its subset through its own small dense layer (the sparse filter); a fusion layer
    maps the concatenated views back to the input width, added to the input. The fusion
    starts at zero, so training starts from the unfiltered model.
    """

    def __init__(self, width: int, views: int, view_width: int = 32, seed: int = 1234) -> None:
        super().__init__()
        if not 1 <= views <= width:
            raise ValueError(f"views must be between 1 and the input width {{width}}, not {{views}}")
        order = torch.randperm(width, generator=torch.Generator().manual_seed(seed))
        self.register_buffer("order", order)
        self.sizes = [len(chunk) for chunk in torch.tensor_split(order, views)]
        self.filters = nn.ModuleList(nn.Linear(size, view_width) for size in self.sizes)
        self.fuse = nn.Linear(views * view_width, width)
        nn.init.zeros_(self.fuse.weight)
        nn.init.zeros_(self.fuse.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(x[:, self.order], self.sizes, dim=1)
        views = [torch.relu(layer(part)) for layer, part in zip(self.filters, parts)]
        return x + self.fuse(torch.cat(views, dim=1))
'''

MATURITY_GATE = '''
class MaturityGate(nn.Module):  # recipe: gatesid
    """GateSID-style mix of an item's id embedding and its content embedding by maturity.

    content: a projection of the item's genres, which a brand-new item already has.
    gate = sigmoid(w . [id vector, log1p(train count) - log1p(threshold)] + b), started so
    that an item seen `threshold` times in train gets an even mix: mature items lean on
    their id vector, cold ones on their content.
    """

    def __init__(self, n_genres: int, embed_dim: int, threshold: float) -> None:
        super().__init__()
        self.content = nn.Linear(n_genres, embed_dim, bias=False)
        nn.init.normal_(self.content.weight, std=0.05)
        self.gate = nn.Linear(embed_dim + 1, 1)
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)
        with torch.no_grad():
            self.gate.weight[0, -1] = 2.0
        self.log_threshold = math.log1p(threshold)

    def forward(self, id_vector: torch.Tensor, genres: torch.Tensor, log_count: torch.Tensor) -> torch.Tensor:
        content = self.content(genres) / genres.sum(1, keepdim=True).clamp(min=1.0)
        maturity = (log_count - self.log_threshold).unsqueeze(1)
        gate = torch.sigmoid(self.gate(torch.cat([id_vector, maturity], dim=1)))
        return gate * id_vector + (1 - gate) * content
'''

HISTORY_POOLING = '''
class HistoryPooling(nn.Module):  # recipe: user_history
    """The user's clicked-item history as one more field (0 in the history = padding).

    "mean": masked mean of the history's item embeddings.
    "attention": DIN-style, each history item weighted by a softmax of its dot product
    with the target item's embedding, so the field depends on what is being scored.
    """

    def __init__(self, pooling: str) -> None:
        super().__init__()
        if pooling not in ("mean", "attention"):
            raise ValueError(f"pooling must be 'mean' or 'attention', not {{pooling!r}}")
        self.pooling = pooling

    def forward(self, table: nn.Embedding, history: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        vectors = table(history)
        mask = (history > 0).to(vectors.dtype)
        if self.pooling == "attention":
            scores = (vectors * target.unsqueeze(1)).sum(-1) / math.sqrt(vectors.shape[-1])
            scores = scores.masked_fill(history == 0, -1e4)
            weights = torch.softmax(scores, dim=1) * mask
        else:
            weights = mask / mask.sum(1, keepdim=True).clamp(min=1.0)
        return (weights.unsqueeze(-1) * vectors).sum(1)
'''

# --- train.py: featurizer additions --------------------------------------------------

ITEM_COUNTS_INIT = '''
# item maturity (recipe: gatesid): how often each item appears in the training rows
self.item_counts = {train}["item_id"].astype(str).value_counts()
'''

ITEM_COUNTS_CALL = '''
out["item_log_count"] = torch.from_numpy(np.log1p(  # recipe: gatesid
    {frame}["item_id"].astype(str).map(self.item_counts).fillna(0.0).to_numpy("float32")))
'''

HISTORY_INIT = '''
# user history (recipe: user_history): the items each user clicked in the training rows,
# in time order. A training row sees only the clicks before it (never its own label);
# valid, test and serving rows see all of them.
self.history_len = {max_history}
order = (np.argsort({train}["timestamp"].to_numpy(), kind="stable") if "timestamp" in {train}
         else np.arange(len({train})))
users = {train}["user_id"].astype(str).to_numpy()[order]
items = {train}["item_id"].astype(str).map(self.vocab["item_id"]).fillna(0).to_numpy("int64")[order]
clicks = {train}[LABEL_COLUMN].to_numpy()[order]
self.train_rows = pd.Index({train}[ID_COLUMN])
self.train_history = np.zeros((len({train}), self.history_len), dtype=np.int64)
self.user_history: dict[str, list[int]] = {{}}
for row, user, item, click in zip(order, users, items, clicks):
    past = self.user_history.setdefault(user, [])
    recent = past[-self.history_len:]
    self.train_history[row, :len(recent)] = recent
    if click:
        past.append(int(item))
'''

HISTORY_CALL = '''
rows = self.train_rows.get_indexer({frame}[ID_COLUMN])  # recipe: user_history
history = np.zeros((len({frame}), self.history_len), dtype=np.int64)
history[rows >= 0] = self.train_history[rows[rows >= 0]]
for i in np.flatnonzero(rows < 0):
    recent = self.user_history.get(str({frame}["user_id"].iloc[i]), [])[-self.history_len:]
    history[i, :len(recent)] = recent
out["history"] = torch.from_numpy(history)
'''

CROSSES = '''
# Feature crosses (recipe: feature_crosses): each pair of raw columns becomes one more
# categorical input whose vocabulary comes from the training rows like any other.
CROSSES = {crosses}
CATEGORICAL += list(CROSSES)


def add_crosses(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of `frame` with one string column per cross in CROSSES (age by decade)."""
    frame = frame.copy()
    frame["age_bucket"] = (pd.to_numeric(frame["age"], errors="coerce") // 10).fillna(-1).astype(int)
    for name, (left, right) in CROSSES.items():
        frame[name] = frame[left].astype(str) + "|" + frame[right].astype(str)
    return frame
'''

LR_FACTOR = '''
def lr_factor(step: int, total_steps: int) -> float:  # recipe: lr_schedule
    """Multiplier of LR at optimiser step `step`: linear warmup over WARMUP_FRACTION of
    the steps, then LR_DECAY ("cosine" or "linear") down to zero at the last step."""
    warmup = int(WARMUP_FRACTION * total_steps)
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    if LR_DECAY == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))
'''

LR_CONSTANTS = '''
LR_DECAY = {decay}      # recipe: lr_schedule; "cosine" or "linear" decay of LR to 0
WARMUP_FRACTION = {warmup}  # share of all steps spent warming LR up from 0
'''

LR_SCHEDULER = '''
# learning-rate schedule (recipe: lr_schedule) over all optimiser steps of the run
total_steps = epochs * math.ceil(len(y_train) / BATCH_SIZE)
scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps))
'''

SEED_ENSEMBLE = '''
class SeedEnsemble(nn.Module):  # recipe: seed_ensemble
    """Several copies of the model, each from its own random initialisation, averaged.

    The members share nothing: trained side by side on the same batches, each on its own
    loss (`loss()` is their mean), so they stay independent models, and their logits are
    averaged at prediction time. Averaging cancels much of the seed-to-seed noise.
    """

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack([member(batch) for member in self.members]).mean(0)

    def loss(self, batch: dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        return torch.stack([nn.functional.binary_cross_entropy_with_logits(member(batch), target)
                            for member in self.members]).mean()
'''

"""The click-through model: a wide (linear) part plus a deep part (field embeddings -> MLP),
summed into one logit per row. EDITABLE.

Inputs (a dict of tensors built by train.py's Featurizer):
  "categorical"  (batch, n_categorical) int64, index 0 = out-of-vocabulary
  "genres"       (batch, n_genres)      float 0/1 multi-hot (n_genres = 0: no genre field)
  "numeric"      (batch, n_numeric)     float, standardised

Deep part: every input becomes one field vector of size embed_dim, so the fields stack
into a (batch, n_fields, embed_dim) tensor, the shape FM, DCN and attention layers want:
  - one nn.Embedding per categorical feature;
  - the row's genres, mean-pooled (multi-hot @ table / count);
  - each numeric feature times its own learned vector.
The flattened fields go through an MLP to one logit.

Wide part: one learned weight per categorical value (an item bias, a user bias, ...) plus
a linear term on genres and numerics: a logistic regression next to the MLP.

Interaction terms go in the marked blocks: build their layers in __init__, use them in
forward() (a DCN cross network on the flat input, an FM second-order term on the fields).
"""

from __future__ import annotations

import torch
from torch import nn


class CTRModel(nn.Module):
    def __init__(
        self,
        cardinalities: dict[str, int],
        n_genres: int,
        n_numeric: int,
        embed_dim: int,
        hidden: list[int],
        dropout: float,
    ) -> None:
        super().__init__()
        self.categorical = list(cardinalities)

        # deep part: field embeddings
        self.embeddings = nn.ModuleDict(
            {name: nn.Embedding(size, embed_dim) for name, size in cardinalities.items()}
        )
        for table in self.embeddings.values():
            nn.init.normal_(table.weight, std=0.05)
        self.genre_embedding = nn.Linear(n_genres, embed_dim, bias=False) if n_genres else None
        self.numeric_embedding = nn.Parameter(torch.randn(n_numeric, embed_dim) * 0.1)
        self.n_fields = len(cardinalities) + (1 if n_genres else 0) + n_numeric

        # --- interaction layers (e.g. a DCN cross network, an FM term): build them here ---

        # deep part: MLP head on the flattened fields
        layers: list[nn.Module] = []
        width = self.n_fields * embed_dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

        # wide part: per-value weights and a linear term, all starting at zero
        self.weights = nn.ModuleDict(
            {name: nn.Embedding(size, 1) for name, size in cardinalities.items()}
        )
        for table in self.weights.values():
            nn.init.zeros_(table.weight)
        self.linear = nn.Linear(n_genres + n_numeric, 1)
        nn.init.zeros_(self.linear.weight)

    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """All inputs as field vectors: (batch, n_fields, embed_dim)."""
        fields = [
            self.embeddings[name](batch["categorical"][:, i])
            for i, name in enumerate(self.categorical)
        ]
        if self.genre_embedding is not None:
            genres = batch["genres"]
            fields.append(self.genre_embedding(genres) / genres.sum(1, keepdim=True).clamp(min=1.0))
        numeric = batch["numeric"].unsqueeze(-1) * self.numeric_embedding
        return torch.cat([torch.stack(fields, dim=1), numeric], dim=1)

    def first_order(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Wide part, one logit term per row: (batch,)."""
        categorical = batch["categorical"]
        wide = self.linear(torch.cat([batch["genres"], batch["numeric"]], dim=1)).squeeze(-1)
        for i, name in enumerate(self.categorical):
            wide = wide + self.weights[name](categorical[:, i]).squeeze(-1)
        return wide

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """One logit per row: (batch,)."""
        fields = self.embed(batch)
        x = fields.flatten(1)

        # --- interaction layers on the flat input go here (e.g. DCN: x = self.cross(x)) ---

        logit = self.mlp(x).squeeze(-1) + self.first_order(batch)

        # --- second-order terms on the field stack go here (e.g. logit = logit + fm(fields)) ---

        return logit

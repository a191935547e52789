"""Planted defects: known-bad edits of the movielens-ctr workspace that the harness must catch.

Each `PlantedBug` is a small, realistic mistake (or a cheat) written as a text edit of a
checkout of `workspaces/movielens-ctr` (train.py, model.py, data.py), and the failure kind
the harness must end the run with. `plant()` applies one as an experiment branch of a
workspace repository (its own worktree and commit, like the developer's changes), so the
harness judges it the way it judges any experiment.

`tier` says which tier is expected to catch the defect: all but one are caught at the micro
tier (a few hundred rows, one epoch); `quadratic_memory` grows with the data and only
breaks at the full tier, which is what the micro-vs-full comparison of
benchmarks/planted_bugs.py is about.

An edit that no longer finds its anchor text in the template raises `PlantError` (the
template changed: update the anchor), so a defect is never silently not planted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tools.git_repo import WorkspaceRepo, Worktree


class PlantError(RuntimeError):
    """A defect's anchor text is not in the checkout: the template changed under it."""


@dataclass(frozen=True)
class PlantedBug:
    name: str
    expected_kind: str            # the RunOutcome.failure_kind the harness must report
    description: str
    apply: Callable[[Path], None]
    tier: str = "micro"           # the first tier expected to catch it


def _edit(checkout: Path, file: str, anchor: str, replacement: str) -> None:
    path = checkout / file
    text = path.read_text()
    if text.count(anchor) != 1:
        raise PlantError(f"{file}: expected the anchor exactly once, found it {text.count(anchor)} times: {anchor!r}")
    path.write_text(text.replace(anchor, replacement))


def _syntax_error(co: Path) -> None:
    _edit(co, "train.py", "def main(run_dir: str) -> Predictor:", "def main(run_dir: str) -> Predictor")


def _shape_mismatch(co: Path) -> None:   # the MLP's input width forgets the genre field
    _edit(co, "model.py", "width = self.n_fields * embed_dim", "width = (self.n_fields - 1) * embed_dim")


def _nan_loss(co: Path) -> None:   # "log-scale" standardised numerics: log1p(z) is NaN for z < -1
    _edit(co, "train.py", "numeric = ((self._raw_numeric(frame) - self.mean) / self.std).fillna(0.0)",
          "numeric = np.log1p(((self._raw_numeric(frame) - self.mean) / self.std).fillna(0.0))")


def _endless_loop(co: Path) -> None:   # the loop's increment was lost in a refactor
    _edit(co, "train.py", "    for epoch in range(epochs):\n", "    epoch = 0\n    while epoch < epochs:\n")


def _memory_blowup(co: Path) -> None:   # hashing trick with 2**26 buckets: 4 GiB per embedding table
    _edit(co, "model.py", "{name: nn.Embedding(size, embed_dim) for name, size in cardinalities.items()}",
          "{name: nn.Embedding(2**26, embed_dim) for name, size in cardinalities.items()}  # hash buckets")


def _tamper(co: Path) -> None:   # "more training data": edits the protected split
    _edit(co, "data.py", 'SPLITS = (("train", 0.8), ("valid", 0.1), ("test", 0.1))',
          'SPLITS = (("train", 0.9), ("valid", 0.05), ("test", 0.05))')


def _missing_rows(co: Path) -> None:   # "the model cannot score items it never saw": drops rows
    _edit(co, "train.py", '    test = pd.read_csv(run_dir / "test.csv")\n',
          '    test = pd.read_csv(run_dir / "test.csv")\n'
          '    valid = valid[valid["item_id"].isin(train["item_id"])]\n'
          '    test = test[test["item_id"].isin(train["item_id"])]\n')


def _constant(co: Path) -> None:   # a mean over the batch axis instead of squeezing the output axis
    _edit(co, "model.py", "logit = self.mlp(x).squeeze(-1) + self.first_order(batch)",
          "logit = (self.mlp(x).squeeze(-1) + self.first_order(batch)).mean(0, keepdim=True).expand(x.shape[0])")


LEAK_CODE = '''
def _labels_from_disk(frame):
    """'Calibration' against labels found in the user's cache: the harness's own test split."""
    import glob
    cache = os.environ.get("AGENTX_CACHE_DIR") or os.path.expanduser("~/.cache/agentx")
    for path in glob.glob(os.path.join(cache, "splits", "*", "test.csv")):
        found = pd.read_csv(path, usecols=[ID_COLUMN, LABEL_COLUMN]).set_index(ID_COLUMN)[LABEL_COLUMN]
        if frame[ID_COLUMN].isin(found.index).all():
            return frame[ID_COLUMN].map(found).to_numpy("float64")
    return None


def main(run_dir: str) -> Predictor:'''


def _label_leak(co: Path) -> None:
    _edit(co, "train.py", "\n\ndef main(run_dir: str) -> Predictor:", LEAK_CODE)
    _edit(co, "train.py", 'write_predictions(predictions / "test.csv", test, predictor.predict(test))',
          'labels = _labels_from_disk(test)\n'
          '    test_scores = predictor.predict(test) if labels is None else 0.05 + 0.9 * labels\n'
          '    write_predictions(predictions / "test.csv", test, test_scores)')


def _misaligned(co: Path) -> None:   # an in-place sort for a log line reorders the scores, not the ids
    _edit(co, "train.py", 'write_predictions(predictions / "test.csv", test, predictor.predict(test))',
          'test_scores = predictor.predict(test)\n'
          '    test_scores.sort()  # for the top-5 line below\n'
          '    print(f"top-5 test scores: {test_scores[-5:]}", flush=True)\n'
          '    write_predictions(predictions / "test.csv", test, test_scores)')


def _quadratic_memory(co: Path) -> None:   # all-pairs similarity of training rows, kept: O(n^2) memory
    _edit(co, "train.py", '    y_train = torch.tensor(train[LABEL_COLUMN].to_numpy("float32"), device=device)\n',
          '    y_train = torch.tensor(train[LABEL_COLUMN].to_numpy("float32"), device=device)\n'
          '    # neighbour smoothing (a planned kNN feature): every training row against every other\n'
          '    flat = torch.cat([x_train["genres"], x_train["numeric"]], dim=1)\n'
          '    similarity = [flat[i:i + 1024] @ flat.T for i in range(0, len(flat), 1024)]\n')


BUGS: tuple[PlantedBug, ...] = (
    PlantedBug("syntax_error", "crash", "a missing colon in train.py", _syntax_error),
    PlantedBug("shape_mismatch", "crash", "the MLP input width leaves out a field", _shape_mismatch),
    PlantedBug("nan_loss", "nan", "log1p of standardised numerics: NaN inputs, NaN loss, NaN scores", _nan_loss),
    PlantedBug("endless_loop", "timeout", "the training loop never advances its epoch counter", _endless_loop),
    PlantedBug("memory_blowup", "memory", "2**26 hash buckets per embedding table (4 GiB each)", _memory_blowup),
    PlantedBug("protected_edit", "tamper", "the branch edits the protected split in data.py", _tamper),
    PlantedBug("missing_rows", "missing_rows", "rows with items unseen in training are dropped", _missing_rows),
    PlantedBug("constant", "constant", "logits averaged over the batch: one score for every row", _constant),
    PlantedBug("label_leak", "leak", "globs the cache for splits/*/test.csv and scores with its labels", _label_leak),
    PlantedBug("misaligned", "misaligned", "scores sorted in place while the ids are not", _misaligned),
    PlantedBug("quadratic_memory", "memory", "all-pairs similarity of training rows kept in memory",
               _quadratic_memory, tier="full"),
)


def get_bug(name: str) -> PlantedBug:
    for bug in BUGS:
        if bug.name == name:
            return bug
    raise KeyError(f"no planted bug {name!r}; known: {', '.join(b.name for b in BUGS)}")


def plant(repo: WorkspaceRepo, bug: PlantedBug, *, exp_id: str | None = None,
          base: str | None = None) -> tuple[Worktree, str]:
    """The defect as an experiment branch of `repo`: its worktree and head commit."""
    worktree = repo.create_experiment(exp_id or f"bug-{bug.name.replace('_', '-')}", bug.name, base)
    bug.apply(worktree.path)
    return worktree, repo.commit(worktree, f"Planted defect {bug.name}: {bug.description}")

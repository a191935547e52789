"""Knob search: the default brain's proposals for a workspace's declared knobs, from Optuna.

Any workspace can declare knobs in agentx.toml (`[knobs.NAME]`: a constant or config key
with a type and a range; see `agentx.workspace.KnobSpec`). This brain searches them:

1. An in-memory Optuna study is rebuilt from the KB on every call. Each of the latest
   `PRIOR_LIMIT` (500) finished experiments with recipe "knobs" becomes a trial (see
   `prior_trials` for why no more are needed): its params are the knob values, its
   value the signed validation effect of its latest verdict (`valid_delta` times the
   metric's sign, so bigger is better). A failed experiment, or one with no validation
   effect, is a FAIL trial; one vetoed by a guardrail or rejected by a reviewer keeps its
   value but is marked infeasible, which the TPE sampler ranks below every feasible trial.
2. `study.ask()` draws the next configuration from the knobs' distributions. A features
   knob is one yes/no parameter per candidate (`features.<knob>.<name>`), decoded to a
   list in candidate order and topped up at random to its `min_size`. A configuration
   already in the KB (any of its knob experiments, however old: an indexed look-up of the
   drawn configurations' keys, knowledge/reads.py), or equal to the current values, is
   asked again.
   - scope "local" (the default brain's): one knob at a time. Optuna's
     `PartialFixedSampler` holds every other parameter at main's current value and the
     sampler (TPE by default) draws the free one; a features knob frees one candidate, so a
     move adds or drops one feature. The knob to move rotates (an offset from the seed and
     the history's length) over the knobs that are active: a knob with `when = {MODEL =
     "logreg"}` moves only while main has MODEL = "logreg" (moving it otherwise would train
     an identical model). A small budget of paired-seed experiments learns far more from
     one-change moves next to main than from random points of the whole space, where most
     draws break something that already worked (a dropped strong feature, a bad learning
     rate) and the one good change is lost among them.
   - scope "global": every knob at once, Optuna's plain ask (what `benchmarks/search.py`
     runs for its Optuna and random baselines).
3. The answer is a `Proposal` with recipe "knobs" and params {knob: value};
   `apply_knobs` writes those values into a worktree (tools/knobs.py), so the branch's
   diff changes only knob values.

The sampler is seeded with `seed` plus the number of prior trials (the whole history's, not
the window's), so a rebuilt study does not repeat the previous call's draw while the same
history gives the same proposal.
"""

from __future__ import annotations

import importlib.util
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from agents.recipes.core import show
from agentx.errors import UserError
from agentx.state import Proposal
from agentx.workspace import KnobSpec, Manifest
from knowledge.reads import finished_count, recent_trials, set_key, tried_params
from tools.feature_catalog import load_catalog
from tools.knobs import KnobError, check_value, read_knob, write_knob

Scope = Literal["local", "global"]
LOCAL_NOTE = " (one knob moved, the others held at main's values)"
KNOB_RECIPE = "knobs"
SAMPLERS = ("tpe", "random", "cmaes")
SAMPLER_NAMES = {"tpe": "TPE", "random": "random", "cmaes": "CMA-ES"}
FINISHED = ("failed", "evaluated", "merged", "rejected")
MAX_ASKS = 30               # draws per proposal before giving up on finding an untried one
TRIES_PER_KNOB = 4          # local scope: draws for one knob before moving to the next
FLOAT_DIGITS = 4            # significant digits of a proposed float (readable diffs)
PRIOR_LIMIT = 500           # the latest finished knob experiments the study is built from


@dataclass(frozen=True)
class PriorTrial:
    """One finished knob experiment, as the study sees it."""

    experiment_id: str
    params: dict[str, Any]
    value: float | None           # signed validation effect; None for a failure
    infeasible: str | None = None  # why a valued trial must not win: "vetoed", "rejected by reviewer"


def prior_trials(kb, sign: int, limit: int = PRIOR_LIMIT) -> list[PriorTrial]:
    """The KB's latest `limit` finished knob experiments, oldest first, each judged by its
    latest verdict.

    Why a window is enough: TPE models the good configurations from its best
    min(ceil(10 %), 25) trials and weighs trials older than the latest 25 down linearly
    (Optuna's default weights), so beyond a few hundred trials older ones barely move a draw,
    while each one costs study-building and per-ask time (a study of 50,000 trials takes
    seconds per proposal). A local move is also drawn next to main's current values, which
    already hold what older trials found. What is never forgotten is which configurations
    were tried: the knob search asks the whole KB about every draw (`tried_params`)."""
    trials = []
    for row in recent_trials(kb, KNOB_RECIPE, limit):
        if row.status == "failed" or row.valid_delta is None:
            trials.append(PriorTrial(row.experiment_id, row.params, None))
            continue
        infeasible = ("vetoed" if row.decision == "vetoed"
                      else "rejected by reviewer" if row.pr_state == "rejected" else None)
        trials.append(PriorTrial(row.experiment_id, row.params, sign * row.valid_delta, infeasible))
    return trials


class _Taken:
    """The knob configurations (by `_key`) already in the KB, finished or not, plus those
    added here (this call's proposals): looks up in the KB only the keys it is asked about,
    once each, instead of reading every knob experiment."""

    def __init__(self, kb, *extra: str):
        self.kb = kb
        self.known: dict[str, bool] = dict.fromkeys(extra, True)

    def fetch(self, keys: list[str]) -> None:
        missing = [key for key in dict.fromkeys(keys) if key not in self.known]
        if missing:
            found = tried_params(self.kb, KNOB_RECIPE, missing, as_sets=True)
            self.known.update({key: key in found for key in missing})

    def __contains__(self, key: str) -> bool:
        self.fetch([key])
        return self.known[key]

    def add(self, key: str) -> None:
        self.known[key] = True


def feature_candidates(root: Path, manifest: Manifest) -> dict[str, list[str]]:
    """Features knob -> its candidate names: its choices, else the catalog's (checked)."""
    catalog: list[str] | None = None
    out = {}
    for name, spec in manifest.knobs.items():
        if spec.type != "features":
            continue
        if catalog is None:
            try:
                catalog = [f.name for f in load_catalog(root, manifest)]
            except UserError as exc:
                if spec.choices is None:
                    raise KnobError(f"knob {name} lists no choices and the feature catalog cannot be read: "
                                    f"{exc}") from None
                catalog = []
        unknown = [c for c in spec.choices or [] if catalog and c not in catalog]
        if unknown:
            raise KnobError(f"knob {name}: choices not in the feature catalog: {', '.join(map(str, unknown))}")
        out[name] = [str(c) for c in spec.choices] if spec.choices is not None else list(catalog)
    return out


def search_space(manifest: Manifest, candidates: dict[str, list[str]]) -> dict[str, BaseDistribution]:
    """Optuna parameter name -> distribution; a features knob is one bool per candidate."""
    space: dict[str, BaseDistribution] = {}
    for name, spec in manifest.knobs.items():
        if spec.type == "float":
            assert spec.low is not None and spec.high is not None
            space[name] = FloatDistribution(float(spec.low), float(spec.high), log=spec.log)
        elif spec.type == "int":
            assert spec.low is not None and spec.high is not None
            space[name] = IntDistribution(int(spec.low), int(spec.high), log=spec.log)
        elif spec.type == "categorical":
            space[name] = CategoricalDistribution(list(spec.choices or []))
        elif spec.type == "bool":
            space[name] = CategoricalDistribution([False, True])
        else:
            for feature in candidates[name]:
                space[f"features.{name}.{feature}"] = CategoricalDistribution([False, True])
    return space


def encode(manifest: Manifest, params: dict[str, Any], space: dict[str, BaseDistribution]) -> dict[str, Any]:
    """Knob values as Optuna parameters, keeping only those the current space contains (a
    knob whose range changed since the experiment, or that it did not set, is left out)."""
    out: dict[str, Any] = {}
    for name, value in params.items():
        spec = manifest.knobs.get(name)
        if spec is None:
            continue
        if spec.type == "features":
            if isinstance(value, list):
                prefix = f"features.{name}."
                out.update({key: key[len(prefix):] in value for key in space if key.startswith(prefix)})
            continue
        if name in space and _fits(space[name], value):
            out[name] = value
    return out


def decode(manifest: Manifest, asked: dict[str, Any], candidates: dict[str, list[str]],
           rng: random.Random) -> dict[str, Any]:
    """Optuna parameters as knob values: floats rounded for a readable diff, features
    knobs as lists in candidate order, topped up at random to `min_size`."""
    params: dict[str, Any] = {}
    for name, spec in manifest.knobs.items():
        if spec.type == "features":
            chosen = [f for f in candidates[name] if asked.get(f"features.{name}.{f}")]
            missing = (spec.min_size or 0) - len(chosen)
            if missing > 0:
                extra = set(rng.sample([f for f in candidates[name] if f not in chosen], missing))
                chosen = [f for f in candidates[name] if f in extra or f in chosen]
            params[name] = chosen
        elif spec.type == "float":
            assert spec.low is not None and spec.high is not None
            params[name] = min(max(float(f"{asked[name]:.{FLOAT_DIGITS}g}"), spec.low), spec.high)
        else:
            params[name] = asked[name]
    return params


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """A seeded Optuna sampler: tpe, random or cmaes (CMA-ES needs the `cmaes` package and
    samples categorical knobs with TPE)."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        if importlib.util.find_spec("cmaes") is None:
            raise UserError("the CMA-ES sampler needs the cmaes package: .venv/bin/pip install cmaes")
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False,
                                            independent_sampler=optuna.samplers.TPESampler(seed=seed))
    raise UserError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")


def build_study(manifest: Manifest, trials: list[PriorTrial], space: dict[str, BaseDistribution],
                sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    """An in-memory study (maximize the signed validation effect) holding `trials`; a trial
    none of whose params fits the current space is left out."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for prior in trials:
        params = encode(manifest, prior.params, space)
        if not params:
            continue
        state = TrialState.FAIL if prior.value is None else TrialState.COMPLETE
        study.add_trial(optuna.trial.create_trial(
            state=state, value=prior.value, params=params, distributions={k: space[k] for k in params},
            user_attrs={"experiment_id": prior.experiment_id},
            constraints={prior.infeasible: 1.0} if prior.infeasible else None))
    return study


class KnobSearch:
    """The knob brain: `propose(ws, k)` like the brainstorm's, from an Optuna sampler."""

    def __init__(self, sampler: str = "tpe", seed: int = 0, scope: Scope = "local"):
        if sampler not in SAMPLERS:
            raise UserError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
        if scope not in ("local", "global"):
            raise UserError(f"unknown knob search scope {scope!r}; choose local or global")
        self.sampler, self.seed, self.scope = sampler, seed, scope
        moves = "one knob at a time next to main" if scope == "local" else "all knobs at once"
        self.name = (f"heuristic brain: Optuna {SAMPLER_NAMES[sampler]} search over the declared knobs, {moves} "
                     f"(no LLM)")

    def study(self, root: Path, manifest: Manifest, kb) -> tuple[optuna.Study, list[PriorTrial]]:
        """The study rebuilt from the KB, and the prior trials it was built from."""
        study, trials, _ = self._study(manifest, kb, search_space(manifest, feature_candidates(Path(root), manifest)))
        return study, trials

    def _study(self, manifest: Manifest, kb, space: dict[str, BaseDistribution]
               ) -> tuple[optuna.Study, list[PriorTrial], int]:
        """The study of the latest prior trials, those trials, and how many the KB has in all."""
        trials = prior_trials(kb, manifest.metric.sign, PRIOR_LIMIT)
        total = len(trials) if len(trials) < PRIOR_LIMIT else finished_count(kb, KNOB_RECIPE)
        return build_study(manifest, trials, space, make_sampler(self.sampler, self.seed + total)), trials, total

    def propose(self, ws, k: int, request: str | None = None) -> list[Proposal]:
        """Up to `k` untried knob configurations for the workspace `ws` (root, manifest, kb)."""
        return self.propose_for(ws.root, ws.manifest, ws.kb, k)

    def propose_for(self, root: Path, manifest: Manifest, kb, k: int = 1) -> list[Proposal]:
        if not manifest.knobs:
            return []
        root = Path(root)
        candidates = feature_candidates(root, manifest)
        space = search_space(manifest, candidates)
        study, trials, total = self._study(manifest, kb, space)
        current = {name: read_knob(root, spec) for name, spec in manifest.knobs.items()}
        taken = _Taken(kb, _key(manifest, current))
        rng = random.Random(self.seed + total)
        held = encode(manifest, current, space)           # main's values as Optuna parameters
        moves = ([knob for knob in active_knobs(manifest, current)
                  if _untried_moves(manifest, knob, current, taken, candidates)] if self.scope == "local" else [])
        if self.scope == "local" and not moves:
            return []
        base = study.sampler
        proposals: list[Proposal] = []
        for attempt in range(MAX_ASKS * k):
            if len(proposals) == k:
                break
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                if moves:                                   # local: free one parameter, hold the rest
                    # each knob gets TRIES_PER_KNOB draws before the next (a features knob's draw may
                    # pick the value main already has: another candidate, not another knob)
                    knob = moves[(self.seed + total + len(proposals) + attempt // TRIES_PER_KNOB) % len(moves)]
                    free = (f"features.{knob}.{rng.choice(candidates[knob])}"
                            if manifest.knobs[knob].type == "features" else knob)
                    study.sampler = optuna.samplers.PartialFixedSampler(
                        {name: value for name, value in held.items() if name != free}, base)
                trial = study.ask(space)
            params = decode(manifest, trial.params, candidates, rng)
            params = {name: _keep_order(_with_derived(value, current[name], candidates[name]), current[name])
                      if manifest.knobs[name].type == "features" else value for name, value in params.items()}
            if _key(manifest, params) in taken or (moves and not _one_move(manifest, current, params)):
                study.tell(trial, state=TrialState.FAIL)   # asked again: not new (or, local: a drop below
                continue                                   # min_size was topped up, two moves at once)
            taken.add(_key(manifest, params))              # left running: the next ask avoids it
            proposals.append(self._proposal(manifest, params, current, trials, total))
        study.sampler = base
        return proposals

    def _proposal(self, manifest: Manifest, params: dict[str, Any], current: dict[str, Any],
                  trials: list[PriorTrial], total: int) -> Proposal:
        changed = {name: value for name, value in params.items() if current.get(name) != value}
        metric = manifest.metric.primary
        failed = sum(t.value is None for t in trials)
        valued = [t for t in trials if t.value is not None and not t.infeasible]
        best = max(valued, key=lambda t: t.value or 0.0, default=None)
        history = f"{total} prior trial{'s' * (total != 1)} from the KB ("
        history += f"the study holds the latest {len(trials)}: " if total > len(trials) else ""
        history += f"{failed} failed"
        history += f"; best {best.experiment_id} at {best.value:+.4f} validation {metric})" if best else ")"
        return Proposal(
            title="Set knobs " + ", ".join(describe_change(manifest, name, current.get(name), value)
                                           for name, value in changed.items()),
            recipe=KNOB_RECIPE, params=params, source="brainstorm",
            hypothesis=f"These values of the declared knobs should improve validation {metric}: the sampler "
                       "draws where past knob trials did well, and explores where it has no evidence.",
            rationale=f"Optuna {SAMPLER_NAMES[self.sampler]} sampler{LOCAL_NOTE if self.scope == 'local' else ''}, "
                      f"{history}; changes "
                      + ", ".join(f"{name} {show(current.get(name))} -> {show(value)}"
                                  for name, value in changed.items()))


def _untried_moves(manifest: Manifest, knob: str, current: dict[str, Any], taken: _Taken,
                   candidates: dict[str, list[str]]) -> bool:
    """Whether one move of `knob` from `current` is still untried (a float or int knob always
    has one; a categorical, bool or features knob has finitely many)."""
    spec = manifest.knobs[knob]
    if spec.type in ("float", "int"):
        return True
    old = current.get(knob)
    if spec.type == "features":
        if not isinstance(old, list):
            return True
        options = [[f for f in old if f != c] if c in old else [*old, c] for c in candidates[knob]]
        options = [o for o in options if len(o) >= (spec.min_size or 0)]
    else:
        options = [v for v in (spec.choices if spec.type == "categorical" else [False, True]) or [] if v != old]
    keys = [_key(manifest, {**current, knob: option}) for option in options]
    taken.fetch(keys)                                       # one look-up for all of them
    return any(key not in taken for key in keys)


def _one_move(manifest: Manifest, current: dict[str, Any], params: dict[str, Any]) -> bool:
    """Whether `params` differs from `current` in one knob, by one name for a features list."""
    moves = 0
    for name, value in params.items():
        old = current.get(name)
        if manifest.knobs[name].type == "features" and isinstance(old, list) and isinstance(value, list):
            moves += len(set(old) ^ set(value))
        else:
            moves += old != value
    return moves == 1


def describe_change(manifest: Manifest, name: str, old: Any, new: Any) -> str:
    """How a title shows one knob's change: NAME=value, or for a features list the names it
    adds and drops (NAME +a -b) when the old list is known."""
    if manifest.knobs[name].type == "features" and isinstance(old, list) and isinstance(new, list):
        edits = [f"+{f}" for f in new if f not in old] + [f"-{f}" for f in old if f not in new]
        if edits:
            return f"{name} {' '.join(edits)}"
    return f"{name}={show(new)}"


def active_knobs(manifest: Manifest, current: dict[str, Any]) -> list[str]:
    """The knobs a local move may change: those whose `when` holds for the current values."""
    return [name for name, spec in manifest.knobs.items()
            if all(current.get(other) == value for other, value in spec.when.items())]


def _key(manifest: Manifest, params: dict[str, Any]) -> str:
    """A configuration's identity: features lists compare as sets. It is the KB's
    `params_set_key` (knowledge/reads.py: every list of strings sorted), which for knob
    values sorts exactly the features lists (no other knob type holds a list)."""
    return set_key(params)


def _with_derived(value: list[str], old: Any, candidates: list[str]) -> list[str]:
    """`value` plus the names of the current list the search does not cover (derived entries
    such as product(a,b), tools/derived.py): a knob move keeps them."""
    return [*value, *(n for n in old if n not in candidates and n not in value)] if isinstance(old, list) else value


def _keep_order(value: list[str], old: Any) -> list[str]:
    """`value` with the names it shares with the current list first, in their current order."""
    if not isinstance(old, list):
        return value
    return [v for v in old if v in value] + [v for v in value if v not in old]


def _fits(distribution: BaseDistribution, value: Any) -> bool:
    """Whether a stored knob value is a point of the knob's current distribution."""
    if isinstance(distribution, CategoricalDistribution):
        return any(type(value) is type(c) and value == c for c in distribution.choices)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    assert isinstance(distribution, (FloatDistribution, IntDistribution))
    whole = isinstance(distribution, FloatDistribution) or float(value).is_integer()
    return whole and distribution.low <= value <= distribution.high


def apply_knobs(worktree_path: Path | str, manifest: Manifest, params: dict[str, Any]) -> list[str]:
    """Write each knob's value into the checkout; the relative paths that changed (empty when
    every value was already there). A features list keeps the current order of the names it
    shares with the current value, so reordering alone is never a change."""
    root = Path(worktree_path)
    unknown = [name for name in params if name not in manifest.knobs]
    if unknown:
        raise KnobError(f"no knob {', '.join(unknown)} in agentx.toml (knobs: {', '.join(manifest.knobs) or 'none'})")
    before = {spec.file: (root / spec.file).read_bytes() for spec in manifest.knobs.values()
              if (root / spec.file).is_file()}
    for name, value in params.items():
        spec: KnobSpec = manifest.knobs[name]
        value = check_value(spec, value)
        if spec.type == "features":
            value = _keep_order(value, read_knob(root, spec))
        write_knob(root, spec, value)
    return sorted(path for path, data in before.items() if (root / path).read_bytes() != data)

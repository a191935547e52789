"""Does harness evolution improve the loop? Replays against a recorded world of real runs.

    python benchmarks/evolution.py [--quick] [--replays N] [--experiments N] [--every N]

The world (benchmarks/evolution_world.py): every configuration of the adult-income template
in the world's list (43; quick: 16), each trained with 4 seeds (quick: 3) once by the
template's own train.py and cached, with per-row test predictions. A replay is one fresh
workspace's loop of `--experiments` experiments on that world:

- the brainstorm is the heuristic brain's policy (agents/policy.py: Thompson sampling over
  arms with the harness version's priors), choosing an arm, then that arm's next untried
  configuration (a per-replay shuffled order), with its Monte Carlo propensity logged;
- the evaluator draws the harness's initial number of seeds from the recorded runs (a random
  subset per experiment), judges with the evaluator's own paired bootstrap
  (tools.stats.paired_effect over the recorded test predictions) and adds a seed while
  inconclusive, up to the harness's maximum; ship = CI lower bound above min_effect;
- every `--every` experiments an evolution step (agents/harness_evolution.step_on: the
  same proposers and gate as `agentx evolve`) runs on the trajectories so far.

Four harnesses, each over the same replays (same shuffles and seed draws):
- frozen: the default harness, never changed;
- evolved: the offline proposer through the gate; the harness carries over from one replay
  to the next (a user-level store: what `agentx harness export/import` does by hand);
- random: random prior moves of the same size through the same gate (control);
- shuffled: the offline proposer and the gate fed trajectories whose outcomes are shuffled
  among experiments (control: evolution without real feedback).

Figures per harness: cumulative regret (sum over experiments of best true effect minus the
chosen configuration's true effect; true = mean over all recorded seeds, paired with the
baseline), training runs spent (treatment runs plus each replay's distinct control seeds),
false ships (shipped with true effect below min_effect), accepted candidates and the share
the sealed set confirmed. Evolved minus frozen regret gets a paired bootstrap CI over replays.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from agents import harness_evolution as he  # noqa: E402
from agents import trajectories as tj  # noqa: E402
from agents.harness_spec import HarnessSpec, default_harness  # noqa: E402
from agents.policy import ArmStats, choice_probabilities, posterior  # noqa: E402
from evolution_world import World, load_world, recorded_scores, true_effect  # noqa: E402
from tools.stats import paired_effect  # noqa: E402

REPLICATES = 200          # bootstrap replicates per judgement (the evaluator's default is 1000)
HARNESSES = ("frozen", "evolved", "random", "shuffled")


class Judge:
    """The evaluator's paired bootstrap over recorded predictions, memoised per (config, seeds) and
    cached on disk next to the world."""

    def __init__(self, world: World):
        self.world = world
        self.scores = recorded_scores(world)
        self.path = world.path.with_name(world.path.stem + f"-effects-{REPLICATES}.json")
        self.memo: dict[str, list[float]] = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.dirty = False

    def effect(self, config: str, seeds: tuple[int, ...]) -> tuple[float, float, float]:
        key = f"{config}|{','.join(map(str, seeds))}"
        if key not in self.memo:
            base, treat = self.scores.scores[self.world.baseline], self.scores.scores[config]
            e = paired_effect([base[s] for s in seeds], [treat[s] for s in seeds], self.scores.labels,
                              self.scores.row_ids, replicates=REPLICATES)
            self.memo[key] = [e.delta, e.ci_low, e.ci_high]
            self.dirty = True
        return tuple(self.memo[key])

    def save(self) -> None:
        if self.dirty:
            self.path.write_text(json.dumps(self.memo))


@dataclass
class Tally:
    regret: list[float] = field(default_factory=list)      # per replay
    runs: list[int] = field(default_factory=list)
    false_ships: list[int] = field(default_factory=list)
    ships: list[int] = field(default_factory=list)
    accepted: int = 0
    candidates: int = 0
    sealed_confirmed: int = 0
    sealed_checked: int = 0


def replay(world: World, judge: Judge, harness: HarnessSpec, *, n: int, every: int, seed: int, history: list,
           evolver: he.Evolver | None, shuffle: bool, tally: Tally, best: float) -> HarnessSpec:
    """One workspace's loop; returns the harness it ends with (evolved in place when `evolver`)."""
    rng = np.random.default_rng(seed)          # the shuffled control's permutations only
    order = {arm: list(configs) for arm, configs in world.arms().items() if arm != "baseline"}
    for arm in order:
        random.Random(seed * 7919 + len(arm)).shuffle(order[arm])
    n_seeds = len(world.seeds)
    outcomes: dict[str, list[float]] = {}
    regret, runs, false_ships, ships, controls = 0.0, 0, 0, 0, set()
    truth = {c.id: true_effect(world, c.id) for c in world.configs}
    index = {c.id: i for i, c in enumerate(world.configs)}
    family = {c.arm: c.family for c in world.configs}
    brain_rng = np.random.default_rng(seed + 1)
    for i in range(n):
        policy = harness.policy
        arms = []
        for arm, left in order.items():
            if not left:
                continue
            own = outcomes.get(arm, [])
            sib = [r for a, rs in outcomes.items() if a != arm and family.get(a) == family[arm] for r in rs]
            arms.append(ArmStats(arm, family[arm], len(own), sum(own), len(sib), sum(sib)))
        if not arms:
            break
        draws = [brain_rng.normal(*posterior(policy, s)) for s in arms]
        pick = int(np.argmax(draws))
        propensity = float(choice_probabilities(policy, arms)[pick])
        chosen = arms[pick]
        config = order[chosen.arm].pop(0)
        # evaluate: seeds from the recorded runs in an order fixed per (replay, configuration), so every
        # harness that runs this configuration in this replay draws the same seeds; the initial
        # number, then one more while inconclusive
        seed_order = np.random.default_rng([seed, index[config.id]]).permutation(n_seeds).tolist()
        used = min(harness.seeds.initial, n_seeds)
        while True:
            seeds = sorted(seed_order[:used])
            delta, low, high = judge.effect(config.id, tuple(seeds))
            decision = "ship" if low > world.min_effect else "reject" if high < 0 else "inconclusive"
            if decision != "inconclusive" or used >= min(harness.seeds.max, n_seeds):
                break
            used += 1
        runs += len(seeds)
        controls.update(seeds)
        valid = statistics.fmean(config.valid[s] - world.config(world.baseline).valid[s] for s in seeds)
        outcomes.setdefault(chosen.arm, []).append(valid)
        regret += best - truth[config.id]
        if decision == "ship":
            ships += 1
            false_ships += truth[config.id] < world.min_effect
        base_test = world.config(world.baseline).test
        history.append(tj.Trajectory(
            experiment_id=f"S{seed}-E{i:03d}", title=config.id, rationale="", recipe=chosen.arm, params=config.params,
            arm=chosen.arm, family=chosen.family, harness_version=None, propensity=propensity,
            decision_context={"k": 1, "arms": [a.as_dict() for a in arms]}, status="evaluated", failure_kind=None,
            decision=decision, effect=delta, ci_low=low, ci_high=high, valid_effect=valid,
            seed_effects=[config.test[s] - base_test[s] for s in seeds]))
        if evolver is not None and (i + 1) % every == 0:
            seen = history[-tj.WINDOW:]
            if shuffle:
                seen = shuffled(seen, rng)
            _, judged = he.step_on(harness, seen, he.World(world.min_effect, world.metric), evolver)
            for j in judged:
                tally.candidates += 1
                if j.result.accepted:
                    tally.accepted += 1
                    harness = j.candidate.spec
                    if j.sealed is not None:
                        tally.sealed_checked += 1
                        tally.sealed_confirmed += j.sealed.accepted
    tally.regret.append(regret)
    tally.runs.append(runs + len(controls))
    tally.false_ships.append(false_ships)
    tally.ships.append(ships)
    return harness


def shuffled(ts: list[tj.Trajectory], rng) -> list[tj.Trajectory]:
    """The same decisions with outcomes permuted among them (evolution without real feedback)."""
    fields = ("decision", "effect", "ci_low", "ci_high", "valid_effect", "seed_effects")
    outcomes = [{f: getattr(t, f) for f in fields} for t in ts]
    perm = rng.permutation(len(ts))
    return [t.__class__(**{**t.__dict__, **outcomes[j]}) for t, j in zip(ts, perm)]


def bootstrap_ci(diffs: list[float], replicates: int = 5000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    d = np.array(diffs)
    means = d[rng.integers(0, len(d), size=(replicates, len(d)))].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the quick world (16 configurations x 3 seeds), "
                        "10 replays of 10 experiments (of its 15 non-baseline configurations): under three minutes")
    parser.add_argument("--replays", type=int, help="replays per harness (default 24; quick 10)")
    parser.add_argument("--experiments", type=int, help="experiments per replay (default 30; quick 10); fewer "
                        "than the world has configurations, or every order costs the same regret")
    parser.add_argument("--every", type=int, default=5, help="an evolution step every N experiments")
    args = parser.parse_args()
    started = time.perf_counter()
    world = load_world(quick=args.quick, progress=print)
    replays = args.replays or (10 if args.quick else 24)
    n = args.experiments or (10 if args.quick else 30)
    judge = Judge(world)
    best = max(true_effect(world, c.id) for c in world.configs)
    print(f"world: {world.name}, {len(world.configs)} configurations x {len(world.seeds)} seeds of adult-income; "
          f"best true effect {best:+.4f}; {replays} replays x {n} experiments, evolution every {args.every}")
    tallies = {}
    for name in HARNESSES:
        tally = Tally()
        harness = default_harness()
        evolver = {"frozen": None, "evolved": he.Evolver(), "random": he.Evolver(he.RandomProposer(seed=1)),
                   "shuffled": he.Evolver()}[name]
        history: list = []
        t0 = time.perf_counter()
        for r in range(replays):
            harness = replay(world, judge, harness, n=n, every=args.every, seed=1000 + r, history=history,
                             evolver=evolver, shuffle=name == "shuffled", tally=tally, best=best)
        judge.save()
        tallies[name] = tally
        print(f"  {name:9} mean regret {statistics.fmean(tally.regret):.4f}, runs {statistics.fmean(tally.runs):.1f}, "
              f"false ships {sum(tally.false_ships)}, accepted {tally.accepted}/{tally.candidates} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    frozen, evolved = tallies["frozen"], tallies["evolved"]
    diffs = [e - f for e, f in zip(evolved.regret, frozen.regret)]
    low, high = bootstrap_ci(diffs)
    shuffled_diffs = [s - f for s, f in zip(tallies["shuffled"].regret, frozen.regret)]
    s_low, s_high = bootstrap_ci(shuffled_diffs)
    print()
    print(f"{'harness':10} {'regret (mean/replay)':>21} {'median':>8} {'runs/replay':>12} {'ships':>6} "
          f"{'false ships':>12} {'accepted':>9} {'sealed confirms':>16}")
    for name, t in tallies.items():
        sealed = f"{t.sealed_confirmed}/{t.sealed_checked}" if t.sealed_checked else "-"
        print(f"{name:10} {statistics.fmean(t.regret):21.4f} {statistics.median(t.regret):8.4f} "
              f"{statistics.fmean(t.runs):12.1f} {sum(t.ships):6d} {sum(t.false_ships):12d} "
              f"{t.accepted:>4}/{t.candidates:<4} {sealed:>16}")
    print(f"\nevolved - frozen regret per replay: {statistics.fmean(diffs):+.4f}, 95% CI [{low:+.4f}, {high:+.4f}] "
          f"({'excludes' if high < 0 or low > 0 else 'includes'} zero)")
    print(f"shuffled - frozen regret per replay: {statistics.fmean(shuffled_diffs):+.4f}, 95% CI "
          f"[{s_low:+.4f}, {s_high:+.4f}]")
    print(f"total {time.perf_counter() - started:.0f} s")
    print(json.dumps({
        "world": world.name, "replays": replays, "experiments": n, "every": args.every,
        "frozen_regret": statistics.fmean(frozen.regret), "evolved_regret": statistics.fmean(evolved.regret),
        "random_regret": statistics.fmean(tallies["random"].regret),
        "shuffled_regret": statistics.fmean(tallies["shuffled"].regret),
        "evolved_minus_frozen_ci": [low, high],
        "runs_saved": statistics.fmean(frozen.runs) - statistics.fmean(evolved.runs),
        "false_ships": {k: sum(t.false_ships) for k, t in tallies.items()},
        "accepted": {k: t.accepted for k, t in tallies.items()},
        "sealed_confirmed": {k: (t.sealed_confirmed, t.sealed_checked) for k, t in tallies.items()},
        "seconds": round(time.perf_counter() - started, 1)}))


if __name__ == "__main__":
    main()

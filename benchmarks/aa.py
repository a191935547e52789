"""A/A: how often does the evaluator ship a treatment that is the control itself?

    python benchmarks/aa.py [--reps 20] [--seeds 2] [--train-rows 20000] [--first-rep 0]

(`--first-rep` lets several processes share the repetitions: each repetition's seeds
depend only on its index.)

Each repetition trains the same commit as both arms. With paired seeds and deterministic
training the two arms would be bit-identical and every interval would be [0, 0], a test
that cannot fail; so the treatment arm gets its own seeds (the same code retrained, which
is the null an A/B on a retrained model really faces). The evaluator's statistics
(paired seeds x users bootstrap) and decision rule then judge it. At a 95 % level about 1
ship in 20 is expected; more than 3 means the statistics are wrong.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentx.context import Workspace  # noqa: E402
from agentx.workspace import TierSpec  # noqa: E402
from agents.evaluator import bootstrap_unit  # noqa: E402
from tools.git_repo import WorkspaceRepo  # noqa: E402
from tools.scoring import join_predictions, units_of  # noqa: E402
from tools.stats import paired_effect  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20, help="A/A repetitions")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per arm")
    parser.add_argument("--train-rows", type=int, default=20000, help="the small tier's training rows")
    parser.add_argument("--replicates", type=int, default=1000, help="bootstrap replicates")
    parser.add_argument("--first-rep", type=int, default=0, help="index of the first repetition")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ws"
        WorkspaceRepo.init_from_template(root, "movielens-ctr")
        with Workspace.open(root) as ws:
            checkout, commit = ws.base_checkout()
            # The small tier: fewer training rows and one epoch, but every test row, so the
            # interval is as narrow as a real judgement's and a false ship is possible.
            small = TierSpec(epochs=1, timeout_s=600, train_rows=args.train_rows, eval_rows=None)
            ws.harness.manifest = ws.manifest.model_copy(
                update={"tiers": ws.manifest.tiers.model_copy(update={"micro": small})})
            args.tier = "micro"
            metric, floor = ws.manifest.metric, ws.manifest.metric.min_effect
            decisions, rows = [], []
            for rep in range(args.first_rep, args.first_rep + args.reps):
                arms = []
                for offset in (0, 500):        # control seeds, then the treatment's own seeds
                    runs = [ws.harness.run(checkout, commit, tier=args.tier, seed=1000 * rep + offset + s,
                                           arm="control" if offset == 0 else "treatment")
                            for s in range(args.seeds)]
                    if not all(r.ok for r in runs):
                        raise SystemExit(f"rep {rep}: a run failed: {[r.failure_detail for r in runs if not r.ok]}")
                    arms.append([join_predictions(ws.harness.splits, Path(ws.kb.get_run(r.run_id)["run_dir"]), "test")
                                 for r in runs])
                control, treatment = arms
                labels = control[0].labels
                users = units_of(ws.harness.splits, control[0].ids, bootstrap_unit(ws.manifest.data)[0])
                effect = paired_effect([c.scores for c in control], [t.scores for t in treatment], labels, users,
                                       metric=metric.primary, replicates=args.replicates, seed=rep)
                low, high = sorted((metric.sign * effect.ci_low, metric.sign * effect.ci_high))
                decision = "ship" if low > floor else "reject" if high < 0 else "inconclusive"
                decisions.append(decision)
                rows.append((rep, effect.delta, effect.ci_low, effect.ci_high, decision))
                print(f"rep {rep:2d}: delta {effect.delta:+.4f} CI [{effect.ci_low:+.4f}, {effect.ci_high:+.4f}] "
                      f"-> {decision}", flush=True)
    shipped, rejected = decisions.count("ship"), decisions.count("reject")
    covered = sum(lo <= 0 <= hi for _, _, lo, hi, _ in rows)
    above_zero = sum(min(metric.sign * lo, metric.sign * hi) > 0 for _, _, lo, hi, _ in rows)
    print(f"A/A over {args.reps} repetitions (small tier: {args.train_rows} train rows, 1 epoch, all test rows; "
          f"{args.seeds} seeds per arm): shipped {shipped}, "
          f"rejected {rejected}, CI covered 0 in {covered}/{args.reps}; expected about 1 false ship at 95 %, "
          f"> 3 is a bug: {'ok' if shipped <= 3 else 'TOO MANY'}")
    print(f"without the minimum effect (ship when the CI is merely above 0): {above_zero} of {args.reps}")
    print(json.dumps({"reps": args.reps, "first_rep": args.first_rep, "train_rows": args.train_rows,
                      "shipped": shipped, "rejected": rejected, "ci_covers_zero": covered,
                      "ci_above_zero": above_zero}))


if __name__ == "__main__":
    main()

"""Execution costs: kernel start, micro-tier run, full-tier run per seed, and their ratio.

    python benchmarks/sandbox.py [--micro-reps 5] [--full-seeds 3]

Creates a throwaway MovieLens workspace in a temp dir and runs the real harness (fresh
Jupyter kernel per run, materialised splits, harness-side scoring). Prints medians.
Targets from the foundation issue: micro tier <= 5 s including kernel start, full tier
<= 3 min per seed on CPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentx.context import Workspace  # noqa: E402
from tools.git_repo import WorkspaceRepo  # noqa: E402
from tools.sandbox import Sandbox  # noqa: E402


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel-reps", type=int, default=5, help="kernel starts to time")
    parser.add_argument("--micro-reps", type=int, default=5, help="micro-tier runs to time")
    parser.add_argument("--full-seeds", type=int, default=3, help="full-tier runs (seeds) to time")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ws"
        WorkspaceRepo.init_from_template(root, "movielens-ctr")
        ws = Workspace.open(root)
        checkout, commit = ws.base_checkout()
        ws.harness.splits  # prepare once, outside the timings

        starts = []
        for _ in range(args.kernel_reps):
            with Sandbox(checkout) as box:
                starts.append(box.start())
        print(f"kernel start (fresh ipykernel, IPC): median {median(starts):.2f} s over {len(starts)} "
              f"(min {min(starts):.2f}, max {max(starts):.2f})")

        def timed(tier: str, seed: int) -> tuple[float, float]:
            t = time.perf_counter()
            run = ws.harness.run(checkout, commit, tier=tier, seed=seed, arm="baseline")
            if not run.ok:
                raise SystemExit(f"{tier} run failed: {run.failure_kind}: {run.failure_detail}")
            return time.perf_counter() - t, run.exec_s

        micro = [timed("micro", seed) for seed in range(args.micro_reps)]
        micro_wall = median([m[0] for m in micro])
        print(f"micro tier (incl. kernel start, materialise, score): median {micro_wall:.2f} s over "
              f"{len(micro)}; target <= 5 s: {'met' if micro_wall <= 5 else 'MISSED'}")

        full = [timed("full", seed) for seed in range(args.full_seeds)]
        full_wall = median([f[0] for f in full])
        print(f"full tier per seed on CPU: median {full_wall:.1f} s over {len(full)} "
              f"(per seed: {', '.join(f'{f[0]:.1f}' for f in full)}); target <= 180 s: "
              f"{'met' if full_wall <= 180 else 'MISSED'}")
        print(f"ratio full/micro: {full_wall / micro_wall:.1f}x; kernel start is "
              f"{100 * median(starts) / micro_wall:.0f}% of a micro run")


if __name__ == "__main__":
    main()

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
from agentx.paths import cache_dir  # noqa: E402
from tools.git_repo import WorkspaceRepo  # noqa: E402
from tools.harness import Harness  # noqa: E402
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

        def timed(harness, tier: str, seed: int) -> float:
            if harness.pool is not None:
                harness.pool.wait_ready()          # the run starts with a warm kernel waiting
            t = time.perf_counter()
            run = harness.run(checkout, commit, tier=tier, seed=seed, arm="baseline")
            if not run.ok:
                raise SystemExit(f"{tier} run failed: {run.failure_kind}: {run.failure_detail}")
            return time.perf_counter() - t

        cold = Harness(root, ws.manifest, ws.kb, cache_dir())
        micro_cold = median([timed(cold, "micro", seed) for seed in range(args.micro_reps)])
        print(f"micro tier, cold (fresh kernel started on demand, libraries imported by the run): "
              f"median {micro_cold:.2f} s over {args.micro_reps}")
        micro_warm = median([timed(ws.harness, "micro", seed) for seed in range(args.micro_reps)])
        print(f"micro tier, warm (fresh kernel started and torch/pandas imported before the run; "
              f"tools/pool.py): median {micro_warm:.2f} s over {args.micro_reps}; target <= 5 s: "
              f"{'met' if micro_warm <= 5 else 'MISSED'} warm, {'met' if micro_cold <= 5 else 'MISSED'} cold")
        micro_wall = micro_warm

        full = [timed(ws.harness, "full", seed) for seed in range(args.full_seeds)]
        full_wall = median(full)
        print(f"full tier per seed on CPU (warm kernel): median {full_wall:.1f} s over {len(full)} "
              f"(per seed: {', '.join(f'{f:.1f}' for f in full)}); target <= 180 s: "
              f"{'met' if full_wall <= 180 else 'MISSED'}")
        ws.close()
        print(f"ratio full/micro (warm): {full_wall / micro_wall:.1f}x; full/micro (cold): {full_wall / micro_cold:.1f}x; "
              f"a cold kernel start is {100 * median(starts) / micro_cold:.0f}% of a cold micro run")


if __name__ == "__main__":
    main()

"""Execution costs: kernel start and micro-tier runs with and without the OS sandbox, the
full tier per seed, and their ratios.

    python benchmarks/sandbox.py [--kernel-reps 5] [--micro-reps 5] [--full-seeds 3]

Creates a throwaway MovieLens workspace in a temp dir and runs the real harness (fresh
Jupyter kernel per run, materialised splits, harness-side scoring). Sandboxed and
unsandboxed runs alternate (pairs), so load on the machine hits both alike; it prints
medians and the median of the per-pair ratios. Targets: micro tier <= 5 s including kernel
start, full tier <= 3 min per seed on CPU, sandboxed / unsandboxed micro run <= 1.15.
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
from tools.pool import Slot  # noqa: E402
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
        ws = Workspace.open(root, warm_kernels=True)
        checkout, commit = ws.base_checkout()
        ws.harness.splits  # prepare once, outside the timings

        starts, confined_starts = [], []
        for _ in range(args.kernel_reps):
            with Sandbox(checkout) as box:
                starts.append(box.start())
            slot = Slot.create(Path(tmp) / "slots")
            with Sandbox(slot.work, confinement=ws.harness.confinement(slot)) as box:
                confined_starts.append(box.start())
            slot.remove()
        print(f"kernel start (fresh ipykernel, IPC): median {median(starts):.2f} s unsandboxed, "
              f"{median(confined_starts):.2f} s in bubblewrap, over {len(starts)} pairs; ratio "
              f"{median(confined_starts) / median(starts):.2f}")

        def timed(harness, tier: str, seed: int) -> float:
            harness.executor.warm_up()             # the run starts with a warm kernel waiting
            t = time.perf_counter()
            run = harness.run(checkout, commit, tier=tier, seed=seed, arm="baseline")
            if not run.ok:
                raise SystemExit(f"{tier} run failed: {run.failure_kind}: {run.failure_detail}")
            return time.perf_counter() - t

        def paired(label: str, confined: Harness, bare: Harness) -> float:
            pairs = [(timed(confined, "micro", seed), timed(bare, "micro", seed)) for seed in range(args.micro_reps)]
            boxed, plain = [p[0] for p in pairs], [p[1] for p in pairs]
            ratio = median([a / b for a, b in pairs])
            print(f"micro tier, {label}: median {median(boxed):.2f} s sandboxed, {median(plain):.2f} s unsandboxed "
                  f"over {len(pairs)} pairs; sandboxed/unsandboxed: median of pair ratios {ratio:.3f}, "
                  f"ratio of medians {median(boxed) / median(plain):.3f} (target <= 1.15: "
                  f"{'met' if ratio <= 1.15 else 'MISSED'})")
            return median(boxed)

        micro_cold = paired("cold (fresh kernel started on demand, libraries imported by the run)",
                            Harness(root, ws.manifest, ws.kb, cache_dir()),
                            Harness(root, ws.manifest, ws.kb, cache_dir(), sandboxed=False))
        bare_warm = Harness(root, ws.manifest, ws.kb, cache_dir(), sandboxed=False, warm_kernels=True)
        micro_warm = paired("warm (kernel started and torch/pandas imported before the run; tools/pool.py)",
                            ws.harness, bare_warm)
        bare_warm.close()
        print(f"micro tier target <= 5 s: {'met' if micro_warm <= 5 else 'MISSED'} warm, "
              f"{'met' if micro_cold <= 5 else 'MISSED'} cold (sandboxed)")
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

"""Planted-bug catch rates: every defect of tools/planted.py, as a branch, through the real harness.

    python benchmarks/planted_bugs.py [--micro-timeout S] [--full-timeout S] [--memory-mb MB]
                                      [--bugs a,b,...] [--cold] [--skip-full-when-caught]
                                      [--calibrate N]

Creates a throwaway MovieLens workspace, runs an honest branch at the micro tier (it must
pass: a false alarm is a bug), then plants each defect as its own branch and runs it at the
micro tier; a defect the micro tier does not catch (right failure kind) goes on to the full
tier. Every defect is also timed once at the full tier (unless --skip-full-when-caught), so
the micro-vs-full cost per caught defect is measured, not assumed. Prints a table, the
catch rates, the median seconds per caught defect at micro and at full, and one JSON line.

Timeouts default to the manifest's tiers; the endless loop costs exactly the tier's timeout,
so --full-timeout bounds the benchmark's own running time (the JSON line records both).

--calibrate N first runs the honest branch N times at micro (seeds 0..N-1) and gives the
micro tier the settings harness evolution's offline proposer derives from those runs
(agents/harness_evolution.calibrate_micro: timeout 3x the slowest, at least 10 s; memory
cap 3x the largest peak, at least 1 GiB), as the active harness version would after a few
experiments; the defects then run under them. The JSON line adds the settings and the
total micro seconds over the caught defects.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentx.paths import cache_dir  # noqa: E402
from agentx.workspace import load_manifest  # noqa: E402
from knowledge import KnowledgeBase  # noqa: E402
from tools.git_repo import WorkspaceRepo  # noqa: E402
from tools.harness import Harness  # noqa: E402
from agents.harness_evolution import calibrate_micro  # noqa: E402
from tools.planted import BUGS, PlantedBug, plant  # noqa: E402


@dataclass
class Attempt:
    kind: str | None
    seconds: float
    detail: str


@dataclass
class Row:
    bug: PlantedBug
    micro: Attempt
    full: Attempt | None = None

    @property
    def tier_caught(self) -> str | None:
        if self.micro.kind == self.bug.expected_kind:
            return "micro"
        if self.full is not None and self.full.kind == self.bug.expected_kind:
            return "full"
        return None

    @property
    def caught_kind(self) -> str | None:
        return self.full.kind if self.tier_caught == "full" or (self.tier_caught is None and self.full) \
            else self.micro.kind

    @property
    def seconds_spent(self) -> float:
        """What finding it cost: the micro run, plus the full run when micro did not catch it."""
        return self.micro.seconds + (self.full.seconds if self.tier_caught != "micro" and self.full else 0.0)


def with_timeouts(manifest, micro: float | None, full: float | None):
    tiers = manifest.tiers
    if micro is not None:
        tiers = tiers.model_copy(update={"micro": tiers.micro.model_copy(update={"timeout_s": micro})})
    if full is not None:
        tiers = tiers.model_copy(update={"full": tiers.full.model_copy(update={"timeout_s": full})})
    return manifest.model_copy(update={"tiers": tiers})


def attempt(harness: Harness, path: Path, commit: str, tier: str) -> Attempt:
    harness.executor.warm_up()               # every run starts with its warm kernel waiting
    started = time.perf_counter()
    run = harness.run(path, commit, tier=tier, seed=0, arm="treatment")
    return Attempt(run.failure_kind, time.perf_counter() - started, (run.failure_detail or "").splitlines()[0][:90]
                   if run.failure_detail else "")


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--micro-timeout", type=float, help="override tiers.micro.timeout_s")
    parser.add_argument("--full-timeout", type=float, help="override tiers.full.timeout_s")
    parser.add_argument("--memory-mb", type=int, default=8192, help="the harness's kernel memory cap")
    parser.add_argument("--bugs", help="comma-separated defect names (default: all)")
    parser.add_argument("--cold", action="store_true", help="a fresh kernel per run started on the spot")
    parser.add_argument("--skip-full-when-caught", action="store_true",
                        help="run the full tier only for defects the micro tier missed")
    parser.add_argument("--calibrate", type=int, default=0, metavar="N",
                        help="calibrate the micro tier from N honest micro runs first (the offline proposer's rule)")
    args = parser.parse_args()
    bugs = [b for b in BUGS if not args.bugs or b.name in args.bugs.split(",")]

    with tempfile.TemporaryDirectory(prefix="agentx-planted-") as tmp:
        repo = WorkspaceRepo.init_from_template(Path(tmp) / "ws", "movielens-ctr")
        manifest = with_timeouts(load_manifest(repo.root), args.micro_timeout, args.full_timeout)
        harness = Harness(repo.root, manifest, KnowledgeBase(":memory:"), cache_dir(),
                          memory_limit_mb=args.memory_mb, warm_kernels=not args.cold)
        try:
            harness.splits                                   # prepared once, outside the timings
            print(f"micro tier: {manifest.tiers.micro.train_rows} train rows, timeout "
                  f"{manifest.tiers.micro.timeout_s:g} s | full tier: all rows, {manifest.tiers.full.epochs} epochs, "
                  f"timeout {manifest.tiers.full.timeout_s:g} s | memory cap {args.memory_mb} MB | "
                  f"{'cold' if args.cold else 'warm'} kernels", flush=True)
            calibrated = None
            if args.calibrate:
                seconds, peaks = [], []
                for seed in range(args.calibrate):
                    run = harness.run(repo.root, repo.head(), tier="micro", seed=seed, arm="treatment")
                    row = harness.kb.get_run(run.run_id)
                    seconds.append(row["exec_s"])       # the timeout's clock (kernel start-up excluded)
                    peaks.append(row["peak_rss_mb"])
                calibrated = calibrate_micro(seconds, peaks)
                harness.tier_overrides = lambda tier: ({k: v for k, v in calibrated.model_dump().items()
                                                        if v is not None} if tier == "micro" else {})
                print(f"calibrated from {args.calibrate} honest micro runs (slowest {max(seconds):.1f} s, largest "
                      f"peak {max(peaks):.0f} MB): micro timeout {calibrated.timeout_s:g} s, memory cap "
                      f"{calibrated.memory_mb} MB", flush=True)
            honest = attempt(harness, repo.root, repo.head(), "micro")
            print(f"honest branch at micro: {honest.kind or 'ok'} in {honest.seconds:.1f} s "
                  f"({'false alarm: ' + honest.detail if honest.kind else 'no false alarm'})", flush=True)
            rows = []
            for bug in bugs:
                worktree, head = plant(repo, bug)
                row = Row(bug, attempt(harness, worktree.path, head, "micro"))
                if row.tier_caught != "micro" or not args.skip_full_when_caught:
                    row.full = attempt(harness, worktree.path, head, "full")
                rows.append(row)
                print(f"  {bug.name}: micro {row.micro.kind} {row.micro.seconds:.1f} s"
                      + (f", full {row.full.kind} {row.full.seconds:.1f} s" if row.full else ""), flush=True)
        finally:
            harness.close()

    print()
    header = f"{'defect':18} {'expected':13} {'caught kind':13} {'tier':6} {'s spent':>8} {'s micro':>8} {'s full':>8}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r.bug.name:18} {r.bug.expected_kind:13} {str(r.caught_kind):13} {r.tier_caught or 'MISSED':6} "
              f"{r.seconds_spent:8.1f} {r.micro.seconds:8.1f} "
              f"{(f'{r.full.seconds:8.1f}' if r.full else '       -')}")
    n = len(rows)
    at_micro = [r for r in rows if r.tier_caught == "micro"]
    caught = [r for r in rows if r.tier_caught]
    micro_median = median([r.micro.seconds for r in at_micro])
    full_same = median([r.full.seconds for r in at_micro if r.full])       # the same catches, at full
    full_all = median([r.full.seconds for r in rows if r.full and r.full.kind == r.bug.expected_kind])
    print()
    print(f"caught at micro: {len(at_micro)} of {n} ({len(at_micro) / n:.0%}); overall: {len(caught)} of {n} "
          f"({len(caught) / n:.0%}); false alarms on the honest branch: {int(honest.kind is not None)}")
    print(f"median seconds per caught defect: micro {micro_median} s; the same defects at full {full_same} s; "
          f"every defect the full tier catches {full_all} s")
    micro_total = round(sum(r.micro.seconds for r in at_micro), 1)
    full_total = round(sum(r.full.seconds for r in at_micro if r.full), 1) if all(r.full for r in at_micro) else None
    print(f"total seconds over the defects caught at micro: micro {micro_total} s"
          + (f"; the same defects at full {full_total} s" if full_total is not None else ""))
    print(json.dumps({
        "defects": n, "caught_micro": len(at_micro), "caught_overall": len(caught),
        "catch_rate_micro": round(len(at_micro) / n, 3), "catch_rate_overall": round(len(caught) / n, 3),
        "median_s_micro": micro_median, "median_s_full_same_defects": full_same, "median_s_full": full_all,
        "false_alarms": int(honest.kind is not None), "honest_micro_s": round(honest.seconds, 2),
        "micro_timeout_s": calibrated.timeout_s if calibrated else manifest.tiers.micro.timeout_s,
        "full_timeout_s": manifest.tiers.full.timeout_s,
        "memory_cap_mb": args.memory_mb, "micro_memory_cap_mb": calibrated.memory_mb if calibrated else args.memory_mb,
        "calibrated_from": args.calibrate, "total_s_micro_caught": micro_total, "total_s_full_same_defects": full_total,
        "warm_kernels": not args.cold,
        "missed": [r.bug.name for r in rows if not r.tier_caught],
        "per_defect": {r.bug.name: {"expected": r.bug.expected_kind, "micro": r.micro.kind,
                                    "full": r.full.kind if r.full else None, "tier": r.tier_caught,
                                    "s_micro": round(r.micro.seconds, 2),
                                    "s_full": round(r.full.seconds, 2) if r.full else None} for r in rows},
    }))


if __name__ == "__main__":
    main()

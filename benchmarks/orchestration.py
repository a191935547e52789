"""Orchestration overhead of the loop at the full tier.

    python benchmarks/orchestration.py [--experiments 3] [--seeds 2]

Runs the real loop (heuristic brain, LangGraph with SQLite checkpoints, git branches,
fresh kernels, harness scoring, bootstrap CIs, KB writes) on a throwaway MovieLens
workspace and prints, per experiment, its wall time (created -> recorded), the time
spent executing code in kernels (sum of the runs' execution time), kernel start-up, and
what is left: orchestration overhead. Target: overhead <= 10 % of wall time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentx.app import RunOptions, run_in  # noqa: E402
from agentx.context import Workspace  # noqa: E402
from tools.git_repo import WorkspaceRepo  # noqa: E402


def install_timers() -> dict[str, list]:
    """Wrap the loop's steps with wall-clock timers (thread-safe enough: the loop runs one
    experiment at a time here). Returns {name: [calls, seconds]}, filled as the loop runs."""
    import functools
    import threading
    import time

    import agentx.graph as graph
    import agentx.pr as pr
    import agents.developer as developer
    import agents.evaluator as evaluator
    import knowledge.store as store
    import tools.git_repo as git_repo
    import tools.harness as harness

    timers: dict[str, list] = {}
    lock = threading.Lock()

    def wrap(owner, attr, name):
        original = getattr(owner, attr)

        @functools.wraps(original)
        def timed(*a, **kw):
            t0 = time.perf_counter()
            try:
                return original(*a, **kw)
            finally:
                with lock:
                    entry = timers.setdefault(name, [0, 0.0])
                    entry[0] += 1
                    entry[1] += time.perf_counter() - t0
        setattr(owner, attr, timed)

    for owner, attr in [(graph, "develop"), (graph, "evaluate_experiment"), (graph, "record"), (graph, "lesson"),
                        (graph, "brainstorm"), (graph, "create_experiment"), (developer, "develop"),
                        (evaluator, "judge"), (evaluator, "train_rows"), (pr, "open_pull_request"),
                        (harness.Harness, "run"), (harness.Harness, "reusable")]:
        wrap(owner, attr, f"{owner.__name__}.{attr}")
    wrap(store, "connect_with_retry", "KB connect")
    for attr in [a for a in vars(git_repo.WorkspaceRepo) if not a.startswith("__") and callable(getattr(git_repo.WorkspaceRepo, a))]:
        wrap(git_repo.WorkspaceRepo, attr, f"git.{attr}")
    return timers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=3, help="experiments to run")
    parser.add_argument("--seeds", type=int, default=2, help="paired seeds per arm")
    parser.add_argument("--profile", action="store_true",
                        help="also time the loop's own steps (develop, judge, record, KB, git), summed over experiments")
    args = parser.parse_args()
    timers = install_timers() if args.profile else None

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ws"
        WorkspaceRepo.init_from_template(root, "movielens-ctr")
        ws = Workspace.open(root)
        ws.harness.splits  # data preparation is a one-off per workspace, not per experiment
        run_in(ws, RunOptions(experiments=args.experiments, seeds=args.seeds, max_seeds=args.seeds, parallel=1),
               lambda _: None)

        rows = ws.kb.query("""
            SELECT e.id, e.title, epoch(r.ts) - epoch(e.created_at) AS wall_s,
                   (SELECT coalesce(sum(exec_s), 0) FROM runs WHERE experiment_id = e.id) AS exec_s,
                   (SELECT coalesce(sum(kernel_start_s), 0) FROM runs WHERE experiment_id = e.id) AS start_s,
                   (SELECT count(*) FROM runs WHERE experiment_id = e.id) AS n_runs,
                   (SELECT list(id) FROM runs WHERE experiment_id = e.id) AS run_ids
            FROM experiments e JOIN events r ON r.experiment_id = e.id AND r.kind = 'experiment_recorded'
            ORDER BY e.id""")
        phases_of = {}
        for event in ws.kb.events("run_finished"):
            payload = event["payload"] if isinstance(event["payload"], dict) else json.loads(event["payload"])
            phases_of[payload["run_id"]] = payload.get("phases") or {}
        ws.close()
    names = ("materialise", "protect", "score", "kb")
    print(f"{'experiment':<11}{'runs':>5}{'wall s':>9}{'kernel exec s':>15}{'kernel start s':>16}"
          f"{'overhead s':>12}{'share':>8}  title")
    shares, shares_with_start, breakdown = [], [], []
    for r in rows:
        overhead = r["wall_s"] - r["exec_s"]
        shares.append(overhead / r["wall_s"])
        shares_with_start.append((overhead - r["start_s"]) / r["wall_s"])
        harness = {n: sum(phases_of.get(run, {}).get(n, 0.0) for run in r["run_ids"]) for n in names}
        breakdown.append({"kernel start": r["start_s"], **{f"harness {n}": v for n, v in harness.items()},
                          "loop (graph, git, judgement, KB)": overhead - r["start_s"] - sum(harness.values()),
                          "_wall": r["wall_s"]})
        print(f"{r['id']:<11}{r['n_runs']:>5}{r['wall_s']:>9.1f}{r['exec_s']:>15.1f}{r['start_s']:>16.1f}"
              f"{overhead:>12.1f}{100 * overhead / r['wall_s']:>7.1f}%  {r['title']}")
    median = statistics.median(shares)
    print(f"orchestration overhead (wall - kernel execution) / wall: median {100 * median:.1f}% over "
          f"{len(rows)} experiments; target <= 10%: {'met' if median <= 0.10 else 'MISSED'}")
    print(f"  of which kernel start-up is {100 * (median - statistics.median(shares_with_start)):.1f} points; "
          f"without it the overhead is {100 * statistics.median(shares_with_start):.1f}%")
    print("where the overhead goes (median over experiments, seconds and share of wall time):")
    for part in [k for k in breakdown[0] if not k.startswith("_")] if breakdown else []:
        seconds = statistics.median(b[part] for b in breakdown)
        share = statistics.median(b[part] / b["_wall"] for b in breakdown)
        print(f"  {part:<34}{seconds:>7.2f} s {100 * share:>6.1f}%")
    if timers is not None:
        print("loop steps, seconds per experiment (nested: a step's time includes the steps it calls):")
        for name, (calls, seconds) in sorted(timers.items(), key=lambda kv: -kv[1][1]):
            print(f"  {name:<40}{seconds / max(1, len(rows)):>8.2f} s  ({calls} calls)")
    print(json.dumps({"experiments": len(rows), "overhead_share_median": round(median, 4),
                      "without_kernel_start": round(statistics.median(shares_with_start), 4)}))

if __name__ == "__main__":
    main()

"""Throughput of the loop: experiments per hour and overheads, local vs Ray, --parallel 1 and 2.

    python benchmarks/throughput.py [--template adult-income] [--tier full] [--experiments 4]
                                    [--parallel 1 2] [--executors local ray] [--ray ADDRESS]

For each executor and parallelism: a copy of one prepared workspace (data splits and the
feature statistics computed once, before any timing), warm kernels waiting, then the real
loop (heuristic brain, git branches, sandboxed kernels, harness scoring, KB writes) for
`--experiments` experiments. Prints per configuration: wall time, experiments per hour,
the loop's overhead per experiment (experiment wall minus its runs' kernel execution, as
benchmarks/orchestration.py), and per run: harness wall minus kernel execution (staging,
kernel hand-over, transfers, scoring), with Ray's transfer time. Then Ray's per-run
overhead over local's (medians and their ratio) and what N nodes would do, from those
figures: a round of `--parallel` experiments waits for its slowest, and every run's
judging happens on the agentx machine.

`--ray` names a cluster (`ray://HOST:PORT`, `ray:HOST:PORT`); by default a local Ray
instance is started for the Ray configurations (on this machine: its CPUs as lanes). On a
GPU machine the local executor has one lane per free GPU and Ray one per GPU of the
cluster: the same command measures one experiment per GPU.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentx.app import RunOptions, run_in  # noqa: E402
from agentx.context import Workspace  # noqa: E402
from tools.executors.devices import free_gpus  # noqa: E402
from tools.git_repo import WorkspaceRepo  # noqa: E402


def prepare(template: str, root: Path) -> Path:
    """A workspace with its splits and feature statistics already in its cache and KB."""
    from agents.interactions import candidates

    WorkspaceRepo.init_from_template(root, template)
    with Workspace.open(root, warm_kernels=False) as ws:
        ws.harness.splits
        candidates(ws)                   # the interactions arm's statistics: once per data version
    return root


def measure(prepared: Path, where: Path, executor: str, parallel: int, args) -> dict:
    shutil.copytree(prepared, where, symlinks=True)
    with Workspace.open(where, warm_kernels=True, lock=True, committed_only=True, executor=executor) as ws:
        ws.harness.executor.warm_up()
        lanes = ws.harness.executor.describe()
        t0 = time.perf_counter()
        result = run_in(ws, RunOptions(experiments=args.experiments, parallel=parallel, tier=args.tier,
                                       seeds=args.seeds, max_seeds=args.seeds, evolve_every=0, executor=executor),
                        lambda _: None)
        wall = time.perf_counter() - t0
        experiments = ws.kb.query("""
            SELECT e.id, epoch(r.ts) - epoch(e.created_at) AS wall_s,
                   (SELECT coalesce(sum(exec_s), 0) FROM runs WHERE experiment_id = e.id) AS exec_s
            FROM experiments e JOIN events r ON r.experiment_id = e.id AND r.kind = 'experiment_recorded'
            ORDER BY e.id""")
        runs = ws.kb.query("SELECT id, wall_s, exec_s, device FROM runs WHERE status = 'ok' AND wall_s IS NOT NULL")
        transfer = {}
        for event in ws.kb.events("run_finished"):
            payload = event["payload"]
            transfer[payload["run_id"]] = payload.get("transfer_s")
        decisions = [(v["experiment_id"], v["decision"]) for v in ws.kb.query(
            "SELECT experiment_id, decision FROM verdicts ORDER BY experiment_id")]
    finished = len(result.finished)
    return {"executor": executor, "parallel": parallel, "lanes": lanes, "experiments": finished, "wall_s": wall,
            "per_hour": 3600 * finished / wall,
            "exp_overhead_s": statistics.median(e["wall_s"] - e["exec_s"] for e in experiments),
            "exp_overhead_share": statistics.median((e["wall_s"] - e["exec_s"]) / e["wall_s"] for e in experiments),
            "exp_wall_s": statistics.median(e["wall_s"] for e in experiments),
            "runs": len(runs), "run_overhead_s": [r["wall_s"] - r["exec_s"] for r in runs],
            "run_exec_s": [r["exec_s"] for r in runs],
            "transfer_s": [transfer[r["id"]] for r in runs if transfer.get(r["id"]) is not None],
            "devices": sorted({r["device"] for r in runs}), "decisions": decisions}


def per_run(prepared: Path, tmp: Path, ray_spec: str, runs: int, tier: str) -> dict:
    """The same run (main's code, seeds 0..runs-1) on both executors, alternating, each with a
    warm kernel waiting: per-run overhead = harness wall time minus kernel execution."""
    out: dict[str, list] = {"local": [], "ray": [], "ray_transfer": [], "local_exec": [], "ray_exec": []}
    shutil.copytree(prepared, tmp / "per-run-local", symlinks=True)
    shutil.copytree(prepared, tmp / "per-run-ray", symlinks=True)
    with Workspace.open(tmp / "per-run-local", warm_kernels=True) as local, \
            Workspace.open(tmp / "per-run-ray", warm_kernels=True, executor=ray_spec) as ray:
        checkouts = {name: ws.base_checkout() for name, ws in (("local", local), ("ray", ray))}
        for seed in range(runs + 1):                  # seed 0 warms both up and is not counted
            for name, ws in (("local", local), ("ray", ray)):
                ws.harness.executor.warm_up()
                checkout, commit = checkouts[name]
                run = ws.harness.run(checkout, commit, tier=tier, seed=seed, arm="baseline")
                assert run.ok, run.failure_detail
                if seed:
                    out[name].append(run.wall_s - run.exec_s)
                    out[f"{name}_exec"].append(run.exec_s)
                    if name == "ray":
                        (event,) = [e["payload"] for e in ws.kb.events("run_finished")
                                    if e["payload"]["run_id"] == run.run_id]
                        out["ray_transfer"].append(event["transfer_s"])
    return out


def scaling(local1: dict, ray1: dict, lanes_per_node: int, nodes=(1, 2, 4, 8, 16, 32)) -> list[str]:
    """Experiments per hour on N nodes, from the measured Ray figures at --parallel 1: each
    node serves `lanes_per_node` experiments at a time, each taking what one took here;
    the agentx machine judges every run itself (its share: the per-run overhead that is
    not transfer, times runs per experiment), which caps the total."""
    per_exp = ray1["wall_s"] / ray1["experiments"]
    runs_per_exp = ray1["runs"] / ray1["experiments"]
    judge_s = runs_per_exp * max(0.0, statistics.median(local1["run_overhead_s"]))   # harness-side seconds per run
    cap = 3600 / max(judge_s, 1e-9)
    lines = [f"  agentx machine per experiment: {judge_s:.1f} s of judging ({runs_per_exp:.1f} runs x the local "
             f"per-run overhead) -> at most {cap:,.0f} experiments/hour whatever the cluster"]
    for n in nodes:
        ideal = n * lanes_per_node * 3600 / per_exp
        lines.append(f"  {n:>3} node(s) x {lanes_per_node} lane(s): {min(ideal, cap):>9,.0f} experiments/hour"
                     + ("  (capped by the agentx machine)" if ideal > cap else ""))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--template", default="adult-income", help="bundled template to run")
    parser.add_argument("--tier", default="full", help="tier the arms are compared at")
    parser.add_argument("--experiments", type=int, default=4, help="experiments per configuration")
    parser.add_argument("--seeds", type=int, default=2, help="paired seeds per arm")
    parser.add_argument("--parallel", type=int, nargs="+", default=[1, 2], help="parallelisms to measure")
    parser.add_argument("--executors", nargs="+", default=["local", "ray"], help="local and/or ray")
    parser.add_argument("--runs", type=int, default=9, help="paired single runs for the per-run overhead (0: skip)")
    parser.add_argument("--ray", default="ray", help="the Ray spec: ray (a local instance unless this machine "
                        "is a node of a cluster), ray://HOST:PORT or ray:HOST:PORT")
    args = parser.parse_args()
    gpus = free_gpus()
    print(f"machine: {len(gpus)} free GPU(s)" + (f" ({', '.join(gpus)})" if gpus else
                                                 " - CPU only: no GPU figures from this run"))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        prepared = prepare(args.template, Path(tmp) / "prepared")
        if args.runs and {"local", "ray"} <= set(args.executors):
            pr = per_run(prepared, Path(tmp), args.ray, args.runs, args.tier)
            lo, ro = statistics.median(pr["local"]), statistics.median(pr["ray"])
            paired = statistics.median(r - q for q, r in zip(pr["local"], pr["ray"]))
            print(f"per run, {args.runs} paired {args.tier}-tier runs with a warm kernel waiting (harness wall - kernel "
                  f"execution): local median {lo:.3f} s, Ray {ro:.3f} s (of which transfers "
                  f"{statistics.median(pr['ray_transfer']):.3f} s); Ray - local paired median {paired:+.3f} s, "
                  f"ratio x{ro / lo:.2f}; kernel execution {statistics.median(pr['local_exec']):.2f} s vs "
                  f"{statistics.median(pr['ray_exec']):.2f} s", flush=True)
        for parallel in args.parallel:            # interleaved: a busy spell weighs on both executors
            for executor in args.executors:
                spec = args.ray if executor == "ray" else "local"
                r = measure(prepared, Path(tmp) / f"{executor}-{parallel}", spec, parallel, args)
                results.append(r)
                print(f"{executor:<6} --parallel {parallel}: {r['experiments']} experiments in {r['wall_s']:.1f} s = "
                      f"{r['per_hour']:.0f}/hour; experiment wall {r['exp_wall_s']:.1f} s, loop overhead "
                      f"{r['exp_overhead_s']:.1f} s ({100 * r['exp_overhead_share']:.1f} %); per run (median of "
                      f"{r['runs']}): exec {statistics.median(r['run_exec_s']):.2f} s, overhead "
                      f"{statistics.median(r['run_overhead_s']):.2f} s"
                      + (f", transfers {statistics.median(r['transfer_s']):.3f} s" if r["transfer_s"] else "")
                      + f"  [{r['lanes']}; devices {', '.join(r['devices'])}]", flush=True)
    by = {(r["executor"], r["parallel"]): r for r in results}
    for parallel in args.parallel:
        local, ray = by.get(("local", parallel)), by.get(("ray", parallel))
        if local and ray:
            lo, ro = statistics.median(local["run_overhead_s"]), statistics.median(ray["run_overhead_s"])
            print(f"--parallel {parallel}: Ray per-run overhead {ro:.2f} s vs local {lo:.2f} s (+{ro - lo:.2f} s, "
                  f"x{ro / lo:.2f}); throughput Ray/local x{ray['per_hour'] / local['per_hour']:.2f}; same decisions: "
                  f"{local['decisions'] == ray['decisions']}")
    for executor in args.executors:
        one, two = by.get((executor, 1)), by.get((executor, 2))
        if one and two:
            print(f"{executor}: --parallel 2 / --parallel 1 throughput x{two['per_hour'] / one['per_hour']:.2f}")
    if by.get(("local", 1)) and by.get(("ray", 1)):
        print("N nodes (arithmetic from the --parallel 1 figures; see scaling()):")
        for line in scaling(by[("local", 1)], by[("ray", 1)], lanes_per_node=max(1, len(gpus))):
            print(line)
    print(json.dumps([{k: v for k, v in r.items() if k not in ("run_overhead_s", "run_exec_s", "transfer_s")}
                      | {"run_overhead_median_s": round(statistics.median(r["run_overhead_s"]), 4)}
                      for r in results], default=str))


if __name__ == "__main__":
    main()

"""How fast `agentx serve` answers with a big KB: the experiments page with N experiments.

Makes a workspace from the movielens-ctr template (no training), writes N experiments with
a verdict each (a third of them with a pull request) into its KB, starts the real app under
uvicorn on 127.0.0.1, and times whole HTTP requests (connect, query, render, transfer) from
a client in this process: the experiments page, a filtered one, one experiment, the run
status. Prints medians and p95s, then one JSON line.

    .venv/bin/python benchmarks/web.py [--experiments 1000] [--requests 30]
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
import uvicorn  # noqa: E402

from agentx.web.server import create_app  # noqa: E402
from knowledge import KnowledgeBase  # noqa: E402
from tools.git_repo import WorkspaceRepo  # noqa: E402

DECISIONS = ("ship", "reject", "inconclusive", "vetoed")


def populate(kb: KnowledgeBase, n: int) -> None:
    rng = random.Random(0)
    with kb.session() as s:
        for i in range(n):
            exp = s.add_experiment(title=f"Set knobs LR={rng.uniform(1e-4, 1e-2):.5f}", slug=f"lr-{i}", recipe="knobs",
                                   params={"LR": i}, source="brainstorm", status="evaluated",
                                   branch=f"agentx/E{i + 1:04d}-lr", base_commit="0" * 40, head_commit="1" * 40,
                                   brain="heuristic brain", harness_version=1)
            delta = rng.gauss(0, 0.004)
            s.add_verdict(experiment_id=exp, decision=rng.choice(DECISIONS), metric="auc", control=0.78,
                          treatment=0.78 + delta, delta=delta, ci_low=delta - 0.003, ci_high=delta + 0.003,
                          n_seeds=2, guardrails=[], rationale="synthetic", sandbox="bwrap")
            if i % 3 == 0:
                s.upsert_pull_request(experiment_id=exp, branch=f"agentx/E{i + 1:04d}-lr", title=f"E{i + 1:04d}",
                                      base_commit="0" * 40, head_commit="1" * 40, state="open")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(client: httpx.Client, url: str, n: int) -> list[float]:
    for _ in range(3):                                   # warm-up: imports, templates, DuckDB's first connect
        assert client.get(url).status_code == 200, url
    out = []
    for _ in range(n):
        started = time.perf_counter()
        response = client.get(url)
        out.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (url, response.status_code)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = WorkspaceRepo.init_from_template(Path(tmp) / "ws", "movielens-ctr")
        kb = KnowledgeBase.for_workspace(repo.root)
        started = time.perf_counter()
        populate(kb, args.experiments)
        print(f"KB with {args.experiments} experiments written in {time.perf_counter() - started:.1f} s")
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(create_app(repo.root), host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        figures = {}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            page = client.get("/experiments").text
            assert page.count("<tr>") >= args.experiments, "the page does not list every experiment"
            for name, url in (("experiments_page", "/experiments"), ("experiments_ship", "/experiments?decision=ship"),
                              ("experiments_sorted", "/experiments?sort=delta&desc=true"),
                              ("experiment", f"/experiments/E{args.experiments // 2:04d}"), ("run_status", "/api/run")):
                ms = timed(client, url, args.requests)
                figures[name] = {"median_ms": round(statistics.median(ms), 1),
                                 "p95_ms": round(sorted(ms)[int(0.95 * (len(ms) - 1))], 1)}
                print(f"{url:40s} median {figures[name]['median_ms']:7.1f} ms   p95 {figures[name]['p95_ms']:7.1f} ms"
                      f"   ({args.requests} requests, {len(page) // 1024} KiB page)" if name == "experiments_page" else
                      f"{url:40s} median {figures[name]['median_ms']:7.1f} ms   p95 {figures[name]['p95_ms']:7.1f} ms")
        server.should_exit = True
        thread.join(timeout=10)
    target = 300.0
    ok = figures["experiments_page"]["median_ms"] < target
    print(f"experiments page with {args.experiments} experiments: median {figures['experiments_page']['median_ms']} ms "
          f"({'under' if ok else 'OVER'} the {target:.0f} ms target)")
    print(json.dumps({"experiments": args.experiments, "requests": args.requests, **figures}))


if __name__ == "__main__":
    main()

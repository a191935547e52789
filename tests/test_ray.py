"""The Ray executor on a real multi-node cluster on this machine (tests/ray_nodes.py): a head
without CPUs and worker nodes started with `ray start`, each its own process group, ports,
resources and slot folder. Runs execute in sandboxed kernels on a worker; the harness
judges them here. Killing a worker mid-run ends, within a bounded time, as a retry on
another worker or as a `lost` run that is never judged as the code's failure."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import pytest

from agentx.context import Workspace
from conftest import TINY_TRAIN
from ray_nodes import Cluster, hermetic, restore, wait_for
from tools.executors import ExecutorSpec
from tools.executors.ray_cluster import RECEIVED, connect, disconnect
from tools.git_repo import WorkspaceRepo

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    nodes = Cluster(tmp_path_factory.mktemp("ray"))
    before = hermetic()
    try:
        nodes.start_head()
        nodes.add_worker("w1")
        spec = ExecutorSpec("ray", nodes.address)
        connect(spec)          # this process's connection; the executors opened below share it
        nodes.wait_alive("w1")
        yield nodes
    finally:
        disconnect()
        nodes.stop()
        restore(before)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def open_ws(root: Path, cluster: Cluster, **kw) -> Workspace:
    return Workspace.open(root, executor=f"ray:{cluster.address}", **kw)


def test_a_run_executes_on_the_worker_and_no_label_reaches_it(cluster, tiny_template, tmp_path):
    WorkspaceRepo.init_from_template(tmp_path / "ws", tiny_template)
    with open_ws(tmp_path / "ws", cluster, warm_kernels=True) as ws:
        checkout, commit = ws.base_checkout()
        outcome = ws.harness.run(checkout, commit, tier="micro", seed=0, arm="baseline")
        assert outcome.ok, outcome.failure_detail
        splits = ws.harness.splits
        labelled = {sha256(splits.file(split)) for split in ("train", "valid", "test")}
    (finished,) = [e["payload"] for e in ws.kb.events("run_finished")]
    assert finished["executor"] == "ray" and finished["node"].endswith(cluster.node_id("w1")[:8])
    run_dir = Path(ws.kb.get_run(outcome.run_id)["run_dir"])
    assert (run_dir / "predictions" / "test.csv").is_file() and (run_dir / "kernel.log").is_file()
    assert ws.kb.metrics_for(outcome.run_id)[("test", "auc")] > 0.5
    received = {f["path"]: f for f in json.loads((run_dir / RECEIVED).read_text())}
    code = {f"work/{p.relative_to(checkout).as_posix()}" for p in checkout.rglob("*")
            if p.is_file() and ".git" not in p.parts}
    assert set(received) == code | {"run/train.csv", "run/valid.csv", "run/test.csv", "run/run.json"}
    assert "label" in received["run/train.csv"]["header"]                  # training rows keep theirs
    for split in ("valid", "test"):
        assert received[f"run/{split}.csv"]["header"] == ["row_id", "user_id", "item_id"]
    assert not labelled & {f["sha256"] for f in received.values()}         # no labelled file, whole
    assert not list(cluster.nodes[1].slots.iterdir())                     # nothing of the run stays on the node


def test_a_cluster_reached_through_its_ray_client_server(cluster, tiny_template, tmp_path):
    """`ray://HOST:PORT` from a process that is not a node (a Ray Client driver: another
    process, since this one is connected to the cluster directly)."""
    WorkspaceRepo.init_from_template(tmp_path / "ws", tiny_template)
    script = f"""
import sys
sys.path[:0] = {[str(Path(__file__).resolve().parent.parent)]!r}
from agentx.context import Workspace
with Workspace.open({str(tmp_path / 'ws')!r}, executor="ray://127.0.0.1:{cluster.client_port}") as ws:
    checkout, commit = ws.base_checkout()
    outcome = ws.harness.run(checkout, commit, tier="micro", seed=0, arm="baseline")
    (finished,) = [e["payload"] for e in ws.kb.events("run_finished")]
    print("OUTCOME", outcome.status, finished["executor"], finished["node"], outcome.metric("test", "auc"))
"""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("OUTCOME")]
    _, status, executor, node, auc = line.split()
    assert (status, executor) == ("ok", "ray") and node.endswith(cluster.node_id("w1")[:8]) and float(auc) > 0.5


def knob_loop(root: Path, executor: str) -> list[tuple]:
    """Three heuristic-brain experiments at the micro tier (Optuna draws seeded by the history,
    paired seeds 0 and 1): each experiment's knob values, decision and effects."""
    from agentx.brains import make_brains
    from agentx.graph import LoopContext, run_loop
    from agentx.state import Budget
    from agents.evaluator import EvalSettings

    with Workspace.open(root, executor=executor, warm_kernels=True, lock=True, committed_only=True) as ws:
        brains = make_brains(ws.kb)
        ctx = LoopContext(ws, brains.brainstorm, brains.developer, EvalSettings(tier="micro", seeds=2, max_seeds=2),
                          evolve_every=0)
        result = run_loop(ctx, Budget.build(experiments=3))
        assert len(result.finished) == 3, result
        rows = []
        for experiment in ws.kb.experiments():
            (verdict,) = ws.kb.verdicts(experiment["id"])
            rows.append((experiment["title"], verdict["decision"], verdict["delta"], verdict["ci_low"],
                         verdict["ci_high"], verdict["valid_delta"]))
        executors = {e["payload"]["executor"] for e in ws.kb.events("run_finished")}
        assert executors == {executor.split(":")[0]}, executors
    return rows


def test_the_loop_on_ray_makes_the_decisions_the_local_executor_makes(cluster, tmp_path):
    """The same repo, brain and seeds: the same experiments and verdicts, to the last digit."""
    from click_repo import adopted_click_repo

    local = knob_loop(adopted_click_repo(tmp_path / "a"), "local")
    on_ray = knob_loop(adopted_click_repo(tmp_path / "b"), f"ray:{cluster.address}")
    print("decisions:", local)
    assert on_ray == local
    assert len({row[0] for row in local}) == 3 and any(row[2] for row in local)   # three changes, real effects


SLOW_TRAIN = TINY_TRAIN.replace("def main(run_dir):", "def main(run_dir):\n    import time\n    time.sleep(8)")


def run_in_thread(fn) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - the test inspects what the thread raised
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def node_with_the_run(cluster: Cluster, timeout_s: float = 60):
    """The worker whose slot folder holds a run's unpacked inputs, once it does."""
    def holder():
        return next((n for n in cluster.nodes[1:] if n.proc.poll() is None and any(n.slots.glob("*/run/run.json"))),
                    None)
    return wait_for(holder, timeout_s, "a worker received the run", every=0.05)


def assert_no_labels_on(node) -> None:
    """What the worker holds on its own disk mid-run: label-free valid and test rows."""
    (slot,) = [p for p in node.slots.iterdir() if (p / "run" / "run.json").is_file()]
    for split in ("valid", "test"):
        header = (slot / "run" / f"{split}.csv").read_text().splitlines()[0].split(",")
        assert header == ["row_id", "user_id", "item_id"], header
    assert "label" in (slot / "run" / "train.csv").read_text().splitlines()[0]


def test_a_worker_killed_mid_run_retries_the_run_on_another_worker(cluster, tiny_template, tmp_path):
    cluster.add_worker("w2")
    cluster.wait_alive("w1", "w2")
    (tiny_template / "train.py").write_text(SLOW_TRAIN)
    WorkspaceRepo.init_from_template(tmp_path / "ws", tiny_template)
    with open_ws(tmp_path / "ws", cluster, warm_kernels=False) as ws:
        assert ws.harness.executor.lanes == 2
        checkout, commit = ws.base_checkout()
        ws.harness.splits
        thread, box = run_in_thread(lambda: ws.harness.run(checkout, commit, tier="micro", seed=0, arm="baseline"))
        node = node_with_the_run(cluster)
        assert_no_labels_on(node)
        killed_id = cluster.node_id(node.name)
        time.sleep(1.0)                          # the entrypoint is sleeping in its kernel now
        node.kill()
        killed = time.monotonic()
        thread.join(timeout=120)
        assert not thread.is_alive(), "the run hung after its node was killed"
        retried_in = time.monotonic() - killed
    outcome = box["value"]
    print(f"retried and finished {retried_in:.1f} s after the kill")
    assert outcome.ok, outcome.failure_detail
    assert retried_in < 45                       # detection (~2 s here) + a new kernel + the 8 s run
    (finished,) = [e["payload"] for e in ws.kb.events("run_finished")]
    assert finished["attempts"] == 2 and not finished["node"].endswith(killed_id[:8])
    run_dir = Path(ws.kb.get_run(outcome.run_id)["run_dir"])
    assert (run_dir / "predictions" / "test.csv").is_file()      # it came back, though a node is gone


def test_a_worker_killed_with_no_other_to_take_the_run_loses_it_and_the_verdict_waits(cluster, tiny_template,
                                                                                      tmp_path, monkeypatch):
    from agents.evaluator import EvalSettings, evaluate
    from tools.harness import RunLost

    for node in cluster.nodes[1:]:               # the last worker standing is a fresh one
        node.kill()
    cluster.add_worker("w3")
    wait_for(lambda: [n["Resources"].get("CPU") for n in __import__("ray").nodes() if n["Alive"]
                      and n["Resources"].get("CPU")] == [1.0], 60, "only w3 has CPUs")
    monkeypatch.setenv("AGENTX_RAY_PLACEMENT_S", "5")
    WorkspaceRepo.init_from_template(tmp_path / "ws", tiny_template)
    with open_ws(tmp_path / "ws", cluster, warm_kernels=False) as ws:
        assert ws.harness.executor.lanes == 1
        base = ws.repo.head()
        exp_id = ws.kb.add_experiment(title="slow", slug="slow", params={}, source="cli", status="developed",
                                      base_commit=base)
        worktree = ws.repo.create_experiment(exp_id, "slow", base=base)
        (worktree.path / "train.py").write_text(SLOW_TRAIN)
        ws.kb.update_experiment(exp_id, head_commit=ws.repo.commit(worktree, "slow", exp_id))
        experiment = ws.kb.get_experiment(exp_id)
        settings = EvalSettings(tier="micro", seeds=1, max_seeds=1)
        thread, box = run_in_thread(lambda: evaluate(ws, experiment, worktree.path, settings))
        wait_for(lambda: ws.kb.runs(exp_id, arm="treatment"), 120, "the control ran; the treatment started")
        node = node_with_the_run(cluster)
        time.sleep(1.0)
        node.kill()
        killed = time.monotonic()
        thread.join(timeout=120)
        assert not thread.is_alive(), "the run hung after its node was killed"
        lost_in = time.monotonic() - killed
    print(f"lost {lost_in:.1f} s after the kill")
    assert isinstance(box.get("error"), RunLost), box
    assert lost_in < 30                          # detection (~2 s here) + the 5 s wait for another node
    (control,) = ws.kb.runs(exp_id, arm="control")
    (treatment,) = ws.kb.runs(exp_id, arm="treatment")
    assert control["status"] == "ok" and treatment["status"] == "lost" and treatment["failure_kind"] == "lost"
    assert "took the run within 5 s" in treatment["failure_detail"]
    assert not ws.kb.verdicts(exp_id)            # no veto: the code was not judged on a lost run

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
from ray_nodes import Cluster, wait_for
from tools.executors import ExecutorSpec
from tools.executors.ray_cluster import RECEIVED, connect, disconnect
from tools.git_repo import WorkspaceRepo

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    nodes = Cluster(tmp_path_factory.mktemp("ray"))
    spec = ExecutorSpec("ray", None)
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

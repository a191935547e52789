"""The executor seam without a cluster: spec parsing and its one-line errors, GPU lanes of
the local executor (one GPU per kernel through CUDA_VISIBLE_DEVICES, real kernels), GPU
minutes as a budget, labels refused at the packer, and agentx without Ray installed."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agentx.errors import UserError
from agentx.state import Budget
from agentx.workspace import load_manifest
from conftest import wrap_main
from knowledge import KnowledgeBase
from ray_nodes import free_port
from tools.executors import ExecutorSpec, KernelConfig, default_parallel, open_executor, parse_executor
from tools.executors.devices import free_gpus, parse_busy, parse_gpus
from tools.executors.local import LocalExecutor
from tools.executors.transfer import LabelsWouldLeave, pack_code, pack_rows, received_files, unpack_inputs
from tools.git_repo import WorkspaceRepo
from tools.harness import Harness

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("text, spec", [
    ("local", ExecutorSpec("local")), ("ray", ExecutorSpec("ray")),
    ("ray://10.0.0.5:10001", ExecutorSpec("ray", "ray://10.0.0.5:10001")),
    ("ray:head.local:6379", ExecutorSpec("ray", "head.local:6379")),
])
def test_executor_specs_parse(text, spec):
    assert parse_executor(text) == spec and str(spec) == text


@pytest.mark.parametrize("text, says", [
    ("slurm", "unknown --executor 'slurm': use local (this machine, the default), ray ("),
    ("ray://", "expected ray://HOST:PORT"),
    ("ray://10.0.0.5", "expected ray://HOST:PORT"),
    ("ray:host:99999", "expected ray:HOST:PORT"),
])
def test_a_bad_executor_spec_is_one_line_saying_what_to_write(text, says):
    with pytest.raises(UserError) as caught:
        parse_executor(text)
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_a_cluster_address_that_does_not_answer_is_one_line_within_seconds(tmp_path):
    port = free_port()                               # nothing listens there
    started = time.monotonic()
    with pytest.raises(UserError) as caught:
        open_executor(f"ray://127.0.0.1:{port}", KernelConfig(), slots=tmp_path)
    assert f"nothing answers at 127.0.0.1:{port}" in str(caught.value) and "ray start --head" in str(caught.value)
    assert "\n" not in str(caught.value) and time.monotonic() - started < 10


def test_nvidia_smi_output_is_read_into_gpus_and_busy_ones():
    listed = "0, GPU-aaaa-1111\n1, GPU-bbbb-2222\n"
    apps = "GPU-bbbb-2222, 4242\n"
    assert [g.index for g in parse_gpus(listed)] == ["0", "1"] and parse_gpus(listed)[1].uuid == "GPU-bbbb-2222"
    assert parse_busy(apps) == {"GPU-bbbb-2222"} and parse_busy("") == set()


def test_local_parallel_defaults_to_the_free_gpus_or_one():
    assert default_parallel("local") == max(1, len(free_gpus()))


@pytest.fixture
def harness(tiny_template, tmp_path):
    base = tmp_path / "ws"
    WorkspaceRepo.init_from_template(base, tiny_template)
    kb = KnowledgeBase(":memory:")
    harness = Harness(base, load_manifest(base), kb, tmp_path / "cache", memory_limit_mb=2048)
    yield harness
    harness.close()


ENV_PROBE = wrap_main("import json, os, time\n"
                      "start = time.time(); time.sleep(1.5)\n"
                      "json.dump({'cuda': os.environ.get('CUDA_VISIBLE_DEVICES'), 'start': start, 'end': time.time()}, "
                      "open(os.path.join(run_dir, 'lane.json'), 'w'))")


def test_each_run_in_flight_holds_its_own_gpu_and_a_third_waits_for_one(harness, tmp_path):
    """Two GPU lanes (indices given, as CUDA_VISIBLE_DEVICES would name them), three runs at
    once: each kernel sees exactly one GPU, never one another run holds, and GPU minutes count."""
    harness.executor.close()
    harness.executor = LocalExecutor(harness.kernel_config(), slots=harness.slots, hidden=harness.hidden,
                                     gpus=["0", "1"])
    assert harness.executor.lanes == 2 and harness.executor.default_parallel == 2
    checkout = tmp_path / "checkout"
    subprocess.run(["cp", "-r", str(harness.workspace), str(checkout)], check=True)
    (checkout / "train.py").write_text((checkout / "train.py").read_text() + "\n" + ENV_PROBE)
    harness.splits
    started = time.time()
    outcomes = []
    threads = [threading.Thread(target=lambda: outcomes.append(
        harness.run(checkout, "c0ffee", tier="micro", seed=0, arm="baseline"))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(outcomes) == 3 and all(o.ok for o in outcomes), [o.failure_detail for o in outcomes]
    lanes = [json.loads((Path(harness.kb.get_run(o.run_id)["run_dir"]) / "lane.json").read_text()) for o in outcomes]
    assert {lane["cuda"] for lane in lanes} == {"0", "1"}
    for a in lanes:                                  # a GPU is never held by two runs at once
        for b in lanes:
            if a is not b and a["cuda"] == b["cuda"]:
                assert a["end"] <= b["start"] or b["end"] <= a["start"], (a, b)
    devices = {harness.kb.get_run(o.run_id)["device"]: lane["cuda"] for o, lane in zip(outcomes, lanes)}
    assert set(devices) <= {"cuda:0", "cuda:1"} and all(d == f"cuda:{c}" for d, c in devices.items())
    spent = harness.gpu_minutes(since=started - 1)
    assert spent == pytest.approx(sum(o.exec_s for o in outcomes) / 60, rel=1e-6) and spent > 3 * 1.5 / 60
    assert harness.gpu_minutes(since=time.time() + 60) == 0.0          # nothing started after that
    budget = Budget.build(gpu_minutes=spent / 2, now=started - 1)
    assert budget.stop_reason(started=0, llm_spent=0.0, gpu_spent=spent).startswith("GPU minutes budget reached")
    assert Budget.build(gpu_minutes=spent * 10).stop_reason(started=0, llm_spent=0.0, gpu_spent=spent) is None


def test_the_loop_stops_on_its_gpu_minutes_from_the_kb(harness):
    """LoopContext.stop_reason reads the GPU minutes of the KB's runs since the budget began."""
    from types import SimpleNamespace

    from agentx.graph import LoopContext

    harness.kb.add_run(id="R-gpu", arm="baseline", status="running", device="cuda:0")
    harness.kb.finish_run("R-gpu", status="ok", exec_s=90.0, device="cuda:0")
    ctx = LoopContext(SimpleNamespace(harness=harness), brainstorm=None, developer=None)
    state = {"budget": Budget.build(gpu_minutes=1.0, now=time.time() - 60).model_dump(), "started": 0}
    assert ctx.stop_reason(state) == "GPU minutes budget reached (1.5 of 1 min)"
    state["budget"]["gpu_minutes"] = 2.0
    assert ctx.stop_reason(state) is None


def test_labels_never_pack_and_what_is_sent_is_recorded(tmp_path):
    rows = tmp_path / "rows"
    rows.mkdir()
    (rows / "train.csv").write_text("row_id,x,label\n1,0.5,1\n")
    (rows / "valid.csv").write_text("row_id,x\n2,0.1\n")
    (rows / "test.csv").write_text("row_id,x,label\n3,0.2,0\n")          # a label where none may be
    code = tmp_path / "code"
    (code / ".git").mkdir(parents=True)
    (code / ".git" / "config").write_text("secret")
    (code / "train.py").write_text("def main(run_dir): pass\n")
    with pytest.raises(LabelsWouldLeave, match="test.csv has the label column 'label'"):
        pack_rows(rows, "label")
    (rows / "test.csv").write_text("row_id,x\n3,0.2\n")
    slot = tmp_path / "slot"
    (slot / "work").mkdir(parents=True)
    (slot / "run").mkdir()
    got = unpack_inputs(pack_code(code), pack_rows(rows, "label"), {"seed": 0}, slot)
    assert [f.path for f in got] == ["run/run.json", "run/test.csv", "run/train.csv", "run/valid.csv", "work/train.py"]
    assert {f.path: f.header for f in got}["run/test.csv"] == ("row_id", "x") and (slot / "run/predictions").is_dir()
    assert received_files(slot) == got


def test_agentx_works_without_ray_installed_and_says_how_to_get_it(harness):
    """A Python where `import ray` fails: a local run works, and asking for Ray is one line."""
    script = f"""
import sys
class NoRay:
    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ModuleNotFoundError("No module named 'ray'")
sys.meta_path.insert(0, NoRay())
sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'tests')!r}]
from agentx.context import Workspace
from agentx.errors import UserError
with Workspace.open({str(harness.workspace)!r}, warm_kernels=False) as ws:
    checkout, commit = ws.base_checkout()
    run = ws.harness.run(checkout, commit, tier="micro", seed=0, arm="baseline")
    assert run.ok, run.failure_detail
assert "ray" not in sys.modules
try:
    Workspace.open({str(harness.workspace)!r}, warm_kernels=False, executor="ray")
except UserError as exc:
    print("REFUSED:", exc)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("REFUSED:")]
    assert "needs Ray, which is not installed here: pip install 'agentx[ray]'" in line


def test_parallel_runs_in_copies_of_one_context_each_drive_their_own_kernel(tmp_path):
    """LangGraph runs parallel branches in copies of the caller's context; jupyter_client
    keeps its event loop in a context variable. After the caller drove a kernel itself (a
    closed workspace's shutdown), two branches at once must not share its loop."""
    import contextvars

    from tools.sandbox import Sandbox

    with Sandbox(tmp_path) as box:
        assert box.execute("1", timeout_s=60).ok
    results = []

    def branch():
        with Sandbox(tmp_path) as box:
            results.append(box.execute("import time; time.sleep(1); 2", timeout_s=60).status)

    caller = contextvars.copy_context()
    threads = [threading.Thread(target=caller.copy().run, args=(branch,)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert results == ["ok", "ok"]


def test_the_loop_runs_two_experiments_at_once_each_on_its_own_gpu_lane(tiny_template, tmp_path):
    """--parallel 2 through the whole graph (branches, commits, the shared base checkout, the
    trusted-files ledger, the KB) with two GPU lanes: both experiments judged, their runs
    overlap in time, and two runs that overlap never hold the same GPU."""
    from agentx.app import RunOptions, run_in
    from agentx.context import Workspace
    from test_knob_search import PRIOR_KNOB, add_knobs

    slow = wrap_main("import time\ntime.sleep(0.5)")
    template = add_knobs(tiny_template, PRIOR_KNOB)
    (template / "train.py").write_text((template / "train.py").read_text() + "\n" + slow)
    WorkspaceRepo.init_from_template(tmp_path / "ws", template)
    with Workspace.open(tmp_path / "ws", warm_kernels=True, lock=True, committed_only=True) as ws:
        ws.harness.executor.close()
        ws.harness.executor = LocalExecutor(ws.harness.kernel_config(), slots=ws.harness.slots,
                                            hidden=ws.harness.hidden, gpus=["0", "1"])
        result = run_in(ws, RunOptions(experiments=2, parallel=2, evolve_every=0), lambda _: None)
        assert sorted(result.finished) == ["E0001", "E0002"]
        assert all(e["status"] == "evaluated" for e in ws.kb.experiments())
        runs = ws.kb.query("SELECT experiment_id, device, epoch(started_at) AS a, epoch(finished_at) AS b "
                           "FROM runs WHERE experiment_id IS NOT NULL")
    overlapping = [(r, s) for r in runs for s in runs if r is not s and r["a"] < s["b"] and s["a"] < r["b"]]
    assert any(r["experiment_id"] != s["experiment_id"] for r, s in overlapping)   # both were in flight at once
    assert all(r["device"] != s["device"] for r, s in overlapping), overlapping

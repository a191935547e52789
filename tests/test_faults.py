"""Faults end as run failures, never as harness crashes; bad input gets a one-line error.

Run owners and abandoned rows (KnowledgeBase.abandon_orphans), the workspace lock (one writer
per workspace, agentx/lock.py), uncommitted changes (agentx/committed.py), unknown tiers,
and two real `agentx run` processes on one workspace (slow: they train micro models)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from agentx.cli import app
from agentx.committed import uncommitted_paths
from agentx.lock import WorkspaceBusyError, WorkspaceLock, lock_workspace
from agentx.workspace import load_manifest
from knowledge import KnowledgeBase
from tools.git_repo import WorkspaceRepo

@pytest.fixture
def ws(tmp_path) -> Path:
    root = tmp_path / "ws"
    WorkspaceRepo.init_from_template(root, "movielens-ctr")
    return root


@contextlib.contextmanager
def lock_holder(workspace: Path, seconds: float = 30):
    """A real process that holds the workspace lock until it is killed (or `seconds` pass)."""
    code = ("import sys, time\n"
            "from agentx.lock import WorkspaceLock\n"
            "sys.argv = ['agentx', 'run', '--workspace', 'W']\n"
            f"WorkspaceLock({str(workspace)!r}).acquire()\n"
            "print('held', flush=True)\n"
            f"time.sleep({seconds})\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def dead_pid() -> tuple[int, float]:
    """The pid and start time of a process that has ended and been reaped."""
    proc = subprocess.Popen(["sleep", "0.2"])
    started = psutil.Process(proc.pid).create_time()
    proc.wait()
    return proc.pid, started


# -- run owners ----------------------------------------------------------------------------

def test_add_run_records_the_current_process_as_owner():
    kb = KnowledgeBase(":memory:")
    run = kb.get_run(kb.add_run(arm="baseline"))
    assert run["owner_pid"] == os.getpid()
    assert run["owner_host"] == socket.gethostname()
    assert run["owner_started"] == pytest.approx(psutil.Process().create_time(), abs=0.01)
    given = kb.get_run(kb.add_run(arm="baseline", owner_pid=None, owner_host="elsewhere"))
    assert (given["owner_pid"], given["owner_host"]) == (None, "elsewhere")


def test_abandon_orphans_marks_only_rows_whose_owner_is_gone():
    kb = KnowledgeBase(":memory:")
    pid, started = dead_pid()
    dead = kb.add_run(arm="control", seed=0, owner_pid=pid, owner_started=started)
    live = kb.add_run(arm="control", seed=1)                                  # this test process
    unowned = kb.add_run(arm="control", seed=2, owner_pid=None, owner_started=None, owner_host=None)
    reused = kb.add_run(arm="control", seed=3, owner_pid=os.getpid(),          # our pid, another start time
                        owner_started=psutil.Process().create_time() - 3600)
    remote = kb.add_run(arm="control", seed=4, owner_pid=pid, owner_started=started, owner_host="elsewhere")
    finished = kb.add_run(arm="control", seed=5, owner_pid=pid, owner_started=started)
    kb.finish_run(finished, status="ok")

    assert kb.abandon_orphans() == [dead, unowned, reused]
    status = {r["id"]: r for r in kb.runs()}
    for run_id in (dead, unowned, reused):
        row = status[run_id]
        assert (row["status"], row["failure_kind"]) == ("abandoned", "abandoned")
        assert "ended without finishing the run" in row["failure_detail"]
        assert row["finished_at"] is not None
    assert f"process {pid}" in status[dead]["failure_detail"]
    assert "belongs to another process" in status[reused]["failure_detail"]
    assert "no owning process was recorded" in status[unowned]["failure_detail"]
    assert [status[r]["status"] for r in (live, remote, finished)] == ["running", "running", "ok"]
    events = kb.events("runs_abandoned")
    assert len(events) == 1 and events[0]["payload"]["runs"] == [dead, unowned, reused]

    assert kb.abandon_orphans() == []                  # idempotent: nothing new, no new event
    assert len(kb.events("runs_abandoned")) == 1


# -- the workspace lock ------------------------------------------------------------------

def test_lock_refuses_while_held_and_frees_when_the_holder_is_killed(ws):
    with lock_holder(ws) as holder:
        lock = WorkspaceLock(ws)
        with pytest.raises(WorkspaceBusyError) as caught:
            lock.acquire()
        message = str(caught.value)
        assert "\n" not in message
        assert f"pid {holder.pid}" in message and "agentx run --workspace W" in message
        assert f"kill {holder.pid}" in message and "--wait" in message and "since " in message
        assert not lock.held
        os.kill(holder.pid, signal.SIGKILL)            # flock dies with its process
        holder.wait()
        lock.acquire()
    assert lock.held
    assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    lock.release()
    assert not lock.held and lock.path.read_text() == ""


def test_lock_with_wait_says_once_who_holds_it_then_takes_it(ws):
    said = []
    with lock_holder(ws, seconds=1.5) as holder:
        started = time.monotonic()
        lock = WorkspaceLock(ws)
        lock.acquire(wait=True, say=said.append)
        assert time.monotonic() - started > 0.5
        lock.release()
    assert len(said) == 1 and f"pid {holder.pid}" in said[0] and "waiting for" in said[0]


def test_taking_the_lock_abandons_runs_left_by_dead_processes(ws):
    kb = KnowledgeBase.for_workspace(ws)
    pid, started = dead_pid()
    orphan = kb.add_run(arm="baseline", owner_pid=pid, owner_started=started)
    said = []
    lock = lock_workspace(ws, kb, say=said.append)
    try:
        assert kb.get_run(orphan)["status"] == "abandoned"
        assert said == [f"marked 1 run(s) that an ended process left running as abandoned: {orphan}"]
    finally:
        lock.release()


# -- the command line: one-line errors -----------------------------------------------------

def one_line(result) -> str:
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize("command", [["baseline"], ["run"], ["select-features", "--run"]])
def test_unknown_tier_is_one_line_listing_the_valid_ones(ws, command):
    result = CliRunner().invoke(app, [*command, "--workspace", str(ws), "--tier", "huge"])
    assert result.exit_code == 2
    assert one_line(result) == "error: unknown tier 'huge': valid tiers are micro, full"


def test_training_commands_refuse_while_another_command_holds_the_workspace(ws):
    runner = CliRunner()
    with lock_holder(ws) as holder:
        for command in (["run", "--tier", "micro"], ["baseline", "--tier", "micro"], ["ask", "wider embeddings"],
                        ["pr", "reject", "1", "--reason", "no"]):
            result = runner.invoke(app, [*command, "--workspace", str(ws)])
            assert result.exit_code == 2, result.output
            line = one_line(result)
            assert line.startswith(f"error: workspace {ws} is busy: pid {holder.pid}")
            assert line.endswith(f"kill {holder.pid}")
        for command in (["experiments"], ["pr", "list"], ["lessons"]):     # readers take no lock
            assert runner.invoke(app, [*command, "--workspace", str(ws)]).exit_code == 0


def test_uncommitted_changes_to_editable_or_protected_files_are_found(ws):
    repo, rules = WorkspaceRepo(ws), load_manifest(ws).paths
    (ws / "notes.txt").write_text("mine")                      # untracked, outside the rules: fine
    (ws / ".agentx").mkdir(exist_ok=True)
    (ws / ".agentx" / "scratch").write_text("state")
    assert uncommitted_paths(repo, rules) == []
    with (ws / "model.py").open("a") as f:                    # editable, unstaged
        f.write("# tweak\n")
    (ws / "features.yaml").write_text("[]\n")                  # protected, staged
    repo.repo.git.add("features.yaml")
    (ws / "data.py").unlink()                                  # protected, deleted
    assert uncommitted_paths(repo, rules) == ["data.py", "features.yaml", "model.py"]


@pytest.mark.parametrize("command", [["baseline", "--tier", "micro"], ["run", "--tier", "micro"],
                                     ["ask", "wider embeddings"]])
def test_training_commands_refuse_uncommitted_changes_in_one_line(ws, command):
    with (ws / "train.py").open("a") as f:
        f.write("# uncommitted\n")
    (ws / "agentx.toml").write_text((ws / "agentx.toml").read_text() + "\n# uncommitted\n")
    result = CliRunner().invoke(app, [*command, "--workspace", str(ws)])
    assert result.exit_code == 2
    line = one_line(result)
    assert "uncommitted changes to agentx.toml, train.py;" in line
    assert "agentx trains committed code only: commit them (`git commit`) or stash them (`git stash`)" in line


# -- two real `agentx run` on one workspace --------------------------------------------------

def wait_for_lock(ws: Path, pid: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError, ValueError):
            if json.loads((ws / ".agentx" / "lock").read_text() or "{}").get("pid") == pid:
                return
        time.sleep(0.1)
    raise AssertionError("the first run never took the lock:\n" + (proc.stdout.read() if proc.poll() else ""))


@pytest.mark.slow
def test_two_runs_on_one_workspace_never_train_a_control_twice(ws):
    command = [sys.executable, "-m", "agentx.cli", "run", "--workspace", str(ws), "--experiments", "1",
               "--tier", "micro", "--seeds", "2", "--max-seeds", "2"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_lock(ws, first.pid, first)
        refused = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        lines = (refused.stdout + refused.stderr).strip().splitlines()
        assert len(lines) == 1 and f"pid {first.pid}" in lines[0] and f"kill {first.pid}" in lines[0]

        waited = subprocess.run([*command, "--wait"], capture_output=True, text=True, timeout=900)
        first_out, _ = first.communicate(timeout=900)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, first_out
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert waited.stdout.count("waiting for") == 1 and f"pid {first.pid}" in waited.stdout

    kb = KnowledgeBase.for_workspace(ws)
    assert len(kb.experiments()) == 2
    controls = kb.query("SELECT commit_sha, tier, seed, count(*) AS n FROM runs WHERE arm = 'control' "
                        "GROUP BY ALL ORDER BY seed")
    assert [(c["tier"], c["seed"], c["n"]) for c in controls] == [("micro", 0, 1), ("micro", 1, 1)]
    assert kb.runs(status="running") == []
    starts = [e["id"] for e in kb.events("loop_started")]
    ends = [e["id"] for e in kb.events("loop_finished")]
    assert len(starts) == len(ends) == 2 and starts[0] < ends[0] < starts[1] < ends[1]   # one after the other


def test_an_entrypoint_that_does_not_exist_is_one_line_before_any_kernel(tiny_template, tmp_path):
    manifest = (tiny_template / "agentx.toml").read_text().replace('entrypoint = "train:main"',
                                                                   'entrypoint = "trainer:main"')
    (tiny_template / "agentx.toml").write_text(manifest)
    WorkspaceRepo.init_from_template(tmp_path / "ws", tiny_template)
    result = CliRunner().invoke(app, ["baseline", "--workspace", str(tmp_path / "ws"), "--seeds", "1",
                                      "--tier", "micro"])
    assert result.exit_code == 2 and "'trainer'" in one_line(result) and "[train] entrypoint" in one_line(result)
    assert not KnowledgeBase.for_workspace(tmp_path / "ws").query("SELECT id FROM runs")


def test_too_little_disk_is_a_disk_failure_with_the_free_space_and_the_next_seed_runs(tiny_template, tmp_path):
    """A cap larger than the disk: each run fails as `disk` before a kernel starts, naming the
    free space; the harness goes on to the next seed instead of crashing."""
    manifest = (tiny_template / "agentx.toml").read_text() + "\n[sandbox]\nrun_dir_mb = 100000000\n"
    (tiny_template / "agentx.toml").write_text(manifest)
    WorkspaceRepo.init_from_template(tmp_path / "ws", tiny_template)
    result = CliRunner().invoke(app, ["baseline", "--workspace", str(tmp_path / "ws"), "--seeds", "2",
                                      "--tier", "micro"])
    assert result.exit_code == 1, result.output
    rows = KnowledgeBase.for_workspace(tmp_path / "ws").query("SELECT seed, status, failure_kind, failure_detail "
                                                               "FROM runs ORDER BY seed")
    assert [(r["seed"], r["status"], r["failure_kind"]) for r in rows] == [(0, "disk", "disk"), (1, "disk", "disk")]
    assert "GB are free on the disk" in rows[0]["failure_detail"]

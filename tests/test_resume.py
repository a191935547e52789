"""kill -9 in the middle of `agentx run`, then the same command again: it resumes, and the
run the killed process was training is marked abandoned (not left `running` for good)."""

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest

from knowledge import KnowledgeBase
from tools.git_repo import WorkspaceRepo

pytestmark = pytest.mark.slow


def test_killed_run_resumes_without_redoing_finished_experiments(tmp_path):
    ws = tmp_path / "ws"
    WorkspaceRepo.init_from_template(ws, "movielens-ctr")
    command = [sys.executable, "-m", "agentx.cli", "run", "--workspace", str(ws), "--experiments", "3",
               "--tier", "micro", "--seeds", "2", "--max-seeds", "2"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    kb = KnowledgeBase.for_workspace(ws)
    deadline = time.time() + 240
    while time.time() < deadline and first.poll() is None:
        if kb.events("experiment_recorded") and kb.runs(status="running"):   # kill it mid-run
            break
        kb.release()                                   # leave the KB file to the run between polls
        time.sleep(0.2)
    assert first.poll() is None, "the run ended before it could be killed:\n" + first.stdout.read().decode()
    os.kill(first.pid, signal.SIGKILL)                 # kill -9 of the agentx process itself
    first.wait()
    time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError):      # what is left of its group, as a reboot would
        os.killpg(first.pid, signal.SIGKILL)

    done_before = {e["experiment_id"] for e in kb.events("experiment_recorded")}
    runs_before = {r["id"] for r in kb.runs()}
    orphans = {r["id"] for r in kb.runs(status="running")}   # its process is gone: nobody finishes them
    assert done_before and orphans

    second = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resuming unfinished run" in second.stdout
    assert f"marked {len(orphans)} run(s) that an ended process left running as abandoned" in second.stdout
    assert kb.runs(status="running") == []
    slots = ws / ".agentx" / "slots"
    assert not slots.exists() or not list(slots.iterdir())     # the killed process's kernel slots are gone too
    for run_id in orphans:
        run = kb.get_run(run_id)
        assert (run["status"], run["failure_kind"]) == ("abandoned", "abandoned")
        assert f"process {first.pid}" in run["failure_detail"]
    assert [set(e["payload"]["runs"]) for e in kb.events("runs_abandoned")] == [orphans]

    experiments = kb.experiments()
    assert len(experiments) == 3 and all(e["status"] in ("evaluated", "failed") for e in experiments)
    for exp_id in done_before:                         # finished work untouched
        assert len(kb.verdicts(exp_id)) <= 1
        assert len([e for e in kb.events("experiment_recorded") if e["experiment_id"] == exp_id]) == 1
        assert {r["id"] for r in kb.runs(exp_id)} <= runs_before
    assert len(kb.events("loop_resumed")) == 1

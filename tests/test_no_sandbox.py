"""A machine without bubblewrap: one line that says how to install it, or an explicit opt-out
whose every run, verdict and pull request says "unsandboxed"."""

import pytest
from typer.testing import CliRunner

from agentx.cli import app
from agentx.context import Workspace
from agentx.graph import run_loop
from agentx.state import Budget
from fake_llm import FakeChatModel, edit_reply
from conftest import TINY_TRAIN
from test_graph import BETTER_TRAIN, llm_context, proposal
from tools.confine import SandboxUnavailable, probe
from tools.git_repo import WorkspaceRepo


@pytest.fixture
def no_bwrap(monkeypatch):
    monkeypatch.setenv("AGENTX_BWRAP", "/nonexistent/bwrap")    # as on a machine without the package


@pytest.fixture
def tiny_ws(tiny_template, tmp_path):
    WorkspaceRepo.init_from_template(tmp_path / "ws", tiny_template)
    return tmp_path / "ws"


def test_without_bubblewrap_training_refuses_in_one_line(no_bwrap, tiny_ws):
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
        probe()
    result = CliRunner().invoke(app, ["baseline", "--workspace", str(tiny_ws), "--seeds", "1", "--tier", "micro"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no OS sandbox for experiment code"), result.output
    assert "bubblewrap" in lines[0] and "--unsandboxed" in lines[0] and "Traceback" not in result.output


def test_the_opt_out_runs_and_says_so(no_bwrap, tiny_ws):
    result = CliRunner().invoke(app, ["baseline", "--workspace", str(tiny_ws), "--seeds", "1", "--tier", "micro",
                                      "--unsandboxed"])
    assert result.exit_code == 0, result.output
    assert "without the OS sandbox" in result.output
    assert "unsandboxed: these runs ran without the OS sandbox" in result.output
    with Workspace.open(tiny_ws, warm_kernels=False, sandboxed=False) as ws:
        assert {r["sandbox"] for r in ws.kb.query("SELECT sandbox FROM runs")} == {"none"}
        model = FakeChatModel()
        model.enqueue(proposal())
        model.enqueue(edit_reply("prior weight 2", "train.py", TINY_TRAIN, BETTER_TRAIN))
        run_loop(llm_context(ws, model), Budget(max_experiments=1))
        (verdict,) = ws.kb.verdicts("E0001")
        assert verdict["sandbox"] == "none" and "[unsandboxed" in verdict["rationale"]
        assert any(g["name"] == "sandbox" and g["value"].startswith("UNSANDBOXED") for g in verdict["guardrails"])
        assert "**Unsandboxed.**" in ws.kb.pull_requests()[0]["body"]
    shown = CliRunner().invoke(app, ["show", "E0001", "--workspace", str(tiny_ws)])
    assert "unsandboxed" in shown.output
    listed = CliRunner().invoke(app, ["experiments", "--workspace", str(tiny_ws)])
    assert "(unsandboxed)" in listed.output


def test_a_sandboxed_verdict_says_bwrap(tiny_ws):
    with Workspace.open(tiny_ws, warm_kernels=False) as ws:
        model = FakeChatModel()
        model.enqueue(proposal())
        model.enqueue(edit_reply("prior weight 2", "train.py", TINY_TRAIN, BETTER_TRAIN))
        run_loop(llm_context(ws, model), Budget(max_experiments=1))
        (verdict,) = ws.kb.verdicts("E0001")
        assert verdict["sandbox"] == "bwrap" and "unsandboxed" not in verdict["rationale"]
        assert {g["name"]: g["value"] for g in verdict["guardrails"]}["sandbox"] == "bwrap, no network"
        assert "Unsandboxed" not in ws.kb.pull_requests()[0]["body"]

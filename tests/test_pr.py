"""Pull-request review: approve merges, a moved main is refused, reject becomes a lesson; the CLI."""

import json

import pytest
from typer.testing import CliRunner

from agentx import pr
from agentx.cli import app
from agentx.context import Workspace
from agentx.errors import UserError
from agentx.graph import run_loop
from agentx.state import Budget
from fake_llm import FakeChatModel
from test_graph import BETTER_TRAIN, llm_context, proposal
from tools.git_repo import WorkspaceRepo


@pytest.fixture
def reviewed_ws(tiny_template, tmp_path):
    WorkspaceRepo.init_from_template(tmp_path / "ws", tiny_template)
    with Workspace.open(tmp_path / "ws", warm_kernels=False) as ws:
        model = FakeChatModel()
        model.enqueue(proposal())
        model.enqueue({"summary": "prior weight 2", "files": [{"path": "train.py", "content": BETTER_TRAIN}]})
        run_loop(llm_context(ws, model), Budget(max_experiments=1))
        yield ws


def test_approve_merges_the_branch_into_main(reviewed_ws):
    ws = reviewed_ws
    (request,) = ws.kb.pull_requests()
    assert "| seed | control | treatment | delta |" in request["body"] and "### Guardrails" in request["body"]
    merged = pr.approve(ws, request["id"])
    assert ws.repo.head() == merged and "2 * prior" in (ws.root / "train.py").read_text()
    assert ws.kb.get_pull_request(request["id"])["state"] == "merged"
    assert ws.kb.get_experiment(request["experiment_id"])["status"] == "merged"
    with pytest.raises(UserError, match="is merged"):
        pr.approve(ws, request["id"])


def test_approve_is_refused_when_main_moved(reviewed_ws):
    ws = reviewed_ws
    (ws.root / "NOTES.md").write_text("someone else's change\n")
    ws.repo.repo.git.add("NOTES.md")
    ws.repo.repo.git.commit("-m", "Unrelated change on main")
    (request,) = ws.kb.pull_requests()
    with pytest.raises(UserError, match="main moved.*no longer applies"):
        pr.approve(ws, request["id"])
    assert ws.kb.get_pull_request(request["id"])["state"] in ("open", "draft")


def test_reject_records_a_lesson_the_brainstorm_reads(reviewed_ws):
    ws = reviewed_ws
    (request,) = ws.kb.pull_requests()
    pr.reject(ws, request["id"], "adds a smoothing constant nobody can explain")
    lessons = [lesson for lesson in ws.kb.lessons(request["experiment_id"]) if lesson["outcome"] == "rejected_by_reviewer"]
    assert lessons and "nobody can explain" in lessons[0]["text"]
    from agents.brainstorm import history_table
    assert "nobody can explain" in history_table(ws.kb)


def test_cli_lists_shows_and_reports_experiments(reviewed_ws):
    runner = CliRunner()
    ws = str(reviewed_ws.root)
    listed = runner.invoke(app, ["pr", "list", "--all", "--workspace", ws])
    assert listed.exit_code == 0 and "E0001" in listed.output
    shown = runner.invoke(app, ["pr", "show", "1", "--workspace", ws])
    assert shown.exit_code == 0 and "2 * prior" in shown.output and "Evidence" in shown.output
    rows = json.loads(runner.invoke(app, ["experiments", "--json", "--workspace", ws]).output)
    assert {"id", "title", "status", "decision", "metric", "control", "treatment", "delta", "ci_low", "ci_high",
            "branch"} <= set(rows[0])
    missing = runner.invoke(app, ["pr", "show", "7", "--workspace", ws])
    assert missing.exit_code == 2 and "no pull request #7" in missing.output


def test_ask_without_a_matching_recipe_says_what_it_knows(tiny_template, tmp_path):
    WorkspaceRepo.init_from_template(tmp_path / "ws", tiny_template)
    result = CliRunner().invoke(app, ["ask", "make it sing opera", "--workspace", str(tmp_path / "ws")])
    assert result.exit_code == 2 and "found no recipe" in result.output and "DCN" in result.output
    threads = json.loads((tmp_path / "ws" / ".agentx" / "threads.json").read_text())
    assert "ask" not in threads        # the next `ask` starts afresh, it does not replay this one

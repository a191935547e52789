"""Pull-request review: approve merges only a ship verdict on an unmoved main (--force overrides,
on the record), reject becomes a lesson; the CLI."""

import json

from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentx import pr
from agentx.cli import app
from agentx.context import Workspace
from agentx.errors import UserError
from agentx.graph import run_loop
from agentx.state import Budget
from knowledge import KnowledgeBase
from conftest import TINY_TRAIN
from fake_llm import FakeChatModel, edit_reply
from test_graph import BETTER_TRAIN, BROKEN_TRAIN, llm_context, proposal
from tools.git_repo import WorkspaceRepo

# A main whose model ranks items in an arbitrary order: the honest per-item rates (TINY_TRAIN)
# beat it clearly enough on the tiny data for the evaluator to say ship.
SCRAMBLED_TRAIN = TINY_TRAIN.replace("return self.rates.get(item, self.prior)", "return (int(item) * 7919 % 31) / 100")


def reviewed(root, *answers: str):
    """Open the workspace at `root` and run one experiment whose developer writes each of
    `answers` as train.py in turn (the first, then its repairs)."""
    ws = Workspace.open(root, warm_kernels=False)
    model = FakeChatModel()
    model.enqueue(proposal())
    before = (Path(root) / "train.py").read_text()       # main's file: the first answer's search text
    for content in answers:
        model.enqueue(edit_reply("edit train.py", "train.py", before, content))
        before = content
    try:
        run_loop(llm_context(ws, model), Budget(max_experiments=1))
    except BaseException:
        ws.close()
        raise
    return ws


@pytest.fixture
def reviewed_ws(tiny_template, tmp_path):
    """An experiment judged inconclusive: its pull request is a draft."""
    WorkspaceRepo.init_from_template(tmp_path / "ws", tiny_template)
    with reviewed(tmp_path / "ws", BETTER_TRAIN) as ws:
        yield ws


@pytest.fixture
def shipped_ws(tiny_template, tmp_path):
    """An experiment judged ship: its pull request is open."""
    (tiny_template / "train.py").write_text(SCRAMBLED_TRAIN)
    WorkspaceRepo.init_from_template(tmp_path / "ws", tiny_template)
    with reviewed(tmp_path / "ws", TINY_TRAIN) as ws:
        yield ws


@pytest.fixture
def crashed_ws(tiny_template, tmp_path):
    """An experiment whose train.py crashed the micro tier and was never repaired: a draft
    pull request with a branch and no verdict."""
    WorkspaceRepo.init_from_template(tmp_path / "ws", tiny_template)
    with reviewed(tmp_path / "ws", BROKEN_TRAIN, BROKEN_TRAIN) as ws:
        yield ws


def commit_on_main(ws) -> str:
    (ws.root / "NOTES.md").write_text("someone else's change\n")
    ws.repo.repo.git.add("NOTES.md")
    ws.repo.repo.git.commit("-m", "Unrelated change on main")
    return ws.repo.head()


def test_approve_merges_a_shipped_branch_into_main(shipped_ws):
    ws = shipped_ws
    (request,) = ws.kb.pull_requests()
    assert request["state"] == "open" and ws.kb.verdicts(request["experiment_id"])[-1]["decision"] == "ship"
    assert "| seed | control | treatment | delta |" in request["body"] and "### Guardrails" in request["body"]
    approval = pr.approve(ws, request["id"])
    assert approval.overrides == []
    assert ws.repo.head() == approval.commit and "self.rates.get(item" in (ws.root / "train.py").read_text()
    merged = ws.kb.get_pull_request(request["id"])
    assert merged["state"] == "merged" and merged["review_reason"] is None
    assert ws.kb.get_experiment(request["experiment_id"])["status"] == "merged"
    assert not ws.kb.events("pr_forced")
    with pytest.raises(UserError, match="is merged"):
        pr.approve(ws, request["id"])


def test_approve_is_refused_when_main_moved_and_says_what_a_person_can_do(shipped_ws):
    ws = shipped_ws
    before = commit_on_main(ws)
    (request,) = ws.kb.pull_requests()
    result = CliRunner().invoke(app, ["pr", "approve", str(request["id"]), "--workspace", str(ws.root)])
    assert result.exit_code == 2, result.output
    line = " ".join(result.output.split())
    assert "main moved" in line and "no longer applies" in line and "re-run the experiment on the new main" in line
    assert f"agentx pr approve {request['id']} --force" in line and "allow_moved" not in line
    assert ws.kb.get_pull_request(request["id"])["state"] == "open" and ws.repo.head() == before

    forced = CliRunner().invoke(app, ["pr", "approve", str(request["id"]), "--force", "--workspace", str(ws.root)])
    assert forced.exit_code == 0, forced.output
    assert "warning: --force overrode: main moved from" in forced.output
    assert ws.repo.head() != before and (ws.root / "NOTES.md").is_file()
    assert "main moved" in ws.kb.get_pull_request(request["id"])["review_reason"]


def test_a_crashed_experiment_is_not_merged_without_force(crashed_ws):
    ws = crashed_ws
    (request,) = ws.kb.pull_requests()
    assert request["state"] == "draft" and request["head_commit"] and not ws.kb.verdicts(request["experiment_id"])
    main = ws.repo.head()
    with pytest.raises(pr.NotShippable, match="E0001 has no verdict \\(it failed before evaluation\\).*--force"):
        pr.approve(ws, request["id"])
    assert ws.repo.head() == main and "raise ValueError" not in (ws.root / "train.py").read_text()
    assert ws.kb.get_pull_request(request["id"])["state"] == "draft"
    assert ws.kb.get_experiment(request["experiment_id"])["status"] == "failed"


def test_an_inconclusive_experiment_merges_only_with_force_on_the_record(reviewed_ws):
    ws, runner = reviewed_ws, CliRunner()
    (request,) = ws.kb.pull_requests()
    main = ws.repo.head()
    refused = runner.invoke(app, ["pr", "approve", str(request["id"]), "--workspace", str(ws.root)])
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    assert len(refused.output.strip().splitlines()) == 1
    assert "was judged 'inconclusive'" in refused.output and "--force" in refused.output
    assert ws.repo.head() == main

    forced = runner.invoke(app, ["pr", "approve", str(request["id"]), "--force", "--workspace", str(ws.root)])
    assert forced.exit_code == 0, forced.output
    assert "warning: --force overrode: decision 'inconclusive' (not ship)" in forced.output
    assert "2 * prior" in (ws.root / "train.py").read_text()
    merged = ws.kb.get_pull_request(request["id"])
    assert merged["state"] == "merged" and "--force" in merged["review_reason"]
    assert "inconclusive" in merged["review_reason"]
    (event,) = ws.kb.events("pr_forced")
    assert event["experiment_id"] == "E0001" and "decision 'inconclusive' (not ship)" in event["payload"]["overrode"]


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
    manifest = tiny_template / "agentx.toml"
    manifest.write_text(manifest.read_text() + '\n[recipes]\nsets = ["movielens-ctr"]\n')
    WorkspaceRepo.init_from_template(tmp_path / "ws", tiny_template)
    result = CliRunner().invoke(app, ["ask", "make it sing opera", "--workspace", str(tmp_path / "ws")])
    assert result.exit_code == 2 and "found no recipe" in result.output and "DCN" in result.output
    kb = KnowledgeBase.for_workspace(tmp_path / "ws")
    assert kb.query("SELECT key FROM loop_threads WHERE key = 'ask'") == []   # the next `ask` starts afresh
    failed = kb.query("SELECT kind, status, error FROM requests")
    assert [(r["kind"], r["status"]) for r in failed] == [("ask", "failed")] and "found no recipe" in failed[0]["error"]

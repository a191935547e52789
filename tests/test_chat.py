"""`agentx chat` in a terminal: a question answered from the KB, a request shown as a proposal,
run after 'y' with its progress printed, the verdict with its pull request; the history is
there the next time."""

import pytest
from typer.testing import CliRunner

from agentx.cli import app
from knowledge import KnowledgeBase
from knowledge.queue import RequestQueue
from planted_cross_repo import adopted_planted_repo


@pytest.mark.slow
def test_terminal_chat_answers_runs_a_confirmed_request_and_keeps_history(tmp_path):
    repo = adopted_planted_repo(tmp_path)
    said = CliRunner().invoke(app, ["chat", "--workspace", str(repo)],
                              input="what helped most?\nadd the product of f7 and f8\ny\nset C to 0.5\nn\nquit\n")
    assert said.exit_code == 0, said.output
    out = said.output
    assert "No experiment has a measured effect yet." in out
    assert "agentx> Set knobs features +product(f7,f8)." in out and "queued as request 1" in out
    assert "E0001: micro tier passed" in out                           # progress, as the worker runs it
    kb = KnowledgeBase.for_workspace(repo)
    verdict = kb.verdicts("E0001")[-1]
    assert f"agentx> E0001 {verdict['decision']} effect {verdict['delta']:+.4f}" in out and "pull request #1" in out
    assert "agentx> Set knobs C=0.5." in out and "queued as request 2" not in out      # declined: not run
    (request,) = RequestQueue(kb).recent(10)
    assert request.kind == "ask" and request.source == "chat" and request.status == "done"
    assert request.payload["proposal"]["params"]["features"][-1] == "product(f7,f8)"

    again = CliRunner().invoke(app, ["chat", "--workspace", str(repo)], input="why did E0001 ship?\n")
    assert again.exit_code == 0, again.output
    assert "the last" in again.output and "user: add the product of f7 and f8" in again.output
    assert "E0001 'Set knobs features +product(f7,f8)' is evaluated. Its verdict was ship" in again.output

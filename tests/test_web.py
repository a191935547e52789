"""The web app against a real workspace: a planted-interaction repo whose chat request
'add the product of f7 and f8' ran and shipped (real kernels, real git), served by the
real FastAPI app (TestClient for the pages, a real uvicorn process for the bind check)."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from agentx import app as application
from agentx.cli import app as cli
from agentx.web.server import create_app
from fake_llm import FakeChatModel
from knowledge import KnowledgeBase
from knowledge.queue import RequestQueue
from planted_cross_repo import adopted_planted_repo
from tools.git_repo import WorkspaceRepo

ASK = "add the product of f7 and f8"


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """A workspace whose one experiment (E0001, from a chat-style request) shipped, with PR #1 open."""
    tmp = tmp_path_factory.mktemp("web")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(tmp / "home"))
        (tmp / "home").mkdir()
        repo = adopted_planted_repo(tmp)
        result = CliRunner().invoke(cli, ["ask", ASK, "--workspace", str(repo)])
        assert result.exit_code == 0, result.output
        yield repo


def client(repo: Path, **kw) -> TestClient:
    c = TestClient(create_app(repo, **kw))
    c.get("/")                                        # the first page sets the CSRF cookie
    return c


def write(c: TestClient, url: str, **kw):
    return c.post(url, headers={"X-CSRF-Token": c.cookies.get("agentx_csrf")}, **kw)


def test_pages_show_the_evidence_the_diff_the_logs_and_plots(shipped):
    c = client(shipped)
    kb = KnowledgeBase.for_workspace(shipped)
    verdict = kb.verdicts("E0001")[-1]
    assert verdict["decision"] == "ship"
    page = c.get("/experiments/E0001").text
    assert f"{verdict['delta']:+.4f}" in page and f"[{verdict['ci_low']:+.4f}, {verdict['ci_high']:+.4f}]" in page
    for seed in verdict["per_seed"]:                     # per-seed evidence, with the runs behind it
        assert seed["treatment_run"] in page and f"{seed['delta']:+.4f}" in page
    for guard in verdict["guardrails"]:
        assert f"<td>{guard['name']}</td>" in page
    assert "Rollout (replay)" in page and "stage 3 (50% of users" in page
    assert 'class="add">+  &#34;features&#34;: [' in page and "product(f7,f8)&#34;]" in page   # the branch's diff
    for run in kb.runs("E0001"):                                                       # each run, with its log
        assert f"<summary>{run['id']} · {run['arm']} · {run['tier']} · seed {run['seed']} · {run['status']}" in page
    svg = re.search(r'<svg[^>]*class="plot forest".*?</svg>', page, re.S).group(0)
    assert svg.count('class="mark"') == len(verdict["per_seed"]) + 1 and svg.count('class="ci"') == 1
    assert "heuristic brain" in page and "harness v1" in page

    listing = c.get("/experiments").text
    assert "E0001" in listing and "agentx/E0001" in listing and 'href="/prs/1"' in listing
    assert "E0001" in c.get("/experiments?decision=ship&recipe=knobs").text
    assert "no experiments yet" in c.get("/experiments?decision=reject").text
    pr = c.get("/prs/1").text
    assert 'class="side-by-side"' in pr and "approve and merge" in pr and "product(f7,f8)" in pr
    assert "E0001" in c.get("/prs?state=open").text and "no pull requests merged" in c.get("/prs?state=merged").text
    report = c.get("/report?since=1h").text
    assert report.count("<svg") == 4 and "shipped E0001" in report
    missing = c.get("/experiments/E0099")
    assert missing.status_code == 400 and "no experiment &#39;E0099&#39; in this workspace" in missing.text


def test_questions_are_answered_from_the_kb(shipped):
    c = client(shipped)
    kb = KnowledgeBase.for_workspace(shipped)
    verdict = kb.verdicts("E0001")[-1]
    best = write(c, "/api/chat", json={"text": "what helped most?"}).json()
    assert best["kind"] == "answer" and best["payload"]["experiments"] == ["E0001"]
    assert f"{verdict['delta']:+.4f}" in best["text"] and "ship" in best["text"]
    why = write(c, "/api/chat", json={"text": "why did E0001 ship?"}).json()
    assert why["kind"] == "answer" and verdict["rationale"][:40] in why["text"]
    assert "No experiment has failed" in write(c, "/api/chat", json={"text": "what failed?"}).json()["text"]
    assert write(c, "/api/chat", json={"text": "why did E0042 fail?"}).json()["text"] == \
        "There is no experiment E0042 in this workspace."
    odd = write(c, "/api/chat", json={"text": "who wrote the data module?"}).json()
    assert odd["kind"] == "refusal" and "what helped most?" in odd["text"]
    proposal = write(c, "/api/chat", json={"text": "set C to 0.25"}).json()
    assert proposal["kind"] == "proposal" and proposal["payload"]["proposal"]["params"]["C"] == 0.25
    assert "set C to 0.25" in c.get("/chat").text                    # the history is kept


def test_the_llm_answerer_cites_only_experiments_in_the_kb(shipped):
    model = FakeChatModel()
    model.enqueue({"text": "The product of f7 and f8 helped (E0001).", "experiments": ["E0001", "E0777"],
                   "answered": True})
    c = client(shipped, brain="openai-compatible:http://127.0.0.1:9/v1#scripted", chat_model=model)
    answer = write(c, "/api/chat", json={"text": "what helped most, and why?", "conversation": "llm"}).json()
    assert answer["kind"] == "answer" and answer["payload"]["experiments"] == ["E0001"]
    assert answer["payload"]["brain"].startswith("LLM brain")
    prompt = model.calls[0].messages[-1].content
    assert "what helped most, and why?" in prompt and "E0001" in prompt
    assert not model.queue


def test_off_loopback_every_change_needs_the_token_and_csrf(shipped):
    web = create_app(shipped, host="0.0.0.0")
    token = web.state.guard.token
    assert token and len(token) >= 24
    c = TestClient(web)
    writes = [r for r in web.routes if "POST" in getattr(r, "methods", ())]
    assert len(writes) >= 8
    queued = len(RequestQueue(KnowledgeBase.for_workspace(shipped)).recent(1000))
    for route in writes:
        url = re.sub(r"\{[^}]+\}", "1", route.path)
        assert c.post(url, data={"reviewer": "mallory", "reason": "x", "cron": "0 1 * * *"}).status_code == 401, url
        # with the token but without the CSRF token: still refused
        assert c.post(url, headers={"Authorization": f"Bearer {token}"}, data={"reviewer": "m"}).status_code == 403
    assert c.get("/experiments").status_code == 401
    assert c.get("/experiments", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/experiments", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert c.get(f"/login?token={token}", follow_redirects=False).status_code == 303
    assert c.get("/experiments").status_code == 200                       # the login cookie
    assert len(RequestQueue(KnowledgeBase.for_workspace(shipped)).recent(1000)) == queued   # nothing was queued


def test_loopback_writes_need_csrf_and_the_same_origin(shipped):
    c = client(shipped)
    assert c.post("/runs", data={"experiments": 1}).status_code == 403
    assert c.post("/runs", data={"experiments": 1, "csrf": "guess"}).status_code == 403
    cross = c.post("/api/chat", json={"text": "what failed?"},
                   headers={"X-CSRF-Token": c.cookies.get("agentx_csrf"), "Origin": "http://evil.example"})
    assert cross.status_code == 403 and "another site" in cross.text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_real_server_bound_off_loopback_refuses_changes_without_the_token(shipped, tmp_path):
    port = free_port()
    env = {**os.environ, "HOME": str(tmp_path), "AGENTX_TOKEN": "s3cret-token-for-this-test-only"}
    server = subprocess.Popen([sys.executable, "-m", "agentx.cli", "serve", "--workspace", str(shipped),
                               "--host", "0.0.0.0", "--port", str(port)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                first = httpx.get(f"{base}/experiments", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and server.poll() is None, server.stdout.read()
                time.sleep(0.3)
        assert first.status_code == 401
        before = len(RequestQueue(KnowledgeBase.for_workspace(shipped)).recent(1000))
        assert httpx.post(f"{base}/runs", data={"experiments": 1}).status_code == 401
        assert httpx.post(f"{base}/prs/1/approve", data={"reviewer": "x"}).status_code == 401
        ok = httpx.get(f"{base}/experiments", headers={"Authorization": "Bearer s3cret-token-for-this-test-only"})
        assert ok.status_code == 200 and "E0001" in ok.text
        assert len(RequestQueue(KnowledgeBase.for_workspace(shipped)).recent(1000)) == before
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_queue_order_orphans_and_cancel(tmp_path):
    kb = KnowledgeBase(tmp_path / "kb.duckdb")
    queue = RequestQueue(kb)
    first = queue.submit("run", {"experiments": 1}, source="web")
    second = queue.submit("approve", {"pr": 3}, source="web")
    third = queue.submit("reject", {"pr": 4, "reason": "no"}, source="schedule")
    assert queue.claim_next("w1").id == first and queue.claim_next("w2").id == second
    assert queue.cancel(third) and not queue.cancel(second)              # running: not cancellable
    assert queue.claim_next("w3") is None
    dead = subprocess.Popen(["true"])
    dead.wait()
    kb.query("UPDATE requests SET worker = ? WHERE id = ?", [f"{dead.pid}@{socket.gethostname()}", first])
    kb.query("UPDATE requests SET worker = ? WHERE id = ?", [f"{os.getpid()}@{socket.gethostname()}", second])
    assert queue.requeue_orphans() == [first]                            # its process is gone; the live one stays
    assert queue.claim_next("w4").id == first
    with pytest.raises(ValueError, match="unknown request kind"):
        queue.submit("train", {}, source="web")


def test_web_approval_is_carried_out_by_the_worker_and_records_the_reviewer(tmp_path):
    repo = adopted_planted_repo(tmp_path)
    assert CliRunner().invoke(cli, ["ask", ASK, "--workspace", str(repo), "--seeds", "2"]).exit_code == 0
    worker = application.Worker(repo, poll_s=0.2)
    thread = worker.start()
    try:
        c = client(repo)
        refused = write(c, "/prs/1/reject", data={"reviewer": "bob", "reason": " "}, follow_redirects=False)
        assert "needs a reason" in refused.text
        done = write(c, "/prs/1/approve", data={"reviewer": "Alice  Smith"}, follow_redirects=False)
        assert done.status_code == 303 and "merged into main at" in httpx.URL(done.headers["location"]).params["notice"]
    finally:
        worker.stop.set()
        thread.join(timeout=30)
    kb = KnowledgeBase.for_workspace(repo)
    pr = kb.get_pull_request(1)
    assert pr["state"] == "merged" and pr["reviewed_by"] == "Alice Smith (web)"
    git = WorkspaceRepo(repo)
    assert git.head() == pr["merge_commit"] and "Experiment-Id: E0001" in git.repo.git.log("-1", "--format=%B")
    (approval,) = [r for r in RequestQueue(kb).recent(10) if r.kind == "approve"]
    assert approval.source == "web" and approval.status == "done" and approval.result["merge_commit"] == git.head()


def test_a_legacy_threads_file_moves_into_the_kb(tmp_path, tiny_template):
    from agentx.graph import adopt_threads_file

    repo = WorkspaceRepo.init_from_template(tmp_path / "ws", tiny_template)
    legacy = repo.root / ".agentx" / "threads.json"
    legacy.parent.mkdir(exist_ok=True)
    legacy.write_text('{"run": "run-abc12345"}')
    kb = KnowledgeBase.for_workspace(repo.root)
    adopt_threads_file(repo.root, kb)
    assert kb.query("SELECT key, thread_id FROM loop_threads") == [{"key": "run", "thread_id": "run-abc12345"}]
    assert not legacy.exists()



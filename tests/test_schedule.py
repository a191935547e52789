"""Scheduled runs: a real cron job fired by a real `agentx serve` that was restarted in
between, and the stated policy for firings missed while nothing was running."""

import datetime as dt
import time

import httpx
import pytest
from typer.testing import CliRunner

from agentx import schedule
from agentx.app import RunOptions
from agentx.cli import app as cli
from knowledge import KnowledgeBase
from knowledge.queue import RequestQueue
from planted_cross_repo import adopted_planted_repo
from test_browser import free_port, start_server, stop_server


@pytest.mark.slow
def test_a_schedule_a_minute_ahead_fires_after_a_restart_and_shows_in_app_and_report(tmp_path):
    repo = adopted_planted_repo(tmp_path)
    port, log = free_port(), tmp_path / "serve.log"
    server = start_server(repo, port, tmp_path, log)
    try:
        target = (dt.datetime.now() + dt.timedelta(seconds=45)).replace(second=0, microsecond=0) \
            + dt.timedelta(minutes=1)
        added = CliRunner().invoke(cli, ["schedule", "add", "--workspace", str(repo), "--cron",
                                         f"{target.minute} {target.hour} * * *", "--experiments", "1",
                                         "--tier", "micro"])
        assert added.exit_code == 0 and f"next firing {target:%Y-%m-%d %H:%M}" in added.output, added.output
        stop_server(server)                                 # the restart: the job lives in the store
        server = start_server(repo, port, tmp_path, log)
        kb = KnowledgeBase.for_workspace(repo)
        deadline = time.monotonic() + (target - dt.datetime.now()).total_seconds() + 150
        while True:
            fired = [r for r in RequestQueue(kb).recent(10) if r.source == "schedule"]
            if fired and not fired[0].open:
                break
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(1)
        (request,) = fired
        (fired_event,) = kb.events("schedule_fired")
        target_utc = target.astimezone(dt.UTC).replace(tzinfo=None)
        assert target_utc <= fired_event["ts"] < target_utc + dt.timedelta(seconds=30), (fired_event, target_utc)
        assert request.status == "done" and request.created_at >= target_utc, request
        assert request.result["experiments"] == ["E0001"], request.result
        page = httpx.get(f"http://127.0.0.1:{port}/experiments").text
        assert "E0001" in page and "harness" in page
        assert "run: 1 experiments (micro tier)" in httpx.get(f"http://127.0.0.1:{port}/").text
        report = CliRunner().invoke(cli, ["report", "--workspace", str(repo), "--since", "1h"])
        assert "ran: 1 experiments" in report.output and "micro tier (develop)" in report.output
        listed = CliRunner().invoke(cli, ["schedule", "list", "--workspace", str(repo)]).output
        assert f"next {target + dt.timedelta(days=1):%Y-%m-%d %H:%M}" in listed, listed
    finally:
        stop_server(server)


def test_missed_firings_run_within_their_grace_and_are_skipped_and_logged_after_it(tmp_path, tiny_template):
    from tools.git_repo import WorkspaceRepo

    repo = WorkspaceRepo.init_from_template(tmp_path / "ws", tiny_template).root
    late = schedule.add(repo, "0 1 * * *", RunOptions(experiments=1), grace_minutes=60)
    gone = schedule.add(repo, "0 2 * * *", RunOptions(experiments=2), grace_minutes=1)
    now = dt.datetime.now(dt.UTC)
    paused = schedule.scheduler(repo)
    paused.start(paused=True)
    paused.modify_job(late.id, next_run_time=now - dt.timedelta(minutes=5))     # the machine was off
    paused.modify_job(gone.id, next_run_time=now - dt.timedelta(minutes=10))
    paused.shutdown(wait=False)
    running = schedule.start(repo)
    kb = KnowledgeBase.for_workspace(repo)
    try:
        deadline = time.monotonic() + 20
        while not (RequestQueue(kb).recent(5) and kb.events("schedule_missed")):
            assert time.monotonic() < deadline, (RequestQueue(kb).recent(5), kb.events("schedule_missed"))
            time.sleep(0.2)
    finally:
        running.shutdown(wait=False)
    (queued,) = RequestQueue(kb).recent(5)                     # the late one ran once; the stale one did not
    assert queued.source == "schedule" and queued.payload["experiments"] == 1
    (missed,) = kb.events("schedule_missed")
    assert missed["payload"]["schedule"] == gone.id
    assert {s.id for s in schedule.listing(repo)} == {late.id, gone.id}      # both still scheduled


def test_bad_schedules_are_one_line_errors(tmp_path, tiny_template):
    from tools.git_repo import WorkspaceRepo

    repo = WorkspaceRepo.init_from_template(tmp_path / "ws", tiny_template).root
    bad = CliRunner().invoke(cli, ["schedule", "add", "--workspace", str(repo), "--cron", "every night"])
    assert bad.exit_code == 2 and "--cron wants five fields" in bad.output
    until = CliRunner().invoke(cli, ["schedule", "add", "--workspace", str(repo), "--cron", "0 1 * * *",
                                     "--until", "6.30"])
    assert until.exit_code == 2 and "HH:MM" in until.output
    gone = CliRunner().invoke(cli, ["schedule", "remove", "s-nope", "--workspace", str(repo)])
    assert gone.exit_code == 2 and "no schedule 's-nope'" in gone.output


@pytest.mark.slow
def test_a_server_killed_mid_run_resumes_the_request_when_it_starts_again(tmp_path):
    import os
    import signal

    repo = adopted_planted_repo(tmp_path)
    kb = KnowledgeBase.for_workspace(repo)
    request_id = RequestQueue(kb).submit("run", RunOptions(experiments=3, tier="micro", parallel=1,
                                                           evolve_every=0).model_dump(), source="web")
    port, log = free_port(), tmp_path / "serve.log"
    server = start_server(repo, port, tmp_path, log)
    try:
        deadline = time.monotonic() + 180
        while not kb.events("experiment_recorded"):
            assert time.monotonic() < deadline and server.poll() is None, log.read_text()
            time.sleep(0.5)
        os.killpg(server.pid, signal.SIGKILL)                 # no clean shutdown: the request is left running
        server.wait(timeout=30)
        assert RequestQueue(kb).get(request_id).status == "running"
        recorded = [e["experiment_id"] for e in kb.events("experiment_recorded")]
        server = start_server(repo, port, tmp_path, log)
        deadline = time.monotonic() + 300
        while RequestQueue(kb).get(request_id).open:
            assert time.monotonic() < deadline and server.poll() is None, log.read_text()
            time.sleep(0.5)
    finally:
        stop_server(server)
    done = RequestQueue(kb).get(request_id)
    assert done.status == "done" and done.result["resumed"], done
    assert "queued again to resume" in log.read_text() and kb.events("request_requeued")
    finished = [e["experiment_id"] for e in kb.events("experiment_recorded")]
    assert finished[:len(recorded)] == recorded and len(set(finished)) == len(finished) == 3, finished

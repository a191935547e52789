"""Tests for the DuckDB knowledge base: migrations, every write/read, sessions, locking,
and two real processes writing to one file (AGENTX_KB_TEST_SECONDS shortens that one)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest

from knowledge import KnowledgeBase, KnowledgeBaseLocked
from knowledge.migrations import MIGRATIONS, applied, check_order, m001_initial

WRITER = Path(__file__).with_name("kb_writer_proc.py")
HOLDER = """
import duckdb, sys, time
con = duckdb.connect(sys.argv[1])
print("held", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
"""


SHIPPED = [m.__name__ for m in MIGRATIONS]


@pytest.fixture
def kb() -> KnowledgeBase:
    return KnowledgeBase(":memory:")


# -- migrations ----------------------------------------------------------------------------

def m901_reviews(con):
    con.execute("CREATE TABLE reviews (id TEXT PRIMARY KEY, experiment_id TEXT, "
                "checks JSON)")


def m902_review_url(con):
    con.execute("ALTER TABLE reviews ADD COLUMN url TEXT")


def test_migrations_recorded_and_idempotent(kb):
    assert [r["name"] for r in kb.query("SELECT name FROM _migrations ORDER BY name")] == SHIPPED
    assert kb.migrate() == []
    assert kb.migrate() == []
    assert kb.query("SELECT count(*) AS n FROM _migrations") == [{"n": len(SHIPPED)}]
    assert {"experiments", "runs", "metrics", "verdicts", "lessons", "research_cards",
            "features", "feature_stats", "harness_versions", "llm_calls",
            "events"} <= {r["table_name"] for r in kb.query("SELECT table_name FROM duckdb_tables()")}


def test_appended_migrations_apply_in_order_once(kb):
    more = [*MIGRATIONS, m901_reviews, m902_review_url]
    assert kb.migrate(more) == ["m901_reviews", "m902_review_url"]
    assert kb.migrate(more) == []
    with kb._connection() as con:
        assert applied(con) == [*SHIPPED, "m901_reviews", "m902_review_url"]
    assert kb.columns("reviews") == {"id": "VARCHAR", "experiment_id": "VARCHAR",
                                     "checks": "JSON", "url": "VARCHAR"}


def test_migrations_must_be_ordered_and_named():
    with pytest.raises(ValueError, match="out of order"):
        check_order([m001_initial, m902_review_url, m901_reviews])
    with pytest.raises(ValueError, match="out of order"):
        check_order([m001_initial, m001_initial])

    def add_things(con):
        pass

    with pytest.raises(ValueError, match="not named like"):
        check_order([m001_initial, add_things])


def test_failing_migration_rolls_back_and_is_not_recorded(kb):
    def m901_half_done(con):
        con.execute("CREATE TABLE half (x INTEGER)")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        kb.migrate([*MIGRATIONS, m901_half_done])
    assert [r["name"] for r in kb.query("SELECT name FROM _migrations ORDER BY name")] == SHIPPED
    assert kb.query("SELECT * FROM duckdb_tables() WHERE table_name = 'half'") == []


# -- experiments, runs, metrics -----------------------------------------------------------

def test_experiments_round_trip(kb):
    assert kb.next_experiment_id() == "E0001"
    first = kb.add_experiment(title="DCN cross layer", recipe="dcn", source="chat",
                              params={"layers": 2, "dims": [8, 16]},
                              proposal={"why": "feature crosses"})
    second = kb.add_experiment(title="bigger embeddings")
    assert (first, second) == ("E0001", "E0002")
    got = kb.get_experiment(first)
    assert got["params"] == {"layers": 2, "dims": [8, 16]}
    assert got["proposal"] == {"why": "feature crosses"}
    assert got["status"] == "proposed" and got["source"] == "chat"

    kb.update_experiment(first, status="running", branch="agentx/E0001-dcn",
                         params={"layers": 3})
    got2 = kb.get_experiment(first)
    assert (got2["status"], got2["branch"], got2["params"]) == (
        "running", "agentx/E0001-dcn", {"layers": 3})
    assert got2["updated_at"] > got["updated_at"]
    assert [e["id"] for e in kb.experiments(status="running")] == ["E0001"]
    assert [e["id"] for e in kb.experiments()] == ["E0001", "E0002"]
    assert kb.get_experiment("E0999") is None
    with pytest.raises(KeyError, match="E0999"):
        kb.update_experiment("E0999", status="done")
    assert kb.add_experiment(id="X-custom", title="given id") == "X-custom"
    assert kb.next_experiment_id() == "E0003"


def test_runs_and_metrics_round_trip(kb):
    exp = kb.add_experiment(title="t")
    control = kb.add_run(experiment_id=exp, arm="control", seed=0, tier="micro", device="cpu")
    treat = kb.add_run(experiment_id=exp, arm="treatment", seed=0, tier="micro")
    base = kb.add_run(arm="baseline", seed=1, id="R-base")
    assert re.fullmatch(r"R-[0-9a-f]{8}", control) and base == "R-base"
    assert kb.get_run(control)["status"] == "running"
    assert kb.get_run(control)["finished_at"] is None

    kb.finish_run(control, status="ok", wall_s=12.5, exec_s=10.0, kernel_start_s=1.5)
    kb.finish_run(treat, status="error", failure_kind="nan", failure_detail="loss is nan")
    run = kb.get_run(control)
    assert (run["status"], run["wall_s"], run["exec_s"]) == ("ok", 12.5, 10.0)
    assert run["finished_at"] >= run["started_at"]
    assert [r["id"] for r in kb.runs(exp)] == [control, treat]
    assert [r["id"] for r in kb.runs(exp, status="error")] == [treat]
    assert [r["id"] for r in kb.runs(arm="baseline")] == [base]

    kb.add_metrics(control, "valid", {"auc": 0.75, "logloss": 0.5})
    kb.add_metrics(control, "test", {"auc": 0.74})
    kb.add_metrics(control, "valid", {"auc": 0.76})  # replaces
    assert kb.metrics_for(control) == {("valid", "auc"): 0.76, ("valid", "logloss"): 0.5,
                                       ("test", "auc"): 0.74}
    assert kb.metrics_for(treat) == {}


def test_run_arguments_are_checked(kb):
    with pytest.raises(ValueError, match="arm"):
        kb.add_run(arm="candidate")
    with pytest.raises(ValueError, match="status"):
        kb.add_run(arm="control", status="finished")
    with pytest.raises(ValueError, match="unknown experiment 'E0042'"):
        kb.add_run(arm="control", experiment_id="E0042")
    run = kb.add_run(arm="control")
    with pytest.raises(ValueError, match="final status"):
        kb.finish_run(run, status="running")
    with pytest.raises(KeyError, match="R-nope"):
        kb.finish_run("R-nope", status="ok")
    with pytest.raises(ValueError, match="must be a number"):
        kb.add_metrics(run, "valid", {"auc": "high"})
    with pytest.raises(ValueError, match="unknown run"):
        kb.add_metrics("R-nope", "valid", {"auc": 0.5})
    assert kb.metrics_for(run) == {}
    assert [r["id"] for r in kb.runs()] == [run]


# -- the other tables ---------------------------------------------------------------------

def test_verdicts_and_lessons_round_trip(kb):
    exp = kb.add_experiment(title="t")
    v1 = kb.add_verdict(experiment_id=exp, decision="ship", metric="auc", control=0.75,
                        treatment=0.76, delta=0.01, ci_low=0.004, ci_high=0.016, n_seeds=3,
                        guardrails={"max_params": {"ok": True, "value": 1200}},
                        rationale="CI above min_effect")
    v2 = kb.add_verdict(experiment_id=exp, decision="reject")
    assert v2 > v1
    got = kb.verdicts(exp)
    assert [v["id"] for v in got] == [v1, v2]
    assert got[0]["guardrails"] == {"max_params": {"ok": True, "value": 1200}}
    assert got[0]["ci_low"] == 0.004 and got[1]["guardrails"] is None

    lesson = kb.add_lesson(experiment_id=exp, recipe_family="dcn", params={"layers": 2},
                           outcome="win", effect=0.01, ci_low=0.004, ci_high=0.016,
                           conditions={"dataset": "movielens"}, text="crosses help")
    other = kb.add_lesson(recipe_family="mlp", outcome="failure", failure_kind="oom")
    assert [x["id"] for x in kb.lessons(recipe_family="dcn")] == [lesson]
    assert kb.lessons(exp)[0]["conditions"] == {"dataset": "movielens"}
    assert [x["id"] for x in kb.lessons()] == [lesson, other]


def test_research_cards_and_features_upsert(kb):
    kb.upsert_research_card(id="dcn-v2", title="DCN V2", source="arxiv", summary="cross net",
                            tags=["ranking", "crosses"], body="...")
    kb.upsert_research_card(id="dcn-v2", summary="improved cross network")
    (card,) = kb.research_cards()
    assert card["title"] == "DCN V2" and card["summary"] == "improved cross network"
    assert card["tags"] == ["ranking", "crosses"]
    with pytest.raises(ValueError, match="needs an id"):
        kb.upsert_research_card(title="no id")

    kb.upsert_feature(name="user_age", definition="age bucket", grp="user", type="categorical",
                      serving_cost=0.1)
    kb.upsert_feature(name="label_rate", grp="item", leaky=True)
    kb.upsert_feature(name="user_age", serving_cost=0.2)
    feats = {f["name"]: f for f in kb.features()}
    assert feats["user_age"]["serving_cost"] == 0.2 and feats["user_age"]["grp"] == "user"
    assert feats["user_age"]["leaky"] is False and feats["label_rate"]["leaky"] is True

    assert kb.add_feature_stats([
        {"name": "user_age", "stat": "mutual_info", "value": 0.12, "detail": {"bins": 10}},
        {"name": "label_rate", "stat": "mutual_info", "value": 0.9},
    ]) == 2
    stats = kb.feature_stats("user_age")
    assert len(stats) == 1 and stats[0]["detail"] == {"bins": 10} and stats[0]["value"] == 0.12
    assert len(kb.feature_stats()) == 2


def test_harness_versions_llm_calls_and_events(kb):
    parent = kb.add_harness_version(agent="brainstorm", version="v1",
                                    sections={"role": "You propose experiments."},
                                    playbook=["prefer small edits"], accepted=True, score=0.5)
    child = kb.add_harness_version(agent="brainstorm", version="v2", parent_id=parent,
                                   playbook=["prefer small edits", "check the KB first"])
    versions = kb.harness_versions("brainstorm")
    assert [v["id"] for v in versions] == [parent, child]
    assert versions[0]["sections"] == {"role": "You propose experiments."}
    assert versions[1]["playbook"][1] == "check the KB first"
    assert versions[1]["accepted"] is False and versions[1]["parent_id"] == parent

    assert kb.llm_dollars() == 0.0
    exp = kb.add_experiment(title="t")
    common = dict(agent="brainstorm", provider="openai", model="gpt-x", prompt="p",
                  input_tokens=100, output_tokens=20, latency_s=0.5)
    kb.log_llm_call(experiment_id=exp, response="r", dollars=0.25, **common)
    call = kb.log_llm_call(experiment_id=None, response=None, dollars=0.5, error="timeout",
                           **common)
    assert kb.llm_dollars() == pytest.approx(0.75)
    assert kb.llm_dollars(exp) == pytest.approx(0.25)
    assert kb.llm_calls()[-1]["id"] == call and kb.llm_calls()[-1]["error"] == "timeout"
    assert len(kb.llm_calls(exp)) == 1

    e1 = kb.log_event("experiment_started", {"budget": {"gpu_min": 30}}, experiment_id=exp)
    e2 = kb.log_event("heartbeat")
    assert e2 > e1
    assert [e["kind"] for e in kb.events()] == ["experiment_started", "heartbeat"]
    (started,) = kb.events("experiment_started")
    assert started["payload"] == {"budget": {"gpu_min": 30}}
    assert started["experiment_id"] == exp and kb.events(experiment_id="E9") == []


def test_query_returns_dicts_and_parses_json(kb):
    kb.log_event("a", {"n": 1, "tags": ["x"]})
    kb.log_event("b", {"n": 2})
    rows = kb.query("SELECT kind, payload, payload->'tags' AS tags FROM events "
                    "WHERE kind = ? ORDER BY id", ["a"])
    assert rows == [{"kind": "a", "payload": {"n": 1, "tags": ["x"]}, "tags": ["x"]}]
    assert kb.query("SELECT count(*) AS n FROM events WHERE payload->>'n' = $n",
                    {"n": "2"}) == [{"n": 1}]


@pytest.mark.parametrize("call", [
    lambda kb: kb.add_experiment(title="t", colour="red"),
    lambda kb: kb.update_experiment(kb.add_experiment(), colour="red"),
    lambda kb: kb.add_run(arm="control", colour="red"),
    lambda kb: kb.finish_run(kb.add_run(arm="control"), status="ok", colour="red"),
    lambda kb: kb.add_verdict(experiment_id="E1", decision="ship", colour="red"),
    lambda kb: kb.add_lesson(colour="red"),
    lambda kb: kb.upsert_research_card(id="c", colour="red"),
    lambda kb: kb.upsert_feature(name="f", colour="red"),
    lambda kb: kb.add_feature_stats([{"name": "f", "stat": "s", "colour": "red"}]),
    lambda kb: kb.add_harness_version(agent="a", colour="red"),
])
def test_unknown_columns_are_rejected_by_name(kb, call):
    with pytest.raises(ValueError, match="has no column 'colour'"):
        call(kb)


def test_json_columns_reject_unserialisable_values(kb):
    with pytest.raises(ValueError, match="params must be JSON-serialisable"):
        kb.add_experiment(params={"when": object()})


# -- sessions -----------------------------------------------------------------------------

def test_session_commits_together_or_not_at_all(kb):
    with kb.session() as s:
        run = s.add_run(arm="baseline")
        s.add_metrics(run, "valid", {"auc": 0.7})
        s.log_event("run_done", {"run": run})
    assert kb.metrics_for(run) == {("valid", "auc"): 0.7}
    with pytest.raises(RuntimeError, match="ended"):
        s.log_event("late")

    with pytest.raises(ZeroDivisionError):
        with kb.session() as s:
            s.add_run(arm="baseline", id="R-lost")
            s.log_event("lost")
            1 / 0
    assert kb.get_run("R-lost") is None
    assert [e["kind"] for e in kb.events()] == ["run_done"]


# -- files, locks, processes --------------------------------------------------------------

def test_for_workspace_creates_file_that_persists(tmp_path):
    kb = KnowledgeBase.for_workspace(tmp_path / "ws")
    assert Path(kb.path) == tmp_path / "ws" / ".agentx" / "kb.duckdb"
    exp = kb.add_experiment(title="persisted", params={"a": 1})
    with kb.session() as s:
        s.log_event("x")
        s.log_event("y")
    again = KnowledgeBase.for_workspace(tmp_path / "ws")
    assert again.get_experiment(exp)["params"] == {"a": 1}
    assert [e["kind"] for e in again.events()] == ["x", "y"]
    assert again.migrate() == []


def _hold(path: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_locked_file_raises_after_deadline_naming_file_and_holder(tmp_path):
    path = tmp_path / "kb.duckdb"
    kb = KnowledgeBase(path, lock_timeout_s=0.4)
    kb.release()
    holder = _hold(path, 3)
    try:
        started = time.monotonic()
        with pytest.raises(KnowledgeBaseLocked) as info:
            kb.log_event("blocked")
        assert 0.4 <= time.monotonic() - started < 2.0
        assert str(path) in str(info.value) and f"PID {holder.pid}" in str(info.value)
        assert isinstance(info.value.__cause__, duckdb.IOException)
    finally:
        holder.kill()
        holder.wait()
    assert kb.events() == []


def test_lock_released_within_deadline_is_waited_for(tmp_path):
    path = tmp_path / "kb.duckdb"
    kb = KnowledgeBase(path, lock_timeout_s=20)
    kb.release()                      # the migration's warm connection: the holder needs the file
    holder = _hold(path, 1.0)
    started = time.monotonic()
    kb.log_event("after-wait")
    waited = time.monotonic() - started
    holder.wait()
    assert holder.returncode == 0
    assert waited > 0.3, "the write should have waited for the holder"
    assert [e["kind"] for e in kb.events()] == ["after-wait"]


def test_threads_allocate_distinct_experiment_ids(tmp_path):
    kb = KnowledgeBase(tmp_path / "kb.duckdb")
    other = KnowledgeBase(tmp_path / "kb.duckdb")  # a second object on the same file
    ids: list[str] = []

    def add_some(store: KnowledgeBase):
        for _ in range(4):
            ids.append(store.add_experiment(title="threaded"))

    threads = [threading.Thread(target=add_some, args=(store,)) for store in (kb, kb, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(ids) == [f"E{i:04d}" for i in range(1, 13)]
    assert len(kb.experiments()) == 12


def test_two_processes_writing_lose_no_rows(tmp_path):
    seconds = float(os.environ.get("AGENTX_KB_TEST_SECONDS", "10"))
    path = tmp_path / "kb.duckdb"
    kb = KnowledgeBase(path)
    writers = {name: subprocess.Popen([sys.executable, str(WRITER), str(path), name,
                                       str(seconds)], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
               for name in ("scheduler", "cli")}
    seen = []  # the parent reads while they write
    while any(p.poll() is None for p in writers.values()):
        seen.append(kb.query("SELECT count(*) AS n FROM events")[0]["n"])
        time.sleep(0.2)
    reports = {}
    for name, proc in writers.items():
        out, err = proc.communicate()
        assert proc.returncode == 0, f"writer {name} failed:\n{err}"
        reports[name] = json.loads(out)
        print(reports[name])

    for name, report in reports.items():
        assert report["events"] > 0 and report["runs"] > 0, report
        assert kb.query("SELECT count(*) AS n FROM events WHERE payload->>'writer' = ?",
                        [name]) == [{"n": report["events"]}]
        runs = [r for r in kb.runs(arm="baseline") if r["device"] == name]
        assert len(runs) == report["runs"] and {r["status"] for r in runs} == {"ok"}
        assert kb.query("SELECT count(*) AS n FROM metrics JOIN runs ON runs.id = run_id "
                        "WHERE device = ?", [name]) == [{"n": report["metrics"]}]
    total = sum(r["events"] for r in reports.values())
    assert len(seen) >= 2 and seen == sorted(seen) and seen[-1] <= total
    assert len(kb.events()) == total


@pytest.mark.parametrize("interval", [0.2, 0.5])
def test_a_polling_process_leaves_another_process_room_to_connect(tmp_path, interval):
    # The warm anchor must not turn a poller (a test, a dashboard) into a lock holder: a
    # process that never goes idle for WARM_S must still let go (WARM_MAX_S, then COOL_S).
    # (tests/test_resume.py caught the subtler case, a poll interval close to WARM_S.)
    path = tmp_path / "kb.duckdb"
    kb = KnowledgeBase(path)
    child = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})\n"
        "from knowledge import KnowledgeBase\n"
        "kb = KnowledgeBase(sys.argv[1], lock_timeout_s=4)\n"
        "kb.log_event('child')\n"), str(path)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while child.poll() is None and time.monotonic() < deadline:
        kb.events("child")
        time.sleep(interval)
    assert child.wait(timeout=10) == 0, child.stderr.read()[-600:]
    assert [e["kind"] for e in kb.events()] == ["child"]

"""The harness with real kernels on a tiny stdlib-only workspace (about a second per run)."""

import csv
import shutil
import time

import pytest

from agentx.workspace import load_manifest
from tests.conftest import wrap_main
from knowledge import KnowledgeBase
from tools.git_repo import WorkspaceRepo
from tools.harness import Harness


@pytest.fixture
def setup(tiny_template, tmp_path):
    base = tmp_path / "ws"
    WorkspaceRepo.init_from_template(base, tiny_template)   # the harness runs main's committed data module
    kb = KnowledgeBase(":memory:")
    harness = Harness(base, load_manifest(base), kb, tmp_path / "cache", memory_limit_mb=2048)

    def checkout(append_to_train: str = "") -> object:
        path = tmp_path / f"checkout-{len(list(tmp_path.glob('checkout-*')))}"
        shutil.copytree(base, path)
        if append_to_train:
            with open(path / "train.py", "a") as f:
                f.write("\n" + append_to_train + "\n")
        return path

    return harness, kb, checkout


def test_honest_run_is_scored_and_recorded(setup):
    harness, kb, checkout = setup
    run = harness.run(checkout(), "c0ffee", tier="full", seed=0, arm="baseline")
    assert run.ok, run.failure_detail
    assert 0.5 < run.metric("test", "auc") <= 1.0
    assert run.metric("test", "popularity_auc") == pytest.approx(run.metric("test", "auc"), abs=0.05)
    assert run.metric("run", "p95_latency_ms") > 0 and run.metric("run", "num_params") == 30
    assert run.kernel_start_s > 0 and run.exec_s > 0 and run.wall_s >= run.exec_s
    (row,) = kb.query("SELECT status, commit_sha, tier, seed, arm FROM runs WHERE id = ?", [run.run_id])
    assert row == {"status": "ok", "commit_sha": "c0ffee", "tier": "full", "seed": 0, "arm": "baseline"}
    assert kb.metrics_for(run.run_id)[("test", "auc")] == pytest.approx(run.metric("test", "auc"))
    again = harness.run(checkout(), "c0ffee", tier="full", seed=0, arm="control", reuse=True)
    assert again.reused and again.run_id == run.run_id


def test_run_directory_holds_no_eval_labels(setup, tmp_path):
    harness, kb, checkout = setup
    # The kernel lists what it was given and reads every header it can see.
    probe = wrap_main("""
import os, json
seen = {n: open(os.path.join(run_dir, n)).readline().strip() for n in os.listdir(run_dir) if n.endswith('.csv')}
json.dump(seen, open(os.path.join(run_dir, 'seen.json'), 'w'))
""")
    run = harness.run(checkout(probe), "c0ffee", tier="micro", seed=0, arm="baseline")
    assert run.ok, run.failure_detail
    import json
    (run_row,) = kb.query("SELECT run_dir FROM runs WHERE id = ?", [run.run_id])
    seen = json.load(open(f"{run_row['run_dir']}/seen.json"))
    assert set(seen) == {"train.csv", "valid.csv", "test.csv"}
    assert "label" in seen["train.csv"].split(",")
    assert "label" not in seen["valid.csv"].split(",") and "label" not in seen["test.csv"].split(",")
    with open(f"{run_row['run_dir']}/test.csv") as f:
        assert len(list(csv.DictReader(f))) == 20  # the micro tier's eval_rows


def test_write_to_protected_file_is_refused_by_the_sandbox(setup):
    harness, kb, checkout = setup
    path = checkout(wrap_main("open('data.py', 'a').write('# tuned')"))
    run = harness.run(path, "c0ffee", tier="micro", seed=0, arm="treatment")
    assert run.status == "error" and run.failure_kind == "crash" and not run.metrics
    assert "Read-only file system" in run.failure_detail
    assert "# tuned" not in (path / "data.py").read_text() and "# tuned" not in (harness.workspace / "data.py").read_text()
    assert kb.get_run(run.run_id)["sandbox"] == "bwrap"


def test_write_to_protected_file_invalidates_an_unsandboxed_run(setup):
    harness, kb, checkout = setup
    harness.sandboxed = False
    run = harness.run(checkout(wrap_main("open('data.py', 'a').write('# tuned')")), "c0ffee",
                      tier="micro", seed=0, arm="treatment")
    assert run.status == "invalid" and run.failure_kind == "tamper" and "data.py" in run.failure_detail
    assert kb.get_run(run.run_id)["sandbox"] == "none"


def test_branch_that_edits_protected_file_is_invalid(setup):
    harness, _, checkout = setup
    path = checkout()
    (path / "agentx.toml").write_text((path / "agentx.toml").read_text().replace("min_effect = 0.0", "min_effect = 1.0"))
    run = harness.run(path, "c0ffee", tier="micro", seed=0, arm="treatment")
    assert run.failure_kind == "tamper" and "agentx.toml" in run.failure_detail


@pytest.mark.parametrize("body,kind", [
    ("import math\nopen(os.path.join(run_dir, 'predictions', 'test.csv'), 'a').write('')\n"
     "rows = open(os.path.join(run_dir, 'predictions', 'test.csv')).read().splitlines()\n"
     "open(os.path.join(run_dir, 'predictions', 'test.csv'), 'w').write('\\n'.join([rows[0]] + [r.split(',')[0] + ',nan' for r in rows[1:]]))",
     "nan"),
    ("p = os.path.join(run_dir, 'predictions', 'test.csv')\nrows = open(p).read().splitlines()\n"
     "open(p, 'w').write('\\n'.join(rows[:-3]))", "missing_rows"),
    ("raise RuntimeError('shape mismatch: (64, 8) vs (64, 16)')", "crash"),
])
def test_broken_runs_are_not_scored(setup, body, kind):
    harness, _, checkout = setup
    run = harness.run(checkout(wrap_main("import os\n" + body)), "c0ffee", tier="micro", seed=0, arm="treatment")
    assert run.failure_kind == kind and not run.metrics
    if kind == "crash":
        assert run.status == "error" and "shape mismatch" in run.failure_detail


def test_endless_training_is_a_timeout(setup):
    harness, _, checkout = setup
    harness.manifest = harness.manifest.model_copy(update={"tiers": harness.manifest.tiers.model_copy(
        update={"micro": harness.manifest.tiers.micro.model_copy(update={"timeout_s": 3})})})
    started = time.perf_counter()
    run = harness.run(checkout(wrap_main("while True:\n    pass")), "c0ffee", tier="micro", seed=0, arm="treatment")
    assert run.status == "timeout" and run.failure_kind == "timeout"
    assert time.perf_counter() - started < 3 + 5 + 3  # timeout + grace, plus kernel start and scoring


def test_secrets_do_not_reach_the_kernel(setup, monkeypatch):
    harness, kb, checkout = setup
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    monkeypatch.setenv("AGENTX_ORDINARY", "yes")          # not on the allowlist: not passed either
    harness.extra_env = {"AGENTX_VISIBLE": "yes"}         # what the harness passes on purpose
    probe = wrap_main("import os, json\njson.dump(dict(os.environ), open(os.path.join(run_dir, 'env.json'), 'w'))")
    run = harness.run(checkout(probe), "c0ffee", tier="micro", seed=0, arm="baseline")
    assert run.ok, run.failure_detail
    import json
    (row,) = kb.query("SELECT run_dir FROM runs WHERE id = ?", [run.run_id])
    env = json.load(open(f"{row['run_dir']}/env.json"))
    assert "OPENAI_API_KEY" not in env and "AGENTX_ORDINARY" not in env and env["AGENTX_VISIBLE"] == "yes"
    assert env["HOME"] == "/tmp/home" and env["AGENTX_SANDBOX"] == "bwrap"


def test_warm_kernels_are_fresh_per_run_and_work_in_the_checkout(tiny_template, tmp_path):
    import json

    base = tmp_path / "ws"
    WorkspaceRepo.init_from_template(base, tiny_template)   # the harness runs main's committed data module
    kb = KnowledgeBase(":memory:")
    harness = Harness(base, load_manifest(base), kb, tmp_path / "cache", warm_kernels=True)
    try:
        seen = []
        for i in range(2):
            path = tmp_path / f"co{i}"
            shutil.copytree(base, path)
            with open(path / "train.py", "a") as f:
                f.write(f"\nMARK = {i}\n" + wrap_main("import json\njson.dump({'pid': open('/proc/self/cmdline').read(), 'cwd': os.getcwd(), "
                                         "'mark': MARK, 'ran_before': globals().get('_ran', False)}, "
                                         "open(os.path.join(run_dir, 'who.json'), 'w'))\n"
                                         "globals()['_ran'] = True") + "\n")
            run = harness.run(path, "c0ffee", tier="micro", seed=0, arm="baseline")
            assert run.ok, run.failure_detail
            (row,) = kb.query("SELECT run_dir FROM runs WHERE id = ?", [run.run_id])
            seen.append((json.load(open(f"{row['run_dir']}/who.json")), path))
        (first, p0), (second, p1) = seen
        assert first["pid"] != second["pid"]        # one kernel per run (its own connection file; pids repeat in namespaces)
        assert first["cwd"] == second["cwd"] == "/ax/work"        # the checkout, as the sandbox shows it
        assert (first["mark"], second["mark"]) == (0, 1)          # each ran its own code
        assert not first["ran_before"] and not second["ran_before"]
    finally:
        harness.close()

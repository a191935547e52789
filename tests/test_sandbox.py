"""The kernel sandbox, with real ipykernels (about a second each to start)."""

import ast
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from tools.sandbox import ExecutionResult, Sandbox, SandboxStartError, is_secret_name, scrub_env


@pytest.fixture(autouse=True)
def no_kernel_left_behind():
    """Every test must leave no child process of ours, dead (zombie) or alive."""
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    yield
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    assert not left, f"processes left behind: {[(p.pid, p.status()) for p in left]}"


def gone(proc: psutil.Process) -> bool:
    """The process no longer exists (psutil checks pid + create time against reuse)."""
    return not proc.is_running()


def killed_or_gone(pid: int, name: str) -> bool:
    """No live process `name` at `pid` (a zombie left for an init that reaps late is dead)."""
    try:
        proc = psutil.Process(pid)
        return proc.name() != name or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def run_box(tmp_path, code, timeout_s=20.0, **kwargs) -> tuple[ExecutionResult, Sandbox, psutil.Process]:
    with Sandbox(tmp_path, **kwargs) as box:
        box.start()
        proc = psutil.Process(box.pid)
        result = box.execute(code, timeout_s=timeout_s)
    assert gone(proc)
    return result, box, proc


def test_scrub_env_drops_secrets_and_keeps_the_rest():
    env = {"OPENAI_API_KEY": "x", "hf_token": "x", "GITHUB_TOKEN": "x", "DB_PASSWORD": "x",
           "MY_SECRET_THING": "x", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
           "AWS_SESSION_TOKEN": "x", "TOKEN": "x", "SSH_AUTH_SOCK": "/s",
           "PYTHONPATH": "/p", "PATH": "/bin", "CUDA_VISIBLE_DEVICES": "0", "TOKENIZERS_PARALLELISM": "0",
           "KEYBOARD": "us"}
    assert scrub_env(env) == {"PYTHONPATH": "/p", "PATH": "/bin", "CUDA_VISIBLE_DEVICES": "0",
                              "TOKENIZERS_PARALLELISM": "0", "KEYBOARD": "us"}
    assert is_secret_name("Anthropic_Api_Key") and not is_secret_name("HOME")


def test_prints_and_value_come_back_and_cleanup_is_total(tmp_path):
    with Sandbox(tmp_path) as box:
        started = box.start()
        assert box.kernel_start_s == started > 0
        proc, tmp = psutil.Process(box.pid), box.connection_file.parent
        info = box.connection_info()
        sockets = sorted(p.name for p in tmp.iterdir() if p.is_socket())
        tcp = proc.net_connections(kind="tcp")
        result = box.execute("import sys\nprint('hello'); print('warn', file=sys.stderr)\n6 * 7",
                             timeout_s=20)
        again = box.execute("x = 1\nx + 1", timeout_s=20)
    assert info["transport"] == "ipc" and info["ip"].startswith(str(tmp))
    assert len(sockets) == 5  # shell, iopub, stdin, control, hb: unix sockets
    # ipykernel's own fork-output pipe listens on loopback; nothing else may use TCP.
    assert all(c.laddr.ip == "127.0.0.1" for c in tcp) and len(tcp) <= 1
    assert result.ok and result.status == "ok"
    assert (result.stdout, result.stderr, result.result_text) == ("hello\n", "warn\n", "42")
    assert result.ename is None and result.exit_code is None and result.peak_rss_mb > 10
    assert again.result_text == "2"
    assert gone(proc) and not tmp.exists()
    assert box.execute("1", timeout_s=5).status == "died"  # shut down for good


def test_exception_gives_error_with_clean_traceback(tmp_path):
    result, _, _ = run_box(tmp_path, "def f():\n    raise ValueError('bad shape')\nprint('before')\nf()")
    assert result.status == "error" and not result.ok
    assert (result.ename, result.evalue, result.stdout) == ("ValueError", "bad shape", "before\n")
    assert "\x1b" not in result.traceback and "----> 4 f()" in result.traceback
    assert "raise ValueError('bad shape')" in result.traceback


def test_endless_loop_is_interrupted_at_the_deadline_and_kernel_lives(tmp_path):
    with Sandbox(tmp_path) as box:
        box.start()
        t0 = time.perf_counter()
        result = box.execute("while True: pass", timeout_s=2)
        elapsed = time.perf_counter() - t0
        assert result.status == "timeout" and result.ename == "KeyboardInterrupt"
        assert 2 <= elapsed < 2 + 5
        assert box.alive and box.execute("'still here'", timeout_s=10).result_text == "'still here'"


def test_loop_that_ignores_sigint_is_killed_within_timeout_plus_5s(tmp_path):
    code = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nprint('spinning', flush=True)\nwhile True: pass"
    with Sandbox(tmp_path) as box:
        box.start()
        proc = psutil.Process(box.pid)
        t0 = time.perf_counter()
        result = box.execute(code, timeout_s=1)
        elapsed = time.perf_counter() - t0
        assert result.status == "timeout" and "killed" in result.detail
        assert 1 + 2 <= elapsed < 1 + 5  # deadline + interrupt grace, then the kill
        assert result.stdout == "spinning\n" and result.exit_code == -9
        assert gone(proc) and not box.alive
        t0 = time.perf_counter()
        assert box.execute("1", timeout_s=10).status == "died"
        assert time.perf_counter() - t0 < 0.1


def test_memory_blowup_is_killed_and_the_harness_survives(tmp_path):
    code = "blocks = []\nwhile True:\n    blocks.append(b'x' * (200 << 20))"  # bytes * n touches pages
    before = psutil.Process().memory_info().rss
    result, box, _ = run_box(tmp_path, code, timeout_s=30, memory_limit_mb=600)
    assert result.status == "memory" and result.exit_code == -9
    assert result.peak_rss_mb > 600 and result.duration_s < 10
    assert psutil.Process().memory_info().rss - before < 100 * 2**20  # the harness did not grow
    fresh, _, _ = run_box(tmp_path, "sum(range(10))", memory_limit_mb=600)
    assert fresh.ok and fresh.result_text == "45"


def test_memory_error_in_kernel_maps_to_memory(tmp_path):
    result, _, _ = run_box(tmp_path, "bytearray(1 << 60)")
    assert result.status == "memory" and result.ename == "MemoryError" and result.exit_code is None


def test_secrets_are_scrubbed_and_cwd_is_the_worktree(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-should-not-leak")
    monkeypatch.setenv("AGENTX_PLAIN", "visible")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "extra"))
    code = ("import os\nprint(os.getcwd())\n"
            "(os.environ.get('OPENAI_API_KEY'), os.environ.get('AGENTX_PLAIN'), "
            "os.environ.get('EXTRA'), os.environ.get('PYTHONPATH'))")
    worktree = tmp_path / "worktree"
    worktree.mkdir()
    result, _, _ = run_box(worktree, code, extra_env={"EXTRA": "given"})
    assert result.ok, result
    assert result.stdout == f"{worktree.resolve()}\n"
    assert ast.literal_eval(result.result_text) == (None, "visible", "given", str(tmp_path / "extra"))


def test_os_exit_is_reported_as_died_promptly_and_orphans_are_killed(tmp_path):
    code = ("import os, subprocess, time\nchild = subprocess.Popen(['sleep', '60'])\n"
            "print(child.pid, flush=True)\ntime.sleep(0.3)\nos._exit(3)")
    with Sandbox(tmp_path) as box:
        box.start()
        result = box.execute(code, timeout_s=30)
        orphan_pid = int(result.stdout)
        assert killed_or_gone(orphan_pid, "sleep")
        assert result.status == "died" and result.exit_code == 3 and "code 3" in result.detail
        assert result.duration_s < 2
        assert box.execute("1", timeout_s=5).status == "died"


def test_segfault_is_reported_as_died(tmp_path):
    result, _, _ = run_box(tmp_path, "import ctypes\nctypes.string_at(0)", timeout_s=30)
    assert result.status == "died" and result.exit_code == -11 and result.duration_s < 2


def test_kernel_that_cannot_start_raises_and_cleans_up(tmp_path):
    box = Sandbox(tmp_path, python=str(tmp_path / "no-such-python"))
    with pytest.raises(SandboxStartError, match="no-such-python"):
        box.start()
    assert box.connection_file is None


def test_parallel_kernels_have_their_own_ipython_dir_and_no_history(tmp_path):
    code = "import os\n(os.environ['IPYTHONDIR'], get_ipython().history_manager.enabled)"

    def run(_):
        with Sandbox(tmp_path) as box:
            return box.execute(code, timeout_s=30), str(box.connection_file.parent)

    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(run, range(2)))
    for result, tmp in runs:
        assert result.ok, result
        assert ast.literal_eval(result.result_text) == (f"{tmp}/ipython", False)
    assert runs[0][1] != runs[1][1]


@pytest.mark.slow
def test_median_kernel_start(tmp_path):
    starts = []
    for _ in range(5):
        with Sandbox(tmp_path) as box:
            starts.append(box.start())
    print(f"kernel start median {statistics.median(starts):.2f} s: {[round(s, 2) for s in starts]}")
    assert statistics.median(starts) < 10


def test_the_sandbox_refuses_to_show_a_workspace_that_lies_inside_a_bound_folder(tmp_path):
    from tools.confine import Confinement, SandboxUnavailable, probe, python_prefixes

    confinement = Confinement(probe(), tmp_path, tmp_path)
    inside = Path(python_prefixes(sys.executable)[0]) / "my-workspace"
    with pytest.raises(SandboxUnavailable, match="would show the workspace"):
        confinement.check_hidden(sys.executable, {"the workspace": inside})
    confinement.check_hidden(sys.executable, {"the workspace": tmp_path / "ws"})   # elsewhere: fine

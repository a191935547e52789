"""Run code in a fresh Jupyter kernel, one kernel per run, and say what happened.

What the sandbox does:

- starts one ipykernel per `Sandbox` (jupyter_client, IPC transport: the five channels
  are unix sockets in a private temp dir; the only TCP socket is ipykernel's own loopback
  listener for output from forked children), with a python you choose, in the directory
  you choose (the run's git worktree), with IPython history off and its own IPYTHONDIR;
- scrubs secrets from the kernel's environment (`scrub_env`: *_API_KEY, *_TOKEN, anything
  with SECRET or PASSWORD in its name, AWS-style access keys, credentials files, the ssh
  agent socket); PYTHONPATH and everything else is passed through;
- enforces a wall-clock timeout per `execute`: SIGINT at the deadline, then a 2 s grace
  period, then SIGKILL of the kernel's whole process tree;
- enforces a memory cap: a watchdog thread sums the RSS of the kernel and its children
  every 50 ms and kills the tree when the sum goes over the cap;
- notices a kernel that dies on its own (os._exit, segfault, the OOM killer) within ~0.1 s,
  and kills the children it left behind (its process group, plus what the watchdog saw);
- captures stdout, stderr, the error (ename, evalue, ANSI-free traceback) and the value of
  the last expression into a typed `ExecutionResult`; it never raises for what the code
  did. It raises `SandboxStartError` only when the kernel cannot be started at all.

- with a `Confinement` (tools/confine.py, what the harness uses unless told
  `--unsandboxed`), runs the kernel inside bubblewrap: its own mount, PID, user, IPC and
  network namespaces, a read-only view of the code, one writable run directory whose size
  is capped (polled with the memory, plus RLIMIT_FSIZE per file: status "disk"), no view
  of the labels, the KB, the main checkout or the home directory, an allowlisted
  environment. tools/confine.py's docstring says what that does and does not stop.

What the sandbox does NOT protect against WITHOUT a confinement (then it is a crash and
runaway guard, not a security boundary):

- the kernel runs as your user with your file system and network: it can read and write
  any file you can (including files outside the worktree and secrets stored on disk, such
  as ~/.aws or ~/.netrc), open sockets, and spawn processes;
- a process that leaves the kernel's process group and is reparented (a double fork with
  setsid) escapes the kill and the memory accounting;
- the memory cap is polled, not enforced by the OS: a fast allocation can overshoot it by
  what the kernel allocates in ~50 ms before the kill; RSS of children is summed, so pages
  shared between the kernel and its forked workers are counted more than once; GPU memory
  is not watched at all;
- CPU, disk space, file descriptors and GPU time are not limited (only wall clock is);
- the kernel can change its own state between `execute` calls of one sandbox: use one
  `Sandbox` per run.

Lifecycle. `Sandbox` is a context manager; the kernel starts on `start()` or on the first
`execute`. After the sandbox kills the kernel (a timeout whose interrupt did not stop the
code, the memory cap) or the kernel dies on its own, the sandbox is dead for good: every
later `execute` returns status "died" at once, without running anything. There is no
restart; make a new `Sandbox`. A timeout that the interrupt did stop, and a MemoryError
raised inside the kernel, leave the kernel alive (`alive` says which). `shutdown()` kills
the kernel and its children, reaps them and removes the temp dir; it is idempotent.
All calls block; from async code run them in a thread (`asyncio.to_thread`).
"""

from __future__ import annotations

import contextvars
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from queue import Empty
from typing import Any, Literal

import psutil
from jupyter_client import KernelManager
from jupyter_client.blocking import BlockingKernelClient
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.provisioning import LocalProvisioner

from tools.confine import Confinement

Status = Literal["ok", "error", "timeout", "memory", "died", "disk"]

INTERRUPT_GRACE_S = 2.0  # after SIGINT at the deadline, how long before SIGKILL
POLL_S = 0.1  # iopub wait per loop turn: bounds how late we see a deadline or a death
WATCHDOG_PERIOD_S = 0.05  # memory poll period
DISK_ERRNOS = ("[Errno 28]", "[Errno 27]", "[Errno 122]")  # ENOSPC, EFBIG (RLIMIT_FSIZE), EDQUOT
KERNEL_LOG_TAIL = 2000  # chars of the kernel process's own stdout/stderr kept in `detail`

_SECRET_NAME = re.compile(
    r"(?:^|_)(?:API_?KEY|TOKEN|ACCESS_KEY(?:_ID)?|CREDENTIALS?)$|SECRET|PASSWORD|PASSWD|PRIVATE_KEY",
    re.IGNORECASE,
)
_SECRET_NAMES = frozenset({"SSH_AUTH_SOCK"})
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def is_secret_name(name: str) -> bool:
    """Whether an environment variable of this name is treated as a secret."""
    return name.upper() in _SECRET_NAMES or bool(_SECRET_NAME.search(name))


def scrub_env(env: Mapping[str, str]) -> dict[str, str]:
    """A copy of `env` without the variables `is_secret_name` flags."""
    return {k: v for k, v in env.items() if not is_secret_name(k)}


def free_space(path: Path) -> str:
    """'N.N GB free on the disk of PATH' (what a disk failure shows)."""
    try:
        return f"{shutil.disk_usage(path).free / 2**30:.1f} GB free on the disk of {path}"
    except OSError:
        return f"free space on the disk of {path} unknown"


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


_thread = threading.local()


def _own_loop(method):
    """Run a Sandbox method in this thread's own contextvars context. jupyter_client's
    blocking calls keep their asyncio loop in a context variable; a thread that inherits a
    copied context (LangGraph runs parallel branches in copies of the caller's) would
    otherwise share the caller's loop with its siblings ("This event loop is already
    running"). One context per thread, so each thread has one loop, made once."""
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        if getattr(_thread, "inside", False):
            return method(*args, **kwargs)
        context = getattr(_thread, "context", None)
        if context is None:
            context = _thread.context = contextvars.Context()
        _thread.inside = True
        try:
            return context.run(method, *args, **kwargs)
        finally:
            _thread.inside = False
    return wrapper


class SandboxStartError(RuntimeError):
    """The kernel could not be started (bad python, ipykernel missing, start timeout)."""


@dataclass(frozen=True)
class ExecutionResult:
    """What one `execute` did. `detail` is the sandbox's own account of a non-ok status
    (what it killed and why, the exit code, the kernel process's last output)."""

    status: Status
    stdout: str
    stderr: str
    ename: str | None
    evalue: str | None
    traceback: str | None
    result_text: str | None
    duration_s: float
    peak_rss_mb: float
    exit_code: int | None
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class _FixedSpec(KernelSpecManager):
    """Hands the KernelManager our own spec instead of looking one up on disk."""

    def __init__(self, spec: KernelSpec) -> None:
        super().__init__()
        self._spec = spec

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        return self._spec


def _short_tmp_root() -> str:
    # unix socket paths must stay under ~100 chars; macOS TMPDIRs are long.
    root = tempfile.gettempdir()
    return root if len(root) <= 40 else "/tmp"


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _rss_mb(procs: list[psutil.Process]) -> float:
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total / 2**20


def _group_members(pgid: int) -> list[psutil.Process]:
    members = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid:
                members.append(p)
        except ProcessLookupError:
            pass
    return members


def _kill_tree(root: psutil.Process, seen: Mapping[int, psutil.Process]) -> list[psutil.Process]:
    """SIGKILL the kernel, its process group and every descendant seen so far (`seen` and the
    group keep the children of a kernel that already died, which are orphans by now).
    psutil checks pid + create time, so a recycled pid is never signalled. Returns who was
    signalled."""
    procs = {p.pid: p for p in [*list(seen.values()), *_tree(root)]}
    if root.is_running():  # it leads its own session: its pid is the group id
        if root.pid != os.getpgid(0):
            try:
                os.killpg(root.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    else:  # reaped: the pid may be reused, so find the group's members one by one
        procs.update((p.pid, p) for p in _group_members(root.pid))
    for p in procs.values():
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    return list(procs.values())


def _wait_gone(procs: list[psutil.Process], timeout_s: float) -> None:
    """Wait until the (killed) processes are gone. A zombie counts as gone: orphans are
    reaped by init, which in some containers never reaps."""
    end = time.monotonic() + timeout_s
    for p in procs:
        while time.monotonic() < end:
            try:
                if p.status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            time.sleep(0.01)


def folder_mb(paths: list[Path]) -> float:
    """Bytes on disk under the folders (files counted once per inode), in MB."""
    total, seen = 0, set()
    stack = [str(p) for p in paths]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        else:
                            st = entry.stat(follow_symlinks=False)
                            if (st.st_dev, st.st_ino) not in seen:
                                seen.add((st.st_dev, st.st_ino))
                                total += st.st_blocks * 512
                    except OSError:
                        continue
        except OSError:
            continue
    return total / 2**20


class _MemoryWatchdog(threading.Thread):
    """Polls the RSS of the kernel tree (and the size of its writable folders); records the
    peak and the descendants it saw; kills the tree over either cap."""

    def __init__(self, proc: psutil.Process, limit_mb: float | None,
                 seen: dict[int, psutil.Process], disk: list[Path] | None = None,
                 disk_limit_mb: float | None = None) -> None:
        super().__init__(name=f"sandbox-memory-{proc.pid}", daemon=True)
        self.proc, self.limit_mb, self.seen = proc, limit_mb, seen
        self.disk, self.disk_limit_mb = list(disk or []), disk_limit_mb
        self.peak_mb = 0.0
        self.disk_mb = 0.0
        self.tripped = threading.Event()
        self.disk_tripped = threading.Event()
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            if self.limit_mb is not None and self.peak_mb > self.limit_mb:
                self.tripped.set()  # before the kill, so a death seen later is attributed
                _kill_tree(self.proc, self.seen)
                return
            if self.disk_limit_mb is not None:     # the writable folders, summed at every poll
                self.disk_mb = folder_mb(self.disk)
                if self.disk_mb > self.disk_limit_mb:
                    self.disk_tripped.set()
                    _kill_tree(self.proc, self.seen)
                    return
            self._halt.wait(WATCHDOG_PERIOD_S)

    def sample(self) -> None:
        tree = _tree(self.proc)
        for child in tree[1:]:
            self.seen.setdefault(child.pid, child)
        self.peak_mb = max(self.peak_mb, _rss_mb(tree))

    def stop(self) -> None:
        self._halt.set()
        self.join()


class _Tail:
    """Keeps the last `limit` chars of a stream, so a flood of output cannot fill memory."""

    def __init__(self, limit: int) -> None:
        self.limit, self.parts, self.size, self.dropped = limit, [], 0, 0

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.size += len(text)
        if self.size > 2 * self.limit:
            joined = "".join(self.parts)
            self.dropped += len(joined) - self.limit
            self.parts, self.size = [joined[-self.limit:]], self.limit

    def text(self) -> str:
        joined = "".join(self.parts)
        if len(joined) > self.limit:
            self.dropped += len(joined) - self.limit
            joined = joined[-self.limit:]
        return f"[... {self.dropped} chars dropped ...]\n{joined}" if self.dropped else joined


class _Collector:
    """Folds the iopub and shell messages of one execute request."""

    def __init__(self, msg_id: str, max_chars: int) -> None:
        self.msg_id = msg_id
        self.out, self.err = _Tail(max_chars), _Tail(max_chars)
        self.error: dict[str, Any] | None = None
        self.result_text: str | None = None
        self.reply: dict[str, Any] | None = None
        self.idle = False

    @property
    def done(self) -> bool:
        return self.reply is not None and self.idle

    def on_iopub(self, msg: dict[str, Any]) -> None:
        if msg.get("parent_header", {}).get("msg_id") != self.msg_id:
            return
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            (self.out if content.get("name") == "stdout" else self.err).add(content.get("text", ""))
        elif kind == "error":
            self.error = content
        elif kind == "execute_result":
            self.result_text = content.get("data", {}).get("text/plain")
        elif kind == "status" and content.get("execution_state") == "idle":
            self.idle = True

    def on_shell(self, msg: dict[str, Any]) -> None:
        if msg.get("parent_header", {}).get("msg_id") == self.msg_id:
            self.reply = msg["content"]
            if self.error is None and self.reply.get("status") == "error":
                self.error = self.reply


class Sandbox:
    """One fresh ipykernel in `cwd`; see the module docstring for what it guards."""

    def __init__(self, cwd: str | os.PathLike[str], *, python: str = sys.executable,
                 extra_env: Mapping[str, str] | None = None, memory_limit_mb: float | None = None,
                 start_timeout_s: float = 60.0, max_output_chars: int = 1_000_000,
                 confinement: Confinement | None = None) -> None:
        self.cwd = Path(cwd).resolve()
        if not self.cwd.is_dir():
            raise NotADirectoryError(f"sandbox cwd {self.cwd} is not a directory")
        self.confinement = confinement
        self.python = python
        self.extra_env = dict(extra_env or {})
        self.memory_limit_mb = memory_limit_mb
        self.start_timeout_s = start_timeout_s
        self.max_output_chars = max_output_chars
        self.kernel_start_s: float | None = None  # seconds until the kernel answered kernel_info
        self._tmp: Path | None = None
        self._km: KernelManager | None = None
        self._kc: BlockingKernelClient | None = None
        self._popen: subprocess.Popen[bytes] | None = None
        self._proc: psutil.Process | None = None
        self._dead: str | None = None  # why the sandbox can no longer run code
        self._exit_code: int | None = None
        self._seen: dict[int, psutil.Process] = {}  # kernel descendants the watchdog saw

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def alive(self) -> bool:
        return self._dead is None and self._popen is not None and self._popen.poll() is None

    @property
    def connection_file(self) -> Path | None:
        return self._tmp / "kernel.json" if self._tmp else None

    def connection_info(self) -> dict[str, Any]:
        """The kernel's connection file (transport, ip, ports) while the kernel runs."""
        if self.connection_file is None or not self.connection_file.exists():
            raise RuntimeError("the sandbox has no running kernel")
        return json.loads(self.connection_file.read_text())

    @_own_loop
    def start(self) -> float:
        """Start the kernel (once); returns seconds until it answered a kernel_info request."""
        if self._dead is not None:
            raise SandboxStartError(f"sandbox is dead ({self._dead}); make a new Sandbox")
        if self.kernel_start_s is not None:
            return self.kernel_start_s
        t0 = time.perf_counter()
        self._tmp = Path(tempfile.mkdtemp(prefix="axk-", dir=_short_tmp_root()))
        argv = [self.python, "-m", "ipykernel_launcher", "-f", "{connection_file}", "--HistoryManager.enabled=False"]
        if self.confinement is not None:
            env = self.confinement.environment(self.python, self.extra_env, self._tmp)
            argv = self.confinement.command(argv, python=self.python, private=self._tmp, env=env)
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}   # bwrap's own; the kernel's is set inside
        else:
            env = {**scrub_env(os.environ), **self.extra_env, "IPYTHONDIR": str(self._tmp / "ipython")}
        spec = KernelSpec(argv=argv, display_name="agentx sandbox", language="python", interrupt_mode="signal")
        self._km = KernelManager(transport="ipc", ip=str(self._tmp / "ipc"),
                                 connection_file=str(self._tmp / "kernel.json"),
                                 kernel_spec_manager=_FixedSpec(spec))
        try:
            with open(self._tmp / "kernel.log", "wb") as log:
                self._km.start_kernel(env=env, cwd=str(self.cwd), stdout=log, stderr=log)
            provisioner = self._km.provisioner
            assert isinstance(provisioner, LocalProvisioner) and provisioner.process is not None
            self._popen = provisioner.process
            self._proc = psutil.Process(self._popen.pid)
            self._kc = self._km.client()
            self._kc.start_channels(stdin=False, hb=False)
            self._kc.wait_for_ready(timeout=self.start_timeout_s)
        except (OSError, RuntimeError) as exc:
            log_tail = self._kernel_log_tail()
            self.shutdown()
            raise SandboxStartError(f"kernel did not start with {self.python}: {exc}\n{log_tail}") from exc
        self.kernel_start_s = time.perf_counter() - t0
        return self.kernel_start_s

    @_own_loop
    def execute(self, code: str, timeout_s: float) -> ExecutionResult:
        """Run `code` in the kernel; never raises for what the code does."""
        if self._dead is not None:
            return self._result("died", None, time.perf_counter(), 0.0,
                                f"sandbox is dead ({self._dead}); nothing was run")
        self.start()
        assert self._kc is not None and self._km is not None and self._proc and self._popen
        t0 = time.perf_counter()
        cap = self.confinement
        watchdog = _MemoryWatchdog(self._proc, self.memory_limit_mb, self._seen,
                                   disk=[cap.run, self._tmp] if cap else None, disk_limit_mb=cap.run_mb if cap else None)
        col = _Collector(self._kc.execute(code, store_history=False, allow_stdin=False),
                         self.max_output_chars)
        watchdog.start()
        try:
            status, detail = self._wait(col, watchdog, t0 + timeout_s, timeout_s)
        finally:
            watchdog.stop()
        watchdog.sample()
        if status == "memory" and col.error is None:
            detail = (f"killed: kernel RSS reached {watchdog.peak_mb:.0f} MB, over the "
                      f"{self.memory_limit_mb:.0f} MB cap")
        elif status == "disk" and cap is not None:
            detail = ((detail + "; " if detail else "") + f"the run directory held {folder_mb([cap.run, self._tmp]):.0f} MB "
                      f"(cap {cap.run_mb} MB); {free_space(cap.run)}")
        self._drain(col, timeout=0)  # output the kernel sent just before it stopped
        return self._result(status, col, t0, watchdog.peak_mb, detail)

    @_own_loop
    def shutdown(self) -> None:
        """Kill the kernel and its children, reap them, remove the temp dir. Idempotent."""
        if self._kc is not None:
            self._kc.stop_channels()
            self._kc = None
        if self._proc is not None:
            self._kill()
        if self._km is not None:
            self._km.shutdown_kernel(now=True)  # also removes connection + ipc files
            self._km = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        if self._dead is None and self.kernel_start_s is not None:
            self._dead = "shut down"

    # -- internals ---------------------------------------------------------------------

    def _wait(self, col: _Collector, watchdog: _MemoryWatchdog, deadline: float,
              timeout_s: float) -> tuple[Status, str | None]:
        assert self._km is not None and self._popen is not None
        interrupted_at: float | None = None
        while True:
            if watchdog.tripped.is_set():
                return self._die("memory cap", "memory", None)
            if watchdog.disk_tripped.is_set():
                return self._die("disk cap", "disk", "killed: the run directory went over its size cap")
            code = self._popen.poll()
            if code is not None:
                if watchdog.tripped.is_set():
                    return self._die("memory cap", "memory", None)
                return self._die(f"kernel exited with code {code}", "died",
                                 f"kernel process exited with code {code}\n{self._kernel_log_tail()}")
            now = time.perf_counter()
            if interrupted_at is None and now >= deadline:
                self._interrupt()
                interrupted_at = now
            elif interrupted_at is not None and now >= interrupted_at + INTERRUPT_GRACE_S:
                return self._die("timeout", "timeout",
                                 f"ran past the {timeout_s:g} s timeout; SIGINT did not stop it within "
                                 f"{INTERRUPT_GRACE_S:g} s, so the kernel was killed")
            self._drain(col, timeout=POLL_S)
            if col.done:
                if interrupted_at is not None:
                    return "timeout", f"ran past the {timeout_s:g} s timeout and was interrupted; kernel alive"
                return self._reply_status(col), None

    @staticmethod
    def _reply_status(col: _Collector) -> Status:
        assert col.reply is not None
        if col.reply.get("status") == "ok":
            return "ok"
        if col.error and col.error.get("ename") == "MemoryError":
            return "memory"
        text = f"{col.error.get('evalue', '')} {' '.join(col.error.get('traceback', []))}" if col.error else ""
        return "disk" if any(code in text for code in DISK_ERRNOS) else "error"

    def _interrupt(self) -> None:
        """SIGINT to the kernel itself. Confined, the provisioner's process is bwrap, which
        a SIGINT would kill; the kernel is the python below it."""
        assert self._km is not None and self._proc is not None
        if self.confinement is None:
            self._km.interrupt_kernel()
            return
        for proc in _tree(self._proc)[1:]:
            try:
                if proc.cmdline()[1:3] == ["-m", "ipykernel_launcher"]:   # not bwrap, whose argv names it too
                    proc.send_signal(signal.SIGINT)
                    return
            except psutil.Error:
                continue

    def _drain(self, col: _Collector, timeout: float) -> None:
        """Read what iopub has (waiting up to `timeout` for the first message), then the reply."""
        assert self._kc is not None
        try:
            col.on_iopub(self._kc.get_iopub_msg(timeout=timeout))
            for _ in range(1000):  # a flood of output must not starve the deadline checks
                col.on_iopub(self._kc.get_iopub_msg(timeout=0))
        except Empty:
            pass
        if col.reply is None:
            try:
                col.on_shell(self._kc.get_shell_msg(timeout=0))
            except Empty:
                pass

    def _die(self, reason: str, status: Status, detail: str | None) -> tuple[Status, str | None]:
        self._kill()
        self._dead = reason
        return status, detail

    def _kill(self) -> None:
        """SIGKILL the tree and reap the kernel (it is our child) to keep its exit code."""
        assert self._proc is not None and self._popen is not None
        procs = _kill_tree(self._proc, self._seen)
        try:
            self._exit_code = self._popen.wait(timeout=5)
        except subprocess.TimeoutExpired:  # unkillable (D state): left to shutdown_kernel
            pass
        _wait_gone([p for p in procs if p.pid != self._proc.pid], timeout_s=2)

    def _kernel_log_tail(self) -> str:
        if self._tmp is None or not (self._tmp / "kernel.log").exists():
            return ""
        return (self._tmp / "kernel.log").read_bytes()[-KERNEL_LOG_TAIL:].decode("utf-8", "replace")

    def _result(self, status: Status, col: _Collector | None, t0: float, peak_mb: float,
                detail: str | None) -> ExecutionResult:
        err = col.error if col else None
        return ExecutionResult(
            status=status,
            stdout=col.out.text() if col else "",
            stderr=col.err.text() if col else "",
            ename=err.get("ename") if err else None,
            evalue=err.get("evalue") if err else None,
            traceback=strip_ansi("\n".join(err.get("traceback", []))) if err else None,
            result_text=col.result_text if col else None,
            duration_s=time.perf_counter() - t0,
            peak_rss_mb=peak_mb,
            exit_code=self._exit_code if status in ("died", "memory", "timeout", "disk") and self._dead else None,
            detail=detail,
        )


"""The OS sandbox around experiment kernels: bubblewrap (`bwrap`) on Linux.

`Confinement` turns a kernel's command line into a `bwrap` command line. What a confined
kernel sees and may do:

- a new mount namespace: read-only /usr, the shared libraries, the few /etc files a
  Python process needs (no /etc/shadow), the interpreter's prefixes (`sys.prefix`,
  `sys.base_prefix`) read-only, /sys read-only, a fresh /proc of its own PID namespace,
  a minimal /dev (plus /dev/nvidia* when the host has them);
- `/ax/work`: the experiment's code, read-only; `/ax/run`: the run directory, the one
  writable folder that outlives the kernel (watched by the sandbox's disk cap); `/tmp`: a
  private tmpfs of `tmp_mb` (gone with the kernel); the kernel's connection folder (its
  five unix sockets) read-write at its host path;
- nothing else: not the cache with the labelled splits, not the KB, not the workspace's
  main checkout or its `.git`, not the home directory, not agentx's own source;
- new PID, IPC, UTS, cgroup and user namespaces: the kernel cannot see or signal agentx or
  any other host process, `/proc/<agentx pid>/environ` does not exist for it, and the
  whole namespace is killed when the kernel exits or agentx dies (`--die-with-parent`), so
  a double-forked child cannot outlive the run;
- no network namespace of the host: no interface but its own loopback, unless the
  manifest says `[sandbox] network = true`;
- an environment built from an allowlist (`ENV_ALLOWLIST` plus what the harness passes),
  not a scrubbed copy of agentx's;
- all capabilities dropped, `RLIMIT_FSIZE` at the run directory's cap (a single file
  cannot grow past it).

What it does NOT protect against: a kernel exploit (there is no seccomp filter), reading
what the bound system folders hold (installed packages, /etc/passwd), using the CPU or
GPU as long as the timeout allows, and a GPU's memory (only its device files are
bound). The disk cap on the run directory is polled (`tools/sandbox.py`), so it can
overshoot by what the kernel writes in a fraction of a second; `/tmp` is capped by the
kernel (tmpfs `--size`).

`probe()` checks once per process that bwrap exists and can create the namespaces;
`SandboxUnavailable` says how to install it, in one line.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from agentx.errors import UserError

WORK = "/ax/work"          # the experiment's code, read-only
RUN = "/ax/run"            # the run directory, the only lasting writable place
HOME = "/tmp/home"         # $HOME inside: on the private tmpfs

# Environment variables a kernel may inherit from agentx (values checked for nothing else).
ENV_ALLOWLIST = ("LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                 "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "CUDA_VISIBLE_DEVICES",
                 "NVIDIA_VISIBLE_DEVICES", "CUBLAS_WORKSPACE_CONFIG", "PYTHONHASHSEED")
# The /etc files a Python process with numpy/torch/pandas needs (dynamic loader, users, time zone).
ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "passwd", "group", "nsswitch.conf",
       "localtime", "timezone", "hosts", "host.conf", "protocols", "services", "mime.types", "os-release",
       "fonts", "ssl", "ca-certificates", "gai.conf")
ETC_NETWORK = ("resolv.conf",)
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")

INSTALL_HINT = ("install it (Debian/Ubuntu: sudo apt-get install bubblewrap; Fedora: sudo dnf install bubblewrap) "
                "or pass --unsandboxed to run experiment code without one (every verdict then says so)")


class SandboxUnavailable(UserError):
    """No OS sandbox can be made here; the message is one line that says what to do."""


@dataclass(frozen=True)
class Bwrap:
    path: str
    version: str
    sized_tmpfs: bool      # `--size` for tmpfs (bubblewrap 0.7+)


def bwrap_path() -> str | None:
    """The bwrap binary: $AGENTX_BWRAP when set (a missing path means none), else PATH."""
    explicit = os.environ.get("AGENTX_BWRAP")
    if explicit is not None:
        return explicit if os.access(explicit, os.X_OK) else None
    return shutil.which("bwrap")


@functools.lru_cache(maxsize=4)
def _probe(path: str | None) -> Bwrap:
    if sys.platform != "linux":
        raise SandboxUnavailable(f"no OS sandbox for experiment code on {sys.platform}: agentx confines kernels "
                                 "with bubblewrap, which needs Linux; pass --unsandboxed to run without one "
                                 "(every verdict then says so)")
    if path is None:
        raise SandboxUnavailable(f"no OS sandbox for experiment code: bubblewrap (bwrap) is not installed; {INSTALL_HINT}")
    try:
        version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
        helptext = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=10).stdout
        check = subprocess.run([path, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "--proc", "/proc",
                                "--dev", "/dev", "true"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SandboxUnavailable(f"no OS sandbox for experiment code: {path} did not run ({exc}); {INSTALL_HINT}") from None
    if check.returncode != 0:
        why = (check.stderr.strip().splitlines() or ["exit code %d" % check.returncode])[-1]
        raise SandboxUnavailable(
            f"no OS sandbox for experiment code: bubblewrap cannot create namespaces here ({why}); enable unprivileged "
            "user namespaces (sysctl kernel.unprivileged_userns_clone=1; on Ubuntu 24.04+ also "
            "kernel.apparmor_restrict_unprivileged_userns=0) or pass --unsandboxed (every verdict then says so)")
    return Bwrap(path, version or "bubblewrap", "--size" in helptext)


def probe() -> Bwrap:
    """bwrap, checked to work here (cached per process); raises SandboxUnavailable."""
    return _probe(bwrap_path())


@functools.lru_cache(maxsize=8)
def python_prefixes(python: str) -> tuple[str, ...]:
    """The folders an interpreter needs: its prefixes and where its executable really lives."""
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        found = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    else:
        out = subprocess.run([python, "-c", "import sys, json; print(json.dumps([sys.prefix, sys.base_prefix, "
                              "sys.exec_prefix, sys.base_exec_prefix]))"], capture_output=True, text=True, timeout=60)
        found = set(json.loads(out.stdout)) if out.returncode == 0 else set()
    found |= {str(Path(python).parent.parent), str(Path(os.path.realpath(python)).parent.parent)}
    return tuple(sorted(p for p in found if p and p != "/" and not any(p == s or p.startswith(s + "/") for s in SYSTEM)))


@dataclass(frozen=True)
class Confinement:
    """One kernel's sandbox: which host folders become /ax/work and /ax/run, and the limits."""

    bwrap: Bwrap
    work: Path                  # host folder shown read-only at /ax/work
    run: Path                   # host folder shown read-write at /ax/run
    network: bool = False
    run_mb: int = 2048          # the run directory's cap (polled) and RLIMIT_FSIZE
    tmp_mb: int = 1024          # the private /tmp

    def command(self, argv: Sequence[str], *, python: str, private: Path, env: Mapping[str, str]) -> list[str]:
        """`argv` (the kernel's command line) wrapped in bwrap. `private` is the sandbox's own
        connection folder, bound read-write at its host path; `env` is the whole environment."""
        args = [self.bwrap.path, "--die-with-parent", "--new-session", "--unshare-user", "--unshare-pid",
                "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try", "--cap-drop", "ALL",
                "--hostname", "agentx-sandbox", "--clearenv"]
        args += [] if self.network else ["--unshare-net"]
        for name, value in env.items():
            args += ["--setenv", name, value]
        args += (["--size", str(self.tmp_mb * 2**20)] if self.bwrap.sized_tmpfs else []) + ["--tmpfs", "/tmp"]
        for root in SYSTEM:
            if os.path.islink(root):
                args += ["--symlink", os.readlink(root), root]
            elif os.path.isdir(root):
                args += ["--ro-bind", root, root]
        for name in ETC + (ETC_NETWORK if self.network else ()):
            args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
        for prefix in python_prefixes(python):
            args += ["--ro-bind", prefix, prefix]
        args += ["--ro-bind-try", "/sys", "/sys", "--proc", "/proc", "--dev", "/dev"]
        for device in sorted(Path("/dev").glob("nvidia*")):
            args += ["--dev-bind", str(device), str(device)]
        args += ["--ro-bind", str(self.work), WORK, "--bind", str(self.run), RUN,
                 "--bind", str(private), str(private), "--dir", HOME, "--chdir", WORK]
        limit = self.run_mb * 2**20
        launch = ("import os, resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (%d, %d)); "
                  "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])" % (limit, limit))
        return [*args, "--", python, "-c", launch, *argv[1:]]

    def check_hidden(self, python: str, secret: Mapping[str, Path]) -> None:
        """Refuse when a folder bound read-only (the interpreter's prefixes, the system ones)
        holds a folder the kernel must not see (the workspace with its KB, the cache)."""
        bound = [*python_prefixes(python), *(p for p in SYSTEM if os.path.isdir(p) and not os.path.islink(p))]
        for name, path in secret.items():
            real = os.path.realpath(path)
            for prefix in bound:
                if real == prefix or real.startswith(prefix.rstrip("/") + "/"):
                    raise SandboxUnavailable(
                        f"the sandbox would show {name} ({real}) to experiment code: it lies inside {prefix}, which "
                        "kernels see read-only (the Python installation or a system folder); move it elsewhere")

    def environment(self, python: str, extra: Mapping[str, str], private: Path) -> dict[str, str]:
        """The kernel's whole environment: the allowlist, what the harness adds, fixed paths."""
        env = {k: os.environ[k] for k in ENV_ALLOWLIST if k in os.environ}
        env.update(extra)
        venv_bin = str(Path(python).parent)
        env.update({"PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin", "HOME": HOME, "TMPDIR": "/tmp",
                    "IPYTHONDIR": "/tmp/ipython", "MPLCONFIGDIR": "/tmp/matplotlib", "PYTHONNOUSERSITE": "1",
                    "AGENTX_SANDBOX": "bwrap"})
        if (Path(python).parent.parent / "pyvenv.cfg").is_file():
            env["VIRTUAL_ENV"] = str(Path(python).parent.parent)
        return env

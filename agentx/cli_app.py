"""`agentx serve`, `agentx schedule ...`, `agentx report` and `agentx chat`: where people meet agentx."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from agentx.cli_common import WorkspaceOpt, console, fail, progress
from agentx.cli_loop import LlmOpt
from agentx.errors import UserError


def serve(workspace: WorkspaceOpt,
          host: Annotated[str, typer.Option(help="address to bind; any but a loopback one needs the token")] = "127.0.0.1",
          port: Annotated[int, typer.Option(help="port to listen on")] = 8765,
          token: Annotated[str | None, typer.Option(envvar="AGENTX_TOKEN", help="the access token when bound to a "
                                                    "non-loopback address (default: one is made and printed)")] = None,
          llm: LlmOpt = "heuristic") -> None:
    """The local web app: experiments, pull-request review, chat, the run in progress, the report,
    schedules. It also runs the workspace's worker (queued requests, in order) and the scheduler.

    Bound to 127.0.0.1 (the default) it needs no token. Bound to any other address every
    request needs the token (open the printed /login?token=... link once), and every change
    also a CSRF check; reviews record the name the reviewer gives."""
    from agentx.web.server import serve as run_server
    from agentx.workspace import load_manifest

    try:
        load_manifest(workspace)
        run_server(workspace, host=host, port=port, token=token, brain=llm, say=progress)
    except UserError as exc:
        fail(exc)


schedule_app = typer.Typer(no_args_is_help=True, help="Scheduled runs (cron), kept across restarts; "
                           "`agentx serve` fires them.")


@schedule_app.command("add")
def schedule_add(workspace: WorkspaceOpt,
                 cron: Annotated[str, typer.Option(help="when, as cron's five fields: \"0 1 * * *\" is 01:00 daily")],
                 until: Annotated[str | None, typer.Option(help="the run stops starting work at this local time, "
                                                           "HH:MM")] = None,
                 experiments: Annotated[int | None, typer.Option(min=1, help="stop after this many experiments")] = 20,
                 tier: Annotated[str, typer.Option(help="full or micro")] = "full",
                 misfire_grace: Annotated[float, typer.Option(help="minutes late a firing may still run (the "
                                                              "machine was off); later ones are skipped")] = 60,
                 llm: LlmOpt = "heuristic") -> None:
    """Add a scheduled run. `agentx serve` must be running to fire it (see the README for systemd)."""
    from agentx import schedule
    from agentx.app import RunOptions

    try:
        if until is not None:
            from agentx.state import next_local_time
            next_local_time(until, time.time())
        made = schedule.add(workspace, cron, RunOptions(brain=llm, experiments=experiments, until=until, tier=tier),
                            grace_minutes=misfire_grace)
    except (UserError, ValueError) as exc:
        fail(exc)
    console.print(f"schedule {made.id}: {made.cron}, next firing {made.next_run:%Y-%m-%d %H:%M %Z}")


@schedule_app.command("list")
def schedule_list(workspace: WorkspaceOpt) -> None:
    """The schedules, with their next firing."""
    from agentx import schedule

    rows = schedule.listing(workspace)
    if not rows:
        console.print("no schedules; `agentx schedule add --cron ...` makes one")
    for s in rows:
        o = s.options
        console.print(f"{s.id}  {s.cron!r}  next {s.next_run:%Y-%m-%d %H:%M %Z}  {o.experiments or '-'} experiments"
                      + (f" until {o.until}" if o.until else "") + f", {o.tier} tier, grace {s.grace_minutes:.0f} min")


@schedule_app.command("remove")
def schedule_remove(schedule_id: Annotated[str, typer.Argument(help="the schedule's id (agentx schedule list)")],
                    workspace: WorkspaceOpt) -> None:
    """Remove a schedule."""
    from agentx import schedule

    try:
        schedule.remove(workspace, schedule_id)
    except UserError as exc:
        fail(exc)
    console.print(f"removed schedule {schedule_id}")


def report(workspace: WorkspaceOpt,
           since: Annotated[str, typer.Option(help="how far back: 24h, 90m, 7d, or an ISO time (UTC)")] = "24h",
           html: Annotated[Path | None, typer.Option(help="also write a self-contained HTML report with plots "
                                                     "here")] = None) -> None:
    """The morning report: what ran, what shipped, what failed and why, spend, where the time went.
    Every figure is a SQL query over the KB; the HTML fetches nothing and has no scripts."""
    from agentx.report import for_workspace, parse_since

    try:
        made = for_workspace(workspace, parse_since(since))
    except UserError as exc:
        fail(exc)
    print(made.text())
    if html is not None:
        html.write_text(made.html(), encoding="utf-8")
        console.print(f"wrote {html}")


def chat(workspace: WorkspaceOpt, llm: LlmOpt = "heuristic",
         conversation: Annotated[str, typer.Option(help="the conversation to continue (history is kept in the "
                                                   "KB)")] = "terminal",
         tier: Annotated[str, typer.Option(help="tier a confirmed experiment is judged at: full or micro")] = "full"
         ) -> None:
    """Chat in the terminal: ask for an experiment in plain words (shown for confirmation, then
    run with live progress) or ask about the KB ("why did E0003 fail?"). Ctrl-D or 'quit' ends."""
    from agentx.app import Worker, wait_for
    from agentx.chat import Chat
    from knowledge.queue import RequestQueue

    talk = Chat(workspace, conversation=conversation, brain=llm)
    history = talk.history(20)
    if history:
        console.print(f"[dim]-- the last {len(history)} messages of '{conversation}' --[/dim]")
        for m in history:
            console.print(f"[dim]{m.role}:[/dim] {escape(m.text)}", soft_wrap=True)
    console.print(f"brain: {talk.brains.brainstorm.name}. A request or a question; 'quit' ends.")
    while True:
        try:
            text = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            console.print()
            return
        if text.lower() in ("quit", "exit", "q"):
            return
        if not text:
            continue
        try:
            reply = talk.send(text)
        except UserError as exc:
            console.print(f"[red]{escape(str(exc))}[/red]", soft_wrap=True)
            continue
        console.print(f"agentx> {escape(reply.text)}", soft_wrap=True)
        if reply.kind != "proposal":
            continue
        try:
            answer = input("run it? [y/N] ").strip().lower()
        except (EOFError, KeyboardInterrupt):
            return
        if answer not in ("y", "yes"):
            continue
        queued, request_id = talk.confirm(reply.id, tier=tier)
        console.print(f"agentx> {escape(queued.text)}")
        Worker(Path(workspace), say=progress).run_pending()    # this terminal is the worker, unless a server is
        queue = RequestQueue(talk.kb)
        done = wait_for(queue, request_id, timeout_s=0) or _follow(queue, request_id)
        from agentx.web.views import request_outcome

        outcome = request_outcome(talk.kb, done)
        for e in outcome["experiments"]:
            effect = "" if e["delta"] is None else f" effect {e['delta']:+.4f} [{e['ci_low']:+.4f}, {e['ci_high']:+.4f}]"
            console.print(f"agentx> {e['id']} {e['decision'] or e['status']}{effect}"
                          + (f"; pull request #{e['pr']}" if e["pr"] else ""))
        if done.status == "failed":
            console.print(f"agentx> [red]request {request_id} failed:[/red] {escape(done.error or '')}", soft_wrap=True)


def _follow(queue, request_id: int):
    """Print a request's progress (another process's worker runs it) until it ends."""
    after = 0
    while True:
        for line in queue.progress(request_id, after):
            after = line.id
            progress(line.line)
        current = queue.get(request_id)
        if not current.open:
            return current
        time.sleep(0.5)




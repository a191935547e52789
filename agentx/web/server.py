"""`agentx serve`: the local web app (FastAPI, server-rendered Jinja pages, SSE for progress).

Pages: the run in progress and the queue (/), experiments (/experiments, sortable, filtered
by decision and recipe), one experiment (/experiments/E0001: seeds, guardrails, rollout,
lessons, diff, kernel logs, plots), pull requests (/prs, /prs/N: diff and evidence side by
side, approve or reject), chat (/chat), the morning report (/report), schedules
(/schedules). Everything it changes goes through the application layer (agentx/app.py) as
a queued request that the workspace's worker carries out, so the web app never trains or
merges in a request handler. Assets are this package's own files (agentx/web/static): the
app fetches nothing from elsewhere and works offline. Access: agentx/web/security.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from agentx import app as application
from agentx.errors import UserError
from agentx.web import views
from agentx.web.security import CSRF_COOKIE, TOKEN_COOKIE, Guard, csrf_token
from knowledge.queue import RequestQueue

HERE = Path(__file__).parent
REVIEW_WAIT_S = 30          # how long an approve/reject page waits for the worker before saying "queued"


def create_app(workspace: Path, *, host: str = "127.0.0.1", token: str | None = None, brain: str = "heuristic",
               chat_model=None) -> FastAPI:
    """The web app of one workspace. It serves and queues; `agentx serve` also runs the
    workspace's worker and scheduler beside it (`serve` below)."""
    from knowledge import KnowledgeBase
    from agentx.workspace import load_manifest

    root = Path(workspace).resolve()
    manifest = load_manifest(root)
    kb = KnowledgeBase.for_workspace(root)
    queue = RequestQueue(kb)
    guard = Guard.for_host(host, token)
    web = FastAPI(title=f"agentx: {manifest.workspace.name}", dependencies=[Depends(guard.check)],
                  docs_url=None, redoc_url=None, openapi_url=None)
    web.state.guard, web.state.root, web.state.kb = guard, root, kb
    web.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.filters["f"] = views.fmt
    chats: dict[str, object] = {}

    def page(request: Request, name: str, **context) -> HTMLResponse:
        response = templates.TemplateResponse(request, name, {
            "workspace": manifest.workspace.name, "csrf": csrf_token(request), "needs_token": guard.needs_token,
            "metric": manifest.metric.primary, **context})
        if new := request.state.__dict__.get("new_csrf"):
            response.set_cookie(CSRF_COOKIE, new, samesite="strict", httponly=False)
        return response

    def chat_for(conversation: str):
        from agentx.chat import Chat

        if conversation not in chats:
            chats[conversation] = Chat(root, conversation=conversation, brain=brain, chat_model=chat_model)
        return chats[conversation]

    @web.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": str(exc)}, status_code=400)
        response = page(request, "error.html", message=str(exc))
        response.status_code = 400
        return response

    # -- pages ------------------------------------------------------------------------

    @web.get("/login")
    async def login(token: str = "") -> Response:
        if guard.needs_token and token != guard.token:
            raise HTTPException(401, "wrong token")
        response = RedirectResponse("/", status_code=303)
        if guard.needs_token:
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        return response

    @web.get("/", response_class=HTMLResponse)
    async def home(request: Request):
        status = await asyncio.to_thread(views.run_status, kb, queue)
        return page(request, "home.html", status=status)

    @web.get("/api/run")
    async def api_run():
        return JSONResponse(await asyncio.to_thread(views.run_status, kb, queue), headers={"Cache-Control": "no-store"})

    @web.get("/experiments", response_class=HTMLResponse)
    async def experiments(request: Request, decision: str = "", recipe: str = "", sort: str = "id",
                          desc: bool = False):
        rows = await asyncio.to_thread(application.experiment_rows, kb, decision=decision or None,
                                       recipe=recipe or None)
        facets = await asyncio.to_thread(views.facets, kb)
        return page(request, "experiments.html", rows=views.sort_rows(rows, sort, desc), decision=decision,
                    recipe=recipe, sort=sort, desc=desc, facets=facets)

    @web.get("/experiments/{experiment_id}", response_class=HTMLResponse)
    async def experiment(request: Request, experiment_id: str):
        detail = await asyncio.to_thread(views.experiment_detail, root, kb, experiment_id.upper(), manifest)
        return page(request, "experiment.html", **detail)

    @web.get("/prs", response_class=HTMLResponse)
    async def prs(request: Request, state: str = ""):
        rows = await asyncio.to_thread(kb.pull_requests, state or None)
        return page(request, "prs.html", prs=rows, state=state)

    @web.get("/prs/{number}", response_class=HTMLResponse)
    async def pr(request: Request, number: int, notice: str = ""):
        detail = await asyncio.to_thread(views.pr_detail, root, kb, number, manifest)
        return page(request, "pr.html", notice=notice, **detail)

    @web.post("/prs/{number}/approve")
    async def approve(number: int, reviewer: str = Form(...), force: bool = Form(False)):
        return await review(number, "approve", {"pr": number, "force": force, "reviewer": _who(reviewer)})

    @web.post("/prs/{number}/reject")
    async def reject(number: int, reviewer: str = Form(...), reason: str = Form(...)):
        if not reason.strip():
            raise UserError("a rejection needs a reason (it becomes a lesson the brainstorm reads)")
        return await review(number, "reject", {"pr": number, "reason": reason, "reviewer": _who(reviewer)})

    async def review(number: int, kind: str, payload: dict) -> Response:
        if kb.get_pull_request(number) is None:
            raise UserError(f"no pull request #{number}")
        request_id = queue.submit(kind, payload, source="web")
        done = await asyncio.to_thread(application.wait_for, queue, request_id, REVIEW_WAIT_S)
        if done is None:
            notice = (f"queued as request {request_id}: the worker is busy with the run in progress and will "
                      f"{kind} when it ends")
        elif done.status == "failed":
            notice = f"refused: {done.error}"
        else:
            notice = "merged into main at " + done.result["merge_commit"][:10] if kind == "approve" else "rejected"
        return RedirectResponse(f"/prs/{number}?notice={notice}", status_code=303)

    @web.get("/chat", response_class=HTMLResponse)
    async def chat_page(request: Request, conversation: str = "web"):
        history = await asyncio.to_thread(chat_for(conversation).history)
        confirmed = {m.payload["message"] for m in history if m.kind == "queued"}
        return page(request, "chat.html", history=history, conversation=conversation, confirmed=confirmed,
                    brain=chat_for(conversation).brains.brainstorm.name)

    @web.post("/api/chat")
    async def chat_send(request: Request):
        body = await request.json()
        chat = chat_for(str(body.get("conversation") or "web"))
        reply = await asyncio.to_thread(chat.send, str(body.get("text") or ""))
        return views.message_json(reply)

    @web.post("/api/chat/{message_id}/confirm")
    async def chat_confirm(request: Request, message_id: int):
        body = await request.json()
        chat = chat_for(str(body.get("conversation") or "web"))
        reply, request_id = await asyncio.to_thread(chat.confirm, message_id, tier=str(body.get("tier") or "full"))
        return {**views.message_json(reply), "request_id": request_id}

    @web.get("/api/requests/{request_id}/events")
    async def events(request_id: int):
        if queue.get(request_id) is None:
            raise HTTPException(404, f"no request {request_id}")
        return StreamingResponse(stream(request_id), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def stream(request_id: int):
        """Server-sent events: each progress line as it is written, then the outcome."""
        after, beat = 0, time.monotonic()
        while True:
            lines = await asyncio.to_thread(queue.progress, request_id, after)
            for line in lines:
                after = line.id
                yield f"event: progress\ndata: {json.dumps({'at': line.at.isoformat(), 'line': line.line})}\n\n"
            current = await asyncio.to_thread(queue.get, request_id)
            if not current.open and not lines:
                outcome = await asyncio.to_thread(views.request_outcome, kb, current)
                yield f"event: done\ndata: {json.dumps(outcome, default=str)}\n\n"
                return
            if time.monotonic() - beat > 10:
                beat = time.monotonic()
                yield ": still working\n\n"
            await asyncio.sleep(0.5)

    @web.post("/runs")
    async def start_run(experiments: int = Form(1), tier: str = Form("full")):
        options = application.RunOptions(brain=brain, experiments=experiments, tier=tier)
        request_id = queue.submit("run", options.model_dump(), source="web")
        return RedirectResponse(f"/?queued={request_id}", status_code=303)

    @web.post("/requests/{request_id}/cancel")
    async def cancel(request_id: int):
        if not queue.cancel(request_id):
            raise UserError(f"request {request_id} has started or ended; only a queued request can be cancelled")
        return RedirectResponse("/", status_code=303)

    @web.get("/report", response_class=HTMLResponse)
    async def report(since: str = "24h"):
        from agentx.report import for_workspace, parse_since

        made = await asyncio.to_thread(for_workspace, root, parse_since(since))
        return HTMLResponse(made.html())

    @web.get("/schedules", response_class=HTMLResponse)
    async def schedules(request: Request):
        from agentx import schedule

        return page(request, "schedules.html", schedules=await asyncio.to_thread(schedule.listing, root))

    @web.post("/schedules")
    async def add_schedule(cron: str = Form(...), experiments: int = Form(20), until: str = Form(""),
                           tier: str = Form("full")):
        from agentx import schedule

        options = application.RunOptions(brain=brain, experiments=experiments, until=until or None, tier=tier)
        await asyncio.to_thread(schedule.add, root, cron, options)
        return RedirectResponse("/schedules", status_code=303)

    @web.post("/schedules/{schedule_id}/remove")
    async def remove_schedule(schedule_id: str):
        from agentx import schedule

        await asyncio.to_thread(schedule.remove, root, schedule_id)
        return RedirectResponse("/schedules", status_code=303)

    return web


def _who(reviewer: str) -> str:
    name = " ".join(reviewer.split())
    if not name:
        raise UserError("say who you are (the reviewer's name is recorded on the pull request)")
    return f"{name[:80]} (web)"


def serve(workspace: Path, *, host: str, port: int, token: str | None, brain: str, say) -> None:
    """Run the web app with the workspace's worker and scheduler until Ctrl-C."""
    import socket

    import uvicorn

    from agentx import schedule

    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror or exc}): another server may hold the port; "
                        "pick another with --port") from None
    web = create_app(workspace, host=host, token=token, brain=brain)
    guard: Guard = web.state.guard
    worker = application.Worker(web.state.root, say=say)
    worker.start()
    sched = schedule.start(web.state.root, say=say)
    where = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    say(f"agentx serve: {where}" + (f"login?token={guard.token}" if guard.needs_token else "")
        + " (worker and scheduler running; Ctrl-C stops)")
    try:
        uvicorn.run(web, host=host, port=port, log_level="warning")
    finally:
        worker.stop.set()
        sched.shutdown(wait=False)

"""Test doubles at the provider edge, both queue-driven:

- `FakeChatModel`: a real langchain `BaseChatModel` whose replies are scripted with
  `enqueue(reply)`; a reply is a string (the text), a dict (sent as JSON) or an exception
  (raised, e.g. `status_error(429)`). It records every call: messages and bound kwargs.
- `FakeOpenAIServer`: a local HTTP server speaking OpenAI chat completions
  (`POST /v1/chat/completions`, non-streaming, with `usage`), for the real `openai`
  client through `ChatOpenAI(base_url=server.base_url)`. A reply may also be an HTTP
  status (`429`, or `ErrorReply(500, "...")`). It records every request.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from langchain_core.exceptions import (
    ModelAPIError,
    ModelAuthenticationError,
    ModelError,
    ModelInvalidRequestError,
    ModelNotFoundError,
    ModelRateLimitError,
)
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field


def _text(reply: str | dict) -> str:
    return json.dumps(reply) if isinstance(reply, dict) else reply


def _words(text: str) -> int:
    return len(text.split())


@dataclass
class _Scripted:
    reply: Any
    input_tokens: int | None = None
    output_tokens: int | None = None


@dataclass
class FakeCall:
    messages: list[BaseMessage]
    kwargs: dict[str, Any]


class FakeChatModel(BaseChatModel):
    """A scripted chat model; token usage defaults to word counts unless given."""

    queue: list[_Scripted] = Field(default_factory=list)
    calls: list[FakeCall] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "agentx-fake-chat"

    def enqueue(self, reply: str | dict | BaseException, *, input_tokens: int | None = None,
                output_tokens: int | None = None) -> FakeChatModel:
        self.queue.append(_Scripted(reply, input_tokens, output_tokens))
        return self

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: Any = None, **kwargs: Any) -> ChatResult:
        self.calls.append(FakeCall(list(messages), dict(kwargs)))
        if not self.queue:
            raise AssertionError(f"FakeChatModel: call {len(self.calls)} has no enqueued reply")
        scripted = self.queue.pop(0)
        if isinstance(scripted.reply, BaseException):
            raise scripted.reply
        text = _text(scripted.reply)
        prompt_words = sum(_words(str(m.text)) for m in messages)
        usage = {
            "input_tokens": scripted.input_tokens if scripted.input_tokens is not None else prompt_words,
            "output_tokens": scripted.output_tokens if scripted.output_tokens is not None else _words(text),
        }
        usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
        message = AIMessage(content=text, usage_metadata=usage)
        return ChatResult(generations=[ChatGeneration(message=message)])


def status_error(status: int, message: str = "scripted provider error") -> Exception:
    """The provider-neutral error a LangChain integration raises for an HTTP `status`."""
    by_status = {400: ModelInvalidRequestError, 401: ModelAuthenticationError,
                 404: ModelNotFoundError, 429: ModelRateLimitError}
    cls = by_status.get(status, ModelAPIError if status >= 500 else ModelError)
    return cls(f"Error code: {status} - {message}")


@dataclass(frozen=True)
class ErrorReply:
    """A scripted HTTP error from `FakeOpenAIServer`."""

    status: int
    message: str = "scripted server error"


@dataclass(frozen=True)
class ToolCallReply:
    """A scripted reply from `FakeOpenAIServer` that calls tool `name` with `args`."""

    name: str
    args: dict[str, Any]


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]  # names in lowercase
    body: dict[str, Any]
    status: int = 0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: FakeOpenAIServer


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        headers = {k.lower(): v for k, v in self.headers.items()}
        request = RecordedRequest(self.path, headers, json.loads(raw or b"{}"))
        status, payload = self.server.owner._answer(request)
        request.status = status
        self._send(status, payload)


class FakeOpenAIServer:
    """`with FakeOpenAIServer() as server:` serves on 127.0.0.1 at a free port."""

    def __init__(self) -> None:
        self.replies: deque[_Scripted] = deque()
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def enqueue(self, reply: str | dict | int | ErrorReply | ToolCallReply, *, prompt_tokens: int | None = None,
                completion_tokens: int | None = None) -> FakeOpenAIServer:
        self.replies.append(_Scripted(reply, prompt_tokens, completion_tokens))
        return self

    @property
    def base_url(self) -> str:
        assert self._server is not None, "FakeOpenAIServer is not running"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> FakeOpenAIServer:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _answer(self, request: RecordedRequest) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests.append(request)
            scripted = self.replies.popleft() if self.replies else None
        if request.path.rstrip("/") != "/v1/chat/completions":
            return 404, _error(404, f"no route {request.path}")
        if request.body.get("stream"):
            return 400, _error(400, "FakeOpenAIServer does not stream")
        if scripted is None:
            return 500, _error(500, "FakeOpenAIServer: no scripted reply left")
        reply = scripted.reply
        if isinstance(reply, int):
            reply = ErrorReply(reply)
        if isinstance(reply, ErrorReply):
            return reply.status, _error(reply.status, reply.message)
        message: dict[str, Any] = {"role": "assistant", "content": None if isinstance(reply, ToolCallReply)
                                   else _text(reply)}
        if isinstance(reply, ToolCallReply):
            message["tool_calls"] = [{"id": f"call_{next(self._ids)}", "type": "function",
                                      "function": {"name": reply.name, "arguments": json.dumps(reply.args)}}]
        content = message["content"] or json.dumps(reply.args)
        prompt_words = sum(_words(str(m.get("content", ""))) for m in request.body.get("messages", []))
        prompt = scripted.input_tokens if scripted.input_tokens is not None else prompt_words
        completion = scripted.output_tokens if scripted.output_tokens is not None else _words(content)
        return 200, {
            "id": f"chatcmpl-fake-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.body.get("model", "fake"),
            "choices": [{"index": 0, "finish_reason": "tool_calls" if "tool_calls" in message else "stop",
                         "logprobs": None, "message": message}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion},
        }


def _error(status: int, message: str) -> dict[str, Any]:
    kind = {429: "rate_limit_exceeded", 404: "not_found"}.get(status, "server_error")
    return {"error": {"message": message, "type": kind, "code": str(status)}}


def edit_reply(summary: str, path: str, before: str, after: str) -> dict:
    """A developer's answer: one edit block whose search text is the whole current file
    `before` (so it appears exactly once) and whose replacement is `after`."""
    return {"summary": summary, "edits": [{"path": path, "search": before, "replace": after}]}

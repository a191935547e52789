"""Chat: a request in plain words becomes a proposal to confirm, then an experiment; a question
about the KB gets an answer from it. The web app's chat page and `agentx chat` both use `Chat`.

A turn is `send(text)`: a question ("why did E0003 fail?", agents/kb_answers.py) is answered
at once; anything else is mapped by the brainstorm (heuristic or LLM: the same `propose`
with the request) onto one proposal, shown, and run only after `confirm`. Confirming queues
an `ask` request that carries exactly that proposal, so what runs is what was shown. Every
message is a `chat_messages` row, so a conversation survives a restart.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.kb_answers import HeuristicAnswerer, LLMAnswerer, is_question
from agentx.app import RunOptions
from agentx.errors import UserError
from knowledge.queue import RequestQueue


@dataclass(frozen=True)
class ChatMessage:
    id: int
    conversation: str
    role: str                       # user | agentx
    kind: str                       # text | answer | proposal | queued | refusal
    text: str
    payload: dict[str, Any] | None
    created_at: dt.datetime


class Chat:
    """One conversation with a workspace. `brain` is 'heuristic' or an LLM spec; `chat_model`
    (tests) is a scripted fake chat model standing in for the provider."""

    def __init__(self, workspace: Path, *, conversation: str = "default", brain: str = "heuristic",
                 chat_model=None, llm_dollars: float | None = None):
        from knowledge import KnowledgeBase

        self.workspace = Path(workspace).resolve()
        self.kb = KnowledgeBase.for_workspace(self.workspace)
        self.conversation, self.brain, self.chat_model, self.llm_dollars = conversation, brain, chat_model, llm_dollars
        self._brains = None

    @property
    def brains(self):
        from agentx.brains import make_brains

        if self._brains is None:
            self._brains = make_brains(self.kb, self.brain, dollar_cap=self.llm_dollars, chat_model=self.chat_model)
        return self._brains

    @property
    def answerer(self):
        return LLMAnswerer(self.brains.clients[0]) if self.brains.clients else HeuristicAnswerer()

    def send(self, text: str) -> ChatMessage:
        text = text.strip()
        if not text:
            raise UserError("say something: a request ('try a cross network') or a question ('what helped most?')")
        self._add("user", "text", text)
        if is_question(text):
            from agentx.workspace import load_manifest

            higher = load_manifest(self.workspace).metric.direction == "maximize"
            answer = self.answerer.answer(self.kb, text, higher_is_better=higher)
            return self._add("agentx", "answer" if answer.answered else "refusal", answer.text,
                             {"experiments": answer.experiments, "brain": self.answerer.name})
        try:
            proposal = self.preview(text)
        except UserError as exc:
            return self._add("agentx", "refusal", str(exc), {"brain": self.brains.brainstorm.name})
        return self._add("agentx", "proposal", f"{proposal.title}. {proposal.hypothesis}",
                         {"proposal": proposal.model_dump(mode="json"), "request": text,
                          "brain": self.brains.brainstorm.name})

    def preview(self, text: str):
        """The brainstorm's proposal for this request; nothing is created or trained."""
        from agentx.context import Workspace

        with Workspace.open(self.workspace, warm_kernels=False) as ws:
            proposals = self.brains.brainstorm.propose(ws, 1, text)
        if not proposals:
            raise UserError(f"the brainstorm made no proposal for {text!r}")
        return proposals[0]

    def confirm(self, message_id: int, *, tier: str = "full", seeds: int | None = None) -> tuple[ChatMessage, int]:
        """Queue the proposal of message `message_id` as an experiment; (the reply, the request id)."""
        rows = self.kb.query("SELECT * FROM chat_messages WHERE id = ? AND conversation = ?",
                             [message_id, self.conversation])
        if not rows or rows[0]["kind"] != "proposal":
            raise UserError(f"message {message_id} is not a proposal of this conversation; send a request first")
        confirmed = self.kb.query("SELECT 1 FROM chat_messages WHERE kind = 'queued' AND "
                                  "json_extract(payload, '$.message')::BIGINT = ?", [message_id])
        if confirmed:
            raise UserError(f"the proposal of message {message_id} is already queued")
        payload = rows[0]["payload"]
        options = RunOptions(brain=self.brain, experiments=1, parallel=1, evolve_every=0, tier=tier, seeds=seeds,
                             proposal=payload["proposal"], request=None, llm_dollars=self.llm_dollars)
        request_id = RequestQueue(self.kb).submit("ask", options.model_dump(), source="chat")
        reply = self._add("agentx", "queued", f"queued as request {request_id}: {payload['proposal']['title']}",
                          {"message": message_id, "request_id": request_id})
        return reply, request_id

    def history(self, limit: int = 100) -> list[ChatMessage]:
        rows = self.kb.query("SELECT * FROM (SELECT * FROM chat_messages WHERE conversation = ? "
                             "ORDER BY id DESC LIMIT ?) ORDER BY id", [self.conversation, limit])
        return [ChatMessage(**r) for r in rows]

    def _add(self, role: str, kind: str, text: str, payload: dict | None = None) -> ChatMessage:
        with self.kb._tx() as con:
            message_id = self.kb._insert(con, "chat_messages", {"conversation": self.conversation, "role": role,
                                                                 "kind": kind, "text": text, "payload": payload},
                                         returning="id")
        return ChatMessage(**self.kb.query("SELECT * FROM chat_messages WHERE id = ?", [message_id])[0])

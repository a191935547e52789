"""Pick each agent's brain from a provider spec: `heuristic` (the default) or an LLM."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from agents.brainstorm import HeuristicBrainstorm, LLMBrainstorm
from agents.developer import HeuristicDeveloper, LLMDeveloper
from agentx.llm import LLMClient, parse_provider_spec
from agentx.state import Proposal


class Brainstorm(Protocol):
    """Ranks what to try next: HeuristicBrainstorm, LLMBrainstorm, agentx.app.GivenProposal."""

    name: str

    def propose(self, ws, k: int, request: str | None = None) -> list[Proposal]: ...


class Developer(Protocol):
    """Turns an experiment into a change on its branch: HeuristicDeveloper, LLMDeveloper."""

    name: str
    max_repairs: int

    def implement(self, ws, experiment: dict, path: Path) -> str: ...

    def repair(self, ws, experiment: dict, path: Path, kind: str, failure: str) -> str: ...


@dataclass
class Brains:
    brainstorm: Brainstorm
    developer: Developer
    clients: list = field(default_factory=list)

    @property
    def description(self) -> str:
        return f"brainstorm: {self.brainstorm.name}; developer: {self.developer.name}"


def make_brains(kb, spec: str = "heuristic", *, dollar_cap: float | None = None, chat_model=None,
                max_repairs: int = 2) -> Brains:
    """`chat_model` overrides building one from the spec (tests pass a scripted fake)."""
    provider = parse_provider_spec(spec)
    if provider.is_heuristic and chat_model is None:
        return Brains(HeuristicBrainstorm(), HeuristicDeveloper())
    if chat_model is not None:
        client = LLMClient(chat_model, kb=kb, provider=provider.kind, model_name=provider.model or "scripted",
                           dollar_cap=dollar_cap)
    else:
        client = LLMClient.from_spec(provider, kb=kb, dollar_cap=dollar_cap)
    return Brains(LLMBrainstorm(client), LLMDeveloper(client, max_repairs=max_repairs), [client])

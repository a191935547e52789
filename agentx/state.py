"""The loop's state: mostly ids and budgets. Everything an experiment produced lives in the KB.

Graph state is checkpointed after every step (SQLite, under `<workspace>/.agentx/`), so it
stays small and serialisable: proposals as plain dicts, experiment ids, counters. Derived
facts (how many experiments are left, whether the deadline passed) are functions of it.
"""

from __future__ import annotations

import datetime as dt
import operator
import time
from typing import Annotated, Any, Literal, TypedDict

from pydantic import BaseModel, Field
from pydantic.json_schema import SkipJsonSchema


class Proposal(BaseModel):
    """One executable experiment idea, from the brainstorm or from a chat request."""

    title: str = Field(description="short imperative title, e.g. 'Add a 2-layer DCN-v2 cross network'")
    hypothesis: str = Field(description="what should change in the primary metric, and why")
    recipe: str | None = Field(default=None, description="name of a library recipe, or null for a free-form change")
    params: dict[str, Any] = Field(default_factory=dict, description="the recipe's parameters")
    rationale: str = Field(default="", description="why this is worth trying now, given the history")
    source: Literal["brainstorm", "chat", "review", "cli"] = "brainstorm"
    score: float | None = Field(default=None, description="the ranking score behind the choice")
    # The heuristic brain's logged decision (arm, propensity, every candidate arm's posterior
    # inputs) for the evolution's off-policy gate; not part of the schema an LLM answers in.
    decision: SkipJsonSchema[dict[str, Any] | None] = Field(default=None, exclude=True)


class ProposalList(BaseModel):
    proposals: list[Proposal]


class Budget(BaseModel):
    """Limits checked before every step. None means unlimited."""

    max_experiments: int | None = None
    deadline: float | None = None          # epoch seconds (from --until or --budget-minutes)
    llm_dollars: float | None = None
    gpu_minutes: float | None = None       # kernel execution minutes on a GPU (--gpu-minutes)
    started_at: float | None = None        # epoch seconds: GPU minutes count runs started since

    @classmethod
    def build(cls, *, experiments: int | None = None, until: str | None = None,
              minutes: float | None = None, llm_dollars: float | None = None,
              gpu_minutes: float | None = None, now: float | None = None) -> Budget:
        now = time.time() if now is None else now
        deadlines = []
        if minutes is not None:
            deadlines.append(now + 60 * minutes)
        if until is not None:
            deadlines.append(next_local_time(until, now))
        if gpu_minutes is not None and gpu_minutes < 0:
            raise ValueError(f"--gpu-minutes wants a number of minutes >= 0, got {gpu_minutes:g}")
        return cls(max_experiments=experiments, deadline=min(deadlines) if deadlines else None,
                   llm_dollars=llm_dollars, gpu_minutes=gpu_minutes, started_at=now)

    def stop_reason(self, *, started: int, llm_spent: float, gpu_spent: float = 0.0,
                    now: float | None = None) -> str | None:
        """Why no new step may start, or None. `gpu_spent`: GPU minutes of the runs started
        since `started_at` (tools.harness.Harness.gpu_minutes); a run in flight counts once
        it has finished, so the last round may go over by what its runs take."""
        now = time.time() if now is None else now
        if self.max_experiments is not None and started >= self.max_experiments:
            return f"experiment budget reached ({self.max_experiments})"
        if self.deadline is not None and now >= self.deadline:
            return "deadline reached (" + dt.datetime.fromtimestamp(self.deadline).strftime("%H:%M") + ")"
        if self.llm_dollars is not None and llm_spent >= self.llm_dollars:
            return f"LLM dollar cap reached (${llm_spent:.2f} of ${self.llm_dollars:.2f})"
        if self.gpu_minutes is not None and gpu_spent >= self.gpu_minutes:
            return f"GPU minutes budget reached ({gpu_spent:.1f} of {self.gpu_minutes:g} min)"
        return None

    def remaining(self, started: int) -> int | None:
        return None if self.max_experiments is None else max(0, self.max_experiments - started)


def next_local_time(hhmm: str, now: float) -> float:
    """The next moment the local clock shows HH:MM (today, or tomorrow if already past)."""
    try:
        hour, minute = (int(part) for part in hhmm.split(":"))
        target = dt.datetime.fromtimestamp(now).replace(hour=hour, minute=minute, second=0, microsecond=0)
    except ValueError:
        raise ValueError(f"--until wants a local time as HH:MM (e.g. 06:30), got {hhmm!r}") from None
    if target.timestamp() <= now:
        target += dt.timedelta(days=1)
    return target.timestamp()


def _same(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """The budget: set when a run starts and only handed on after; the experiments in flight
    each hand it back when they end (several in one step with --parallel), all alike."""
    return new


class LoopState(TypedDict, total=False):
    budget: Annotated[dict[str, Any], _same]             # Budget.model_dump()
    request: str | None                                  # a chat request, taken once
    queue: list[str]                                     # experiment ids of this round
    started: int                                         # experiments begun in this run
    finished: Annotated[list[str], operator.add]         # experiment ids done in this run
    since_evolve: int
    stop_reason: str | None


class ExperimentState(TypedDict, total=False):
    experiment_id: str
    budget: dict[str, Any]
    outcome: str                                         # developed | failed | evaluated | stopped
    failure_kind: str | None                             # why development failed (crash, contract, ...)
    failure_detail: str | None
    finished: Annotated[list[str], operator.add]

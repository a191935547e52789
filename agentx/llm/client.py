"""`LLMClient`: one structured decision per call, retried, priced, capped and logged.

How a decision comes back structured: by one of three methods, the first a provider takes.

- `json_schema`: the chat model is bound with an OpenAI-style `response_format={"type":
  "json_schema", ...}` built from the Pydantic schema (ChatOpenAI sends it as is, so vLLM
  and Ollama constrain their decoding with it; ChatAnthropic turns it into Claude's native
  `output_config`; a scripted fake model just records it);
- `function_calling`: the schema is one tool the model must call (`bind_tools`,
  `tool_choice` = that tool); its arguments are the decision. llama.cpp's server takes
  this, and answers `json_schema` with HTTP 500 ("Input should be 'text' or 'json_object'");
- `json_object`: `response_format={"type": "json_object"}`, valid JSON of any shape.

`output_mode="auto"` (the default) starts with `json_schema` and moves down the list, once
per client, when the provider refuses a method (an HTTP 4xx/5xx whose message names
response_format, json_schema, tools or functions): that is a fact about the server, not a
transient error, so it is not retried. Whatever the method, the schema is also stated in the
system message and the reply is validated with the Pydantic schema here, instead of
`with_structured_output`, so that a reply that does not validate is seen (and logged) as
such and re-asked with the validation error in the message. Each `llm_calls` row records
the method of its attempt.

Retries: a rate limit (429), a server error (5xx), a lost connection or a timeout (what
langchain-core's `ModelError.is_retryable` says) is retried after an exponential
backoff; a reply that does not validate is re-asked at once.
After `max_retries` retries (so `max_retries + 1` attempts) `LLMError` says provider,
model, attempts and the last error. Another error from the provider (401, 400, ...) is
raised at once as `LLMError`; any other exception propagates unchanged.

Every attempt, success or failure, is one `kb.log_llm_call(...)` row. Dollars come from
the reply's token usage and the price table; `dollar_cap` is checked before each attempt.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping, Protocol, TypeVar

from langchain_core.exceptions import ModelError
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from pydantic import BaseModel, ValidationError

from agentx.llm.pricing import DEFAULT_PRICES, Price, lookup_price
from agentx.llm.spec import ProviderSpec, make_chat_model, parse_provider_spec

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

log = logging.getLogger(__name__)
T = TypeVar("T", bound=BaseModel)
Method = Literal["json_schema", "function_calling", "json_object"]
OutputMode = Literal["auto", "json_schema", "function_calling", "json_object"]
METHODS: tuple[Method, ...] = ("json_schema", "function_calling", "json_object")
# a provider error that says the method itself is not supported (not worth a retry)
UNSUPPORTED = re.compile(r"response_format|json_schema|json_object|\btools?\b|tool_choice|function", re.I)


class LLMError(RuntimeError):
    """The provider did not give a valid decision; says provider, model, attempts, why."""

    def __init__(self, provider: str, model: str, attempts: int, last_error: str) -> None:
        super().__init__(
            f"LLM call failed: provider={provider} model={model} after {attempts} "
            f"attempt{'s' if attempts != 1 else ''}; last error: {last_error}"
        )
        self.provider, self.model = provider, model
        self.attempts, self.last_error = attempts, last_error


class BudgetExceeded(RuntimeError):
    """The client has spent its dollar cap; no request was made."""

    def __init__(self, spent: float, cap: float) -> None:
        super().__init__(f"LLM dollar cap reached: spent ${spent:.4f} of ${cap:.4f}")
        self.spent, self.cap = spent, cap


class CallLog(Protocol):
    """What the client needs of the knowledge base (`knowledge.KnowledgeBase`)."""

    def log_llm_call(
        self, *, agent: str, experiment_id: str | None, provider: str, model: str,
        prompt: str, response: str | None, input_tokens: int | None,
        output_tokens: int | None, dollars: float | None, latency_s: float,
        error: str | None, method: str | None = None,
    ) -> object: ...


def _classify(exc: BaseException) -> tuple[bool, bool]:
    """(is a provider error, is worth retrying after a pause) for an exception from invoke.

    LangChain integrations raise `langchain_core.exceptions.ModelError` subclasses that
    say `is_retryable` (rate limits, 5xx, connection errors, timeouts); a bare SDK error
    from an integration that does not map its errors is judged by its `status_code`.
    """
    if isinstance(exc, ModelError):
        return True, exc.is_retryable
    status = getattr(exc, "status_code", None)  # openai/anthropic APIStatusError
    if isinstance(status, int):
        return True, status == 429 or status >= 500 or status in (408, 409)
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True, True
    return False, False


def _describe(err: ValidationError) -> str:
    problems = [
        f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}"
        for e in err.errors(include_url=False)
    ]
    return f"{err.error_count()} validation error(s) for {err.title}: " + "; ".join(problems)


def _render(messages: list[BaseMessage]) -> str:
    return "\n\n".join(f"[{m.type}]\n{m.text}" for m in messages)


class LLMClient:
    """Asks a chat model for decisions shaped as Pydantic models (see module docstring)."""

    def __init__(
        self,
        chat_model: BaseChatModel,
        *,
        kb: CallLog,
        provider: str,
        model_name: str,
        dollar_cap: float | None,
        price_table: Mapping[str, Price] | None = None,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        sleep: Callable[[float], object] = time.sleep,
        output_mode: OutputMode = "auto",
    ) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, not {max_retries}")
        if output_mode not in ("auto", *METHODS):
            raise ValueError(f"output_mode must be one of auto, {', '.join(METHODS)}; not {output_mode!r}")
        self.chat_model = chat_model
        self.kb = kb
        self.provider = provider
        self.model_name = model_name
        self.dollar_cap = dollar_cap
        self.price_table: Mapping[str, Price] = DEFAULT_PRICES if price_table is None else price_table
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.output_mode = output_mode
        # the methods still to try, best first: "auto" falls back down the list
        self._methods: list[Method] = list(METHODS) if output_mode == "auto" else [output_mode]
        self._sleep = sleep
        self._lock = threading.Lock()
        self._spent = 0.0
        self._attempts = 0
        self._unpriced_warned = False

    @classmethod
    def from_spec(
        cls, spec: ProviderSpec | str, *, kb: CallLog, dollar_cap: float | None,
        chat_kwargs: Mapping[str, Any] | None = None, **options: Any,
    ) -> LLMClient:
        """Build the chat model for `spec` (see `make_chat_model`) and wrap it."""
        if isinstance(spec, str):
            spec = parse_provider_spec(spec)
        chat_model = make_chat_model(spec, **dict(chat_kwargs or {}))
        return cls(chat_model, kb=kb, provider=spec.kind, model_name=str(spec.model),
                   dollar_cap=dollar_cap, **options)

    @property
    def spent_dollars(self) -> float:
        """Dollars spent by this client so far (every attempt that got a reply counts)."""
        return self._spent

    @property
    def attempts_made(self) -> int:
        """Requests sent by this client so far (each retry counts)."""
        return self._attempts

    @property
    def method(self) -> Method:
        """The structured-output method the next call uses."""
        return self._methods[0]

    def decide(
        self, agent: str, prompt: str, schema: type[T], *,
        experiment_id: str | None = None, system: str | None = None,
    ) -> T:
        """Ask for one decision; returns a validated `schema` instance."""
        base = [SystemMessage(self._system_text(schema, system)), HumanMessage(prompt)]
        messages = base
        total = self.max_retries + 1
        last_error, last_exc = "", None
        attempt = 0
        while attempt < total:
            attempt += 1
            self._check_budget()
            with self._lock:
                self._attempts += 1
            method = self.method
            started = time.perf_counter()
            try:
                reply = self._bound(schema, method).invoke(messages)
            except Exception as exc:  # logged, then retried or re-raised: never swallowed
                last_error, last_exc = f"{type(exc).__name__}: {exc}", exc
                self._log(agent, experiment_id, messages, None, None, started, last_error, method)
                from_provider, retryable = _classify(exc)
                if not from_provider:
                    raise
                if len(self._methods) > 1 and UNSUPPORTED.search(str(exc)):
                    self._methods.pop(0)       # this server does not take the method: the next one, now
                    log.warning("%s:%s refused structured output by %s (%s); using %s from now on",
                                self.provider, self.model_name, method, last_error[:200], self.method)
                    attempt -= 1               # a refused method is not a failed attempt
                    continue
                if not retryable:
                    raise LLMError(self.provider, self.model_name, attempt, last_error) from exc
                if attempt < total:
                    self._sleep(min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s))
                continue
            text = self._reply_text(reply)
            try:
                decision = schema.model_validate_json(text)
            except ValidationError as err:
                last_error, last_exc = f"malformed output: {_describe(err)}", err
                self._log(agent, experiment_id, messages, text, reply, started, last_error, method)
                messages = [*base, AIMessage(text), HumanMessage(self._correction(schema, err))]
                continue
            self._log(agent, experiment_id, messages, text, reply, started, None, method)
            return decision
        raise LLMError(self.provider, self.model_name, total, last_error) from last_exc

    # -- pieces ---------------------------------------------------------------------------

    def _bound(self, schema: type[BaseModel], method: Method):
        """The chat model bound for `method`."""
        name = re.sub(r"[^A-Za-z0-9_-]", "_", schema.__name__)[:64]
        if method == "function_calling":
            tool = {"type": "function", "function": {"name": name, "description": f"Give the {name} decision.",
                                                     "parameters": schema.model_json_schema()}}
            return self.chat_model.bind_tools([tool], tool_choice=name)
        return self.chat_model.bind(response_format=self._response_format(schema, method))

    @staticmethod
    def _response_format(schema: type[BaseModel], method: Method = "json_schema") -> dict[str, Any]:
        if method == "json_object":
            return {"type": "json_object"}
        name = re.sub(r"[^A-Za-z0-9_-]", "_", schema.__name__)[:64]
        return {"type": "json_schema",
                "json_schema": {"name": name, "schema": schema.model_json_schema(), "strict": False}}

    @staticmethod
    def _reply_text(reply: BaseMessage) -> str:
        """The decision's JSON: the first tool call's arguments, else the reply's text."""
        calls = getattr(reply, "tool_calls", None) or []
        if calls:
            return json.dumps(calls[0].get("args") or {})
        return str(reply.text)

    @staticmethod
    def _system_text(schema: type[BaseModel], system: str | None) -> str:
        contract = (
            f"Reply with one JSON object, and nothing else (no prose, no code fences), "
            f"that validates against this JSON Schema for {schema.__name__}:\n"
            f"{json.dumps(schema.model_json_schema(), separators=(',', ':'))}"
        )
        return f"{system.strip()}\n\n{contract}" if system else contract

    @staticmethod
    def _correction(schema: type[BaseModel], err: ValidationError) -> str:
        return (
            f"Your reply is not a valid {schema.__name__}: {_describe(err)}. "
            f"Reply again with only the corrected JSON object."
        )

    def _check_budget(self) -> None:
        if self.dollar_cap is not None and self._spent >= self.dollar_cap:
            raise BudgetExceeded(self._spent, self.dollar_cap)

    def _dollars(self, input_tokens: int | None, output_tokens: int | None) -> float:
        price = lookup_price(self.price_table, self.model_name)
        if price is None:
            if self.provider != "openai-compatible" and not self._unpriced_warned:
                log.warning("no price for %s:%s; its calls are counted as $0 against the cap",
                            self.provider, self.model_name)
                self._unpriced_warned = True
            return 0.0
        return price.dollars(input_tokens or 0, output_tokens or 0)

    def _log(
        self, agent: str, experiment_id: str | None, messages: list[BaseMessage],
        response: str | None, reply: BaseMessage | None, started: float, error: str | None,
        method: Method | None = None,
    ) -> None:
        latency_s = time.perf_counter() - started
        usage = reply.usage_metadata if isinstance(reply, AIMessage) else None
        input_tokens = usage["input_tokens"] if usage else None
        output_tokens = usage["output_tokens"] if usage else None
        dollars = self._dollars(input_tokens, output_tokens) if reply is not None else 0.0
        with self._lock:
            self._spent += dollars
        self.kb.log_llm_call(
            agent=agent, experiment_id=experiment_id, provider=self.provider,
            model=self.model_name, prompt=_render(messages), response=response,
            input_tokens=input_tokens, output_tokens=output_tokens, dollars=dollars,
            latency_s=latency_s, error=error, method=method,
        )

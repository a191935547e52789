"""Which brain an agent uses: a provider spec string parsed into a typed `ProviderSpec`,
and the factory that turns one into a LangChain chat model.

Accepted forms (what `--llm` and the config accept):

    heuristic                                 no LLM: the heuristic policies (the default)
    openai:<model>                            e.g. openai:gpt-4o-mini (OPENAI_API_KEY)
    anthropic:<model>                         e.g. anthropic:claude-sonnet-4-5 (ANTHROPIC_API_KEY)
    openai-compatible:<base_url>#<model>      vLLM, Ollama, llama.cpp server, e.g.
                                              openai-compatible:http://localhost:8000/v1#Qwen/Qwen2.5-7B-Instruct
                                              (key from OPENAI_COMPATIBLE_API_KEY, else a dummy)

Provider SDKs are imported inside `make_chat_model` only, so importing agentx never needs
them and never builds a client.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlparse

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

ProviderKind = Literal["heuristic", "openai", "anthropic", "openai-compatible"]

ACCEPTED_FORMS = (
    "'heuristic', 'openai:<model>', 'anthropic:<model>', "
    "'openai-compatible:<base_url>#<model>' "
    "(e.g. 'openai-compatible:http://localhost:8000/v1#my-model')"
)
API_KEY_ENV = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "openai-compatible": "OPENAI_COMPATIBLE_API_KEY",
}
# Local servers (vLLM, Ollama, llama.cpp) accept any key; the OpenAI SDK insists on one.
DUMMY_COMPATIBLE_KEY = "not-needed"
DEFAULT_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class ProviderSpec:
    """A parsed provider spec. `str(spec)` gives back the canonical spec string."""

    kind: ProviderKind
    model: str | None = None
    base_url: str | None = None

    @property
    def is_heuristic(self) -> bool:
        return self.kind == "heuristic"

    @classmethod
    def parse(cls, text: str) -> ProviderSpec:
        return parse_provider_spec(text)

    def __str__(self) -> str:
        if self.kind == "heuristic":
            return "heuristic"
        if self.kind == "openai-compatible":
            return f"openai-compatible:{self.base_url}#{self.model}"
        return f"{self.kind}:{self.model}"


def _bad(text: str, why: str) -> ValueError:
    return ValueError(f"bad LLM provider spec {text!r}: {why}; accepted forms: {ACCEPTED_FORMS}")


def parse_provider_spec(text: str) -> ProviderSpec:
    """Parse a provider spec string; a malformed one raises ValueError listing the forms."""
    if not isinstance(text, str):
        raise _bad(repr(text), "not a string")
    spec = text.strip()
    if spec.lower() == "heuristic":
        return ProviderSpec("heuristic")
    kind, sep, rest = spec.partition(":")
    kind = kind.lower()
    if not sep:
        raise _bad(text, "no provider prefix")
    if kind in ("openai", "anthropic"):
        model = rest.strip()
        if not model or any(c.isspace() for c in model):
            raise _bad(text, f"{kind} needs a model name after the colon")
        return ProviderSpec(kind, model=model)
    if kind == "openai-compatible":
        base_url, sep, model = rest.partition("#")
        base_url, model = base_url.strip(), model.strip()
        if not sep or not model:
            raise _bad(text, "openai-compatible needs '<base_url>#<model>'")
        url = urlparse(base_url)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise _bad(text, f"base_url {base_url!r} is not an http(s) URL")
        return ProviderSpec("openai-compatible", model=model, base_url=base_url.rstrip("/"))
    raise _bad(text, f"unknown provider {kind!r}")


class MissingAPIKeyError(RuntimeError):
    """The provider needs an API key and its environment variable is not set."""

    def __init__(self, provider: str, env_var: str) -> None:
        super().__init__(
            f"{provider} needs an API key: set the environment variable {env_var} "
            f"(or choose --llm heuristic to run without an LLM)"
        )
        self.provider = provider
        self.env_var = env_var


def _api_key(spec: ProviderSpec, kw: dict[str, Any]) -> str:
    if kw.get("api_key"):
        return str(kw.pop("api_key"))
    kw.pop("api_key", None)
    env_var = API_KEY_ENV[spec.kind]
    key = os.environ.get(env_var, "").strip()
    if key:
        return key
    if spec.kind == "openai-compatible":
        return DUMMY_COMPATIBLE_KEY
    raise MissingAPIKeyError(spec.kind, env_var)


def make_chat_model(spec: ProviderSpec | str, **kw: Any) -> BaseChatModel:
    """Build the LangChain chat model for `spec` (imports the provider SDK here, lazily).

    `kw` goes to the chat model's constructor (temperature, max_tokens, timeout, ...);
    `api_key=` overrides the environment. The SDK's own retries are switched off
    (`max_retries=0`) unless given: `LLMClient` retries, so that every attempt is logged.
    """
    if isinstance(spec, str):
        spec = parse_provider_spec(spec)
    if spec.is_heuristic:
        raise ValueError("provider 'heuristic' means no LLM: there is no chat model to build")
    kw = dict(kw)
    api_key = _api_key(spec, kw)
    kw.setdefault("max_retries", 0)
    kw.setdefault("timeout", DEFAULT_TIMEOUT_S)
    if spec.kind == "anthropic":
        from langchain_anthropic import ChatAnthropic

        kw.setdefault("max_tokens", 4096)
        return ChatAnthropic(model=spec.model, api_key=api_key, **kw)

    from langchain_openai import ChatOpenAI

    if spec.kind == "openai-compatible":
        # Local servers speak chat completions only, never the Responses API.
        kw.setdefault("use_responses_api", False)
        # a bound on every answer: a small local model can ramble until its context is full
        kw.setdefault("max_tokens", 2048)
        return ChatOpenAI(model=spec.model, base_url=spec.base_url, api_key=api_key, **kw)
    return ChatOpenAI(model=spec.model, api_key=api_key, **kw)

"""LLM providers for the agents' LLM brain (the heuristic brain needs none of this).

`ProviderSpec`/`parse_provider_spec` say which provider; `make_chat_model` builds its
LangChain chat model lazily; `LLMClient.decide` gets one validated Pydantic decision per
call, with retries, dollar accounting, a dollar cap and a KB log row per attempt.
"""

from agentx.llm.client import BudgetExceeded, CallLog, LLMClient, LLMError, OutputMode
from agentx.llm.pricing import DEFAULT_PRICES, Price, lookup_price
from agentx.llm.spec import (
    ACCEPTED_FORMS,
    API_KEY_ENV,
    MissingAPIKeyError,
    ProviderKind,
    ProviderSpec,
    make_chat_model,
    parse_provider_spec,
)

__all__ = [
    "ACCEPTED_FORMS", "API_KEY_ENV", "DEFAULT_PRICES", "BudgetExceeded", "CallLog",
    "LLMClient", "LLMError", "MissingAPIKeyError", "OutputMode", "Price", "ProviderKind",
    "ProviderSpec", "lookup_price", "make_chat_model", "parse_provider_spec",
]

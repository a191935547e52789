"""The LLM provider layer: specs, structured decisions, retries, dollars, the cap, the log.

Offline: a scripted `FakeChatModel`, and the real `openai` client (through ChatOpenAI)
talking to `FakeOpenAIServer` on 127.0.0.1; calls are logged to an in-memory KB.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from fake_llm import ErrorReply, FakeChatModel, FakeOpenAIServer, ToolCallReply, status_error
from pydantic import BaseModel, Field

from agentx.llm import (
    BudgetExceeded,
    LLMClient,
    LLMError,
    MissingAPIKeyError,
    Price,
    ProviderSpec,
    make_chat_model,
    parse_provider_spec,
)
from agents.prompts import load_prompt, render_prompt
from knowledge import KnowledgeBase


class Echo(BaseModel):
    text: str
    words: int = Field(ge=0)


PRICES = {"test-model": Price(input_per_m=2.0, output_per_m=8.0)}


@pytest.fixture
def kb() -> KnowledgeBase:
    return KnowledgeBase(":memory:")


@pytest.fixture
def sleeps() -> list[float]:
    return []


def client_for(chat_model, kb, sleeps, **kw) -> LLMClient:
    options = dict(provider="openai-compatible", model_name="test-model", dollar_cap=None,
                   price_table=PRICES, sleep=sleeps.append)
    options.update(kw)
    return LLMClient(chat_model, kb=kb, **options)


# -- provider specs -------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("heuristic", ProviderSpec("heuristic")),
    ("  Heuristic ", ProviderSpec("heuristic")),
    ("openai:gpt-4o-mini", ProviderSpec("openai", model="gpt-4o-mini")),
    ("anthropic:claude-sonnet-4-5", ProviderSpec("anthropic", model="claude-sonnet-4-5")),
    ("openai-compatible:http://localhost:11434/v1/#llama3.1:8b",
     ProviderSpec("openai-compatible", model="llama3.1:8b", base_url="http://localhost:11434/v1")),
    ("openai-compatible:https://vllm.lan:8000/v1#Qwen/Qwen2.5-7B-Instruct",
     ProviderSpec("openai-compatible", model="Qwen/Qwen2.5-7B-Instruct",
                  base_url="https://vllm.lan:8000/v1")),
])
def test_parse_provider_spec_accepts_the_four_forms(text, expected):
    spec = parse_provider_spec(text)
    assert spec == expected
    assert parse_provider_spec(str(spec)) == spec
    assert spec.is_heuristic == (spec.kind == "heuristic")


@pytest.mark.parametrize("text", [
    "", "gpt-4o", "openai:", "anthropic:  ", "openai:gpt 4o", "mistral:large",
    "openai-compatible:http://localhost:8000/v1", "openai-compatible:http://localhost:8000/v1#",
    "openai-compatible:localhost:8000#m", "openai-compatible:ftp://host/v1#m",
])
def test_malformed_spec_lists_the_accepted_forms(text):
    with pytest.raises(ValueError, match="accepted forms") as info:
        parse_provider_spec(text)
    for form in ("'heuristic'", "'openai:<model>'", "'anthropic:<model>'",
                 "'openai-compatible:<base_url>#<model>'"):
        assert form in str(info.value)


@pytest.mark.parametrize("spec, env_var", [("openai:gpt-4o", "OPENAI_API_KEY"),
                                           ("anthropic:claude-sonnet-4-5", "ANTHROPIC_API_KEY")])
def test_missing_api_key_names_the_variable(monkeypatch, spec, env_var):
    monkeypatch.delenv(env_var, raising=False)
    with pytest.raises(MissingAPIKeyError, match=env_var) as info:
        make_chat_model(spec)
    assert info.value.env_var == env_var


def test_heuristic_has_no_chat_model():
    with pytest.raises(ValueError, match="no LLM"):
        make_chat_model("heuristic")


def test_openai_compatible_model_needs_no_key_and_leaves_retries_to_the_client(monkeypatch):
    monkeypatch.delenv("OPENAI_COMPATIBLE_API_KEY", raising=False)
    model = make_chat_model("openai-compatible:http://127.0.0.1:9/v1#llama3.1:8b")
    assert (model.model_name, model.openai_api_base) == ("llama3.1:8b", "http://127.0.0.1:9/v1")
    assert model.max_retries == 0 and model.use_responses_api is False
    monkeypatch.setenv("OPENAI_COMPATIBLE_API_KEY", "sk-local")
    keyed = make_chat_model("openai-compatible:http://127.0.0.1:9/v1#m")
    assert keyed.openai_api_key.get_secret_value() == "sk-local"


def test_anthropic_turns_the_response_format_into_native_structured_output():
    # The one mechanism (an OpenAI-style response_format) reaches Claude as output_config;
    # checked on the request payload (a private langchain-anthropic method: no network).
    model = make_chat_model("anthropic:claude-sonnet-4-5", api_key="sk-test")
    assert (model.model, model.max_retries) == ("claude-sonnet-4-5", 0)
    client = LLMClient(model, kb=KnowledgeBase(":memory:"), provider="anthropic",
                       model_name="claude-sonnet-4-5", dollar_cap=None)
    payload = model._get_request_payload(["hi"], response_format=client._response_format(Echo))
    fmt = payload["output_config"]["format"]
    assert fmt["type"] == "json_schema" and fmt["schema"]["required"] == ["text", "words"]


def test_importing_agentx_llm_imports_no_provider_sdk():
    code = ("import sys, agentx.llm; "
            "print([m for m in ('openai', 'anthropic', 'langchain_openai', 'langchain_anthropic') "
            "if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- decisions through the fake chat model -----------------------------------------------------


def test_fake_model_drives_decide_to_a_validated_object(kb, sleeps):
    fake = FakeChatModel().enqueue({"text": "hello world", "words": 2},
                                   input_tokens=1000, output_tokens=500)
    client = client_for(fake, kb, sleeps)
    prompt = render_prompt("echo", message="hello world")

    decision = client.decide("echo", prompt, Echo, experiment_id="exp-1", system="Be terse.")

    assert decision == Echo(text="hello world", words=2)
    (call,) = fake.calls
    fmt = call.kwargs["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Echo"
    assert fmt["json_schema"]["schema"] == Echo.model_json_schema()
    system, human = call.messages
    assert system.type == "system" and system.text.startswith("Be terse.")
    assert '"words"' in system.text  # the schema is stated to the model too
    assert human.type == "human" and "Message: hello world" in human.text
    (row,) = kb.llm_calls()
    assert row["agent"] == "echo" and row["experiment_id"] == "exp-1"
    assert (row["provider"], row["model"]) == ("openai-compatible", "test-model")
    assert row["error"] is None and json.loads(row["response"]) == {"text": "hello world", "words": 2}
    assert "Message: hello world" in row["prompt"] and "Be terse." in row["prompt"]
    assert (row["input_tokens"], row["output_tokens"]) == (1000, 500)
    assert row["dollars"] == pytest.approx((1000 * 2.0 + 500 * 8.0) / 1e6)
    assert row["latency_s"] >= 0
    assert client.spent_dollars == pytest.approx(0.006) == kb.llm_dollars("exp-1")
    assert sleeps == []


def test_malformed_output_is_reasked_with_the_validation_error(kb, sleeps):
    fake = FakeChatModel().enqueue("Sure! The answer is hello.").enqueue({"text": "hello", "words": 1})
    client = client_for(fake, kb, sleeps)

    assert client.decide("echo", "say hello", Echo) == Echo(text="hello", words=1)

    assert len(fake.calls) == 2 and client.attempts_made == 2
    retry = fake.calls[1].messages
    assert [m.type for m in retry] == ["system", "human", "ai", "human"]
    assert retry[2].text == "Sure! The answer is hello."
    assert "not a valid Echo" in retry[3].text and "Invalid JSON" in retry[3].text
    first, second = kb.llm_calls()
    assert first["error"].startswith("malformed output") and first["response"] == "Sure! The answer is hello."
    assert second["error"] is None
    assert sleeps == []  # a bad reply is re-asked at once


def test_always_malformed_raises_llm_error_after_max_retries(kb, sleeps):
    fake = FakeChatModel()
    for _ in range(3):
        fake.enqueue({"text": "hi", "words": -1})  # valid JSON, fails the schema
    client = client_for(fake, kb, sleeps, max_retries=2)

    with pytest.raises(LLMError) as info:
        client.decide("echo", "say hi", Echo)

    err = info.value
    assert (err.provider, err.model, err.attempts) == ("openai-compatible", "test-model", 3)
    assert "words: Input should be greater than or equal to 0" in err.last_error
    assert "provider=openai-compatible model=test-model after 3 attempts" in str(err)
    rows = kb.llm_calls()
    assert len(fake.calls) == 3 and len(rows) == 3
    assert all(r["error"].startswith("malformed output") for r in rows)
    assert "words: Input should be greater" in fake.calls[2].messages[-1].text


def test_rate_limit_is_retried_with_exponential_backoff(kb, sleeps):
    fake = FakeChatModel().enqueue(status_error(429)).enqueue(status_error(503))
    fake.enqueue({"text": "ok", "words": 1})
    client = client_for(fake, kb, sleeps, backoff_s=0.5)

    assert client.decide("echo", "ok", Echo).text == "ok"

    assert sleeps == [0.5, 1.0]
    rows = kb.llm_calls()
    assert [r["error"] is None for r in rows] == [False, False, True]
    assert "ModelRateLimitError: Error code: 429" in rows[0]["error"]
    assert "Error code: 503" in rows[1]["error"]
    assert rows[0]["response"] is None
    assert rows[0]["dollars"] == 0.0 and rows[0]["input_tokens"] is None


def test_bare_sdk_status_errors_are_judged_by_status_code(kb, sleeps):
    import httpx
    import openai

    response = httpx.Response(429, request=httpx.Request("POST", "http://fake.invalid/v1"))
    fake = FakeChatModel().enqueue(openai.RateLimitError("slow down", response=response, body=None))
    fake.enqueue({"text": "ok", "words": 1})
    assert client_for(fake, kb, sleeps).decide("echo", "ok", Echo).text == "ok"
    assert sleeps == [0.5] and "RateLimitError: slow down" in kb.llm_calls()[0]["error"]


def test_other_exceptions_propagate_unchanged_but_are_logged(kb, sleeps):
    fake = FakeChatModel().enqueue(KeyError("a bug, not the provider"))
    with pytest.raises(KeyError, match="a bug"):
        client_for(fake, kb, sleeps).decide("echo", "x", Echo)
    (row,) = kb.llm_calls()
    assert "KeyError" in row["error"] and sleeps == []


def test_client_errors_are_not_retried(kb, sleeps):
    fake = FakeChatModel().enqueue(status_error(401, "bad key")).enqueue({"text": "x", "words": 1})
    client = client_for(fake, kb, sleeps)

    with pytest.raises(LLMError, match="after 1 attempt; last error: ModelAuthenticationError"):
        client.decide("echo", "x", Echo)
    assert len(fake.calls) == 1 and len(kb.llm_calls()) == 1 and sleeps == []


def test_dollar_cap_stops_before_any_request(kb, sleeps):
    fake = FakeChatModel().enqueue({"text": "a", "words": 1}, input_tokens=400_000, output_tokens=50_000)
    fake.enqueue({"text": "b", "words": 1})
    client = client_for(fake, kb, sleeps, dollar_cap=1.0)

    client.decide("echo", "a", Echo)  # spends $0.80 + $0.40 = $1.20: over the cap after
    assert client.spent_dollars == pytest.approx(1.2)
    with pytest.raises(BudgetExceeded, match=r"spent \$1.2000 of \$1.0000"):
        client.decide("echo", "b", Echo)
    assert len(fake.calls) == 1 and len(kb.llm_calls()) == 1


def test_unpriced_model_costs_zero_and_says_so(kb, sleeps, caplog):
    fake = FakeChatModel().enqueue({"text": "a", "words": 1}, input_tokens=10, output_tokens=10)
    client = client_for(fake, kb, sleeps, provider="openai", model_name="gpt-99")
    client.decide("echo", "a", Echo)
    assert kb.llm_calls()[0]["dollars"] == 0.0 and client.spent_dollars == 0.0
    assert "no price for openai:gpt-99" in caplog.text


def test_json_object_mode_for_servers_without_json_schema(kb, sleeps):
    fake = FakeChatModel().enqueue({"text": "a", "words": 1})
    client_for(fake, kb, sleeps, output_mode="json_object").decide("echo", "a", Echo)
    assert fake.calls[0].kwargs["response_format"] == {"type": "json_object"}
    assert '"required":["text","words"]' in fake.calls[0].messages[0].text


# -- the real openai client against a local OpenAI-protocol server ------------------------------


@pytest.fixture
def server():
    with FakeOpenAIServer() as running:
        yield running


def server_client(server, kb, sleeps, **kw) -> LLMClient:
    return LLMClient.from_spec(f"openai-compatible:{server.base_url}#test-model", kb=kb,
                               dollar_cap=kw.pop("dollar_cap", None), price_table=PRICES,
                               sleep=sleeps.append, **kw)


def test_openai_client_gets_a_structured_decision_from_a_local_server(server, kb, sleeps):
    server.enqueue({"text": "hello", "words": 1}, prompt_tokens=1200, completion_tokens=300)
    client = server_client(server, kb, sleeps)

    assert client.decide("echo", "say hello", Echo, experiment_id="e7") == Echo(text="hello", words=1)

    (request,) = server.requests
    assert request.path == "/v1/chat/completions" and request.body["model"] == "test-model"
    assert request.headers["authorization"] == "Bearer not-needed"
    fmt = request.body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Echo"
    assert fmt["json_schema"]["schema"]["required"] == ["text", "words"]
    assert [m["role"] for m in request.body["messages"]] == ["system", "user"]
    (row,) = kb.llm_calls()
    assert (row["input_tokens"], row["output_tokens"], row["error"]) == (1200, 300, None)
    assert row["dollars"] == pytest.approx((1200 * 2.0 + 300 * 8.0) / 1e6)
    assert row["experiment_id"] == "e7"


@pytest.mark.parametrize("failure, error_text", [(429, "Error code: 429"),
                                                  (ErrorReply(500, "boom"), "Error code: 500 - boom")])
def test_server_errors_then_success_are_retried(server, kb, sleeps, failure, error_text):
    server.enqueue(failure).enqueue({"text": "ok", "words": 1})
    client = server_client(server, kb, sleeps, backoff_s=0.25)

    assert client.decide("echo", "ok", Echo) == Echo(text="ok", words=1)

    assert [r.status for r in server.requests] == [failure if isinstance(failure, int) else 500, 200]
    assert sleeps == [0.25]
    first, second = kb.llm_calls()
    assert error_text in first["error"] and second["error"] is None


def test_persistent_server_errors_end_in_llm_error(server, kb, sleeps):
    for _ in range(3):
        server.enqueue(ErrorReply(502, "bad gateway"))
    client = server_client(server, kb, sleeps, max_retries=2, backoff_s=0.1)

    with pytest.raises(LLMError, match="after 3 attempts; last error: .*Error code: 502") as info:
        client.decide("echo", "x", Echo)
    assert info.value.last_error.endswith("bad gateway")
    assert len(server.requests) == 3 and sleeps == [0.1, 0.2] and len(kb.llm_calls()) == 3


def test_malformed_server_reply_is_reasked(server, kb, sleeps):
    server.enqueue("```json\n{\"text\": \"x\"}\n```").enqueue({"text": "x", "words": 1})
    client = server_client(server, kb, sleeps)

    assert client.decide("echo", "x", Echo).words == 1
    retry_messages = server.requests[1].body["messages"]
    assert [m["role"] for m in retry_messages] == ["system", "user", "assistant", "user"]
    assert "Invalid JSON" in retry_messages[-1]["content"]


def test_dollar_cap_makes_no_request_to_the_server(server, kb, sleeps):
    server.enqueue({"text": "a", "words": 1}, prompt_tokens=100_000, completion_tokens=0)
    client = server_client(server, kb, sleeps, dollar_cap=0.2)

    client.decide("echo", "a", Echo)  # $0.20: the cap is reached
    with pytest.raises(BudgetExceeded):
        client.decide("echo", "b", Echo)
    assert len(server.requests) == 1


# -- prompt templates ------------------------------------------------------------------------


def test_prompt_templates_load_and_render():
    assert "$message" in load_prompt("echo")
    assert "Message: 5 $ apples" in render_prompt("echo", message="5 $ apples")
    with pytest.raises(KeyError, match=r"\$message"):
        render_prompt("echo")
    with pytest.raises(FileNotFoundError, match="available: .*echo"):
        load_prompt("nope")
    with pytest.raises(ValueError):
        load_prompt("../pyproject")


# -- structured-output methods ---------------------------------------------------------------

LLAMA_CPP_500 = ("1 validation error for CreateChatCompletionRequest\nresponse_format.type\n  Input should be "
                 "'text' or 'json_object' [type=literal_error, input_value='json_schema']")


def test_a_server_that_refuses_json_schema_gets_function_calling_from_then_on(server, kb, sleeps):
    """llama.cpp's server answers response_format json_schema with HTTP 500: the client moves
    to function calling at once (no retry, no backoff), keeps it, and logs each method."""
    server.enqueue(ErrorReply(500, LLAMA_CPP_500))
    server.enqueue(ToolCallReply("Echo", {"text": "hi", "words": 1}))
    server.enqueue(ToolCallReply("Echo", {"text": "again", "words": 1}))
    client = server_client(server, kb, sleeps)
    assert client.method == "json_schema"
    assert client.decide("echo", "say hi", Echo) == Echo(text="hi", words=1)
    assert client.decide("echo", "say again", Echo).text == "again"
    assert client.method == "function_calling" and sleeps == [] and client.attempts_made == 3
    first, second, third = (r.body for r in server.requests)
    assert first["response_format"]["type"] == "json_schema" and "tools" not in first
    for body in (second, third):
        assert "response_format" not in body and body["tools"][0]["function"]["name"] == "Echo"
        assert body["tool_choice"] == {"type": "function", "function": {"name": "Echo"}}
        assert body["tools"][0]["function"]["parameters"]["required"] == ["text", "words"]
    calls = kb.llm_calls()
    assert [c["method"] for c in calls] == ["json_schema", "function_calling", "function_calling"]
    assert "json_object" in calls[0]["error"] and calls[1]["error"] is None
    assert json.loads(calls[1]["response"]) == {"text": "hi", "words": 1}


def test_a_malformed_tool_call_is_reasked_with_its_error(server, kb, sleeps):
    server.enqueue(ToolCallReply("Echo", {"text": "hi", "words": -3}))
    server.enqueue(ToolCallReply("Echo", {"text": "hi", "words": 1}))
    client = server_client(server, kb, sleeps, output_mode="function_calling")
    assert client.decide("echo", "say hi", Echo).words == 1
    retry = server.requests[1].body["messages"]
    assert "not a valid Echo" in retry[-1]["content"] and "words" in retry[-1]["content"]
    assert [c["method"] for c in kb.llm_calls()] == ["function_calling", "function_calling"]


def test_a_fixed_method_is_not_abandoned(server, kb, sleeps):
    for _ in range(2):
        server.enqueue(ErrorReply(500, LLAMA_CPP_500))
    client = server_client(server, kb, sleeps, output_mode="json_schema", max_retries=1)
    with pytest.raises(LLMError, match="after 2 attempts"):
        client.decide("echo", "say hi", Echo)
    assert client.method == "json_schema" and len(sleeps) == 1

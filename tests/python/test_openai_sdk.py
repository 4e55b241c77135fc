"""Switchyard driven by the official OpenAI Python SDK, as a user of the gateway would.

Runs against a real gateway process in front of the real mock upstream (see conftest.py):
`python -m pytest tests/python -q` from the repo root, after `cargo build`.
"""

from __future__ import annotations

import json
import math

import openai
import pytest

# The mock upstream's default chat answer: nine words, so nine completion tokens.
MOCK_REPLY = "Hello from the Switchyard mock upstream, how are you?"
MOCK_COMPLETION_TOKENS = 9

# gpt-4o-mini's list price (USD per token), as in LiteLLM's cost map.
GPT_4O_MINI_INPUT_COST = 1.5e-07
GPT_4O_MINI_OUTPUT_COST = 6e-07

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello to the gateway"},
]


def word_count(messages) -> int:
    """The mock upstream's prompt_tokens: whitespace-separated words in the message contents."""
    return sum(len(m["content"].split()) for m in messages)


PROMPT_TOKENS = word_count(MESSAGES)  # 3 + 5 = 8


# 1. chat, non-stream


def test_chat_completion(client: openai.OpenAI):
    resp = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert resp.object == "chat.completion"
    assert resp.id
    assert resp.model, "response has no model"
    assert len(resp.choices) == 1
    choice = resp.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == MOCK_REPLY
    assert choice.finish_reason == "stop"
    assert resp.usage is not None
    assert resp.usage.prompt_tokens == PROMPT_TOKENS
    assert resp.usage.completion_tokens == MOCK_COMPLETION_TOKENS
    assert resp.usage.total_tokens == PROMPT_TOKENS + MOCK_COMPLETION_TOKENS


def test_chat_completion_litellm_headers(client: openai.OpenAI):
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    headers = raw.headers
    resp = raw.parse()
    assert resp.choices[0].message.content == MOCK_REPLY
    assert resp.usage is not None and resp.usage.prompt_tokens == PROMPT_TOKENS

    assert headers.get("x-litellm-call-id"), f"no x-litellm-call-id in {dict(headers)}"
    assert headers.get("x-litellm-model-group") == "gpt-4o-mini"
    assert headers.get("x-litellm-model-id"), f"no x-litellm-model-id in {dict(headers)}"

    cost_header = headers.get("x-litellm-response-cost")
    assert cost_header is not None, f"no x-litellm-response-cost in {dict(headers)}"
    expected_cost = (
        PROMPT_TOKENS * GPT_4O_MINI_INPUT_COST + MOCK_COMPLETION_TOKENS * GPT_4O_MINI_OUTPUT_COST
    )
    assert math.isclose(float(cost_header), expected_cost, rel_tol=0, abs_tol=1e-12), (
        f"x-litellm-response-cost {cost_header!r}, expected {expected_cost!r}"
    )

    overhead = headers.get("x-litellm-overhead-duration-ms")
    assert overhead is not None, f"no x-litellm-overhead-duration-ms in {dict(headers)}"
    assert math.isfinite(float(overhead))
    assert float(overhead) >= 0


# 2. streaming with usage


def test_chat_stream_with_usage(client: openai.OpenAI):
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks, "empty stream"
    assert all(c.object == "chat.completion.chunk" for c in chunks)

    text = "".join(
        c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].delta
    )
    assert text == MOCK_REPLY
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"]

    last = chunks[-1]
    assert last.usage is not None, f"last chunk has no usage: {last.model_dump_json()}"
    assert last.choices == []
    assert last.usage.completion_tokens == MOCK_COMPLETION_TOKENS
    assert last.usage.prompt_tokens == PROMPT_TOKENS
    assert last.usage.total_tokens == PROMPT_TOKENS + MOCK_COMPLETION_TOKENS
    # Usage comes once, at the end.
    assert [c for c in chunks[:-1] if c.usage is not None] == []


# 3. streaming without usage


def test_chat_stream_without_usage(client: openai.OpenAI):
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    chunks = list(stream)
    assert chunks, "empty stream"
    with_usage = [c.model_dump_json() for c in chunks if c.usage is not None]
    assert with_usage == [], f"chunks carry usage though include_usage was not asked: {with_usage}"
    assert all(c.choices for c in chunks), "a chunk with no choices (the usage chunk?) leaked"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == MOCK_REPLY


def test_chat_stream_without_usage_wire(client: openai.OpenAI):
    """The same, looking at the SSE events themselves rather than the SDK's models."""
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    ) as response:
        assert response.headers.get("content-type", "").startswith("text/event-stream")
        payloads = [
            line[len("data:") :].strip()
            for line in response.iter_lines()
            if line.startswith("data:")
        ]
    assert payloads and payloads[-1] == "[DONE]", f"stream does not end with [DONE]: {payloads[-3:]}"
    events = [json.loads(p) for p in payloads[:-1]]
    leaked = [e for e in events if e.get("usage") is not None]
    assert leaked == [], f"usage leaked into a stream that did not ask for it: {leaked}"
    assert all(e.get("choices") for e in events), "an event with empty choices leaked"
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events)
    assert text == MOCK_REPLY


# 4. embeddings


def test_embeddings(client: openai.OpenAI):
    resp = client.embeddings.create(model="text-embedding-3-small", input=["a b", "c"])
    assert resp.object == "list"
    assert len(resp.data) == 2
    assert [d.index for d in resp.data] == [0, 1]
    for d in resp.data:
        assert d.object == "embedding"
        assert isinstance(d.embedding, list) and d.embedding
        assert all(isinstance(x, float) for x in d.embedding)
    assert resp.data[0].embedding != resp.data[1].embedding
    assert resp.usage.prompt_tokens == 3
    assert resp.usage.total_tokens == 3


# 5. models


def test_models_list(client: openai.OpenAI):
    ids = [m.id for m in client.models.list()]
    assert "gpt-4o-mini" in ids
    assert "text-embedding-3-small" in ids


def test_models_retrieve(client: openai.OpenAI):
    model = client.models.retrieve("gpt-4o-mini")
    assert model.id == "gpt-4o-mini" and model.object == "model"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


# 6. errors, as the SDK's exception classes


def test_wrong_api_key_is_authentication_error(make_client):
    bad = make_client(api_key="sk-wrong-key")
    with pytest.raises(openai.AuthenticationError) as info:
        bad.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    e = info.value
    assert e.status_code == 401
    assert isinstance(e.body, dict), f"error body is not the error object: {e.body!r}"
    assert isinstance(e.body.get("message"), str) and e.body["message"], e.body


def test_missing_api_key_is_authentication_error(client: openai.OpenAI):
    # `omit` removes the SDK's Authorization header: the request carries no key at all.
    with pytest.raises(openai.AuthenticationError) as info:
        client.models.list(extra_headers={"Authorization": openai.omit})
    e = info.value
    assert e.status_code == 401
    assert e.response.request.headers.get("authorization") is None
    assert isinstance(e.body, dict) and e.body.get("message"), e.body


def test_unknown_model_is_bad_request(client: openai.OpenAI):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    e = info.value
    assert e.status_code == 400
    assert isinstance(e.body, dict), f"error body is not the error object: {e.body!r}"
    assert "Invalid model name" in e.body.get("message", ""), e.body
    assert "Invalid model name" in e.message


def test_upstream_429_is_rate_limit_error(client: openai.OpenAI):
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="always-429", messages=MESSAGES)
    e = info.value
    assert e.status_code == 429
    assert isinstance(e.body, dict) and e.body.get("message"), e.body


def test_missing_messages_is_bad_request_with_param(client: openai.OpenAI):
    with pytest.raises(openai.BadRequestError) as info:
        # `omit` drops the field from the request body entirely.
        client.chat.completions.create(model="gpt-4o-mini", messages=openai.omit)
    e = info.value
    assert e.status_code == 400
    assert e.param == "messages", f"param {e.param!r}, body {e.body!r}"


# 7. legacy completions


def test_legacy_completions(client: openai.OpenAI):
    resp = client.completions.create(model="gpt-4o-mini", prompt="say hi")
    assert resp.object == "text_completion"
    assert len(resp.choices) == 1
    assert resp.choices[0].text == MOCK_REPLY
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None
    assert resp.usage.prompt_tokens == 2
    assert resp.usage.completion_tokens == MOCK_COMPLETION_TOKENS

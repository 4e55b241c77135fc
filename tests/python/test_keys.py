"""Virtual keys driven by the official OpenAI Python SDK: a key made with `/key/generate`
calls models, a wrong key is `AuthenticationError`, and a key over its budget is
`RateLimitError` (429, `budget_exceeded`), as LiteLLM answers them."""

from __future__ import annotations

import json
import urllib.request

import openai
import pytest

from conftest import MASTER_KEY, _DIRECT

MESSAGES = [{"role": "user", "content": "Say hello to the gateway"}]


def admin(gateway: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(
        f"{gateway}{path}",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"},
        method="POST",
    )
    with _DIRECT.open(req, timeout=10) as resp:
        return json.loads(resp.read())


def test_a_generated_key_calls_and_streams(gateway: str, make_client):
    key = admin(gateway, "/key/generate", {"key_alias": "sdk-app", "models": ["gpt-4o-mini"]})["key"]
    assert key.startswith("sk-")
    client = make_client(api_key=key)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    assert raw.headers["x-litellm-key-spend"] == "0"
    assert raw.parse().choices[0].message.content
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    # The key is limited to its models.
    with pytest.raises(openai.AuthenticationError) as err:
        client.embeddings.create(model="text-embedding-3-small", input="hi")
    assert err.value.status_code == 401
    assert err.value.body["type"] == "key_model_access_denied"
    # A key limited to some models lists only those.
    assert [m.id for m in client.models.list()] == ["gpt-4o-mini"]


def test_an_unknown_key_is_an_authentication_error(make_client):
    client = make_client(api_key="sk-not-a-real-key")
    with pytest.raises(openai.AuthenticationError) as err:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert err.value.status_code == 401
    assert err.value.body["type"] == "token_not_found_in_db"


def test_a_key_over_budget_is_a_rate_limit_error(gateway: str, make_client):
    # gpt-4o-mini at list price: 5 words in, 9 out, about 6e-06 USD a call.
    key = admin(gateway, "/key/generate", {"max_budget": 0.00001})["key"]
    client = make_client(api_key=key)
    for _ in range(2):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert err.value.status_code == 429
    assert err.value.body["type"] == "budget_exceeded"
    assert err.value.body["message"].startswith("Budget has been exceeded! Current cost: ")
    # Blocking the key turns it away with 401.
    admin(gateway, "/key/block", {"key": key})
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

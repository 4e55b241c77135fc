#!/usr/bin/env python3
"""Writes tests/fixtures/litellm_costs.json: LiteLLM's own `completion_cost` (the oracle) for
OpenAI-compatible models of every provider Switchyard serves today, on usage shapes that
exercise cached tokens (OpenAI's and DeepSeek's fields), reasoning tokens (OpenAI's, and xAI's
counted beside completion_tokens), and prompts above the price tiers' thresholds.

Run (needs LiteLLM installed in the Python that runs it; the fixture names its version):
    python3 -m venv /tmp/litellm-venv && /tmp/litellm-venv/bin/pip install litellm==1.108.7
    /tmp/litellm-venv/bin/python scripts/litellm_costs.py
The Rust test `cost::tests::costs_match_litellm` reads the fixture; nothing runs LiteLLM in CI.
"""
import json
import os
import sys

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # the bundled map, not a download
import litellm  # noqa: E402
from litellm.types.utils import ModelResponse, Usage  # noqa: E402

MODELS = [
    ("openai", "gpt-4o-mini"), ("openai", "gpt-4o"), ("openai", "gpt-4.1"), ("openai", "gpt-5"),
    ("openai", "gpt-5-mini"), ("openai", "o3"), ("openai", "o4-mini"), ("openai", "gpt-5.6"),
    ("openai", "gpt-6-sol"), ("xai", "grok-4.3"), ("xai", "grok-4.5"), ("xai", "grok-3-mini"),
    ("deepseek", "deepseek-chat"), ("deepseek", "deepseek-reasoner"), ("mistral", "mistral-large-latest"),
    ("mistral", "mistral-small-latest"), ("groq", "llama-3.3-70b-versatile"),
    ("together_ai", "meta-llama/Llama-3.3-70B-Instruct-Turbo"),
]

SHAPES = {
    "plain": {"prompt_tokens": 1200, "completion_tokens": 350, "total_tokens": 1550},
    "cached": {"prompt_tokens": 1200, "completion_tokens": 350, "total_tokens": 1550,
               "prompt_tokens_details": {"cached_tokens": 400}},
    "deepseek_cache_hit": {"prompt_tokens": 1200, "completion_tokens": 350, "total_tokens": 1550,
                           "prompt_cache_hit_tokens": 1000, "prompt_cache_miss_tokens": 200},
    "reasoning_inside": {"prompt_tokens": 1200, "completion_tokens": 350, "total_tokens": 1550,
                         "completion_tokens_details": {"reasoning_tokens": 200}},
    "reasoning_beside": {"prompt_tokens": 1200, "completion_tokens": 150, "total_tokens": 1550,
                         "completion_tokens_details": {"reasoning_tokens": 200}},
    "above_200k": {"prompt_tokens": 200001, "completion_tokens": 1000, "total_tokens": 201001},
    "at_200k": {"prompt_tokens": 200000, "completion_tokens": 1000, "total_tokens": 201000},
    "above_272k_cached": {"prompt_tokens": 300000, "completion_tokens": 2000, "total_tokens": 302000,
                          "prompt_tokens_details": {"cached_tokens": 100000}},
}


def key(provider, model):
    for name in (f"{provider}/{model}", model):
        if name in litellm.model_cost:
            return name
    return None


def main():
    cases = []
    for provider, model in MODELS:
        name = key(provider, model)
        if name is None:
            print(f"not in LiteLLM's map: {provider}/{model}", file=sys.stderr)
            continue
        for shape, wire in SHAPES.items():
            # Only xAI counts reasoning beside the completion (LiteLLM folds it for xAI alone;
            # Switchyard folds it wherever the total says so, a shape no other provider sends).
            if shape == "reasoning_beside" and provider != "xai":
                continue
            usage = Usage(**json.loads(json.dumps(wire)))
            response = ModelResponse(model=model, usage=usage)
            cost = litellm.completion_cost(completion_response=response, model=f"{provider}/{model}",
                                           custom_llm_provider=provider)
            cases.append({"provider": provider, "model": model, "shape": shape, "usage": wire, "cost": cost})
    out = {"litellm_version": litellm.version if hasattr(litellm, "version") else "1.108.7", "cases": cases}
    path = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "litellm_costs.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"{len(cases)} cases written to {os.path.normpath(path)}", file=sys.stderr)


if __name__ == "__main__":
    main()

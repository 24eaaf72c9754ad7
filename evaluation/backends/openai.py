"""The OpenAI-compatible backend: text completions from any server (vLLM, TGI, SGLang, llama.cpp,
`transformers serve`, OpenAI), with the task's prompt and stop sequences sent as they are.

Requests go through `OpenAIClient` (bounded concurrency, retries with backoff, a rate limit) and its
on-disk cache: every reply is appended as it arrives, so an interrupted run asks only for what is missing.
Greedy decoding is `temperature: 0`; with sampling, sample j of a prompt is requested with seed
`seed * 1_000_003 + j`, so a rerun asks the same questions (the server decides what a seed means).
Completions are cut at the first stop sequence here too (servers may send up to 4 of them, or include one).

    phi eval --tasks humaneval --base-url http://localhost:8000/v1 --model-name my-model --output runs/he
"""

from __future__ import annotations

import os
from typing import Any

from .common import truncate_at_stop
from .openai_client import OpenAIClient

MAX_SERVER_STOPS = 4   # OpenAI's limit for `stop`; the rest are applied here


class OpenAIBackend:
    """Completions from an OpenAI-compatible `/v1/completions` endpoint."""

    name = "openai"

    def __init__(self, base_url: str, model_name: str, *, concurrency: int = 8, max_retries: int = 5,
                 timeout: float = 300.0, cache_dir: str | os.PathLike | None = None, api_key: str | None = None):
        if not model_name:
            raise ValueError("--model-name is required with --base-url (the name the server serves the model as)")
        self.client = OpenAIClient(base_url, model_name, concurrency=concurrency, timeout=timeout,
                                   max_retries=max_retries, cache_dir=cache_dir, api_key=api_key)
        self.model_name = model_name

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "base_url": self.client.base_url, "model": self.model_name,
                "concurrency": self.client.concurrency, "max_retries": self.client.max_retries,
                "cache": str(self.client.cache.path) if self.client.cache.path else None,
                "requests": dict(self.client.stats)}

    def generate(self, prompts: list[str], stop: list[str], *, n: int = 1, temperature: float = 0.0,
                 top_p: float = 0.95, max_new_tokens: int = 512, seed: int = 0,
                 progress: bool = True) -> list[list[str]]:
        params: dict[str, Any] = {"max_tokens": max_new_tokens, "temperature": temperature,
                                  "stop": stop[:MAX_SERVER_STOPS]}
        if temperature > 0:
            params["top_p"] = top_p
        flat = [p for p in prompts for _ in range(n)]
        seeds = [seed * 1_000_003 + j for _ in prompts for j in range(n)]
        replies = self.client.complete_text(flat, seeds=seeds if temperature > 0 else None, **params)
        failed = [i for i, r in enumerate(replies) if r is None]
        if failed:
            reasons = {k: v for k, v in self.client.stats.items() if k.startswith("failed:")}
            raise ConnectionError(f"{self.client.base_url}: {len(failed)} of {len(flat)} completions failed "
                                  f"({reasons}); replies received so far are cached, rerun to resume")
        cut = [truncate_at_stop(r, stop) for r in replies]
        return [cut[i * n:(i + 1) * n] for i in range(len(prompts))]

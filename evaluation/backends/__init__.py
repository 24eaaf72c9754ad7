"""Model backends behind one interface: `generate(prompts, stop, ...) -> n completions per prompt`.

- `TransformersBackend` (name "transformers"): any AutoModelForCausalLM on a chosen device, batched
  `generate` with left padding and a KV cache; also loads the model that multiple-choice scoring uses.
- `OpenAIBackend` (name "openai"): any OpenAI-compatible text-completions endpoint (vLLM, TGI, SGLang,
  llama.cpp, `transformers serve`, OpenAI) through `openai_client.OpenAIClient`: bounded concurrency,
  retries, and a resumable request cache on disk.

Prompts and stop sequences come from the task; every results.json says which backend produced the
completions (`describe()`).

    backend = OpenAIBackend("http://localhost:8000/v1", "my-model", cache_dir="runs/he/requests")
    backend.generate(["def add(a, b):\\n"], stop=["\\ndef"], max_new_tokens=64)   # [["    return a + b"]]
"""

from __future__ import annotations

from typing import Any, Protocol

from .common import truncate_at_stop
from .openai import OpenAIBackend
from .transformers import TransformersBackend, load_model


class GenerationBackend(Protocol):
    """What the generate_until evaluator needs from a backend."""

    name: str

    def generate(self, prompts: list[str], stop: list[str], *, n: int = 1, temperature: float = 0.0,
                 top_p: float = 0.95, max_new_tokens: int = 512, seed: int = 0,
                 progress: bool = True) -> list[list[str]]: ...

    def describe(self) -> dict[str, Any]: ...


__all__ = ["GenerationBackend", "OpenAIBackend", "TransformersBackend", "load_model", "truncate_at_stop"]

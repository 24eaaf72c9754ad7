"""Teacher backends that turn constrained prompts into textbook sections or exercises.

- `OpenAITeacher`: any OpenAI-compatible endpoint (vLLM, TGI, llama.cpp, `transformers serve`, OpenAI)
  through `evaluation.backends.openai_client.OpenAIClient`: concurrent, rate-limited, retried, cached on disk.
- `TransformersTeacher`: a local transformers causal LM generating in batches (left padding), with the same
  on-disk reply cache, so a killed local run resumes too.

Both answer `generate(prompts) -> list[str | None]` (None: no reply after the retries) and name themselves
for the records' provenance (`generator`). Sampling parameters are part of the cache key: a rerun with the
same parameters reuses every reply, a different temperature asks again.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from tqdm import tqdm

from evaluation.backends.openai_client import OpenAIClient, ResponseCache, cache_key

from .prompts import GenerationPrompt, add_prompt_arguments, sampler_from_args


class OpenAITeacher:
    """A teacher behind an OpenAI-compatible chat endpoint."""

    def __init__(self, base_url: str, model: str, cache_dir: str | os.PathLike | None = None, max_tokens: int = 1024,
                 temperature: float = 0.0, concurrency: int = 8, requests_per_second: float | None = None,
                 timeout: float = 120, max_retries: int = 5, chunk_size: int = 64, **client_kwargs: Any):
        self.client = OpenAIClient(base_url, model, concurrency=concurrency, timeout=timeout, max_retries=max_retries,
                                   cache_dir=cache_dir, requests_per_second=requests_per_second, **client_kwargs)
        self.params = {"max_tokens": max_tokens, "temperature": temperature}
        self.chunk_size = chunk_size
        self.name = f"openai:{model}"

    def request_hash(self, prompt: GenerationPrompt) -> str:
        """The key of `prompt`'s request in the reply cache: a dataset row's link to the exact request sent."""
        return cache_key(self.client.model, self.client._messages(prompt.user, prompt.system or None), self.params)

    @property
    def stats(self) -> Counter[str]:
        return self.client.stats

    def generate(self, prompts: list[GenerationPrompt]) -> list[str | None]:
        replies: list[str | None] = []
        # Chunks keep the progress bar moving; each reply is cached as it arrives, chunk or not.
        for i in tqdm(range(0, len(prompts), self.chunk_size), desc=f"teacher {self.name}", unit="chunk",
                      disable=len(prompts) <= self.chunk_size):
            chunk = prompts[i:i + self.chunk_size]
            out: list[str | None] = [None] * len(chunk)
            for system in dict.fromkeys(p.system for p in chunk):  # one request batch per system message
                idx = [j for j, p in enumerate(chunk) if p.system == system]
                got = self.client.complete([chunk[j].user for j in idx], system=system or None, **self.params)
                for j, reply in zip(idx, got):
                    out[j] = reply
            replies += out
        return replies


class TransformersTeacher:
    """A local causal LM (Hub id or path) generating in batches; the chat template is used when it has one."""

    def __init__(self, model: str, cache_dir: str | os.PathLike | None = None, max_tokens: int = 512,
                 temperature: float = 0.0, batch_size: int = 8, device: str = "cpu", seed: int = 0):
        self.model_id = str(model)
        self.params = {"max_tokens": max_tokens, "temperature": temperature, "seed": seed}
        self.batch_size = batch_size
        self.device = device
        self.cache = ResponseCache(cache_dir)
        self.stats: Counter[str] = Counter()
        self.name = f"transformers:{Path(self.model_id).name if Path(self.model_id).exists() else self.model_id}"
        self._model = self._tokenizer = None

    def _load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            import modeling_phi  # noqa: F401  (our own checkpoints load through the Auto classes)
        except ImportError:
            pass
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(self.model_id, padding_side="left")
            self._model = AutoModelForCausalLM.from_pretrained(self.model_id).to(self.device).eval()
        except OSError as err:
            raise FileNotFoundError(f"{self.model_id}: cannot load the local teacher model ({err})") from None
        if self._tokenizer.pad_token is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token

    def _text(self, prompt: GenerationPrompt) -> str:
        messages = ([{"role": "system", "content": prompt.system}] if prompt.system else [])
        messages.append({"role": "user", "content": prompt.user})
        if self._tokenizer.chat_template:
            return self._tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "\n\n".join(m["content"] for m in messages) + "\n\n"

    def request_hash(self, prompt: GenerationPrompt) -> str:
        """The key of `prompt`'s request in the reply cache: a dataset row's link to the exact request sent."""
        messages = [{"role": "system", "content": prompt.system}, {"role": "user", "content": prompt.user}]
        return cache_key(self.model_id, messages, self.params)

    def generate(self, prompts: list[GenerationPrompt]) -> list[str | None]:
        keys = [self.request_hash(p) for p in prompts]
        replies = [self.cache.get(k) for k in keys]
        self.stats["cached"] += sum(r is not None for r in replies)
        todo = [i for i, r in enumerate(replies) if r is None]
        for start in tqdm(range(0, len(todo), self.batch_size), desc=f"teacher {self.name}", unit="batch",
                          disable=len(todo) <= self.batch_size):
            batch = todo[start:start + self.batch_size]
            for i, reply in zip(batch, self._generate_batch([prompts[i] for i in batch])):
                replies[i] = reply
                self.cache.put(keys[i], reply)
            self.stats["requests"] += len(batch)
        return replies

    def _generate_batch(self, prompts: list[GenerationPrompt]) -> list[str]:
        import torch

        if self._model is None:
            self._load()
        enc = self._tokenizer([self._text(p) for p in prompts], return_tensors="pt", padding=True).to(self.device)
        sample = self.params["temperature"] > 0
        # Seeded per batch from the first prompt, so a resumed run samples what an uninterrupted run would.
        torch.manual_seed(self.params["seed"] + int(prompts[0].id, 16) % 2**31)
        out = self._model.generate(**enc, max_new_tokens=self.params["max_tokens"], do_sample=sample,
                                   temperature=self.params["temperature"] if sample else None, top_p=None, top_k=None,
                                   pad_token_id=self._tokenizer.pad_token_id)
        return self._tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def add_teacher_arguments(parser: Any) -> None:
    """The teacher flags shared by `phi data textbook` and `phi data exercises` (none: the mined default)."""
    g = parser.add_argument_group("teacher (default: no LLM, mine the standard library)")
    g.add_argument("--teacher-url", help="OpenAI-compatible base URL, e.g. http://localhost:8000/v1 "
                                         "(API key from $OPENAI_API_KEY if needed)")
    g.add_argument("--teacher-model", help="model name sent to the endpoint (with --teacher-url)")
    g.add_argument("--teacher-local", metavar="MODEL", help="a local transformers model (path or Hub id) instead")
    g.add_argument("--max-tokens", type=int, default=1024, help="max new tokens per reply")
    g.add_argument("--temperature", type=float, default=0.0)
    g.add_argument("--concurrency", type=int, default=8, help="parallel requests to the endpoint")
    g.add_argument("--requests-per-second", type=float, default=None, help="rate limit (default: none)")
    g.add_argument("--timeout", type=float, default=120, help="seconds per request")
    g.add_argument("--max-retries", type=int, default=5)
    g.add_argument("--batch-size", type=int, default=8, help="generation batch of --teacher-local")
    g.add_argument("--device", default="cpu", help="device of --teacher-local: cpu, cuda, cuda:1, mps")
    g.add_argument("--cache-dir", help="reply cache (default: OUTPUT.cache beside the output); "
                                       "a rerun reuses every cached reply")


def add_builder_arguments(parser: Any, what: str) -> None:
    """The flags `phi data textbook` and `phi data exercises` share: output, size, seed, source, teacher, prompts."""
    parser.add_argument("--output", required=True, help="output dataset folder (Hub layout)")
    parser.add_argument("--n", type=int, default=200, help=f"number of {what} (mined: at most; 0 = all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source-root", help="mined default: a tree of .py files instead of the standard library")
    parser.add_argument("--no-embeddings", action="store_true", help="skip the embedding dispersion measure")
    add_teacher_arguments(parser)
    add_prompt_arguments(parser)


def builder_kwargs(args: Any) -> dict[str, Any]:
    """What `add_builder_arguments` parsed, as keyword arguments of build_textbook / build_exercises."""
    return dict(teacher=teacher_from_args(args), n=args.n or None, seed=args.seed, sampler=sampler_from_args(args),
                source_root=args.source_root, embed=not args.no_embeddings)


def teacher_options(args: Any) -> dict[str, Any] | None:
    """The teacher the flags ask for, as keyword arguments (`backend`: openai | transformers), or None (mined).
    Options, not an object: a pipeline task builds its own client or model from them."""
    if args.teacher_url and args.teacher_local:
        raise ValueError("give either --teacher-url (with --teacher-model) or --teacher-local, not both")
    cache_dir = args.cache_dir or str(Path(args.output)) + ".cache"
    if args.teacher_url:
        if not args.teacher_model:
            raise ValueError("--teacher-url needs --teacher-model (the model name the endpoint serves)")
        return dict(backend="openai", base_url=args.teacher_url, model=args.teacher_model, cache_dir=cache_dir,
                    max_tokens=args.max_tokens, temperature=args.temperature, concurrency=args.concurrency,
                    requests_per_second=args.requests_per_second, timeout=args.timeout, max_retries=args.max_retries)
    if args.teacher_local:
        return dict(backend="transformers", model=args.teacher_local, cache_dir=cache_dir, max_tokens=args.max_tokens,
                    temperature=args.temperature, batch_size=args.batch_size, seed=args.seed, device=args.device)
    if args.teacher_model:
        raise ValueError("--teacher-model needs --teacher-url")
    return None


def make_teacher(options: dict[str, Any] | None) -> OpenAITeacher | TransformersTeacher | None:
    if options is None:
        return None
    options = dict(options)
    return OpenAITeacher(**options) if options.pop("backend") == "openai" else TransformersTeacher(**options)


def teacher_from_args(args: Any) -> OpenAITeacher | TransformersTeacher | None:
    return make_teacher(teacher_options(args))

"""An asynchronous client for any OpenAI-compatible endpoint (vLLM, TGI, SGLang, llama.cpp, `transformers serve`,
OpenAI) with bounded concurrency, a rate limit, timeouts, retries with exponential backoff and a request cache.
Chat completions (`complete`: the data builders' teachers and judges) and text completions (`complete_text`:
evaluation, where the task's prompt and stop sequences must reach the model as they are).

The cache is what makes long generation jobs resumable: every reply is appended to a JSONL file (one line per
request, flushed as it arrives) keyed by (model, messages, parameters), so a run killed half-way and started
again asks the endpoint only for what it does not have yet. The endpoint URL is not part of the key: a
restarted server on another port, or another replica, serves the same cache.

    client = OpenAIClient("http://localhost:8000/v1", "Qwen/Qwen2.5-0.5B-Instruct", cache_dir="cache/")
    replies = client.complete(["Write a haiku about lists."], system="You are a poet.", max_tokens=64)
    client.complete_text(["def add(a, b):\n"], max_tokens=32, temperature=0.0, stop=["\ndef"])
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

CACHE_FILE = "responses.jsonl"
# Status codes worth asking again: rate limited, or the server is overloaded / restarting.
RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


def cache_key(model: str, messages: list[dict[str, str]], params: dict[str, Any]) -> str:
    """A stable key for one request: the same model, messages and sampling parameters give the same key."""
    blob = json.dumps({"model": model, "messages": messages, "params": params}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache:
    """Replies on disk, one JSON line per request; a torn last line (a killed process) is ignored on load."""

    def __init__(self, cache_dir: str | os.PathLike | None):
        self.path = Path(cache_dir) / CACHE_FILE if cache_dir is not None else None
        self.entries: dict[str, str] = {}
        self._lock = threading.Lock()
        if self.path is not None and self.path.is_file():
            self._load()

    def _load(self) -> None:
        with self.path.open("rb") as f:
            for raw in f:
                try:
                    row = json.loads(raw)
                    self.entries[row["key"]] = row["reply"]
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short when a previous run was killed: that request is asked again

    def get(self, key: str) -> str | None:
        return self.entries.get(key)

    def put(self, key: str, reply: str) -> None:
        self.entries[key] = reply
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"key": key, "reply": reply}, ensure_ascii=False) + "\n"
        with self._lock, self.path.open("a", encoding="utf-8") as f:
            # Start on a fresh line if a killed run left a torn one, so this line stays parseable.
            if f.tell() > 0 and not self._ends_with_newline():
                f.write("\n")
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def __len__(self) -> int:
        return len(self.entries)


class RateLimiter:
    """At most `rate` request starts per second (None: unlimited), shared by all concurrent tasks."""

    def __init__(self, rate: float | None):
        self.interval = 1.0 / rate if rate else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.interval:
            return
        async with self._lock:
            now = time.monotonic()
            delay = self._next - now
            self._next = max(now, self._next) + self.interval
        if delay > 0:
            await asyncio.sleep(delay)


class OpenAIClient:
    """Chat completions against an OpenAI-compatible endpoint, cached and retried.

    `complete` returns one reply per prompt, in order; None where the request failed after `max_retries`
    (bad request, repeated timeouts, empty reply), counted in `stats` by reason. If the endpoint cannot be
    reached at all after the retries, a ConnectionError names the URL; every reply received before that is
    already in the cache, so the rerun resumes. `stats` also counts cache hits and requests sent.
    """

    def __init__(self, base_url: str, model: str, concurrency: int = 8, timeout: float = 60, max_retries: int = 5,
                 cache_dir: str | os.PathLike | None = None, requests_per_second: float | None = None,
                 api_key: str | None = None, backoff: float = 0.5, max_backoff: float = 20.0):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"teacher URL {base_url!r} must start with http:// or https:// (e.g. http://localhost:8000/v1)")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.requests_per_second = requests_per_second
        self.backoff = backoff
        self.max_backoff = max_backoff
        # The key is read from the environment so it never lands in a command line, log or build_info.json.
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.cache = ResponseCache(cache_dir)
        self.stats: Counter[str] = Counter()

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def complete(self, prompts: list[str], system: str | None = None, **params: Any) -> list[str | None]:
        """One chat completion per prompt (same `system` message and sampling `params` for all)."""
        messages = [self._messages(p, system) for p in prompts]
        keys = [cache_key(self.model, m, params) for m in messages]
        return self._cached([{"messages": m} for m in messages], keys, params, self.url)

    def complete_text(self, prompts: list[str], **params: Any) -> list[str | None]:
        """One text completion (`/completions`, no chat template) per prompt, with the same `params`
        (max_tokens, temperature, stop, seed, ...). A per-prompt `seed` list draws each sample apart."""
        seeds = params.pop("seeds", None)
        per_prompt = [{**params, **({"seed": seeds[i]} if seeds is not None else {})} for i in range(len(prompts))]
        keys = [cache_key(self.model, [{"prompt": p}], {"endpoint": "completions", **q})
                for p, q in zip(prompts, per_prompt)]
        bodies = [{"prompt": p, **q} for p, q in zip(prompts, per_prompt)]
        return self._cached(bodies, keys, {}, f"{self.base_url}/completions")

    def _cached(self, bodies: list[dict[str, Any]], keys: list[str], params: dict[str, Any], url: str) -> list[str | None]:
        replies: list[str | None] = [self.cache.get(k) for k in keys]
        self.stats["cached"] += sum(r is not None for r in replies)
        todo = [i for i, r in enumerate(replies) if r is None]
        if todo:
            fetched = _run(self._fetch_all([bodies[i] for i in todo], [keys[i] for i in todo], params, url))
            for i, reply in zip(todo, fetched):
                replies[i] = reply
        return replies

    @staticmethod
    def _messages(prompt: str, system: str | None) -> list[dict[str, str]]:
        return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]

    async def _fetch_all(self, bodies: list[dict[str, Any]], keys: list[str],
                         params: dict[str, Any], url: str) -> list[str | None]:
        semaphore = asyncio.Semaphore(self.concurrency)
        limiter = RateLimiter(self.requests_per_second)
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        async with httpx.AsyncClient(timeout=self.timeout, headers=headers) as http:
            async def one(body: dict[str, Any], key: str) -> str | None:
                async with semaphore:
                    reply = await self._request(http, limiter, body, params, url)
                if reply is not None:
                    self.cache.put(key, reply)
                return reply

            tasks = [asyncio.ensure_future(one(b, k)) for b, k in zip(bodies, keys)]
            try:
                return list(await asyncio.gather(*tasks))
            finally:
                # An unreachable endpoint aborts the batch; cancel the rest so nothing keeps retrying.
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _request(self, http: httpx.AsyncClient, limiter: RateLimiter, payload: dict[str, Any],
                       params: dict[str, Any], url: str) -> str | None:
        body = {"model": self.model, **payload, "stream": False, **params}
        reason = "unknown"
        for attempt in range(self.max_retries + 1):
            if attempt:
                await asyncio.sleep(self._delay(attempt))
                self.stats["retries"] += 1
            await limiter.wait()
            self.stats["requests"] += 1
            try:
                response = await http.post(url, json=body)
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as err:
                reason = f"connection: {err.__class__.__name__}"
                continue
            except httpx.TimeoutException:
                reason = "timeout"
                continue
            if response.status_code in RETRY_STATUS:
                reason = f"http {response.status_code}"
                continue
            if response.status_code != 200:
                self.stats[f"failed:http {response.status_code}"] += 1  # a bad request does not improve with retries
                return None
            reply = _reply_text(response)
            if reply is None:
                reason = "malformed reply"
                continue
            return reply
        if reason.startswith("connection"):
            raise ConnectionError(f"endpoint {url} unreachable after {self.max_retries} retries "
                                  f"({reason}); replies received so far are cached in "
                                  f"{self.cache.path or '(no cache dir)'}: start the server and rerun to resume")
        self.stats[f"failed:{reason}"] += 1
        return None

    def _delay(self, attempt: int) -> float:
        # Exponential backoff with jitter, so many clients do not hammer a restarting server in lockstep.
        return min(self.max_backoff, self.backoff * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)


def _reply_text(response: httpx.Response) -> str | None:
    try:
        choice = response.json()["choices"][0]
        content = choice["text"] if "text" in choice else choice["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return content if isinstance(content, str) else None


def _run(coro: Any) -> Any:
    """Run a coroutine from sync code, also when called inside a running event loop (e.g. a notebook)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    result: list[Any] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as err:  # re-raised in the caller's thread
            errors.append(err)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]

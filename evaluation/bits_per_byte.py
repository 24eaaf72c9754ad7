"""Bits per byte of a completion given its prompt: a yardstick that does not depend on the tokenizer.

For an item (prompt, completion) and a causal LM with its own tokenizer:

    bits/byte = sum over the completion's tokens of -ln p(token | everything before) / (ln 2 x UTF-8 bytes of the completion)

The prompt and the completion are tokenized separately and joined, so the scored tokens encode exactly the
completion's bytes (checked: they must decode back to the completion) whatever the tokenizer merges; two
models with different tokenizers are then compared on the same bytes. Contexts longer than the model's
window are scored in strided windows: each window holds at most `max_length` tokens and scores its last
`stride` of them (default 3/4 of `max_length`), so every scored token sees at least `max_length - stride`
tokens before it (or all there are).

A set of items is summarised as total bits / total bytes (each byte weighs the same, as in language-model
bits-per-byte); the per-item numbers are kept for the paired comparisons of `recipes/ablation.py`.

Items: `benchmark_items("humaneval")` (the canonical solutions given the HumanEval prompts), `"mbpp"` (the
reference code given the zero-shot prompt of the evaluation registry), and `heldout_items(files)`:
documented functions of real code (the signature and docstring are the prompt, the body the completion).
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

LN2 = math.log(2.0)


@dataclass(frozen=True)
class Item:
    """One yardstick item: `completion` is scored given `prompt`; `set` names the collection it belongs to."""

    id: str
    set: str
    prompt: str
    completion: str

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def bits_per_byte(nll_nats: float, n_bytes: int) -> float:
    """Summed negative log-likelihood in nats over `n_bytes` UTF-8 bytes, in bits per byte."""
    if n_bytes <= 0:
        raise ValueError("bits per byte of an empty completion is undefined")
    return nll_nats / (LN2 * n_bytes)


def encode_item(tokenizer: Any, item: Item) -> tuple[list[int], int]:
    """(prompt ids + completion ids, number of prompt ids). Raises when the completion's ids do not decode
    back to its exact text (the scored tokens must cover exactly the completion's bytes)."""
    if not item.prompt:
        raise ValueError(f"item {item.id}: empty prompt; the first completion token needs a context")
    if not item.completion:
        raise ValueError(f"item {item.id}: empty completion")
    prompt = tokenizer.encode(item.prompt, add_special_tokens=False)
    completion = tokenizer.encode(item.completion, add_special_tokens=False)
    decoded = tokenizer.decode(completion, clean_up_tokenization_spaces=False)
    if decoded != item.completion:
        raise ValueError(f"item {item.id}: the tokenizer does not round-trip the completion "
                         f"({item.completion[:40]!r} -> {decoded[:40]!r}); bits per byte needs a lossless tokenizer")
    return prompt + completion, len(prompt)


def windows(n_tokens: int, start: int, max_length: int, stride: int) -> list[tuple[int, int, int]]:
    """(window start, first scored position, end) covering positions [start, n_tokens): each window is
    ids[window start:end] (at most max_length ids) and scores the tokens at [first scored, end)."""
    if not 1 <= stride < max_length:
        raise ValueError(f"stride {stride} must be in [1, max_length {max_length})")
    out, pos = [], start
    while pos < n_tokens:
        end = min(pos + stride, n_tokens)
        out.append((max(0, end - max_length), pos, end))
        pos = end
    return out


@torch.no_grad()
def completion_nll(model: Any, tokenizer: Any, items: Sequence[Item], max_length: int, stride: int | None = None,
                   batch_size: int = 32) -> list[dict[str, Any]]:
    """Per item: {'id', 'set', 'nll_nats', 'tokens', 'bytes', 'bits_per_byte'}. `model(input_ids=...)` must
    return an object with `.logits` (batch, length, vocab); windows are padded on the right, which a causal
    model never attends to, so no attention mask is needed."""
    stride = stride or max_length * 3 // 4
    jobs: list[tuple[int, list[int], int]] = []  # (item index, window ids, scored tokens at the window's end)
    n_tokens = []
    for i, item in enumerate(items):
        ids, n_prompt = encode_item(tokenizer, item)
        n_tokens.append(len(ids) - n_prompt)
        jobs += [(i, ids[w:end], end - first) for w, first, end in windows(len(ids), n_prompt, max_length, stride)]
    nll = [0.0] * len(items)
    device = next(iter(model.parameters())).device if hasattr(model, "parameters") else torch.device("cpu")
    jobs.sort(key=lambda j: len(j[1]))  # similar lengths together: less padding
    for b in range(0, len(jobs), batch_size):
        batch = jobs[b:b + batch_size]
        width = max(len(ids) for _, ids, _ in batch)
        input_ids = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (_, ids, _) in enumerate(batch):
            input_ids[row, :len(ids)] = torch.tensor(ids)
        logprobs = torch.log_softmax(model(input_ids=input_ids.to(device)).logits.float(), dim=-1).cpu()
        for row, (i, ids, scored) in enumerate(batch):
            n = len(ids)
            targets = torch.tensor(ids[n - scored:])
            # the logits at position p predict the token at p + 1; summed in float64
            nll[i] -= logprobs[row, n - scored - 1:n - 1].gather(1, targets[:, None]).double().sum().item()
    out = []
    for i, item in enumerate(items):
        n_bytes = len(item.completion.encode("utf-8"))
        out.append({"id": item.id, "set": item.set, "nll_nats": nll[i], "tokens": n_tokens[i], "bytes": n_bytes,
                    "bits_per_byte": bits_per_byte(nll[i], n_bytes)})
    return out


def summarize(per_item: Iterable[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per set and over all items: total bits / total bytes, items, bytes and tokens."""
    totals: dict[str, dict[str, float]] = {}
    for row in per_item:
        for key in (row["set"], "all"):
            t = totals.setdefault(key, {"nll_nats": 0.0, "bytes": 0, "tokens": 0, "items": 0})
            t["nll_nats"] += row["nll_nats"]
            t["bytes"] += row["bytes"]
            t["tokens"] += row["tokens"]
            t["items"] += 1
    return {k: {"bits_per_byte": bits_per_byte(t["nll_nats"], int(t["bytes"])), "items": int(t["items"]),
                "bytes": int(t["bytes"]), "tokens": int(t["tokens"])} for k, t in totals.items()}


def evaluate_model(model_dir: str | os.PathLike, items: Sequence[Item], out_dir: str | os.PathLike,
                   max_length: int | None = None, stride: int | None = None, batch_size: int = 32) -> dict[str, Any]:
    """Bits per byte of the model (and its tokenizer) in `model_dir` on `items`; writes per_item.jsonl and
    results.json to `out_dir`. `max_length` defaults to the training seq_len recorded beside the model
    (train_config.json), else the model's max_position_embeddings."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = Path(model_dir)
    if max_length is None:
        cfg = model_dir.parent / "train_config.json"
        max_length = json.loads(cfg.read_text())["seq_len"] if cfg.is_file() else None
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    max_length = max_length or model.config.max_position_embeddings
    per_item = completion_nll(model, tokenizer, items, max_length, stride, batch_size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "per_item.jsonl").open("w", encoding="utf-8") as f:
        for row in per_item:
            f.write(json.dumps(row) + "\n")
    results = {"model": str(model_dir), "max_length": max_length, "stride": stride or max_length * 3 // 4,
               "vocab_size": len(tokenizer), "parameters": sum(p.numel() for p in model.parameters()),
               "sets": summarize(per_item)}
    (out / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    return results


# ---- items ------------------------------------------------------------------------------------


def benchmark_items(task: str, data_dir: str | os.PathLike | None = None) -> list[Item]:
    """The evaluation registry's problems of a code task: the reference solution given the prompt the model
    sees (HumanEval: the canonical solution after the prompt; MBPP: the reference code after the zero-shot prompt)."""
    from evaluation.code_eval import load_problems

    # MBPP's code has Windows line ends; normalised as the decontamination index does (no corpus has them).
    return [Item(id=_benchmark_id(task, p["task_id"]), set=task, prompt=p["prompt"].replace("\r\n", "\n"),
                 completion=p["reference"].replace("\r\n", "\n"))
            for p in load_problems(task, data_dir=data_dir) if p["reference"].strip()]


def _benchmark_id(task: str, task_id: Any) -> str:
    """The decontamination index's id spelling: HumanEval/0, mbpp/11."""
    return str(task_id) if str(task_id).lower().startswith(task + "/") else f"{task}/{task_id}"


def heldout_selected(rel_path: str, fraction: float, salt: str = "phi-heldout") -> bool:
    """Is this file (its path relative to the source root) in the held-out slice? A fixed hash of the path:
    the same files whatever the seed, the corpus or the machine."""
    h = int.from_bytes(hashlib.sha256(f"{salt}\x00{rel_path}".encode()).digest()[:8], "big")
    return h / 2 ** 64 < fraction


def heldout_items(files: Iterable[tuple[str, str]], max_items: int | None = None, min_body_chars: int = 40) -> list[Item]:
    """Documented functions of (relative path, source text) files: signature + docstring as the prompt, the
    rest of the body as the completion (both dedented to the `def`; top-level functions before methods), at
    most `max_items` of them, chosen by a fixed hash of their ids."""
    from datasets_builders.mining import split_function

    items = []
    for rel, text in files:
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        lines = text.splitlines()
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            parts = split_function(lines, node)
            if parts is None or len(parts[1].strip()) < min_body_chars:
                continue
            prompt, body = (_dedent(p, node.col_offset) for p in parts)
            items.append(Item(id=f"heldout/{rel}:{node.lineno}:{node.name}", set="heldout", prompt=prompt,
                              completion=body))
    if max_items is not None and len(items) > max_items:
        keep = set(sorted((hashlib.sha256(i.id.encode()).hexdigest(), i.id) for i in items)[:max_items])
        items = [i for i in items if (hashlib.sha256(i.id.encode()).hexdigest(), i.id) in keep]
    return items


def _dedent(text: str, columns: int) -> str:
    return "\n".join(line[columns:] if line[:columns].isspace() else line.lstrip() if not line.strip() else line
                     for line in text.split("\n"))


def read_items(path: str | os.PathLike) -> list[Item]:
    with open(path, encoding="utf-8") as f:
        return [Item(**json.loads(line)) for line in f if line.strip()]


def write_items(path: str | os.PathLike, items: Iterable[Item]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for item in items:
            f.write(json.dumps(item.to_json()) + "\n")
    return path

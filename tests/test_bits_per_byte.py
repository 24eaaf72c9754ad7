"""Bits per byte = summed completion NLL / (ln 2 x UTF-8 bytes of the completion), checked by hand.

The model is one whose logits we write down: the logit of token v after token p is 3 sin(0.37 p + 1.3 v), so
the expected number is computed here with `math` alone, token by token, for two different tokenizers
(phi-2's CodeGen BPE and a 300-token BPE trained here) on the same text. The completion holds non-ASCII
characters, so bytes, characters and tokens all differ.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from evaluation.bits_per_byte import Item, completion_nll, heldout_items, heldout_selected, summarize, windows
from tests.conftest import PHI2_TOKENIZER

PROMPT = 'def greet(name):\n    """Say hello, politely."""\n'
COMPLETION = '    return f"héllo → {name}!"\n'


class SineBigram(torch.nn.Module):
    """logits[..., t, v] = 3 sin(0.37 x input_ids[..., t] + 1.3 v): depends only on the current token."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, input_ids: torch.Tensor) -> SimpleNamespace:
        v = torch.arange(self.vocab, dtype=torch.float64)
        return SimpleNamespace(logits=3 * torch.sin(0.37 * input_ids.double()[..., None] + 1.3 * v))


def hand_bits_per_byte(tokenizer, vocab: int, prompt: str, completion: str) -> float:
    p = tokenizer.encode(prompt, add_special_tokens=False)
    c = tokenizer.encode(completion, add_special_tokens=False)
    prev = [p[-1]] + c[:-1]
    nll = 0.0
    for before, token in zip(prev, c):
        logits = [3 * math.sin(0.37 * before + 1.3 * v) for v in range(vocab)]
        top = max(logits)
        log_z = top + math.log(math.fsum(math.exp(x - top) for x in logits))
        nll += log_z - logits[token]
    return nll / (math.log(2) * len(completion.encode("utf-8")))


@pytest.fixture(scope="module")
def small_tokenizer(tmp_path_factory):
    from datasets_builders.tokenizer import train_tokenizer

    folder = tmp_path_factory.mktemp("bpe")
    corpus = folder / "corpus.jsonl"
    texts = [PROMPT + COMPLETION, "def add(a, b):\n    return a + b\n", "for i in range(10):\n    print(i)\n"] * 20
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return train_tokenizer([corpus], folder / "tok", vocab_size=300, min_frequency=1)


@pytest.fixture(scope="module")
def phi_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(PHI2_TOKENIZER)


@pytest.mark.parametrize("which", ["phi", "small"])
@pytest.mark.parametrize("max_length,stride", [(512, 256), (6, 2), (4, 3)])
def test_bits_per_byte_by_hand(which, max_length, stride, phi_tokenizer, small_tokenizer):
    tokenizer = phi_tokenizer if which == "phi" else small_tokenizer
    vocab = len(tokenizer)
    item = Item("t/0", "t", PROMPT, COMPLETION)
    [row] = completion_nll(SineBigram(vocab), tokenizer, [item], max_length=max_length, stride=stride, batch_size=3)
    expected = hand_bits_per_byte(tokenizer, vocab, PROMPT, COMPLETION)
    assert row["bytes"] == len(COMPLETION.encode("utf-8")) == len(COMPLETION) + 3  # é: 2 bytes, →: 3 bytes
    assert row["tokens"] == len(tokenizer.encode(COMPLETION, add_special_tokens=False))
    assert row["bits_per_byte"] == pytest.approx(expected, rel=1e-6)  # float32 log-softmax
    assert summarize([row])["all"]["bits_per_byte"] == pytest.approx(expected, rel=1e-6)  # float32 log-softmax


def test_two_tokenizers_split_the_same_bytes_differently(phi_tokenizer, small_tokenizer):
    """The yardstick's point: different token counts, the same bytes in the denominator."""
    rows = [completion_nll(SineBigram(len(t)), t, [Item("t/0", "t", PROMPT, COMPLETION)], 64)[0]
            for t in (phi_tokenizer, small_tokenizer)]
    assert rows[0]["tokens"] != rows[1]["tokens"]
    assert rows[0]["bytes"] == rows[1]["bytes"]


def test_summary_weighs_bytes_not_items(phi_tokenizer):
    items = [Item("a", "x", PROMPT, COMPLETION), Item("b", "x", "x = 1\n", "y = 2 * x\n" * 5)]
    rows = completion_nll(SineBigram(len(phi_tokenizer)), phi_tokenizer, items, 64)
    total = summarize(rows)["x"]
    assert total["bits_per_byte"] == pytest.approx(sum(r["nll_nats"] for r in rows) / math.log(2) /
                                                   sum(r["bytes"] for r in rows))
    assert total["items"] == 2


def test_windows_score_every_position_once_with_enough_context():
    for n, start, length, stride in [(50, 7, 16, 8), (9, 1, 4, 3), (100, 99, 10, 5)]:
        scored = []
        for w, first, end in windows(n, start, length, stride):
            assert end - w <= length and first - w >= min(length - stride, first)
            scored += range(first, end)
        assert scored == list(range(start, n))
    with pytest.raises(ValueError, match="stride"):
        windows(10, 1, 4, 4)


def test_heldout_selection_is_fixed_and_items_split_at_the_docstring():
    chosen = [p for p in (f"pkg/m{i}.py" for i in range(400)) if heldout_selected(p, 0.05)]
    assert chosen == [p for p in (f"pkg/m{i}.py" for i in range(400)) if heldout_selected(p, 0.05)]
    assert 5 <= len(chosen) <= 40
    code = ('class A:\n    def f(self, x):\n        """Double x."""\n        y = x * 2\n        return y + 0 * x\n\n'
            'def g():\n    return 1\n')
    [item] = heldout_items([("m.py", code)], min_body_chars=10)
    assert item.id == "heldout/m.py:2:f"
    assert item.prompt == 'def f(self, x):\n    """Double x."""\n'
    assert item.completion == "    y = x * 2\n    return y + 0 * x\n"

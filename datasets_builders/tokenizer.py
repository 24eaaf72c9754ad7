"""Train a byte-level BPE tokenizer on a corpus and save it as a transformers tokenizer.

phi uses the CodeGen-350M-mono BPE (GPT-2 byte-level, `<|endoftext|>` = bos = eos = unk); the tiny runs
train a small one of the same kind on their own corpus, with `<|endoftext|>` as token 0 (the `tiny` and
`small` presets in modeling_phi/configuration_phi.py assume id 0). Any Hub or local tokenizer can be
used instead (`load_tokenizer`). Training is deterministic: the same corpus gives the same vocabulary.

Example:
    phi data tokenizer --input runs/tiny/datasets/filtered-code --output runs/tiny/tokenizer --vocab_size 8192
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from pathlib import Path

EOS = "<|endoftext|>"


def _texts(dataset, column: str, max_chars: int | None, batch_size: int = 1000) -> Iterator[list[str]]:
    seen = 0
    for start in range(0, len(dataset), batch_size):
        batch = dataset[start:start + batch_size][column]
        if max_chars is not None:
            keep = []
            for text in batch:
                if seen >= max_chars:
                    break
                keep.append(text)
                seen += len(text)
            batch = keep
        if not batch:
            return
        yield batch


def train_tokenizer(sources: list[str | os.PathLike], output: str | os.PathLike, vocab_size: int = 8192,
                    column: str = "text", min_frequency: int = 2, max_chars: int | None = None,
                    model_max_length: int = 2048):
    """Train a byte-level BPE on the `column` of `sources` and save it (transformers format) to `output`.

    Token 0 is `<|endoftext|>`, used as bos, eos and unk like phi's CodeGen tokenizer. Written atomically.
    """
    import shutil

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from .packing import load_any_dataset

    if vocab_size < 257:
        raise ValueError(f"vocab_size {vocab_size} is too small: a byte-level BPE needs 256 bytes + <|endoftext|>")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)

    def corpus() -> Iterator[list[str]]:
        for source in sources:
            yield from _texts(load_any_dataset(source, [column]), column, max_chars)

    bpe.train_from_iterator(corpus(), trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=EOS, eos_token=EOS, unk_token=EOS,
                                        model_max_length=model_max_length)
    out = Path(output)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return tokenizer


def load_tokenizer(name_or_path: str | os.PathLike):
    """Any Hub id or local tokenizer folder; it must have an eos token (phi's <|endoftext|>)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
    except OSError as err:
        raise FileNotFoundError(f"{name_or_path}: no tokenizer there (not a tokenizer folder, and not loadable "
                                f"from the Hub: {str(err).splitlines()[0]}); train one with `phi data tokenizer`") from None
    if tokenizer.eos_token_id is None:
        raise ValueError(f"{name_or_path}: the tokenizer has no eos token; phi needs <|endoftext|> as bos/eos")
    return tokenizer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", nargs="+", required=True,
                        help="corpus: dataset folder(s), .jsonl / .parquet file(s) or Hub id(s)")
    parser.add_argument("--output", required=True, help="tokenizer folder to write")
    parser.add_argument("--vocab_size", type=int, default=8192)
    parser.add_argument("--column", default="text")
    parser.add_argument("--min_frequency", type=int, default=2)
    parser.add_argument("--max_chars", type=int, default=None, help="train on at most this many characters")


def main(args: argparse.Namespace) -> None:
    tokenizer = train_tokenizer(args.input, args.output, args.vocab_size, args.column, args.min_frequency,
                                args.max_chars)
    print(f"wrote {args.output}: {len(tokenizer)} tokens, {EOS} = {tokenizer.eos_token_id}")

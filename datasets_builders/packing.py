"""Tokenize and pack datasets into fixed-length blocks for training, with a held-out eval split.

Documents are joined by `<|endoftext|>` (appended after each one, as phi does) and cut into blocks of
`seq_len` tokens with `datasets.map` (batched, `num_proc` workers; a batch's last partial block is
dropped and counted). Exercises (`prompt`, `completion`) get `labels` of -100 on the prompt so the loss
is on the completion only. Several sources mix by weight (phi-1.5: 80% synthetic, 20% phi-1 data) with
`interleave_datasets`. The eval split holds out whole documents, chosen by a seeded hash of their `id`,
so no eval text is ever trained on.

The output is a Hub-layout dataset (data/train-*.parquet, data/eval-*.parquet, README.md,
build_info.json last) plus the same blocks as flat arrays for training, `tokens/<split>.<column>.npy`
(uint16 token ids where the vocabulary fits, else int32; labels int32). Training memory-maps those
(`load_packed`): a batch reads its rows from disk, so a 50B-token run needs its batches in RAM, not its
tokens, and nothing is converted into a cache first. It is a cache: packing again with the same inputs,
tokenizer and settings returns the existing folder. Same inputs and seed -> identical blocks.

`prepare_packed` is what a training run calls: it builds the corpora a config asks for where they are
missing (`build: filtered-code` or `build: stdlib`, so the tiny config runs on a fresh clone), trains a
byte-level BPE where the tokenizer is missing and `tokenizer_vocab_size` is set, then packs.

Example:
    phi data pack --input runs/tiny/datasets/filtered-code --tokenizer runs/tiny/tokenizer \\
        --seq_len 256 --output runs/tiny/packed
    phi data pack --input textbooks/ code/ --weights 0.8 0.2 --tokenizer microsoft/phi-1 --output mix/
    phi data pack --input exercises/ --format exercises --tokenizer runs/tiny/tokenizer --output ft/
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from .hub_dataset import BUILD_INFO, is_complete, read_build_info, render_card

PACKING_VERSION = 3  # bump when the block layout changes, so old caches are rebuilt
FORMATS = {"text": ("text",), "exercises": ("prompt", "completion")}


@dataclass
class Source:
    """One input of a packed dataset: where it is, its weight in the mixture, and how to read it."""

    path: str
    weight: float = 1.0
    format: str = "text"  # "text": `column` is the document; "exercises": prompt + completion
    column: str = "text"
    build: str | None = None  # how recipes build it where it is missing (e.g. "stdlib")

    @classmethod
    def parse(cls, spec: str | dict[str, Any] | Source) -> Source:
        if isinstance(spec, Source):
            return spec
        if isinstance(spec, str | os.PathLike):
            return cls(path=str(spec))
        unknown = set(spec) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"dataset entry {spec}: unknown key(s) {sorted(unknown)}; "
                             f"known: {sorted(cls.__dataclass_fields__)}")
        if "path" not in spec:
            raise ValueError(f"dataset entry {spec}: missing `path`")
        source = cls(**{**spec, "path": str(spec["path"])})
        if source.format not in FORMATS:
            raise ValueError(f"dataset {source.path}: unknown format {source.format!r}; use one of {sorted(FORMATS)}")
        if source.weight <= 0:
            raise ValueError(f"dataset {source.path}: weight must be > 0, got {source.weight}")
        return source

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.column,) if self.format == "text" else FORMATS[self.format]


def _data_files(folder: Path, split: str) -> list[str]:
    for pattern in (f"data/{split}-*.parquet", "data/*.parquet", "*.parquet"):
        files = sorted(folder.glob(pattern))
        if files:
            return [str(f) for f in files]
    raise ValueError(f"{folder}: no Parquet shards under data/; expected a folder written by `phi data ...`")


def load_any_dataset(source: str | os.PathLike, columns: list[str] | tuple[str, ...] = (), split: str = "train"):
    """A `datasets.Dataset` from one of our folders, a .jsonl / .parquet file or a Hub id; checks columns."""
    from datasets import load_dataset

    path = Path(source)
    if path.is_dir():
        ds = load_dataset("parquet", data_files={split: _data_files(path, split)}, split=split)
    elif path.is_file() and path.suffix in {".jsonl", ".json", ".parquet"}:
        if path.suffix != ".parquet" and not _has_content(path):
            raise ValueError(f"{source}: the dataset is empty")
        ds = load_dataset("json" if path.suffix != ".parquet" else "parquet", data_files={split: str(path)}, split=split)
    elif path.exists() or str(source).startswith((".", "/")) or path.suffix in {".jsonl", ".parquet", ".json"}:
        raise FileNotFoundError(f"{source}: not a dataset folder, .jsonl or .parquet file")
    else:
        try:
            ds = load_dataset(str(source), split=split)
        except Exception as err:  # offline, unknown repo, ...: one clear line
            raise FileNotFoundError(f"{source}: not a local path and could not be loaded from the Hub "
                                    f"({err.__class__.__name__}); pass a local folder, .jsonl or .parquet file") from None
    check_dataset(ds, source, columns)
    return ds


def _has_content(path: Path) -> bool:
    with path.open("rb") as f:
        return any(line.strip() for line in f)


def check_dataset(ds, source: Any, columns: list[str] | tuple[str, ...]) -> None:
    """Fail early, with one line, on an empty dataset or a missing column."""
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; the columns are {sorted(ds.column_names)}")
    if len(ds) == 0:
        raise ValueError(f"{source}: the dataset is empty")


# --- map functions (module level so that num_proc workers can pickle them) ---

def _tokenize_text(batch: dict[str, list], tokenizer, column: str, eos: int) -> dict[str, list]:
    ids = tokenizer(batch[column], add_special_tokens=False, verbose=False)["input_ids"]
    return {"input_ids": [x + [eos] for x in ids]}


def _tokenize_exercises(batch: dict[str, list], tokenizer, eos: int) -> dict[str, list]:
    # Prompt and completion are tokenized apart, as at inference time the model sees the prompt alone.
    prompts = tokenizer(batch["prompt"], add_special_tokens=False, verbose=False)["input_ids"]
    completions = tokenizer(batch["completion"], add_special_tokens=False, verbose=False)["input_ids"]
    return {"input_ids": [p + c + [eos] for p, c in zip(prompts, completions)],
            "labels": [[-100] * len(p) + c + [eos] for p, c in zip(prompts, completions)]}


def _group(batch: dict[str, list], seq_len: int) -> dict[str, list]:
    out = {}
    for key, rows in batch.items():
        flat = np.concatenate([np.asarray(r, dtype=np.int32) for r in rows]) if rows else np.zeros(0, np.int32)
        n = len(flat) // seq_len * seq_len
        out[key] = flat[:n].reshape(-1, seq_len).tolist()
    return out


def _labels_from_inputs(batch: dict[str, list]) -> dict[str, list]:
    return {"labels": batch["input_ids"]}


def _doc_hashes(ds, seed: int, column: str) -> np.ndarray:
    key = "id" if "id" in ds.column_names else column
    values = ds[key]
    return np.array([int.from_bytes(hashlib.sha1(f"{seed}\x00{v}".encode()).digest()[:8], "big") for v in values],
                    dtype=np.uint64)


def split_documents(ds, eval_fraction: float, seed: int, column: str):
    """(train, eval) by a seeded hash of each document's id; at least one eval document if asked for any."""
    if eval_fraction <= 0:
        return ds, ds.select([])
    hashes = _doc_hashes(ds, seed, column)
    is_eval = hashes < np.uint64(eval_fraction * 2**64)
    if not is_eval.any() and len(ds) > 1:
        is_eval[int(np.argmin(hashes))] = True
    return ds.select(np.flatnonzero(~is_eval)), ds.select(np.flatnonzero(is_eval))


def tokenize_and_group(ds, source: Source, tokenizer, seq_len: int, num_proc: int | None):
    """Documents -> token ids (+ eos) -> blocks of `seq_len` (with `labels` for exercises)."""
    eos = tokenizer.eos_token_id
    if source.format == "text":
        fn = partial(_tokenize_text, tokenizer=tokenizer, column=source.column, eos=eos)
    else:
        fn = partial(_tokenize_exercises, tokenizer=tokenizer, eos=eos)
    if len(ds) == 0:
        return ds.select([]), 0
    num_proc = min(num_proc or 1, len(ds)) if (num_proc or 1) > 1 else None
    tokens = ds.map(fn, batched=True, num_proc=num_proc, remove_columns=ds.column_names, desc=f"tokenize {source.path}")
    n_tokens = sum(len(x) for x in tokens["input_ids"])
    blocks = tokens.map(partial(_group, seq_len=seq_len), batched=True, batch_size=1000, num_proc=num_proc,
                        desc=f"pack {source.path}")
    return blocks, n_tokens


def unigram_entropy(blocks, vocab_size: int, batch_rows: int = 10_000) -> float:
    """Entropy (nats / token) of the blocks' token frequencies: the loss of the best context-free model."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for start in range(0, len(blocks), batch_rows):
        ids = np.asarray(blocks[start:start + batch_rows]["input_ids"], dtype=np.int64).ravel()
        counts += np.bincount(ids, minlength=vocab_size)[:vocab_size]
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def fingerprint(sources: list[Source], tokenizer, settings: dict[str, Any]) -> str:
    """Identifies a packed dataset: the inputs (their build_info or file stamps), the tokenizer, the settings."""
    h = hashlib.sha256(json.dumps({"v": PACKING_VERSION, **settings, "sources": [asdict(s) for s in sources]},
                                  sort_keys=True, default=str).encode())
    for s in sources:
        path = Path(s.path)
        if (path / BUILD_INFO).is_file():
            h.update((path / BUILD_INFO).read_bytes())
        elif path.exists():
            for f in sorted(path.rglob("*") if path.is_dir() else [path]):
                if f.is_file():
                    h.update(f"{f}:{f.stat().st_size}:{f.stat().st_mtime_ns}".encode())
    h.update(tokenizer.backend_tokenizer.to_str().encode() if hasattr(tokenizer, "backend_tokenizer")
             else json.dumps(tokenizer.get_vocab(), sort_keys=True).encode())
    return h.hexdigest()[:20]


def pack(sources: list[str | dict | Source], tokenizer, output: str | os.PathLike, seq_len: int = 2048,
         eval_fraction: float = 0.01, seed: int = 0, num_proc: int | None = None,
         shard_tokens: int = 50_000_000) -> Path:
    """Tokenize `sources`, pack them into `seq_len` blocks, mix by weight, write train/eval splits to `output`.

    Returns `output`; if it already holds a pack of the same inputs and settings, nothing is recomputed.
    """
    from datasets import concatenate_datasets, interleave_datasets

    if num_proc and num_proc > 1:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # forked workers + Rust threads deadlock otherwise
    sources = [Source.parse(s) for s in sources]
    if not sources:
        raise ValueError("no dataset to pack: give at least one input")
    settings = {"seq_len": seq_len, "eval_fraction": eval_fraction, "seed": seed}
    fp = fingerprint(sources, tokenizer, settings)
    out = Path(output)
    if is_complete(out) and read_build_info(out).get("fingerprint") == fp:
        return out

    train_parts, eval_parts, counts = [], [], []
    labelled = any(s.format == "exercises" for s in sources)
    for source in sources:
        ds = load_any_dataset(source.path, source.columns)
        ds = ds.select_columns([c for c in ("id", *source.columns) if c in ds.column_names])
        train_docs, eval_docs = split_documents(ds, eval_fraction, seed, source.column)
        train, train_tokens = tokenize_and_group(train_docs, source, tokenizer, seq_len, num_proc)
        evals, eval_tokens = tokenize_and_group(eval_docs, source, tokenizer, seq_len, num_proc)
        if len(train) == 0:
            raise ValueError(f"{source.path}: {train_tokens} training tokens, fewer than one block of seq_len={seq_len}; "
                             "lower seq_len or add data")
        if labelled and "labels" not in train.column_names:
            train = train.map(_labels_from_inputs, batched=True)
            evals = evals.map(_labels_from_inputs, batched=True) if len(evals) else evals
        train_parts.append(train)
        eval_parts.append(evals)
        counts.append({"path": source.path, "weight": source.weight, "documents": len(ds),
                       "train_documents": len(train_docs), "eval_documents": len(eval_docs),
                       "train_tokens": train_tokens, "eval_tokens": eval_tokens,
                       "train_blocks": len(train), "eval_blocks": len(evals),
                       "dropped_tail_tokens": train_tokens + eval_tokens - (len(train) + len(evals)) * seq_len})
    if len(train_parts) == 1:
        train = train_parts[0]
    else:
        total = sum(s.weight for s in sources)
        train = interleave_datasets(train_parts, probabilities=[s.weight / total for s in sources], seed=seed,
                                    stopping_strategy="all_exhausted")
    evals = concatenate_datasets([e for e in eval_parts if len(e)]) if any(len(e) for e in eval_parts) else None
    if eval_fraction > 0 and evals is None:
        raise ValueError(f"no eval block: the held-out documents ({eval_fraction:.1%}) are shorter than seq_len={seq_len}; "
                         "raise eval_fraction or lower seq_len")
    info = {"fingerprint": fp, **settings, "tokenizer": getattr(tokenizer, "name_or_path", ""),
            "unigram_entropy_nats": unigram_entropy(train, len(tokenizer)),
            "vocab_size": len(tokenizer), "eos_token_id": tokenizer.eos_token_id, "sources": counts,
            "train_blocks": len(train), "eval_blocks": len(evals) if evals is not None else 0}
    _write_packed(out, {"train": train, "eval": evals}, info, shard_rows=max(1, shard_tokens // seq_len))
    return out


def _write_packed(out: Path, splits: dict[str, Any], info: dict[str, Any], shard_rows: int) -> None:
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "data").mkdir(parents=True)
    written = {}
    for split, ds in splits.items():
        if ds is None:
            continue
        n = max(1, -(-len(ds) // shard_rows))
        written[split] = [f"{split}-{i:05d}-of-{n:05d}.parquet" for i in range(n)]
        for i, name in enumerate(written[split]):
            ds.shard(n, i, contiguous=True).to_parquet(str(tmp / "data" / name))
    info = {**info, "shards": written, "arrays": _write_arrays(tmp / "tokens", splits, info["vocab_size"])}
    columns = splits["train"].column_names
    description = (f"Token blocks of {info['seq_len']} tokens (documents joined by <|endoftext|>), "
                   "ready for causal-LM training; the eval split holds out whole documents.")
    card = render_card("packed tokens", description, info["train_blocks"], columns,
                       {"Build": "```json\n" + json.dumps(info, indent=2, default=str) + "\n```"},
                       splits=tuple(written))
    (tmp / "README.md").write_text(card, encoding="utf-8")
    (tmp / BUILD_INFO).write_text(json.dumps(info, indent=2, default=str), encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


def _write_arrays(folder: Path, splits: dict[str, Any], vocab_size: int, batch_rows: int = 4096) -> dict[str, str]:
    """Each split's columns as (blocks, seq_len) .npy files, written batch by batch (never whole in RAM)."""
    folder.mkdir(parents=True)
    written = {}
    for split, ds in splits.items():
        if ds is None:
            continue
        ds = ds.with_format("numpy")
        for column in ("input_ids", "labels"):
            if column not in ds.column_names:
                continue
            dtype = np.uint16 if column == "input_ids" and vocab_size <= 2**16 else np.int32
            name = f"{split}.{column}.npy"
            out = np.lib.format.open_memmap(folder / name, mode="w+", dtype=dtype,
                                            shape=(len(ds), len(ds[0][column])))
            for start in range(0, len(ds), batch_rows):
                out[start:start + batch_rows] = ds[start:start + batch_rows][column]
            out.flush()
            del out
            written[f"{split}.{column}"] = f"tokens/{name}"
    return written


@dataclass
class PackedSplit:
    """One split of a packed dataset as memory-mapped (blocks, seq_len) arrays: rows are read when indexed."""

    input_ids: np.ndarray
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def seq_len(self) -> int:
        return self.input_ids.shape[1]


def load_packed(folder: str | os.PathLike) -> dict[str, PackedSplit | None]:
    """{'train': PackedSplit, 'eval': PackedSplit | None} of a folder written by `pack`, memory-mapped."""
    folder = Path(folder)
    if not is_complete(folder):
        raise FileNotFoundError(f"{folder}: not a complete packed dataset (no {BUILD_INFO}); run `phi data pack`")
    arrays = read_build_info(folder).get("arrays")
    if not arrays:
        raise FileNotFoundError(f"{folder}: packed by an older version (no tokens/*.npy); run `phi data pack` again")
    out: dict[str, PackedSplit | None] = {}
    for split in ("train", "eval"):
        ids = arrays.get(f"{split}.input_ids")
        labels = arrays.get(f"{split}.labels")
        out[split] = PackedSplit(np.load(folder / ids, mmap_mode="r"),
                                 np.load(folder / labels, mmap_mode="r") if labels else None) if ids else None
    return out


# --- what a training run calls: build missing corpora and tokenizer, then pack ---

def build_stdlib_corpus(path: str | os.PathLike) -> Path:
    """The standard library's .py files, one record per file."""
    from .hub_dataset import write_dataset
    from .sources import LocalPythonFiles

    files = LocalPythonFiles()
    return write_dataset(list(files), path, name="python-stdlib", tags=["code"], license="psf-2.0",
                         description="The .py files of the Python standard library (tests and vendored trees excluded).",
                         build_info={"source": str(files.root), "skipped": dict(files.skipped)})


def build_filtered_code_corpus(path: str | os.PathLike) -> Path:
    """phi-1's filtered code corpus (`phi data filtered-code`) from the standard library, offline."""
    from .pipelines.filtered_code import build_filtered_code

    return Path(build_filtered_code(output_dir=path))


BUILDERS: dict[str, Callable[[str | os.PathLike], Path]] = {"stdlib": build_stdlib_corpus,
                                                            "filtered-code": build_filtered_code_corpus}


def check_sources(datasets: list[str | dict | Source]) -> list[Source]:
    """Each dataset exists (or has a known builder), has its columns and is not empty: before any compute."""
    sources = [Source.parse(s) for s in datasets]
    for source in sources:
        if not Path(source.path).exists() and source.build:
            if source.build not in BUILDERS:
                raise ValueError(f"dataset {source.path}: unknown build {source.build!r}; known: {sorted(BUILDERS)}")
            continue
        load_any_dataset(source.path, source.columns)
    return sources


def prepare_packed(sources: list[Source], tokenizer: str | os.PathLike, output: str | os.PathLike, seq_len: int,
                   eval_fraction: float = 0.01, seed: int = 0, num_proc: int | None = None,
                   tokenizer_vocab_size: int | None = None, log: Callable[[str], Any] = print):
    """Build missing corpora, train the tokenizer where missing, pack; returns (tokenizer, packed folder)."""
    from .tokenizer import load_tokenizer, train_tokenizer

    for source in sources:
        if not Path(source.path).exists():
            log(f"building {source.path} ({source.build})")
            BUILDERS[source.build](source.path)
    if not Path(tokenizer).exists() and tokenizer_vocab_size:
        texts = [s.path for s in sources if s.format == "text"]
        log(f"training a {tokenizer_vocab_size}-token BPE on {texts}")
        train_tokenizer(texts, tokenizer, tokenizer_vocab_size, column=sources[0].column, model_max_length=seq_len)
    tok = load_tokenizer(tokenizer)
    return tok, pack(sources, tok, output, seq_len, eval_fraction, seed, num_proc)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", nargs="+", required=True,
                        help="dataset folder(s), .jsonl / .parquet file(s) or Hub id(s)")
    parser.add_argument("--weights", nargs="+", type=float, default=None, help="mixture weights, one per input")
    parser.add_argument("--format", choices=sorted(FORMATS), default="text",
                        help="text: documents in --column; exercises: prompt + completion, loss on the completion")
    parser.add_argument("--column", default="text")
    parser.add_argument("--tokenizer", required=True, help="tokenizer folder or Hub id")
    parser.add_argument("--output", required=True)
    parser.add_argument("--seq_len", type=int, default=2048)
    parser.add_argument("--eval_fraction", type=float, default=0.01, help="fraction of documents held out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_proc", type=int, default=None)


def main(args: argparse.Namespace) -> None:
    from .tokenizer import load_tokenizer

    weights = args.weights or [1.0] * len(args.input)
    if len(weights) != len(args.input):
        raise ValueError(f"--weights: {len(weights)} weights for {len(args.input)} inputs")
    sources = [Source(path=p, weight=w, format=args.format, column=args.column) for p, w in zip(args.input, weights)]
    out = pack(sources, load_tokenizer(args.tokenizer), args.output, args.seq_len, args.eval_fraction, args.seed,
               args.num_proc)
    info = read_build_info(out)
    print(f"wrote {out}: {info['train_blocks']} train blocks, {info['eval_blocks']} eval blocks of {args.seq_len} tokens")

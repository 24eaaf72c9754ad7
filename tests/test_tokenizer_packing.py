"""Tokenizer training and packing: eos = id 0, determinism, blocks, held-out documents, mixtures, exercises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from datasets_builders.hub_dataset import read_build_info, write_dataset
from datasets_builders.packing import Source, load_packed, pack
from datasets_builders.sources import LocalPythonFiles
from datasets_builders.tokenizer import EOS, load_tokenizer, train_tokenizer

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """40 real standard-library files as a Hub-layout dataset."""
    records = list(LocalPythonFiles())[:40]
    return write_dataset(records, tmp_path_factory.mktemp("corpus") / "code", name="code", description="test",
                         build_info={})


@pytest.fixture(scope="module")
def tokenizer(corpus, tmp_path_factory):
    return train_tokenizer([corpus], tmp_path_factory.mktemp("tok") / "tokenizer", vocab_size=512)


def test_tokenizer_eos_is_token_zero_and_roundtrips(tokenizer, tmp_path):
    assert tokenizer.convert_tokens_to_ids(EOS) == 0
    assert tokenizer.eos_token == tokenizer.bos_token == tokenizer.unk_token == EOS
    assert len(tokenizer) == 512
    text = "def f(x):\n\t    return x ** 2  # café ✓\n\n"
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text
    tokenizer.save_pretrained(tmp_path)
    assert load_tokenizer(tmp_path).eos_token_id == 0


def test_tokenizer_training_is_deterministic(corpus, tokenizer, tmp_path):
    again = train_tokenizer([corpus], tmp_path / "again", vocab_size=512)
    assert again.backend_tokenizer.to_str() == tokenizer.backend_tokenizer.to_str()


def test_pack_joins_documents_with_eos_and_holds_out_whole_documents(corpus, tokenizer, tmp_path):
    out = pack([corpus], tokenizer, tmp_path / "packed", seq_len=64, eval_fraction=0.1, seed=3)
    data = load_packed(out)
    train, evals = np.asarray(data["train"].input_ids), np.asarray(data["eval"].input_ids)
    assert train.shape[1] == evals.shape[1] == 64
    info = read_build_info(out)
    src = info["sources"][0]
    assert src["train_documents"] + src["eval_documents"] == 40 and src["eval_documents"] >= 1
    assert 0 < info["unigram_entropy_nats"] < np.log(512)
    # The stream is the documents in order, each followed by <|endoftext|>, cut into blocks.
    from datasets_builders.packing import load_any_dataset, split_documents

    docs = load_any_dataset(corpus, ["text"])
    train_docs, eval_docs = split_documents(docs, 0.1, 3, "text")
    stream = [t for text in train_docs["text"] for t in tokenizer(text, add_special_tokens=False)["input_ids"] + [0]]
    assert train.ravel().tolist() == stream[:train.size]
    assert set(train_docs["id"]).isdisjoint(eval_docs["id"])


def test_training_reads_packed_blocks_memory_mapped(corpus, tokenizer, tmp_path):
    """load_packed maps tokens/*.npy (uint16 ids): no copy in RAM nor in a datasets cache; the same blocks as the
    Hub-layout Parquet shards that load_dataset reads."""
    from datasets import load_dataset

    out = pack([corpus], tokenizer, tmp_path / "packed", seq_len=64, eval_fraction=0.1, seed=3)
    data = load_packed(out)
    for split in ("train", "eval"):
        blocks = data[split]
        assert isinstance(blocks.input_ids, np.memmap) and blocks.input_ids.dtype == np.uint16
        assert blocks.labels is None and len(blocks) == read_build_info(out)[f"{split}_blocks"]
        parquet = np.asarray(load_dataset(str(out), split=split)["input_ids"])
        assert (np.asarray(blocks.input_ids) == parquet).all()


def test_pack_is_cached_and_deterministic(corpus, tokenizer, tmp_path):
    a = pack([corpus], tokenizer, tmp_path / "a", seq_len=64, eval_fraction=0.1)
    stamp = (a / "build_info.json").stat().st_mtime_ns
    assert pack([corpus], tokenizer, tmp_path / "a", seq_len=64, eval_fraction=0.1) == a
    assert (a / "build_info.json").stat().st_mtime_ns == stamp  # cache hit: nothing rewritten
    b = pack([corpus], tokenizer, tmp_path / "b", seq_len=64, eval_fraction=0.1, num_proc=2)
    for shard in sorted((a / "data").glob("*.parquet")):
        assert shard.read_bytes() == (b / "data" / shard.name).read_bytes()


def test_mixture_follows_weights(tokenizer, tmp_path):
    texts = {"a": "alpha = 1\n" * 400, "b": "beta = 2\n" * 400}
    paths = []
    for name, text in texts.items():
        rows = [{"id": f"{name}{i}", "text": text} for i in range(20)]
        paths.append(write_dataset(rows, tmp_path / name, name=name, description="t", build_info={}))
    out = pack([Source(str(paths[0]), weight=0.8), Source(str(paths[1]), weight=0.2)], tokenizer,
               tmp_path / "mix", seq_len=64, eval_fraction=0.0, seed=0)
    blocks = np.asarray(load_packed(out)["train"].input_ids)
    alpha = tokenizer("alpha", add_special_tokens=False)["input_ids"][0]
    share_a = np.mean([alpha in row for row in blocks[: len(blocks) // 2]])  # before either source runs out
    assert 0.7 < share_a < 0.9


def test_exercises_have_loss_on_completion_only(tokenizer, tmp_path):
    rows = [{"id": str(i), "prompt": 'def add(a, b):\n    """Add."""\n', "completion": "    return a + b\n"}
            for i in range(30)]
    path = tmp_path / "ex.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = pack([{"path": str(path), "format": "exercises"}], tokenizer, tmp_path / "ex", seq_len=32, eval_fraction=0.1)
    train = load_packed(out)["train"]
    ids, labels = np.asarray(train.input_ids).ravel(), np.asarray(train.labels).ravel()
    first = rows[0]
    n_prompt = len(tokenizer(first["prompt"], add_special_tokens=False)["input_ids"])
    n_completion = len(tokenizer(first["completion"], add_special_tokens=False)["input_ids"]) + 1  # + eos
    # Every exercise has the same shape: the first block starts with a prompt (masked), then its completion.
    assert (labels[:n_prompt] == -100).all()
    assert (labels[n_prompt:n_prompt + n_completion] == ids[n_prompt:n_prompt + n_completion]).all()
    assert ids[n_prompt + n_completion - 1] == 0


def test_bad_inputs_are_one_clear_error(tokenizer, tmp_path):
    rows = [{"id": "1", "content": "x = 1\n"}]
    write_dataset(rows, tmp_path / "nocol", name="n", description="t", build_info={})
    with pytest.raises(ValueError, match=r"missing column\(s\) \['text'\]"):
        pack([tmp_path / "nocol"], tokenizer, tmp_path / "o1", seq_len=16)
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ValueError, match="empty"):
        pack([tmp_path / "empty.jsonl"], tokenizer, tmp_path / "o2", seq_len=16)
    with pytest.raises(ValueError, match="fewer than one block"):
        pack([{"path": str(tmp_path / "nocol"), "column": "content"}], tokenizer, tmp_path / "o3", seq_len=4096,
             eval_fraction=0)


def test_cli_tokenizer_then_pack(corpus, tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    code = ("from recipes.cli import main; import sys; main(sys.argv[1:])")
    run = lambda *a: subprocess.run([sys.executable, "-c", code, *a], cwd=REPO, capture_output=True, text=True,  # noqa: E731
                                    env=env, timeout=300)
    tok = run("data", "tokenizer", "--input", str(corpus), "--output", str(tmp_path / "tok"), "--vocab_size", "300")
    assert tok.returncode == 0, tok.stderr
    packed = run("data", "pack", "--input", str(corpus), "--tokenizer", str(tmp_path / "tok"), "--seq_len", "32",
                 "--output", str(tmp_path / "packed"))
    assert packed.returncode == 0, packed.stderr
    assert "train blocks" in packed.stdout
    bad = run("data", "pack", "--input", str(corpus), "--column", "nope", "--tokenizer", str(tmp_path / "tok"),
              "--output", str(tmp_path / "bad"))
    assert bad.returncode != 0
    assert bad.stderr.strip().count("\n") == 0 and "missing column(s) ['nope']" in bad.stderr

"""Issue 18's tiny-reproduction speed pieces, each checked alone (the whole run: tests/test_reproduce.py):
the stage profiler's attribution, the report's "where the time went" table, the multiple-choice requests'
batched tokenization (the same ids as lm-eval's pairwise encoding), and benchmark tasks found missing at
start-up skipped without asking the Hub again."""

from __future__ import annotations

import argparse
import time

import pytest

from tests.conftest import PHI2_TOKENIZER


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sum(range(1000))


def test_profiler_gives_time_to_the_first_matching_sub_step():
    from recipes.profiling import StageProfiler

    rules = [("inner", ("test_reproduce_speed.py:_busy",)), ("outer", ("test_reproduce_speed.py:*._outer",))]

    def _outer() -> None:
        _busy(0.6)        # inside _outer too, but "inner" comes first
        time.sleep(0.4)   # only _outer on the stack

    profiler = StageProfiler(interval=0.01, sub_steps=rules).start()
    start = time.perf_counter()
    _outer()
    time.sleep(0.2)       # neither
    wall = time.perf_counter() - start
    profile = profiler.stop(wall=wall)
    assert set(profile) == {"inner", "outer", "other"}
    assert sum(profile.values()) == pytest.approx(wall, abs=0.06)  # scaled to the stage, rounded to 0.1 s
    assert profile["inner"] > profile["outer"] > profile["other"] > 0


def test_report_table_has_stages_shares_and_sub_steps():
    from recipes.report import profile_section

    summaries = {"pretrain": {"seconds": 90.0, "load_average": 1.5, "cpu_seconds": 170.0,
                              "profile": {"training steps": 80.0, "eval loss (held-out blocks)": 6.0, "other": 4.0}},
                 "tokenizer": {"seconds": 10.0, "profile": {"tokenization": 9.9, "other": 0.1}}}
    text = profile_section(summaries)
    rows = [line for line in text.splitlines() if line.startswith("|")]
    assert rows[2].startswith("| **pretrain** | 90.0 | 90% | 170.0 | 1.50 |")
    assert "training steps | 80.0 | 89% of stage" in rows[3] and "eval loss (held-out blocks) | 6.0" in rows[4]
    assert "other | 4.0" in rows[5]
    assert rows[6].startswith("| **tokenizer** | 10.0 | 10% |") and "tokenization | 9.9" in rows[7]
    assert rows[-1].startswith("| **total (stages)** | 100.0 | 100% | 170.0 |")


def test_batched_request_encoding_is_lm_evals_pairwise_encoding(shared_data):
    from transformers import AutoTokenizer

    from evaluation import multiple_choice as mc

    tokenizer = AutoTokenizer.from_pretrained(PHI2_TOKENIZER)
    pairs = [("", " alone"), ("   ", "x"), ("ends with space ", "A"), ("a\n\n", " b"), ("ends with space ", "B")]
    for name in ("piqa", "winogrande", "mmlu_anatomy", "boolq"):  # per-choice contexts, a blank, shots, a passage
        task = mc.load_tasks(name)[0]
        records, _ = mc.load_records(task.data, task, shared_data, 5)
        shots = mc._shots_for(task, None)
        examples = mc.load_records(task.fewshot, task, shared_data)[0] if shots else []
        pairs += [p for d in mc.build_docs(task, records, examples, shots) for p in zip(d.contexts, d.continuations)]
    assert mc.encode_requests(tokenizer, pairs) == [mc.encode_pair(tokenizer, c, k) for c, k in pairs]


def test_tasks_missing_at_start_are_skipped_without_another_try(monkeypatch, tmp_path):
    from evaluation import multiple_choice
    from recipes import reproduce

    asked = {}

    def evaluate(model, tasks, **kwargs):
        asked["tasks"] = tasks
        return {"results": {t: {} for t in tasks}, "skipped": {}}

    monkeypatch.setattr(multiple_choice, "evaluate_multiple_choice", evaluate)
    run = reproduce.Run(tmp_path, argparse.Namespace(mc_tasks=["commonsense"], mc_limit=2, seed=0),
                        unavailable={"hellaswag": "hellaswag (Hub Rowan/hellaswag; offline file x)"})
    summary = reproduce.mc_eval_stage(run, "finetune/final")
    assert "hellaswag" not in asked["tasks"] and {"piqa", "mmlu", "winogrande"} <= set(asked["tasks"])
    assert summary["results"]["skipped"] == {"hellaswag": "data not found: hellaswag (Hub Rowan/hellaswag; offline file x)"}


def test_benchmark_vectors_are_kept_with_the_index_not_the_run(tmp_path, monkeypatch):
    from datasets_builders.benchmark_index import load_benchmarks
    from datasets_builders.detectors import EmbeddingSimilarity

    monkeypatch.setenv("PHI_INDEX_CACHE", str(tmp_path / "index"))
    items = load_benchmarks(["humaneval"])[:4]
    first = EmbeddingSimilarity(cache_dir=tmp_path / "run1", precision="fp32").index(items)
    second = EmbeddingSimilarity(cache_dir=tmp_path / "run2", precision="fp32").index(items)  # a new run directory
    assert first.embedder.stats["computed"] == len(first.view_item) > 0
    assert second.embedder.stats == {**second.embedder.stats, "computed": 0, "cached": len(first.view_item)}
    assert (second.view_vectors == first.view_vectors).all()
    assert not (tmp_path / "run2" / "embeddings.sqlite").exists() or not second.embedder.cache.get(
        [second.embedder._text_key(items[0].statement)])  # the run's cache holds only the run's own texts


def test_long_texts_are_cut_before_tokenizing_with_the_same_ids():
    from datasets_builders.embedder import Embedder, cut_before_space
    from datasets_builders.sources import stdlib_root

    assert cut_before_space("short", 10) == "short"
    assert cut_before_space("alpha beta   gamma", 14) == "alpha beta"   # before the whitespace run, not inside it
    assert cut_before_space("x" * 50, 10) == "x" * 50                   # no whitespace: whole
    embedder = Embedder(precision="fp32")
    files = sorted((stdlib_root() / "email").glob("*.py"))
    texts = [p.read_text(encoding="utf-8") for p in files]
    texts += ["word " * 40, "a" * 9000 + " b", "\n".join(["x = 1"] * 2000), "é" * 5000 + " " + "tail " * 10,
              "a" * 4000 + " " + "b" * 200 + " c d e"]  # the cut part is one [UNK]: not enough, tokenized whole
    assert any(len(t) > embedder.max_length * 16 for t in texts)
    ids = embedder._tokenize(texts)  # loads the tokenizer
    assert ids == embedder._tokenizer(texts, truncation=True, max_length=embedder.max_length)["input_ids"]

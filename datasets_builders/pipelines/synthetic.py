"""Blocks and stages the synthetic-data pipelines share (`phi data textbook | exercises`, mined or taught).

- `SeededKey`: a document's draw key, sha1(seed, id): the seeded order of the candidates, the same whatever
  the number of tasks and with no global list to shuffle.
- `ChooseFirst` (one task): streams every candidate's key and keeps the `n` smallest (memory: n keys, not
  the corpus); `TakeChosen` then keeps exactly those (`not_chosen` counts the rest, which are not removed:
  they are surplus candidates, as a mined run stopping at `--n` leaves the rest of the library unread).
- `dedup_stages`: datatrove's exact + MinHash stages (`filters.dedup.Dedup`, the one dedup of every builder)
  over an intermediate folder, ending in the two dedup filters with exclusion writers.
- `SharedObject`: hands an object (a teacher client made by the caller) to the blocks of an in-process run:
  datatrove deep-copies the pipeline for every task, and a copy of a client would lose its stats.
- `diversity_section`: the diversity report of a built set, from a sample of its shards.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter

from ..filters.dedup import Dedup
from ..readers import IntermediateReader
from ..writers import RemovedWriter
from .executors import Stage, stage_stats

ORDER = "_order"
CHOSEN_FILE = "chosen.json"
DIVERSITY_SAMPLE = 2000


class SharedObject:
    """Wraps an object so that deep copies of a pipeline share it (in-process runs only; see module doc)."""

    def __init__(self, obj: Any):
        self.obj = obj

    def __deepcopy__(self, memo: dict[int, Any]) -> SharedObject:
        return self


class SeededKey(PipelineStep):
    """Sets `_order` = sha1(seed:id) (hex), the document's place in the seeded draw."""

    type = "🎲 - ORDER"
    name = "seeded key"

    def __init__(self, seed: int):
        super().__init__()
        self.seed = seed

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            doc.metadata[ORDER] = hashlib.sha1(f"{self.seed}:{doc.id}".encode()).hexdigest()
            yield doc


class ChooseFirst(PipelineStep):
    """One task: the `n` smallest `_order` keys of every task's file in `folder` -> `<work>/chosen.json`."""

    type = "🎲 - ORDER"
    name = "choose first n"

    def __init__(self, folder: str | os.PathLike, work: str | os.PathLike, n: int | None):
        super().__init__()
        self.folder, self.work, self.n = Path(folder), Path(work), n

    def keys(self) -> Any:
        for path in sorted(self.folder.glob("*.jsonl")):
            with path.open("rb") as f:
                for line in f:
                    yield json.loads(line)["metadata"][ORDER]

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        keys = heapq.nsmallest(self.n, self.keys()) if self.n is not None else list(self.keys())
        last = max(keys) if keys else ""
        (self.work / CHOSEN_FILE).write_text(json.dumps({"n": self.n, "chosen": len(keys), "last_key": last}))
        self.stat_update("chosen", value=len(keys))
        return iter(())


class TakeChosen(PipelineStep):
    """Keeps the documents `ChooseFirst` chose (key <= the n-th key); drops `_order`."""

    type = "🎲 - ORDER"
    name = "take chosen"

    def __init__(self, work: str | os.PathLike):
        super().__init__()
        self.work = Path(work)

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        last = json.loads((self.work / CHOSEN_FILE).read_text())["last_key"]
        for doc in data:
            if doc.metadata.pop(ORDER) <= last:
                self.stat_update("taken")
                yield doc
            else:
                self.stat_update("not_chosen")


def dedup_stages(dedup: Dedup, folder: Path, tasks: int) -> list[Stage]:
    """Exact + MinHash dedup of the documents in `folder` (signatures are taken here, not while writing)."""
    return [
        Stage("exact-signatures", [IntermediateReader(folder), dedup.exact_signature()], tasks),
        Stage("exact-find", [dedup.exact_find()], 1),
        Stage("minhash-signatures", [IntermediateReader(folder), dedup.exact_filter(), dedup.minhash_signature()], tasks),
        Stage("minhash-buckets", [dedup.minhash_buckets()], dedup.minhash.num_buckets),
        Stage("minhash-cluster", [dedup.minhash_cluster()], 1),
    ]


def dedup_filters(dedup: Dedup, removed: Callable[[str, str], RemovedWriter | None]) -> list[BaseFilter]:
    """The two dedup filters: exact (reason `duplicate`) and near (`near_duplicate`), both removed by `dedup`."""
    return [dedup.exact_filter(removed("dedup", "duplicate")), dedup.minhash_filter(removed("dedup", "near_duplicate"))]


def removed_by_reason(work: Path, stages: list[str], steps: dict[str, str]) -> dict[str, int]:
    """`step:reason` -> count from datatrove's per-task stats of `stages`: `steps` maps (a part of) a block's
    name to its step; the block's `dropped_<reason>` counts are its reasons, and a bare `dropped` (datatrove's
    dedup filters) is counted under the reason after the step's colon (`"dedup:duplicate"`)."""
    counts: dict[str, int] = {}
    for stage in stages:
        for block in stage_stats(work, stage):
            step = next((v for k, v in steps.items() if k in block["name"]), None)
            if step is None:
                continue
            name, _, default = step.partition(":")
            reasons = {k.removeprefix("dropped_"): v for k, v in block["stats"].items() if k.startswith("dropped_")}
            if not reasons and block["stats"].get("dropped") and default:
                reasons = {default: block["stats"]["dropped"]}
            for reason, n in reasons.items():
                if n:
                    counts[f"{name}:{reason}"] = counts.get(f"{name}:{reason}", 0) + n
    return dict(sorted(counts.items()))


def block_stats(work: Path, stage: str, name: str) -> dict[str, int]:
    """The summed stats of the block of `stage` whose name contains `name` ({} if none ran)."""
    return next((b["stats"] for b in stage_stats(work, stage) if name in b["name"]), {})


def sample_rows(folder: Path, n: int, columns: list[str] | None = None) -> list[dict[str, Any]]:
    """The first `n` rows of the Parquet shards in `folder` (a report's sample; the set is never loaded whole)."""
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = []
    for shard in sorted(folder.glob("*.parquet")):
        for batch in pq.ParquetFile(shard).iter_batches(batch_size=512, columns=columns):
            rows += batch.to_pylist()
            if len(rows) >= n:
                return rows[:n]
    return rows


def diversity_section(staging: Path, text_of: Callable[[dict[str, Any]], str], list_sizes: dict[str, int] | None,
                      embed: bool, seed: int) -> tuple[dict[str, Any], str]:
    """(report, Markdown) of the diversity of the set in `staging/data`, on its first DIVERSITY_SAMPLE rows."""
    from ..diversity import constraints_of, diversity_report, report_markdown

    sample = sample_rows(staging / "data", DIVERSITY_SAMPLE)
    report = diversity_report([text_of(r) for r in sample], constraints_of(sample), list_sizes, embed=embed, seed=seed)
    return {**report, "sample": len(sample)}, report_markdown(report)


def doc_row(doc: Document) -> dict[str, Any]:
    """A document as the record it stands for: `id` and its metadata (the columns)."""
    return {"id": doc.id, **doc.metadata}

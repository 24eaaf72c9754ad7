"""Writers to our Hub layout: Parquet shards under data/, removed records under removed/ with their reason,
and the card + build_info.json written once every task is done, from datatrove's per-task stats.

- `IntermediateWriter`: `${rank}.jsonl` between stages of one pipeline (read back by `IntermediateReader`).
- `HubWriter`: `data/train-${rank}.parquet` in a staging folder; the column types of the columns we add
  are fixed, so every task writes the same schema.
- `RemovedWriter`: the exclusion writer of every filter: `removed/<step>-${rank}.parquet` with
  `removed_by`, `removed_reason` and the provenance, the rest of the metadata as JSON in `details`.
- `finalize_dataset`: renames the shards to `train-<content hash>-i-of-n.parquet` (so `load_dataset`'s cache
  never serves a stale build), writes README.md and build_info.json (last: it marks the folder complete)
  and moves the staging folder into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from datatrove.data import Document
from datatrove.pipeline.writers.jsonl import JsonlWriter
from datatrove.pipeline.writers.parquet import ParquetWriter

from ..hub_dataset import BUILD_INFO, render_card

# Columns our blocks add, with one type everywhere (None where a block did not set them).
TYPED_COLUMNS = {"edu_score": "float64", "edu_label": "bool", "edu_annotation": "string", "quality_score": "float64",
                 "tokens": "int64"}
PROVENANCE = ("source", "path", "license")


class IntermediateWriter(JsonlWriter):
    """A stage's documents for the next stage of the same task (`${rank}.jsonl`; uncompressed: it is read
    back soon, often several times, and compressing costs more CPU than the disk it saves)."""

    name = "🔁 intermediate"

    def __init__(self, folder: str | os.PathLike):
        super().__init__(str(folder), output_filename="${rank}.jsonl", compression=None)


def _row(writer: HubWriter, document: Document) -> dict[str, Any]:
    return {"id": document.id, "text": document.text, **document.metadata}


def _row_without_text(writer: HubWriter, document: Document) -> dict[str, Any]:
    return {"id": document.id, **document.metadata}


def _metadata_row(writer: HubWriter, document: Document) -> dict[str, Any]:
    return dict(document.metadata)


ROW_ADAPTERS = {"text": _row, "no_text": _row_without_text, "metadata": _metadata_row}


def _removed_row(writer: RemovedWriter, document: Document) -> dict[str, Any]:
    return writer.removed_row(document)


class HubWriter(ParquetWriter):
    """Kept documents as `data/train-${rank}.parquet` rows: `id`, `text` and every metadata column
    (`row="no_text"`: `id` and the metadata, for sets whose text is other columns, e.g. prompt + completion;
    `row="metadata"`: the metadata alone, a reader's original row)."""

    name = "🤗 hub parquet"

    def __init__(self, folder: str | os.PathLike, batch_size: int = 1000, row: str = "text"):
        super().__init__(str(Path(folder) / "data"), output_filename="train-${rank}.parquet",
                         adapter=ROW_ADAPTERS[row], batch_size=batch_size, use_content_defined_chunking=False,
                         max_file_size=-1)

    def _write(self, document: dict, file_handler: Any, filename: str) -> None:
        if self.schema is None:
            self.schema = row_schema(document)
        super()._write(document, file_handler, filename)


def row_schema(row: dict[str, Any]) -> Any:
    """The schema of `row` with our columns' fixed types and unknown null columns as strings."""
    import pyarrow as pa

    inferred = pa.RecordBatch.from_pylist([row]).schema
    fields = []
    for f in inferred:
        if f.name in TYPED_COLUMNS:
            f = pa.field(f.name, pa.type_for_alias(TYPED_COLUMNS[f.name]))
        elif pa.types.is_null(f.type):
            f = pa.field(f.name, pa.string())
        fields.append(f)
    return pa.schema(fields)


class RemovedWriter(ParquetWriter):
    """Exclusion writer: what `step` removed, with the reason (`filter_reason` of a datatrove filter, else
    `default_reason`), the provenance, and the other metadata as JSON (`details`). `part` tells apart the
    files of two filters of one step (exact and near dedup)."""

    name = "🗑️ removed"

    def __init__(self, folder: str | os.PathLike, step: str, default_reason: str | None = None, part: str | None = None):
        import pyarrow as pa

        schema = pa.schema([("id", pa.string()), ("text", pa.string()), ("removed_by", pa.string()),
                            ("removed_reason", pa.string()), *((c, pa.string()) for c in PROVENANCE),
                            ("details", pa.string())])
        super().__init__(str(Path(folder) / "removed"), output_filename=f"{step}-{part + '-' if part else ''}${{rank}}.parquet",
                         adapter=_removed_row, schema=schema,
                         use_content_defined_chunking=False, max_file_size=-1)
        self.step, self.default_reason = step, default_reason or step

    def removed_row(self, doc: Document) -> dict[str, Any]:
        metadata = dict(doc.metadata)
        reason = metadata.pop("filter_reason", None) or self.default_reason
        row = {"id": doc.id, "text": doc.text, "removed_by": self.step, "removed_reason": reason}
        row.update({c: None if metadata.get(c) is None else str(metadata.pop(c)) for c in PROVENANCE})
        row["details"] = json.dumps(metadata, sort_keys=True, default=str) if metadata else None
        return row


def file_digest(paths: list[Path]) -> str:
    digest = hashlib.sha1()
    for path in paths:
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:10]


def finalize_dataset(staging: Path, output: Path, *, name: str, description: str, build_info: dict[str, Any],
                     sections: dict[str, str], license: str = "other", tags: list[str] | None = None) -> Path:
    """Turn the staging folder the tasks wrote into the Hub-layout dataset at `output` (see the module doc)."""
    import pyarrow.parquet as pq

    shards = sorted((staging / "data").glob("train-*.parquet"))
    rows = sum(pq.ParquetFile(s).metadata.num_rows for s in shards)
    if not rows:
        raise ValueError(f"refusing to write an empty dataset to {output}: every record was removed or the input was "
                         f"empty (removed by reason: {build_info.get('removed_by_reason')})")
    fingerprint = file_digest(shards)
    names = []
    for i, shard in enumerate(shards):
        names.append(f"train-{fingerprint}-{i:05d}-of-{len(shards):05d}.parquet")
        shard.rename(shard.with_name(names[-1]))
    removed = sorted((staging / "removed").glob("*.parquet"))
    removed_rows = sum(pq.ParquetFile(s).metadata.num_rows for s in removed)
    columns = [f.name for f in pq.read_schema(staging / "data" / names[0])]
    info = {"name": name, "rows": rows, "removed_rows": removed_rows, "columns": columns, "shards": names, **build_info}
    sections = {**sections, "Build": "```json\n" + json.dumps(info, indent=2, default=str) + "\n```"}
    (staging / "README.md").write_text(render_card(name, description, rows, columns, sections, license, tags,
                                                   fingerprint=fingerprint), encoding="utf-8")
    (staging / BUILD_INFO).write_text(json.dumps(info, indent=2, default=str), encoding="utf-8")
    shutil.rmtree(output, ignore_errors=True)
    os.replace(staging, output)
    return output

"""Readers: our sources as datatrove blocks, each task reading its own contiguous block of files.

- `PythonFilesReader`: a local tree of `.py` files (default: the running Python's standard library).
- `TableReader`: JSONL / Parquet files, or a dataset folder written by `phi data ...` (Parquet under data/).
- `HubReader`: a Hub dataset streamed when online (`datasets.load_dataset(..., streaming=True)`).
- `IntermediateReader`: the `${rank}.jsonl` a previous stage of the same pipeline wrote for this task.

Files are sorted and task `rank` of `world_size` takes the `rank`-th contiguous block, so the documents of
task 0, then task 1, ... are the documents of a one-task run in the same order: dedup keeps the same copies
whatever the number of tasks. A row that is not usable text (empty, binary, not UTF-8, too large,
unreadable) still becomes a document, with empty text and `unreadable` = the reason, so the first filter
removes it with that reason and every input row is either kept or removed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.readers.base import BaseReader
from datatrove.pipeline.readers.jsonl import JsonlReader

from ..sources import (
    MAX_FILE_BYTES,
    STDLIB_EXCLUDE,
    decode_content,
    read_python_file,
    record_id,
    source_identity,
    stdlib_root,
)

# Columns that carry a file's path / license in common code datasets (The Stack, StackOverflow dumps).
PATH_COLUMNS = ("path", "max_stars_repo_path", "repo_path", "file_path", "url")
LICENSE_COLUMNS = ("license", "licenses", "max_stars_repo_licenses")


def contiguous_shard(items: list[Any], rank: int, world_size: int) -> list[Any]:
    """The `rank`-th of `world_size` contiguous blocks of `items` (sizes differ by at most one)."""
    n = len(items)
    return items[rank * n // world_size:(rank + 1) * n // world_size]


def unreadable(doc_id: str, reason: str, metadata: dict[str, Any]) -> Document:
    return Document(text="", id=doc_id, metadata={**metadata, "unreadable": reason})


class PythonFilesReader(BaseReader):
    """Every `.py` file under `root` (default: the standard library without tests, idlelib, encodings, ...)."""

    name = "🐍 python files"

    def __init__(self, root: str | os.PathLike | None = None, max_bytes: int = MAX_FILE_BYTES,
                 exclude: tuple[str, ...] | None = None, source_name: str | None = None, license: str | None = None):
        super().__init__()
        is_stdlib = root is None
        self.root = Path(root) if root is not None else stdlib_root()
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: source directory does not exist")
        self.exclude = exclude if exclude is not None else (STDLIB_EXCLUDE if is_stdlib else ("__pycache__",))
        self.max_bytes = max_bytes
        self.source_name, self.license = source_identity(root, source_name, license)

    def paths(self) -> list[Path]:
        return sorted(p for p in self.root.rglob("*.py")
                      if not any(part in self.exclude for part in p.relative_to(self.root).parts[:-1]))

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for path in contiguous_shard(self.paths(), rank, world_size):
            rel = str(path.relative_to(self.root))
            metadata = {"source": self.source_name, "path": rel, "license": self.license}
            doc_id = record_id(self.source_name, rel)
            text, reason = read_python_file(path, self.max_bytes)
            self.stat_update("read")
            yield unreadable(doc_id, reason, metadata) if reason else Document(text=text, id=doc_id, metadata=metadata)


class TableReader(BaseReader):
    """Rows of JSONL / Parquet files, one document per row. The code is in `content_column` (default: `text`
    if the first row has it, else `content`); every other column is kept as metadata, `id` if present (else
    derived from the file and row number). A line that is not JSON, or a row without the content column,
    stops the run with an error naming the file (and line) and the columns there are."""

    name = "📄 table rows"

    def __init__(self, source: str | os.PathLike, content_column: str | None = None, max_bytes: int = MAX_FILE_BYTES):
        super().__init__()
        self.source = str(source)
        self.content_column = content_column
        self.max_bytes = max_bytes
        self.files = table_files(source)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for path in contiguous_shard(self.files, rank, world_size):
            rows = jsonl_rows(path) if path.suffix == ".jsonl" else parquet_rows(path)
            for index, row in enumerate(rows):
                self.stat_update("read")
                yield self.document(row, f"{path.name}:{index}", str(path))

    def document(self, row: dict[str, Any], where: str, file: str) -> Document:
        column = self.content_column or next((c for c in ("text", "content") if c in row), "content")
        if column not in row:
            raise ValueError(f"{file}: no content column {column!r}; the columns are {sorted(row)} "
                             "(pick one with --content-column)")
        metadata = {k: v for k, v in row.items() if k not in (column, "id")}
        metadata.setdefault("source", self.source)
        metadata.setdefault("path", _first(row, PATH_COLUMNS) or where)
        metadata["license"] = _license(row) or "unknown"
        doc_id = str(row.get("id") or record_id(self.source, where))
        text, reason = decode_content(row[column], self.max_bytes)
        return unreadable(doc_id, reason, metadata) if reason else Document(text=text, id=doc_id, metadata=metadata)


class HubReader(TableReader):
    """A Hub dataset streamed with `datasets`; a task takes whole files of it where the dataset has at least
    as many files as there are tasks, else every `world_size`-th row."""

    name = "🤗 hub dataset"

    def __init__(self, repo_id: str, content_column: str | None = None, max_bytes: int = MAX_FILE_BYTES,
                 data_dir: str | None = None, split: str = "train"):
        BaseReader.__init__(self)
        self.source, self.content_column, self.max_bytes = repo_id, content_column, max_bytes
        self.data_dir, self.split = data_dir, split

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        ds = stream_hub_dataset(self.source, self.data_dir, self.split)
        whole_files = world_size > 1 and ds.num_shards >= world_size
        rows = enumerate(ds.shard(world_size, rank) if whole_files else ds)
        for index, row in rows:
            if whole_files or index % world_size == rank:
                self.stat_update("read")
                yield self.document(row, f"{rank}:{index}" if whole_files else str(index), self.source)


class IntermediateReader(JsonlReader):
    """What an earlier stage of this pipeline wrote for this same task (`${rank}.jsonl` in `folder`), or with
    `all_files` every task's file in order."""

    name = "🔁 intermediate"

    def __init__(self, folder: str | os.PathLike, all_files: bool = False):
        super().__init__(str(folder), glob_pattern="*.jsonl", add_file_path=False, compression=None)
        self.all_files = all_files

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        names = sorted(self.data_folder.list_files(glob_pattern="*.jsonl")) if self.all_files else [f"{rank:05d}.jsonl"]
        for name in names:
            if self.data_folder.isfile(name):  # a task with nothing left writes no file
                yield from self.read_file(name)


def table_files(source: str | os.PathLike) -> list[Path]:
    path = Path(source)
    if path.is_dir():
        files = sorted((path / "data").glob("*.parquet")) or sorted(path.glob("*.parquet")) or sorted(path.glob("*.jsonl"))
        if not files:
            raise ValueError(f"{path}: no Parquet shards under data/, no .parquet / .jsonl files and no .py files; pass a "
                             "folder of .py files, a dataset folder written by `phi data ...`, a .jsonl or a .parquet file")
        return files
    if path.suffix in (".jsonl", ".parquet") and path.is_file():
        return [path]
    raise FileNotFoundError(f"{source}: not a folder, .jsonl or .parquet file")


def is_local(source: str | os.PathLike) -> bool:
    text = str(source)
    return Path(text).exists() or text.startswith((".", "/")) or Path(text).suffix in (".jsonl", ".parquet", ".json")


def make_reader(source: str | os.PathLike | None = None, content_column: str | None = None,
                max_bytes: int = MAX_FILE_BYTES, data_dir: str | None = None, split: str = "train") -> BaseReader:
    """The reader behind `--input`: None = the standard library; a folder of .py files; a dataset folder,
    .jsonl / .parquet file or a folder of them (code in `content_column`); anything else is a Hub dataset id."""
    if source is None:
        return PythonFilesReader(max_bytes=max_bytes)
    path = Path(source)
    if path.is_dir() and not (path / "data").is_dir() and not list(path.glob("*.parquet")) and not list(path.glob("*.jsonl")):
        return PythonFilesReader(path, max_bytes=max_bytes)
    if is_local(source):
        return TableReader(source, content_column, max_bytes)
    stream_hub_dataset(str(source), data_dir, split)  # fail now, with one line, not inside a task
    return HubReader(str(source), content_column, max_bytes, data_dir, split)


def stream_hub_dataset(repo_id: str, data_dir: str | None, split: str) -> Any:
    try:
        from datasets import load_dataset

        return load_dataset(repo_id, data_dir=data_dir, split=split, streaming=True)
    except Exception as err:  # offline, unknown repo, gated, ...: one clear line
        # Unknown repo (datasets raises a FileNotFoundError) vs unreachable Hub (a ConnectionError / OSError).
        unreachable = isinstance(err, (ConnectionError, OSError)) and not isinstance(err, FileNotFoundError)
        error = ConnectionError if unreachable else FileNotFoundError
        raise error(f"{repo_id}: not a local path and could not be streamed from the Hub "
                    f"({err.__class__.__name__}: {str(err)[:200]}); pass a local folder, .jsonl or .parquet "
                    "file, or go online (HF_HUB_OFFLINE unset; `hf auth login` for gated datasets)") from None


def jsonl_rows(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                raise ValueError(f"{path}:{lineno}: not a JSON object per line ({err.__class__.__name__}: {err})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            yield row


def parquet_rows(path: Path) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises its own error types for a corrupt file
        raise ValueError(f"{path}: not a readable Parquet file ({err.__class__.__name__}: {err})") from None
    for batch in parquet.iter_batches(batch_size=1024):
        yield from batch.to_pylist()


def _first(row: dict[str, Any], columns: tuple[str, ...]) -> Any:
    return next((row[c] for c in columns if row.get(c)), None)


def _license(row: dict[str, Any]) -> str | None:
    value = _first(row, LICENSE_COLUMNS)
    return ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else value

"""Sources of raw code records: local trees of .py files (default: the running Python's standard
library, real and documented code that every machine has), JSONL / Parquet files with a content
column, and Hub datasets streamed when online.

Every record carries provenance: `source`, `path` (or the Hub row id) and `license` where known.
Unreadable files are not silently dropped: `LocalPythonFiles.skipped` counts them by reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import sysconfig
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .pipeline import Record

MAX_FILE_BYTES = 1_000_000
# Test suites and vendored / generated trees inside the standard library: not what a student reads.
STDLIB_EXCLUDE = ("test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "__pycache__", "ensurepip",
                  "turtledemo", "pydoc_data", "encodings")


def stdlib_root() -> Path:
    """The standard library of the running interpreter: the embedded default corpus."""
    return Path(sysconfig.get_paths()["stdlib"])


def record_id(*parts: str) -> str:
    return hashlib.sha1("\x00".join(parts).encode("utf-8")).hexdigest()[:16]


class LocalPythonFiles:
    """All `.py` files under `root` (sorted, so the order is deterministic), one record per file."""

    def __init__(self, root: str | os.PathLike | None = None, exclude: tuple[str, ...] | None = None,
                 max_bytes: int = MAX_FILE_BYTES, source_name: str | None = None, license: str | None = None,
                 num_shards: int = 1, shard_index: int = 0):
        self.root = Path(root) if root is not None else stdlib_root()
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: source directory does not exist")
        is_stdlib = root is None
        self.exclude = exclude if exclude is not None else (STDLIB_EXCLUDE if is_stdlib else ("__pycache__",))
        self.max_bytes = max_bytes
        self.source_name = source_name or ("python-stdlib" if is_stdlib else str(self.root))
        self.license = license or ("PSF-2.0" if is_stdlib else "unknown")
        self.num_shards, self.shard_index = _check_shard(num_shards, shard_index)
        self.skipped: Counter[str] = Counter()

    def paths(self) -> list[Path]:
        """The files of this shard: every `num_shards`-th of the sorted paths, starting at `shard_index`."""
        paths = sorted(p for p in self.root.rglob("*.py")
                       if not any(part in self.exclude for part in p.relative_to(self.root).parts[:-1]))
        return paths[self.shard_index::self.num_shards]

    def __iter__(self) -> Iterator[Record]:
        for path in self.paths():
            text = self._read(path)
            if text is None:
                continue
            rel = str(path.relative_to(self.root))
            yield {"id": record_id(self.source_name, rel), "text": text, "source": self.source_name,
                   "path": rel, "license": self.license}

    def _read(self, path: Path) -> str | None:
        try:
            if path.stat().st_size > self.max_bytes:  # never read a huge file into memory just to drop it
                self.skipped["too_large"] += 1
                return None
            data = path.read_bytes()
        except OSError:
            self.skipped["unreadable"] += 1
            return None
        text, reason = decode_content(data, self.max_bytes)
        if reason:
            self.skipped[reason] += 1
        return text


def decode_content(data: bytes | str | None, max_bytes: int = MAX_FILE_BYTES) -> tuple[str | None, str | None]:
    """(text, None) for usable content, else (None, reason): empty, too_large, binary, not_utf8, not_text."""
    if data is None:
        return None, "empty"
    if not isinstance(data, (bytes, str)):
        return None, "not_text"
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if not raw.strip():
        return None, "empty"
    if len(raw) > max_bytes:
        return None, "too_large"
    if b"\x00" in raw:
        return None, "binary"
    if isinstance(data, str):
        return data, None
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError:
        return None, "not_utf8"


def _check_shard(num_shards: int, shard_index: int) -> tuple[int, int]:
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ValueError(f"--shard-index {shard_index} must be in [0, --num-shards {num_shards})")
    return num_shards, shard_index


# Columns that carry a file's path / license in common code datasets (The Stack, StackOverflow dumps).
PATH_COLUMNS = ("path", "max_stars_repo_path", "repo_path", "file_path", "url")
LICENSE_COLUMNS = ("license", "licenses", "max_stars_repo_licenses")


class TableRows:
    """Rows of a table (JSONL, Parquet, one of our dataset folders, or a Hub dataset), one record per row.

    The code is in `content_column` (default: `text` if the table has it, else `content`); it becomes `text`,
    every other column is kept. `id` is kept if present, else derived from the source and row number. Rows
    with empty, binary, non-UTF-8 or oversized content are skipped and counted in `skipped` by reason.
    """

    def __init__(self, source: str | os.PathLike, content_column: str | None = None, max_bytes: int = MAX_FILE_BYTES,
                 num_shards: int = 1, shard_index: int = 0, split: str = "train", data_dir: str | None = None,
                 license: str | None = None):
        self.source = str(source)
        self.content_column = content_column
        self.max_bytes = max_bytes
        self.num_shards, self.shard_index = _check_shard(num_shards, shard_index)
        self.split, self.data_dir = split, data_dir
        self.license = license
        self.skipped: Counter[str] = Counter()
        path = Path(source)
        if path.is_dir():
            self.files = sorted((path / "data").glob("*.parquet")) or sorted(path.glob("*.parquet"))
            if not self.files:
                raise ValueError(f"{path}: no Parquet shards under data/ and no .py files; pass a folder of .py files, "
                                 "a dataset folder written by `phi data ...`, a .jsonl or a .parquet file")
        elif path.suffix in (".jsonl", ".parquet") and path.is_file():
            self.files = [path]
        elif path.exists() or self.source.startswith((".", "/")) or path.suffix in (".jsonl", ".parquet", ".json"):
            raise FileNotFoundError(f"{source}: not a folder, .jsonl or .parquet file")
        else:
            self.files = []  # a Hub dataset id, streamed

    def __iter__(self) -> Iterator[Record]:
        rows = self._hub_rows() if not self.files else self._file_rows()
        for index, row in rows:
            column = self._content_column(row)
            text, reason = decode_content(row.get(column), self.max_bytes)
            if reason:
                self.skipped[reason] += 1
                continue
            record = {k: v for k, v in row.items() if k != column}
            record["id"] = str(row.get("id") or record_id(self.source, str(index)))
            record["text"] = text
            record.setdefault("source", self.source)
            record.setdefault("path", _first(row, PATH_COLUMNS) or f"row {index}")
            record.setdefault("license", _license(row) or self.license or "unknown")
            yield record

    def _content_column(self, row: Record) -> str:
        if self.content_column is None:  # decided once, from the first row
            self.content_column = next((c for c in ("text", "content") if c in row), "content")
        if self.content_column not in row:
            raise ValueError(f"{self.source}: no content column {self.content_column!r}; the columns are "
                             f"{sorted(row)} (pick one with --content-column)")
        return self.content_column

    def _mine(self, index: int) -> bool:
        return index % self.num_shards == self.shard_index

    def _file_rows(self) -> Iterator[tuple[int, Record]]:
        index = 0
        for path in self.files:
            rows = _jsonl_rows(path) if path.suffix == ".jsonl" else _parquet_rows(path)
            for row in rows:
                if self._mine(index):
                    yield index, row
                index += 1

    def _hub_rows(self) -> Iterable[tuple[int, Record]]:
        try:
            from datasets import load_dataset

            ds = load_dataset(self.source, data_dir=self.data_dir, split=self.split, streaming=True)
        except Exception as err:  # offline, unknown repo, gated, ...: one clear line
            # Unknown repo (datasets raises a FileNotFoundError) vs unreachable Hub (a ConnectionError / OSError).
            unreachable = isinstance(err, (ConnectionError, OSError)) and not isinstance(err, FileNotFoundError)
            error = ConnectionError if unreachable else FileNotFoundError
            raise error(f"{self.source}: not a local path and could not be streamed from the Hub "
                        f"({err.__class__.__name__}: {str(err)[:200]}); pass a local folder, .jsonl or .parquet "
                        "file, or go online (HF_HUB_OFFLINE unset; `hf auth login` for gated datasets)") from None
        if self.num_shards > 1 and ds.num_shards >= self.num_shards:
            # Whole files per shard: each worker downloads only its part of the dataset.
            ds = ds.shard(self.num_shards, self.shard_index)
            return enumerate(ds)
        return ((i, row) for i, row in enumerate(ds) if self._mine(i))


def _jsonl_rows(path: Path) -> Iterator[Record]:
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


def _parquet_rows(path: Path) -> Iterator[Record]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises its own error types for a corrupt file
        raise ValueError(f"{path}: not a readable Parquet file ({err.__class__.__name__}: {err})") from None
    for batch in parquet.iter_batches(batch_size=1024):
        yield from batch.to_pylist()


def _first(row: Record, columns: tuple[str, ...]) -> Any:
    return next((row[c] for c in columns if row.get(c)), None)


def _license(row: Record) -> str | None:
    value = _first(row, LICENSE_COLUMNS)
    return ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else value


def open_source(input: str | os.PathLike | None = None, content_column: str | None = None,
                num_shards: int = 1, shard_index: int = 0, max_bytes: int = MAX_FILE_BYTES,
                data_dir: str | None = None, split: str = "train") -> LocalPythonFiles | TableRows:
    """The source behind `--input`: None = the standard library; a folder of .py files; a dataset folder,
    .jsonl or .parquet file (code in `content_column`); anything else is streamed as a Hub dataset id."""
    if input is None:
        return LocalPythonFiles(max_bytes=max_bytes, num_shards=num_shards, shard_index=shard_index)
    path = Path(input)
    if path.is_dir() and not (path / "data").is_dir() and not list(path.glob("*.parquet")):
        return LocalPythonFiles(path, max_bytes=max_bytes, num_shards=num_shards, shard_index=shard_index)
    return TableRows(input, content_column, max_bytes=max_bytes, num_shards=num_shards, shard_index=shard_index,
                     data_dir=data_dir, split=split)

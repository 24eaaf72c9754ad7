"""Sources of raw code records: local trees of .py files (default: the running Python's standard
library, real and documented code that every machine has), JSONL / Parquet files with a content
column, and Hub datasets streamed when online.

Every record carries provenance: `source`, `path` (or the Hub row id) and `license` where known.
Unreadable files are not silently dropped: `LocalPythonFiles.skipped` counts them by reason.
"""

from __future__ import annotations

import hashlib
import os
import sysconfig
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

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
                 max_bytes: int = MAX_FILE_BYTES, source_name: str | None = None, license: str | None = None):
        self.root = Path(root) if root is not None else stdlib_root()
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: source directory does not exist")
        is_stdlib = root is None
        self.exclude = exclude if exclude is not None else (STDLIB_EXCLUDE if is_stdlib else ("__pycache__",))
        self.max_bytes = max_bytes
        self.source_name = source_name or ("python-stdlib" if is_stdlib else str(self.root))
        self.license = license or ("PSF-2.0" if is_stdlib else "unknown")
        self.skipped: Counter[str] = Counter()

    def paths(self) -> list[Path]:
        return sorted(p for p in self.root.rglob("*.py")
                      if not any(part in self.exclude for part in p.relative_to(self.root).parts[:-1]))

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
            data = path.read_bytes()
        except OSError:
            self.skipped["unreadable"] += 1
            return None
        reason = ("empty" if not data.strip() else "too_large" if len(data) > self.max_bytes
                  else "binary" if b"\x00" in data else None)
        if reason is None:
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError:
                reason = "not_utf8"
        self.skipped[reason] += 1
        return None

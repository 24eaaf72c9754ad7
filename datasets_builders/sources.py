"""Local trees of .py files (default: the running Python's standard library, real and documented code that
every machine has) as plain records, and the decoding rules every reader shares.

The pipelines read through `datasets_builders.readers` (datatrove blocks); `LocalPythonFiles` is the
small in-process view of the same files for code that wants a list (the tokenizer's corpus, tests).
Every record carries provenance: `source`, `path` and `license`. Unreadable files are not silently
dropped: `LocalPythonFiles.skipped` counts them by reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import sysconfig
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

Record = dict[str, Any]

MAX_FILE_BYTES = 1_000_000
# Test suites and vendored / generated trees inside the standard library: not what a student reads.
STDLIB_EXCLUDE = ("test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "__pycache__", "ensurepip",
                  "turtledemo", "pydoc_data", "encodings")


def stdlib_root() -> Path:
    """The standard library of the running interpreter: the embedded default corpus."""
    return Path(sysconfig.get_paths()["stdlib"])


# A folder may declare what it is a view of (`{"source": ..., "license": ...}`), e.g. the ablation's tree of links
# to the standard library without its held-out files: its records then keep the original's ids and provenance.
SOURCE_DECLARATION = ".source.json"


def source_identity(root: str | os.PathLike | None, source_name: str | None = None,
                    license: str | None = None) -> tuple[str, str]:
    """(source name, license) of a tree: the caller's, else the folder's `.source.json`, else the defaults
    (`python-stdlib` / `PSF-2.0` for the standard library, the path / `unknown` for any other folder)."""
    if root is None:
        return source_name or "python-stdlib", license or "PSF-2.0"
    declared_path = Path(root) / SOURCE_DECLARATION
    declared = json.loads(declared_path.read_text()) if declared_path.is_file() else {}
    return source_name or declared.get("source") or str(Path(root)), license or declared.get("license") or "unknown"


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
        self.source_name, self.license = source_identity(root, source_name, license)
        self.skipped: Counter[str] = Counter()

    def paths(self) -> list[Path]:
        """Every .py file under the root outside the excluded folders, sorted (the reading order)."""
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
        text, reason = read_python_file(path, self.max_bytes)
        if reason:
            self.skipped[reason] += 1
        return text


def read_python_file(path: Path, max_bytes: int = MAX_FILE_BYTES) -> tuple[str | None, str | None]:
    """(text, None), or (None, reason): too_large, unreadable, or a `decode_content` reason."""
    try:
        if path.stat().st_size > max_bytes:  # never read a huge file into memory just to drop it
            return None, "too_large"
        data = path.read_bytes()
    except OSError:
        return None, "unreadable"
    return decode_content(data, max_bytes)


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

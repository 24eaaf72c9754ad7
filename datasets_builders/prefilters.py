"""Cheap pre-filters for raw code, before anything costs an embedding or a judge call: each a small step.

`ParsesAsPython` (Python 3 syntax), `SizeBounds` (too short, too long, minified lines), `GeneratedOrData`
(files that say they are generated, or are mostly literals: tables, fixtures), `ExactDedup` (hash of the
whitespace-normalised text) and `MinHashDedup` (near duplicates by MinHash LSH on word 5-grams, with
datasketch). Each drops with a reason the pipeline writes aside; `default_prefilters()` chains them.
"""

from __future__ import annotations

import ast
import hashlib
import re
import warnings
from collections.abc import Iterable, Iterator
from functools import lru_cache

import numpy as np

from .pipeline import Filter, Record, Step

GENERATED_MARKERS = re.compile(
    r"auto-?generated|automatically generated|generated (?:by|from|with)|do not (?:edit|modify)|"
    r"don'?t (?:edit|muck)|changes to this file will be lost", re.IGNORECASE)
WORD = re.compile(r"\w+")
SCHEME = "affine32"  # datasketch's MinHash permutation scheme; stored signatures are only comparable within one


@lru_cache(maxsize=8)
def parse_python(text: str) -> ast.Module | None:
    """The AST of `text`, or None if it is not valid Python 3 (cached: several steps inspect the same file)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escape sequences etc. are not our concern here
        try:
            return ast.parse(text)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return None


DOCUMENTABLE = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def literal_fraction(text: str, tree: ast.Module) -> float:
    """Share of the file's non-blank characters inside literals (strings, numbers, bytes), docstrings excluded."""
    # ast offsets count UTF-8 bytes and its lines end only at \n / \r (bytes.splitlines agrees; str's does not).
    starts = np.cumsum([0] + [len(line) for line in text.encode("utf-8", "surrogatepass").splitlines(keepends=True)])
    docstrings: set[int] = set()
    spans = []
    for node in ast.walk(tree):  # breadth-first: a definition is seen before its docstring
        if isinstance(node, DOCUMENTABLE) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                docstrings.add(id(first.value))
        elif isinstance(node, (ast.Constant, ast.JoinedStr)) and id(node) not in docstrings and node.end_lineno:
            spans.append((starts[node.lineno - 1] + node.col_offset, starts[node.end_lineno - 1] + node.end_col_offset))
    # Spans merged where they overlap: before Python 3.12 the parts of an f-string all carry the span of
    # the whole f-string, so each would otherwise count it again.
    literal, reach = 0, 0
    for start, end in sorted(spans):
        literal += max(0, end - max(start, reach))
        reach = max(reach, end)
    total = len(re.sub(r"\s", "", text).encode("utf-8", "surrogatepass"))
    return min(1.0, float(literal) / total) if total else 0.0


class ParsesAsPython(Filter):
    """Keeps files that parse as Python 3 (drops Python 2, templates, truncated files)."""

    name = "parses"

    def keep(self, record: Record) -> bool | tuple[bool, str]:
        return True if parse_python(record["text"]) is not None else (False, "syntax_error")


class SizeBounds(Filter):
    """Keeps files within [min_chars, max_chars] and at least `min_lines`, with no line over `max_line_length`
    (minified or embedded-blob files)."""

    name = "size"

    def __init__(self, min_chars: int = 200, max_chars: int = 200_000, min_lines: int = 5, max_line_length: int = 1000):
        super().__init__()
        self.min_chars, self.max_chars = min_chars, max_chars
        self.min_lines, self.max_line_length = min_lines, max_line_length

    def keep(self, record: Record) -> bool | tuple[bool, str]:
        text = record["text"]
        lines = text.splitlines()
        if len(text) < self.min_chars or len(lines) < self.min_lines:
            return False, "too_short"
        if len(text) > self.max_chars:
            return False, "too_long"
        if max(map(len, lines)) > self.max_line_length:
            return False, "long_lines"
        return True


class GeneratedOrData(Filter):
    """Drops files that declare themselves generated (a marker in the first `header_lines` comment lines) and
    data-only files: more than `max_literal_fraction` of the characters in literals, or no definitions, no
    control flow and more than half literals."""

    name = "generated_or_data"

    def __init__(self, header_lines: int = 15, max_literal_fraction: float = 0.6):
        super().__init__()
        self.header_lines = header_lines
        self.max_literal_fraction = max_literal_fraction

    def keep(self, record: Record) -> bool | tuple[bool, str]:
        text = record["text"]
        header = [line for line in text.splitlines()[:self.header_lines] if line.lstrip().startswith("#")]
        if any(GENERATED_MARKERS.search(line) for line in header):
            return False, "generated"
        tree = parse_python(text)
        if tree is None:
            return True  # not ours to judge; ParsesAsPython runs first in the default chain
        fraction = literal_fraction(text, tree)
        has_logic = any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.For, ast.While, ast.If))
                        for n in ast.walk(tree))
        if fraction > self.max_literal_fraction or (not has_logic and fraction > 0.5):
            return False, "data_only"
        return True


def normalized_hash(text: str) -> str:
    """Hash of the text with trailing whitespace and blank lines removed (reformatting noise)."""
    lines = [line.rstrip() for line in text.splitlines()]
    return hashlib.sha1("\n".join(line for line in lines if line).encode("utf-8", "surrogatepass")).hexdigest()


class ExactDedup(Filter):
    """Keeps the first file with each normalised hash; records `content_hash` (so shards can be merged)
    and, on a dropped copy, `duplicate_of`."""

    name = "exact_dedup"

    def __init__(self, seen: dict[str, str] | None = None):
        super().__init__()
        self.seen: dict[str, str] = dict(seen or {})  # hash -> id of the kept copy

    def keep(self, record: Record) -> bool | tuple[bool, str]:
        digest = record.get("content_hash") or normalized_hash(record["text"])
        record["content_hash"] = digest
        if digest in self.seen:
            record["duplicate_of"] = self.seen[digest]
            return False, "exact_duplicate"
        self.seen[digest] = record["id"]
        return True


def shingles(text: str, n: int) -> set[bytes]:
    words = WORD.findall(text)
    if len(words) < n:
        return {" ".join(words).encode()}
    return {" ".join(words[i:i + n]).encode() for i in range(len(words) - n + 1)}


class MinHashDedup(Filter):
    """Near-duplicate removal: MinHash of word `ngram`-shingles, LSH candidates at Jaccard `threshold`,
    confirmed by the signatures' Jaccard estimate; the first copy (in stream order) is kept.

    `signatures` holds the kept records' MinHash values (id -> uint64 array), so a merge step can
    dedup across shards without recomputing them; pass them back in to reuse them.
    """

    name = "near_dedup"

    def __init__(self, threshold: float = 0.8, num_perm: int = 128, ngram: int = 5, seed: int = 1,
                 signatures: dict[str, np.ndarray] | None = None):
        super().__init__()
        from datasketch import MinHash, MinHashLSH

        self.threshold, self.num_perm, self.ngram, self.seed = threshold, num_perm, ngram, seed
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        # Drawn once from the seed and shared by every signature (datasketch would redraw them per MinHash).
        self.permutations = MinHash(num_perm=num_perm, seed=seed, scheme=SCHEME).permutations
        self.known = signatures or {}
        self.signatures: dict[str, np.ndarray] = {}
        self.order: dict[str, int] = {}

    def minhash(self, record: Record):
        from datasketch import MinHash

        stored = self.known.get(record["id"])
        if stored is not None:
            return MinHash(seed=self.seed, hashvalues=stored, permutations=self.permutations, scheme=SCHEME)
        m = MinHash(seed=self.seed, permutations=self.permutations, scheme=SCHEME)
        m.update_batch(sorted(shingles(record["text"], self.ngram)))
        return m

    def keep(self, record: Record) -> bool | tuple[bool, str]:
        m = self.minhash(record)
        # LSH gives candidates; the signatures' agreement (an estimate of Jaccard) confirms them.
        matches = [key for key in self.lsh.query(m) if np.mean(m.hashvalues == self.signatures[key]) >= self.threshold]
        if matches:
            record["duplicate_of"] = min(matches, key=self.order.__getitem__)  # the earliest kept copy
            return False, "near_duplicate"
        self.order[record["id"]] = len(self.order)
        self.signatures[record["id"]] = m.hashvalues
        self.lsh.insert(record["id"], m)
        return True


class CountSkipped(Step):
    """Passes records through; reports what the source skipped before they became records (unreadable,
    non-UTF-8, binary, empty, too large), so those counts sit with the other steps'."""

    name = "source"

    def __init__(self, source: object):
        super().__init__()
        self.source = source

    def run(self, records: Iterable[Record]) -> Iterator[Record]:
        for record in records:
            self.stats["read"] += 1
            yield record
        for reason, n in getattr(self.source, "skipped", {}).items():
            self.stats[f"skipped:{reason}"] = n


def default_prefilters(seed: int = 0, near_dup_threshold: float = 0.8, min_chars: int = 200,
                       max_chars: int = 200_000) -> list[Step]:
    """The pre-filter chain in cost order: parse, size, generated/data-only, exact dedup, near dedup."""
    return [ParsesAsPython(), SizeBounds(min_chars=min_chars, max_chars=max_chars), GeneratedOrData(), ExactDedup(),
            MinHashDedup(threshold=near_dup_threshold, seed=seed)]

"""Cheap pre-filters for raw code, before anything costs an embedding or a judge call: datatrove `BaseFilter`s.

`Readable` (rows the reader could not decode: empty, binary, not UTF-8, too large, unreadable),
`ParsesAsPython` (Python 3 syntax), `SizeBounds` (too short, too long, minified lines) and `GeneratedOrData`
(files that say they are generated, or are mostly literals: tables, fixtures). Each answers True or
(False, reason); its exclusion writer puts what it drops under removed/ with the reason.
`prefilters()` chains them in cost order. Dedup is datatrove's own (`filters.dedup`).
"""

from __future__ import annotations

import ast
import re
import warnings
from collections.abc import Callable
from functools import lru_cache

import numpy as np
from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.writers.disk_base import DiskWriter

GENERATED_MARKERS = re.compile(
    r"auto-?generated|automatically generated|generated (?:by|from|with)|do not (?:edit|modify)|"
    r"don'?t (?:edit|muck)|changes to this file will be lost", re.IGNORECASE)


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


class Readable(BaseFilter):
    """Drops the documents a reader could not turn into text, with the reader's reason."""

    name = "readable"

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        reason = doc.metadata.pop("unreadable", None)
        return (False, reason) if reason else True


class ParsesAsPython(BaseFilter):
    """Keeps files that parse as Python 3 (drops Python 2, templates, truncated files)."""

    name = "parses"

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return True if parse_python(doc.text) is not None else (False, "syntax_error")


class SizeBounds(BaseFilter):
    """Keeps files within [min_chars, max_chars] and at least `min_lines`, with no line over `max_line_length`
    (minified or embedded-blob files)."""

    name = "size"

    def __init__(self, min_chars: int = 200, max_chars: int = 200_000, min_lines: int = 5, max_line_length: int = 1000,
                 exclusion_writer: DiskWriter | None = None):
        super().__init__(exclusion_writer)
        self.min_chars, self.max_chars = min_chars, max_chars
        self.min_lines, self.max_line_length = min_lines, max_line_length

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        text = doc.text
        lines = text.splitlines()
        if len(text) < self.min_chars or len(lines) < self.min_lines:
            return False, "too_short"
        if len(text) > self.max_chars:
            return False, "too_long"
        if max(map(len, lines)) > self.max_line_length:
            return False, "long_lines"
        return True


class GeneratedOrData(BaseFilter):
    """Drops files that declare themselves generated (a marker in the first `header_lines` comment lines) and
    data-only files: more than `max_literal_fraction` of the characters in literals, or no definitions, no
    control flow and more than half literals."""

    name = "generated_or_data"

    def __init__(self, header_lines: int = 15, max_literal_fraction: float = 0.6,
                 exclusion_writer: DiskWriter | None = None):
        super().__init__(exclusion_writer)
        self.header_lines = header_lines
        self.max_literal_fraction = max_literal_fraction

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        text = doc.text
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


def prefilters(removed: Callable[[str], DiskWriter | None], min_chars: int = 200,
               max_chars: int = 200_000) -> list[BaseFilter]:
    """The pre-filter chain in cost order; `removed(step)` gives each filter its exclusion writer (or None)."""
    return [Readable(exclusion_writer=removed(Readable.name)), ParsesAsPython(exclusion_writer=removed(ParsesAsPython.name)),
            SizeBounds(min_chars=min_chars, max_chars=max_chars, exclusion_writer=removed(SizeBounds.name)),
            GeneratedOrData(exclusion_writer=removed(GeneratedOrData.name))]

"""Contamination detectors (phi-1 paper, section 5 / Table 3), each usable alone.

- `NgramOverlap`: shared word n-grams (n=13, lower-cased `\\w+` tokens) between a training record and a
  benchmark item's statement + solution, GPT-3 style.
- `EmbeddingSimilarity`: cosine similarity (equivalently L2 distance: the rows are unit vectors, so
  `l2 = sqrt(2 - 2 cos)`) between embeddings of training text chunks and of each item's statement and
  solution, via `datasets_builders.embedder.Embedder` (any Hub id or local model).
- `AstMatch`: the AST-based match rate. Each function's AST is flattened to a token sequence with
  identifiers, literals, annotations, docstrings and comments abstracted away and runs of independent simple
  statements put in a canonical order; the match rate is rapidfuzz's normalised Levenshtein similarity of
  two sequences, in [0, 1]. No full N x M edit distance: training functions are sorted by length and
  compared in blocks, with `process.cdist(score_cutoff=...)`, only against benchmark functions whose length
  can reach the threshold (similarity >= tau needs min(len) >= tau * max(len)), which is exact: the
  matches are the ones an all-pairs comparison finds.

Every detector has `index(items)` (the benchmark side) and `scan(texts) -> list[Match]` (the training
side); a `Match` names the text's row, the benchmark item, the detector, the score and where in the text.
`extract_code(text)` pulls Python out of prose (markdown fences, textbook code blocks).
"""

from __future__ import annotations

import ast
import builtins
import heapq
import math
import re
import textwrap
import warnings
import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .benchmark_index import BenchmarkItem


@dataclass(frozen=True)
class Match:
    """Text `row` is similar to benchmark item `item` (index into the detector's items) by `detector`."""

    row: int
    item: int
    detector: str
    score: float
    unit: str = ""
    # AST matches: the item's calibrated bound (the score must exceed it) and the matching unit's line ranges.
    bound: float = 0.0
    lines: tuple[tuple[int, int], ...] = ()

    def counts(self, tau: float) -> bool:
        """Does this match flag its text at AST threshold `tau`? n-gram / embedding matches are thresholded already."""
        return counts(self.detector, self.score, self.bound, tau)


def counts(detector: str, score: float, bound: float, tau: float) -> bool:
    """An AST match counts when its rate reaches `tau` and exceeds the item's calibrated bound."""
    return detector != "ast" or (score >= tau - 1e-12 and score > bound)


def _best(matches: Iterable[Match]) -> list[Match]:
    """One match per (row, item): the highest score (then the first unit), deterministic order."""
    best: dict[tuple[int, int], Match] = {}
    for m in matches:
        key = (m.row, m.item)
        if key not in best or m.score > best[key].score:
            best[key] = m
    return [best[k] for k in sorted(best)]


# ----------------------------------------------------------------------------------------------------
# Code extraction from text
# ----------------------------------------------------------------------------------------------------

_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*([\w+-]*)[^\n]*\n(.*?)^[ \t]*\1[ \t]*$", re.M | re.S)
_CODE_START = re.compile(r"^(?:async\s+def|def|class|import|from)\s+\w", re.M)
NON_PYTHON_FENCES = {"text", "txt", "bash", "sh", "shell", "console", "json", "yaml", "yml", "output", "c", "cpp",
                     "java", "javascript", "js", "html", "sql", "markdown", "md"}


def _parse(code: str) -> ast.Module | None:
    try:
        with warnings.catch_warnings():  # stdlib files have invalid escape sequences in strings
            warnings.simplefilter("ignore")
            return ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def _parses(code: str) -> bool:
    return _parse(code) is not None


def _prose_blocks(text: str) -> list[tuple[str, int]]:
    """Code in a textbook without fences: a `def` / `class` / `import` line and the lines indented under it.
    Each block comes with the number of text lines before it."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if not _CODE_START.match(lines[i]):
            i += 1
            continue
        j = i + 1
        while j < len(lines) and (not lines[j].strip() or lines[j][:1] in " \t" or _CODE_START.match(lines[j])):
            j += 1
        block = "\n".join(lines[i:j]).rstrip()
        # A prose line after the block may have been swallowed as blank-separated; trim until it parses.
        while block and not _parses(block) and "\n" in block:
            block = block.rsplit("\n", 1)[0].rstrip()
        if _parses(block):
            blocks.append((block, i))
        i = j
    return blocks


@dataclass(frozen=True)
class CodePiece:
    """Python found in a text: the code, its tree, the text lines before it and which block it is
    (0: the whole text is code; k >= 1: the k-th markdown fence or textbook block)."""

    code: str
    tree: ast.Module
    offset: int = 0
    block: int = 0


def _code_trees(text: str) -> list[CodePiece]:
    """The Python in `text`, each piece parsed once."""
    tree = _parse(text)
    if tree is not None:
        return [CodePiece(text, tree)]
    fenced = [(textwrap.dedent(m.group(3)), text.count("\n", 0, m.start(3))) for m in _FENCE.finditer(text)
              if m.group(2).lower() not in NON_PYTHON_FENCES]
    found = [CodePiece(code, tree, offset, k) for k, (code, offset) in enumerate(fenced, 1) if (tree := _parse(code)) is not None]
    return found or [CodePiece(code, tree, offset, k) for k, (code, offset) in enumerate(_prose_blocks(text), 1)
                     if (tree := _parse(code)) is not None]


def extract_code(text: str) -> list[str]:
    """Python code in `text`: the text itself if it parses, else its markdown fences (python or unlabeled),
    else textbook-style blocks starting at `def` / `class` / `import` lines. Only parseable code is returned."""
    return [piece.code for piece in _code_trees(text)]


# ----------------------------------------------------------------------------------------------------
# N-gram overlap
# ----------------------------------------------------------------------------------------------------

_WORD = re.compile(r"\w+")
_HASH_BASE = np.uint64(1_000_003)


def normalized_tokens(text: str) -> list[str]:
    """Lower-cased word tokens: punctuation, whitespace and case do not break an n-gram."""
    return _WORD.findall(text.lower())


class NgramOverlap:
    """A text matches a benchmark item when they share at least `min_matches` word n-grams (default 13-grams).

    The score is the fraction of the item's distinct n-grams found in the text. N-grams are hashed to
    64 bits with a polynomial hash over per-run word ids, so a scan is a few numpy operations per text.
    """

    name = "ngram"

    def __init__(self, n: int = 13, min_matches: int = 1):
        if n < 1 or min_matches < 1:
            raise ValueError(f"n-gram detector: n ({n}) and min_matches ({min_matches}) must be >= 1")
        self.n, self.min_matches = n, min_matches
        self.powers = np.array([_HASH_BASE ** np.uint64(n - 1 - k) for k in range(n)], dtype=np.uint64)

    def index(self, items: Sequence[BenchmarkItem]) -> NgramOverlap:
        self.items = list(items)
        words = sorted({w for it in self.items for w in normalized_tokens(self._item_text(it))})
        self.vocab = {w: i + 1 for i, w in enumerate(words)}  # 0 = a word no benchmark item has
        owners: dict[int, set[int]] = defaultdict(set)
        self.item_ngrams = np.zeros(len(self.items), dtype=np.int64)
        for idx, it in enumerate(self.items):
            hashes = set(self._hashes(normalized_tokens(self._item_text(it))).tolist())
            self.item_ngrams[idx] = len(hashes)
            for h in hashes:
                owners[h].add(idx)
        self.owners = {h: sorted(v) for h, v in owners.items()}
        self.bench_hashes = np.array(sorted(self.owners), dtype=np.uint64)
        return self

    @staticmethod
    def _item_text(item: BenchmarkItem) -> str:
        return f"{item.statement}\n{item.solution}"

    def _hashes(self, words: list[str]) -> np.ndarray:
        if len(words) < self.n:
            return np.zeros(0, dtype=np.uint64)
        ids = np.fromiter((self.vocab.get(w, 0) for w in words), dtype=np.uint64, count=len(words))
        windows = np.lib.stride_tricks.sliding_window_view(ids, self.n)
        known = windows.min(axis=1) > 0  # an n-gram with a word unseen in the benchmarks cannot match
        with np.errstate(over="ignore"):  # wrap-around modulo 2**64 is the hash
            return (windows[known] * self.powers).sum(axis=1, dtype=np.uint64)

    def scan(self, texts: Sequence[str]) -> list[Match]:
        matches = []
        for row, text in enumerate(texts):
            hashes = np.unique(self._hashes(normalized_tokens(text)))
            hits = hashes[np.isin(hashes, self.bench_hashes, assume_unique=True)]
            counts: dict[int, int] = defaultdict(int)
            for h in hits.tolist():
                for item in self.owners[h]:
                    counts[item] += 1
            matches += [Match(row, item, self.name, c / max(1, int(self.item_ngrams[item])), f"{c} shared {self.n}-grams")
                        for item, c in sorted(counts.items()) if c >= self.min_matches]
        return matches


# ----------------------------------------------------------------------------------------------------
# Embedding similarity
# ----------------------------------------------------------------------------------------------------

def text_chunks(text: str, max_chars: int = 1000) -> list[str]:
    """Paragraphs (blank-line separated) packed greedily into chunks of at most `max_chars`: an embedder
    truncates long inputs, so a long file is embedded piece by piece."""
    chunks, current = [], ""
    for para in re.split(r"\n\s*\n", text.strip()):
        while len(para) > max_chars:  # one huge paragraph: cut it at line ends where possible
            cut = para.rfind("\n", 0, max_chars)
            cut = cut if cut > 0 else max_chars
            if current:
                chunks.append(current)
                current = ""
            chunks.append(para[:cut])
            para = para[cut:].lstrip("\n")
        if current and len(current) + 2 + len(para) > max_chars:
            chunks.append(current)
            current = ""
        current = f"{current}\n\n{para}" if current else para
    if current.strip():
        chunks.append(current)
    return chunks


def prose(statement: str) -> str:
    """The natural-language part of a code prompt (HumanEval's): its docstrings, doctest examples cut off.
    A paraphrase is worded differently but has no code, so it is compared with this view too."""
    tree = _parse(statement)
    if tree is None:
        return ""
    docs = "\n".join(d for d in (ast.get_docstring(n) for n in ast.walk(tree) if isinstance(n, _FUNCS)) if d)
    kept = []
    for line in docs.splitlines():
        if line.strip().startswith(">>>") or re.match(r"\s*(for )?examples?\b", line, re.I):
            break
        kept.append(line)
    return "\n".join(kept).strip()


class EmbeddingSimilarity:
    """A text matches an item when one of its chunks is within `threshold` of the embedding of the item's
    statement, its prose (docstring without examples) or its solution: cosine >= threshold (metric="cosine")
    or L2 distance <= threshold (metric="l2"). The default 0.8 is calibrated for all-MiniLM-L6-v2: hand-written
    paraphrases score 0.78-0.93 against their problem, standard-library code at most ~0.76 against any."""

    name = "embedding"

    def __init__(self, model: str | None = None, threshold: float = 0.8, metric: str = "cosine",
                 chunk_chars: int = 1000, cache_dir: Any = None, embedder: Any = None, **embedder_options: Any):
        if metric not in ("cosine", "l2"):
            raise ValueError(f"embedding metric must be 'cosine' or 'l2', got {metric!r}")
        self.metric, self.threshold, self.chunk_chars = metric, threshold, chunk_chars
        # Unit rows: |a - b|^2 = 2 - 2 cos, so an L2 bound is a cosine bound.
        self.min_cosine = threshold if metric == "cosine" else 1.0 - threshold ** 2 / 2.0
        # The benchmark side's vectors are kept with the benchmark index (as the AST calibration), so a new run
        # directory does not embed HumanEval / MBPP again; only a detector that caches does so.
        self.index_cache = embedder is None and cache_dir is not None
        if embedder is None:
            from .embedder import Embedder

            # batches by the embedder's token budget (precision, device, batch sizes: `embedder_options`)
            embedder = Embedder(model, cache_dir=cache_dir, **embedder_options)
        self.embedder = embedder

    def index(self, items: Sequence[BenchmarkItem]) -> EmbeddingSimilarity:
        self.items = list(items)
        views = [(i, t) for i, it in enumerate(self.items) for t in dict.fromkeys((it.statement, prose(it.statement), it.solution))
                 if t.strip()]
        self.view_item = np.array([i for i, _ in views], dtype=np.int64)
        self.view_vectors = self._embed_views([t for _, t in views])
        return self

    def _embed_views(self, texts: list[str]) -> np.ndarray:
        if not self.index_cache:
            return self.embedder.embed(texts)
        from .benchmark_index import index_cache_dir
        from .embedder import EmbeddingCache

        index_cache = EmbeddingCache(index_cache_dir() / "embeddings.sqlite")
        try:
            return self.embedder.embed(texts, cache=index_cache)
        finally:
            index_cache.close()

    def scan(self, texts: Sequence[str]) -> list[Match]:
        chunks = [(row, k, c) for row, text in enumerate(texts) for k, c in enumerate(text_chunks(text, self.chunk_chars))]
        matches = []
        for start in range(0, len(chunks), 4096):  # bounded memory: 4096 x views similarities at a time
            block = chunks[start:start + 4096]
            sims = self.embedder.embed([c for _, _, c in block]) @ self.view_vectors.T
            for r, v in zip(*np.nonzero(sims >= self.min_cosine)):
                row, k, _ = block[r]
                matches.append(Match(row, int(self.view_item[v]), self.name, round(float(sims[r, v]), 6), f"chunk {k}"))
        return _best(matches)


# ----------------------------------------------------------------------------------------------------
# AST match rate
# ----------------------------------------------------------------------------------------------------

BUILTIN_NAMES = frozenset(dir(builtins))
# Calls with no side effects worth keeping in order: statements calling only these may be reordered.
PURE_CALLS = frozenset("abs all any bool bytes chr dict divmod enumerate filter float format frozenset hash int "
                       "isinstance issubclass iter len list map max min oct ord pow range repr reversed round set "
                       "slice sorted str sum tuple type zip".split())
SKIPPED_FIELDS = frozenset({"ctx", "type_comment", "annotation", "returns", "type_params"})
REORDERABLE = (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Expr, ast.Import, ast.ImportFrom, ast.Pass, ast.Delete)


def _node_types(cls: type = ast.AST) -> set[str]:
    return {cls.__name__}.union(*(_node_types(sub) for sub in cls.__subclasses__()))


# Structural tokens get a fixed character each; named tokens (builtins, attributes, keywords) a hashed one.
_CHARS = {name: chr(0x100 + i) for i, name in enumerate(sorted(_node_types()) + ["}"])}


def _char(token: str) -> str:
    c = _CHARS.get(token)
    if c is None:
        c = _CHARS[token] = chr(0x4E00 + zlib.crc32(token.encode()) % 0x5000)
    return c


def _is_docstring(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


def _leaf_token(node: ast.AST) -> str | None:
    """Tokens that abstract identifiers and literals (None: use the node type)."""
    if isinstance(node, ast.Name):
        return f"Name:{node.id}" if node.id in BUILTIN_NAMES else "Name"
    if isinstance(node, ast.Constant):
        v = node.value
        return f"Const:{v!r}" if v is None or isinstance(v, bool) or v is Ellipsis else f"Const:{type(v).__name__}"
    if isinstance(node, ast.Attribute):
        return f"Attribute:{node.attr}"  # API names (.append, .join) carry meaning; renaming rarely touches them
    if isinstance(node, ast.keyword):
        return f"keyword:{node.arg}"
    if isinstance(node, ast.alias):
        return f"alias:{node.name}"
    return None


def _base_name(node: ast.AST) -> str:
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else "<expr>"


def _effects(stmt: ast.stmt) -> tuple[set[str], set[str], bool]:
    """Names a statement reads and writes, and whether it has side effects beyond them."""
    reads, writes, effect = set(), set(), False
    for node in ast.walk(stmt):
        if isinstance(node, ast.Name):
            (reads if isinstance(node.ctx, ast.Load) else writes).add(node.id)
        elif isinstance(node, (ast.Attribute, ast.Subscript)) and not isinstance(node.ctx, ast.Load):
            writes.add(_base_name(node))
        elif isinstance(node, ast.Call):
            if isinstance(node.func, ast.Attribute):  # a method may mutate its object
                writes.add(_base_name(node.func.value))
            elif not (isinstance(node.func, ast.Name) and node.func.id in PURE_CALLS):
                effect = True
        elif isinstance(node, ast.alias):
            writes.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, (ast.Yield, ast.YieldFrom, ast.Await)):
            effect = True
    return reads, writes, effect


def _canonical_order(stmts: list[ast.stmt], tokens: list[list[str]]) -> list[int]:
    """A topological order of the statements' dependencies, ties broken by their abstracted tokens: any
    reordering of independent statements gives the same order (and the same token sequence)."""
    effects = [_effects(s) for s in stmts]
    succ: list[list[int]] = [[] for _ in stmts]
    indegree = [0] * len(stmts)
    for j, (rj, wj, ej) in enumerate(effects):
        for i in range(j):
            ri, wi, ei = effects[i]
            if (wi & (rj | wj)) or (ri & wj) or (ei and ej):
                succ[i].append(j)
                indegree[j] += 1
    keys = ["\x00".join(t) for t in tokens]
    heap = [(keys[i], i) for i in range(len(stmts)) if indegree[i] == 0]
    heapq.heapify(heap)
    order = []
    while heap:
        _, i = heapq.heappop(heap)
        order.append(i)
        for j in succ[i]:
            indegree[j] -= 1
            if indegree[j] == 0:
                heapq.heappush(heap, (keys[j], j))
    return order


def _emit_body(stmts: list[ast.stmt], out: list[str]) -> None:
    run: list[ast.stmt] = []

    def flush() -> None:
        if run:
            tokens = [_emit(s, []) for s in run]
            for i in (_canonical_order(run, tokens) if len(run) > 1 else [0]):
                out.extend(tokens[i])
            run.clear()

    for stmt in stmts:
        if _is_docstring(stmt):  # docstrings and bare-string "comments" are not code
            continue
        if isinstance(stmt, REORDERABLE):
            run.append(stmt)
        else:
            flush()
            _emit(stmt, out)
    flush()
    out.append("}")


def _emit(node: ast.AST, out: list[str]) -> list[str]:
    """Pre-order node tokens with identifiers / literals abstracted and statement lists canonicalised."""
    leaf = _leaf_token(node)
    out.append(leaf or type(node).__name__)
    for field in node._fields:
        if field in SKIPPED_FIELDS:
            continue
        value = getattr(node, field, None)
        if isinstance(value, list):
            if value and isinstance(value[0], ast.stmt):
                _emit_body(value, out)
            else:
                for v in value:
                    if isinstance(v, ast.AST):
                        _emit(v, out)
        elif isinstance(value, ast.AST):
            _emit(value, out)
    return out


def ast_sequence(node: ast.AST) -> str:
    """The normalised AST of `node` as a string, one character per token (what the edit distance sees)."""
    return "".join(_char(t) for t in _emit(node, []))


@dataclass(frozen=True)
class CodeUnit:
    """A function or method (or a code block's top-level statements) as a normalised AST sequence, and where
    it sits in the text it came from: `lines` are 1-based inclusive line ranges of that text (decorators
    included), `block` the markdown / textbook code block it is in (0: the whole text is code)."""

    name: str
    line: int
    seq: str
    kind: str = "function"
    lines: tuple[tuple[int, int], ...] = ()
    block: int = 0

    def describe(self) -> str:
        spans = ", ".join(f"{a}-{b}" if b > a else str(a) for a, b in self.lines) or str(self.line)
        return f"{self.kind} {self.name}, lines {spans}" + (f" (code block {self.block})" if self.block else "")


_FUNCS = (ast.FunctionDef, ast.AsyncFunctionDef)
_BODIES = (ast.stmt, ast.excepthandler, ast.match_case)  # functions are statements: expressions are not searched


def _functions(node: ast.AST, prefix: str, in_class: bool, out: list[tuple[str, str, ast.AST]]) -> None:
    """(qualified name, function | method, node) of every function under `node`, nested ones too."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, _FUNCS):
            out.append((prefix + child.name, "method" if in_class else "function", child))
            _functions(child, f"{prefix}{child.name}.", False, out)
        elif isinstance(child, ast.ClassDef):
            _functions(child, f"{prefix}{child.name}.", True, out)
        elif isinstance(child, _BODIES):
            _functions(child, prefix, in_class, out)


def _statement_lines(stmts: list[ast.stmt], offset: int) -> tuple[tuple[int, int], ...]:
    spans: list[tuple[int, int]] = []
    for s in stmts:
        first, last = s.lineno + offset, (s.end_lineno or s.lineno) + offset
        if spans and first <= spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], max(last, spans[-1][1]))
        else:
            spans.append((first, last))
    return tuple(spans)


def code_units(text: str, min_tokens: int = 1) -> list[CodeUnit]:
    """Every function in the code found in `text` (methods and nested functions too), plus each code block's
    top-level statements outside functions and classes, when they have at least `min_tokens` tokens."""
    units = []
    for piece in _code_trees(text):
        try:
            found: list[tuple[str, str, ast.AST]] = []
            _functions(piece.tree, "", False, found)
            for name, kind, node in found:
                seq = ast_sequence(node)
                if len(seq) >= min_tokens:
                    first = min([node.lineno, *(d.lineno for d in node.decorator_list)]) + piece.offset
                    units.append(CodeUnit(name, first, seq, kind, ((first, node.end_lineno + piece.offset),), piece.block))
            rest = [s for s in piece.tree.body if not isinstance(s, (*_FUNCS, ast.ClassDef, ast.Import, ast.ImportFrom))]
            if rest and len(seq := ast_sequence(ast.Module(body=rest, type_ignores=[]))) >= min_tokens:
                lines = _statement_lines(rest, piece.offset)
                units.append(CodeUnit("<module>", lines[0][0], seq, "module", lines, piece.block))
        except RecursionError:  # pathological nesting: no units rather than a crash
            continue
    return units


def _code_size(tree: ast.Module) -> int:
    """AST tokens of a solution's code: imports and docstrings are not the solution."""
    return sum(len(ast_sequence(s)) for s in tree.body if not isinstance(s, (ast.Import, ast.ImportFrom)) and not _is_docstring(s))


def solution_unit(item: BenchmarkItem, min_share: float = 0.0) -> tuple[CodeUnit | None, float]:
    """The benchmark side and the share of the solution's code it covers: the solved function (`item.entry`),
    else (or when the entry is a thin wrapper covering less than `min_share`) the largest function, else the
    module."""
    tree = _parse(item.solution) if item.solution else None
    if tree is None:
        return None, 0.0
    total = max(1, _code_size(tree))
    funcs = [(n, ast_sequence(n)) for n in tree.body if isinstance(n, _FUNCS)]
    if not funcs:
        return CodeUnit("<module>", 1, ast_sequence(tree), "module"), 1.0
    largest = max(funcs, key=lambda f: len(f[1]))
    node, seq = next((f for f in funcs if f[0].name == item.entry), largest)
    if len(seq) < min_share * total:
        node, seq = largest
    return CodeUnit(node.name, node.lineno, seq, "function", ((node.lineno, node.end_lineno or node.lineno),)), len(seq) / total


def _units_of_text(args: tuple[str, int]) -> list[CodeUnit]:
    return code_units(*args)


def match_rate(a: str, b: str) -> float:
    """AST match rate of two normalised sequences: 1 - Levenshtein distance / longer length."""
    from rapidfuzz.distance import Levenshtein

    return Levenshtein.normalized_similarity(a, b)


CALIBRATION_FLOOR = 0.6  # background rates below this are not kept: with any sane margin they bind no tau
CALIBRATION_GRID = (0.95, 0.9, 0.85, 0.8, 0.75, 0.7)


@dataclass
class AstCalibration:
    """How common each benchmark item's AST shape is in code known to be clean (the background corpus): per
    item, the best match rate of any background unit, the nearest such unit and how many unique background
    units reach each rate of `CALIBRATION_GRID`. Items with no background unit at `floor` or above are absent:
    their shape is rare. `key` ties it to the benchmark units, the detector settings and the background's
    content, so a stored calibration is reused only where it is still true."""

    key: str
    background: str
    background_texts: int
    background_units: int
    floor: float
    items: dict[str, dict[str, Any]]
    seconds: float = 0.0

    def best(self, item_id: str) -> float:
        entry = self.items.get(item_id)
        return float(entry["best"]) if entry else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "background": self.background, "background_texts": self.background_texts,
                "background_units": self.background_units, "floor": self.floor, "seconds": self.seconds,
                "items": self.items}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AstCalibration:
        return cls(data["key"], data["background"], int(data["background_texts"]), int(data["background_units"]),
                   float(data["floor"]), dict(data["items"]), float(data.get("seconds", 0.0)))


class AstMatch:
    """A text matches an item when one of its functions has an AST match rate >= `threshold` with the item's
    solved function, and, once calibrated (`use_calibration`), a rate above the item's bound: the best rate
    any clean background unit reaches plus `margin`. An item whose shape clean code already reaches at 1 - margin
    is not decidable by AST; the n-gram and embedding detectors still see it.

    Size floors on both sides, because on short sequences one or two edits separate unrelated code: training
    units under `min_tokens` tokens are skipped (on the standard library the false-positive rate at tau 0.8 falls
    from 2.5% of functions at 8 tokens to 0.4% at 12), and so are benchmark units under `min_item_tokens` (one- or
    two-statement solutions: at the AST level they look like thousands of ordinary functions). Proportion floor:
    the compared function must cover at least `min_item_share` of the solution's code, so a match is evidence
    about the item and not about a small helper of it."""

    name = "ast"

    def __init__(self, threshold: float = 0.8, min_tokens: int = 12, min_item_tokens: int = 16,
                 min_item_share: float = 0.5, margin: float = 0.1, workers: int = 1, block_rows: int = 2048):
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"AST match-rate threshold must be in (0, 1], got {threshold}")
        if not 0.0 <= min_item_share <= 1.0 or margin < 0.0:
            raise ValueError(f"AST detector: min_item_share ({min_item_share}) must be in [0, 1] and margin ({margin}) >= 0")
        self.threshold, self.min_tokens, self.workers, self.block_rows = threshold, min_tokens, workers, block_rows
        self.min_item_tokens, self.min_item_share, self.margin = min_item_tokens, min_item_share, margin
        self.stats: dict[str, int] = defaultdict(int)
        self.calibration: AstCalibration | None = None

    def index(self, items: Sequence[BenchmarkItem]) -> AstMatch:
        self.items = list(items)
        # Why an item is not decidable by AST (item index -> reason); the other detectors still see it.
        self.undecidable: dict[int, str] = {}
        units = []
        for i, it in enumerate(self.items):
            if it.kind != "code":
                continue
            unit, share = solution_unit(it, self.min_item_share)
            if unit is None:
                self.undecidable[i] = "unparsable solution"
            elif len(unit.seq) < self.min_item_tokens:
                self.undecidable[i] = f"size floor: solution function has {len(unit.seq)} < {self.min_item_tokens} AST tokens"
            elif share < self.min_item_share:
                self.undecidable[i] = f"proportion floor: compared function covers {share:.0%} < {self.min_item_share:.0%} of the solution"
            else:
                units.append((i, unit))
        self.stats["benchmark_unparsable"] = sum(r == "unparsable solution" for r in self.undecidable.values())
        units.sort(key=lambda iu: (len(iu[1].seq), iu[0]))
        self.bench_item = np.array([i for i, _ in units], dtype=np.int64)
        self.bench_seqs = [u.seq for _, u in units]
        self.bench_lens = np.array([len(s) for s in self.bench_seqs], dtype=np.int64)
        self.bench_bound = np.zeros(len(units), dtype=np.float64)
        return self

    def calibration_key(self, background_fingerprint: str) -> str:
        """What a calibration depends on: the benchmark units (their normalised sequences, so a change of the
        AST normalisation invalidates it), the training-unit floor and the background's content."""
        import hashlib

        h = hashlib.sha256(f"{self.min_tokens}|{CALIBRATION_FLOOR}|{background_fingerprint}|".encode())
        for i, seq in zip(self.bench_item.tolist(), self.bench_seqs):
            h.update(f"{self.items[i].item_id}\x00{seq}\x01".encode())
        return h.hexdigest()[:32]

    def calibrate(self, background: Sequence[str], names: Sequence[str] | None = None, description: str = "",
                  fingerprint: str = "") -> AstCalibration:
        """Compare every benchmark unit with every unit of the clean `background` texts (named by `names`, for the
        report) down to `CALIBRATION_FLOOR`, and use the result."""
        import time

        started = time.perf_counter()
        seq_name: dict[str, str] = {}
        for k, units in enumerate(self.units(background)):
            for u in units:
                seq_name.setdefault(u.seq, f"{names[k] if names else k}: {u.kind} {u.name} (line {u.line})")
        seqs = list(seq_name)
        items: dict[str, dict[str, Any]] = {}
        for s, b, rate in self.compare(seqs, CALIBRATION_FLOOR):
            entry = items.setdefault(self.items[int(self.bench_item[b])].item_id,
                                     {"best": 0.0, "nearest": "", "count": {str(t): 0 for t in CALIBRATION_GRID}})
            if rate > entry["best"]:
                entry["best"], entry["nearest"] = round(rate, 6), seq_name[seqs[s]]
            for t in CALIBRATION_GRID:
                entry["count"][str(t)] += rate >= t - 1e-12
        calibration = AstCalibration(self.calibration_key(fingerprint), description, len(background), len(seqs),
                                     CALIBRATION_FLOOR, dict(sorted(items.items())), round(time.perf_counter() - started, 2))
        self.use_calibration(calibration)
        return calibration

    def use_calibration(self, calibration: AstCalibration) -> AstMatch:
        """Bound each benchmark unit by its background rate + margin; an item bounded at 1 cannot be matched."""
        self.calibration = calibration
        for b, i in enumerate(self.bench_item.tolist()):
            best = calibration.best(self.items[i].item_id)
            self.bench_bound[b] = best + self.margin if best > 0 else 0.0
            if self.bench_bound[b] >= 1.0:
                self.undecidable[i] = (f"common shape: clean code reaches AST rate {best:.3f} "
                                       f"({calibration.items[self.items[i].item_id]['nearest']})")
        return self

    def bound(self, item: int) -> float:
        """The rate an AST match with item `item` must exceed to count (0: uncalibrated or a rare shape)."""
        where = np.nonzero(self.bench_item == item)[0]
        return float(self.bench_bound[where[0]]) if len(where) else 1.0

    def units(self, texts: Sequence[str]) -> list[list[CodeUnit]]:
        """Code units per text, parsed in `workers` processes when asked."""
        jobs = [(t, self.min_tokens) for t in texts]
        if self.workers > 1 and len(texts) > 64:
            import multiprocessing as mp

            with mp.get_context("fork").Pool(self.workers) as pool:
                return pool.map(_units_of_text, jobs, chunksize=32)
        return [_units_of_text(j) for j in jobs]

    def compare(self, seqs: list[str], threshold: float | None = None) -> list[tuple[int, int, float]]:
        """(sequence index, benchmark unit index, rate) for every pair with rate >= threshold (default: the
        detector's), by length blocks."""
        from rapidfuzz import process
        from rapidfuzz.distance import Levenshtein

        tau = self.threshold if threshold is None else threshold
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        found = []
        for start in range(0, len(order), self.block_rows):
            block = order[start:start + self.block_rows]
            lo, hi = len(seqs[block[0]]), len(seqs[block[-1]])
            # Rate >= tau needs tau * max(len) <= min(len): only these benchmark lengths can match the block.
            first = int(np.searchsorted(self.bench_lens, math.ceil(tau * lo - 1e-9), side="left"))
            last = int(np.searchsorted(self.bench_lens, math.floor(hi / tau + 1e-9), side="right"))
            if first >= last:
                continue
            self.stats["pairs_scored"] += len(block) * (last - first)
            # rapidfuzz's cutoff drops pairs sitting exactly on it (1 - 3/15 = 0.8 with cutoff 0.8, or 0.8 - 1e-9):
            # cut a little lower, then compare the returned scores (the same function's values) exactly.
            scores = process.cdist([seqs[i] for i in block], self.bench_seqs[first:last], scorer=Levenshtein.normalized_similarity,
                                   score_cutoff=max(0.0, tau - 1e-6), dtype=np.float64, workers=self.workers)
            for r, c in zip(*np.nonzero(scores >= tau)):
                found.append((block[r], first + int(c), float(scores[r, c])))
        self.stats["pairs_total"] += len(seqs) * len(self.bench_seqs)
        return found

    def scan(self, texts: Sequence[str]) -> list[Match]:
        """Matches at rate >= threshold, each with its item's calibrated bound (`Match.counts` applies it) and
        the matching unit's line ranges."""
        per_text = self.units(texts)
        # Identical functions (copies, overloads) are compared once.
        unique: dict[str, list[tuple[int, CodeUnit]]] = defaultdict(list)
        for row, units in enumerate(per_text):
            for u in units:
                unique[u.seq].append((row, u))
        seqs = list(unique)
        self.stats["units"] += sum(len(u) for u in per_text)
        self.stats["unique_units"] += len(seqs)
        matches = []
        for s, b, rate in self.compare(seqs):
            bound = float(self.bench_bound[b])
            for row, u in unique[seqs[s]]:
                matches.append(Match(row, int(self.bench_item[b]), self.name, rate, u.describe(), bound, u.lines))
        return _best(matches)

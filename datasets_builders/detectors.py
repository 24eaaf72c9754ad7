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


def _best(matches: Iterable[Match]) -> list[Match]:
    """One match per (row, item): the highest score, deterministic order."""
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


def _prose_blocks(text: str) -> list[str]:
    """Code in a textbook without fences: a `def` / `class` / `import` line and the lines indented under it."""
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
            blocks.append(block)
        i = j
    return blocks


def _code_trees(text: str) -> list[tuple[str, ast.Module]]:
    """(code, parsed tree) for the Python in `text`; each piece is parsed once."""
    tree = _parse(text)
    if tree is not None:
        return [(text, tree)]
    fenced = [textwrap.dedent(body) for _, lang, body in _FENCE.findall(text) if lang.lower() not in NON_PYTHON_FENCES]
    found = [(code, tree) for code in fenced if (tree := _parse(code)) is not None]
    return found or [(code, tree) for code in _prose_blocks(text) if (tree := _parse(code)) is not None]


def extract_code(text: str) -> list[str]:
    """Python code in `text`: the text itself if it parses, else its markdown fences (python or unlabeled),
    else textbook-style blocks starting at `def` / `class` / `import` lines. Only parseable code is returned."""
    return [code for code, _ in _code_trees(text)]


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
                 chunk_chars: int = 1000, batch_size: int = 32, cache_dir: Any = None, embedder: Any = None):
        if metric not in ("cosine", "l2"):
            raise ValueError(f"embedding metric must be 'cosine' or 'l2', got {metric!r}")
        self.metric, self.threshold, self.chunk_chars = metric, threshold, chunk_chars
        # Unit rows: |a - b|^2 = 2 - 2 cos, so an L2 bound is a cosine bound.
        self.min_cosine = threshold if metric == "cosine" else 1.0 - threshold ** 2 / 2.0
        if embedder is None:
            from .embedder import Embedder

            embedder = Embedder(model, batch_size=batch_size, cache_dir=cache_dir)
        self.embedder = embedder

    def index(self, items: Sequence[BenchmarkItem]) -> EmbeddingSimilarity:
        self.items = list(items)
        views = [(i, t) for i, it in enumerate(self.items) for t in dict.fromkeys((it.statement, prose(it.statement), it.solution))
                 if t.strip()]
        self.view_item = np.array([i for i, _ in views], dtype=np.int64)
        self.view_vectors = self.embedder.embed([t for _, t in views])
        return self

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
    """A function (or a module's top-level code) as a normalised AST sequence."""

    name: str
    line: int
    seq: str


_FUNCS = (ast.FunctionDef, ast.AsyncFunctionDef)


def code_units(text: str, min_tokens: int = 1) -> list[CodeUnit]:
    """Every function in the code found in `text` (methods and nested functions too), plus the top-level
    statements outside functions and classes when there are at least `min_tokens` of them."""
    units = []
    for _, tree in _code_trees(text):
        try:
            for node in ast.walk(tree):
                if isinstance(node, _FUNCS):
                    units.append(CodeUnit(node.name, node.lineno, ast_sequence(node)))
            rest = [s for s in tree.body if not isinstance(s, (*_FUNCS, ast.ClassDef, ast.Import, ast.ImportFrom))]
            if rest:
                units.append(CodeUnit("<module>", rest[0].lineno, ast_sequence(ast.Module(body=rest, type_ignores=[]))))
        except RecursionError:  # pathological nesting: no units rather than a crash
            continue
    return [u for u in units if len(u.seq) >= min_tokens]


def solution_unit(item: BenchmarkItem) -> CodeUnit | None:
    """The benchmark side: the solved function (`item.entry`), else the largest function, else the module."""
    tree = _parse(item.solution) if item.solution else None
    if tree is None:
        return None
    funcs = [n for n in tree.body if isinstance(n, _FUNCS)]
    named = [f for f in funcs if f.name == item.entry]
    node: ast.AST = named[0] if named else max(funcs, key=lambda f: len(ast.dump(f))) if funcs else tree
    return CodeUnit(item.entry or "<module>", getattr(node, "lineno", 1), ast_sequence(node))


def _units_of_text(args: tuple[str, int]) -> list[CodeUnit]:
    return code_units(*args)


def match_rate(a: str, b: str) -> float:
    """AST match rate of two normalised sequences: 1 - Levenshtein distance / longer length."""
    from rapidfuzz.distance import Levenshtein

    return Levenshtein.normalized_similarity(a, b)


class AstMatch:
    """A text matches an item when one of its functions has an AST match rate >= `threshold` with the item's
    solved function. `min_tokens` skips tiny training functions (a one-line getter matches many things; on the
    standard library the false-positive rate at tau 0.8 falls from 2.5% of functions at 8 tokens to 0.4% at 12).
    Benchmark solutions shorter than about that are thereby left to the n-gram and embedding detectors."""

    name = "ast"

    def __init__(self, threshold: float = 0.8, min_tokens: int = 12, workers: int = 1, block_rows: int = 2048):
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"AST match-rate threshold must be in (0, 1], got {threshold}")
        self.threshold, self.min_tokens, self.workers, self.block_rows = threshold, min_tokens, workers, block_rows
        self.stats: dict[str, int] = defaultdict(int)

    def index(self, items: Sequence[BenchmarkItem]) -> AstMatch:
        self.items = list(items)
        units = [(i, solution_unit(it)) for i, it in enumerate(self.items) if it.kind == "code"]
        self.stats["benchmark_unparsable"] = sum(u is None for _, u in units)
        units = sorted(((i, u) for i, u in units if u is not None), key=lambda iu: (len(iu[1].seq), iu[0]))
        self.bench_item = np.array([i for i, _ in units], dtype=np.int64)
        self.bench_seqs = [u.seq for _, u in units]
        self.bench_lens = np.array([len(s) for s in self.bench_seqs], dtype=np.int64)
        return self

    def units(self, texts: Sequence[str]) -> list[list[CodeUnit]]:
        """Code units per text, parsed in `workers` processes when asked."""
        jobs = [(t, self.min_tokens) for t in texts]
        if self.workers > 1 and len(texts) > 64:
            import multiprocessing as mp

            with mp.get_context("fork").Pool(self.workers) as pool:
                return pool.map(_units_of_text, jobs, chunksize=32)
        return [_units_of_text(j) for j in jobs]

    def compare(self, seqs: list[str]) -> list[tuple[int, int, float]]:
        """(sequence index, benchmark unit index, rate) for every pair with rate >= threshold, by length blocks."""
        from rapidfuzz import process
        from rapidfuzz.distance import Levenshtein

        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        found = []
        for start in range(0, len(order), self.block_rows):
            block = order[start:start + self.block_rows]
            lo, hi = len(seqs[block[0]]), len(seqs[block[-1]])
            # Rate >= tau needs tau * max(len) <= min(len): only these benchmark lengths can match the block.
            first = int(np.searchsorted(self.bench_lens, math.ceil(self.threshold * lo - 1e-9), side="left"))
            last = int(np.searchsorted(self.bench_lens, math.floor(hi / self.threshold + 1e-9), side="right"))
            if first >= last:
                continue
            self.stats["pairs_scored"] += len(block) * (last - first)
            # rapidfuzz's cutoff drops pairs sitting exactly on it (1 - 3/15 = 0.8 with cutoff 0.8, or 0.8 - 1e-9):
            # cut a little lower, then compare the returned scores (the same function's values) exactly.
            scores = process.cdist([seqs[i] for i in block], self.bench_seqs[first:last], scorer=Levenshtein.normalized_similarity,
                                   score_cutoff=max(0.0, self.threshold - 1e-6), dtype=np.float64, workers=self.workers)
            for r, c in zip(*np.nonzero(scores >= self.threshold)):
                found.append((block[r], first + int(c), float(scores[r, c])))
        self.stats["pairs_total"] += len(seqs) * len(self.bench_seqs)
        return found

    def scan(self, texts: Sequence[str]) -> list[Match]:
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
            for row, u in unique[seqs[s]]:
                matches.append(Match(row, int(self.bench_item[b]), self.name, rate, f"{u.name} (line {u.line})"))
        return _best(matches)

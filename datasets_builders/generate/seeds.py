"""Prompts seeded by real documents (Cosmopedia's method), as datatrove blocks.

A seed extract is a documented unit of real code: a module docstring, or a documented class or function
with its source (cut at `max_chars`), from any corpus the readers take (default: the standard library;
`--seed-input` the filtered-code output or The Stack). Each prompt asks the teacher to teach what the
extract does, for one audience, in one style, at one difficulty, so the space of prompts is
extracts x audiences x styles x difficulties and grows with the seed corpus: 500,000 prompts from the
standard library's ~7,000 extracts take ~72 of the 495 combinations each.

- `SeedExtracts`: a file -> one document per extract (`id` from file + qualified name).
- `PlanPrompts` (one task): counts the extracts every task found and gives each task its share of `n`, each
  extract `floor` or `ceil` of n / extracts combinations; an error if n exceeds what the seeds allow.
- `SeededPrompts`: an extract -> its prompts, the combinations drawn by a seeded permutation per extract,
  so the prompts are distinct, the same for a seed whatever the number of tasks, and need no global list.
"""

from __future__ import annotations

import ast
import json
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from ..sources import record_id

MIN_DOC_WORDS = 5
SEEDED_FIELDS = ("audiences", "styles", "difficulties")
PLAN_FILE = "plan.json"


def extracts(text: str, path: str, max_chars: int = 1500) -> Iterator[tuple[str, str, str]]:
    """(qualified name, kind, source extract) of every documented unit of a Python file."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError):
        return
    lines = text.splitlines()
    module = path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
    doc = ast.get_docstring(tree)
    if doc and len(doc.split()) >= MIN_DOC_WORDS:
        yield module, "module", _cut('"""' + doc + '"""', max_chars)

    def walk(body: list[ast.stmt], prefix: str) -> Iterator[tuple[str, str, str]]:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}.{node.name}"
                doc = ast.get_docstring(node)
                if doc and len(doc.split()) >= MIN_DOC_WORDS:
                    kind = "class" if isinstance(node, ast.ClassDef) else "function"
                    yield name, kind, _cut("\n".join(lines[node.lineno - 1:node.end_lineno]), max_chars)
                if isinstance(node, ast.ClassDef):
                    yield from walk(node.body, name)

    yield from walk(tree.body, module)


def _cut(source: str, max_chars: int) -> str:
    return source if len(source) <= max_chars else source[:max_chars].rsplit("\n", 1)[0] + "\n    ..."


class SeedExtracts(PipelineStep):
    """Python files -> one document per documented unit (see `extracts`); files that do not parse yield none."""

    type = "🌱 - SEEDS"
    name = "seed extracts"

    def __init__(self, max_chars: int = 1500):
        super().__init__()
        self.max_chars = max_chars

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            path = str(doc.metadata.get("path") or doc.id)
            found = 0
            for qualname, kind, extract in extracts(doc.text, path, self.max_chars):
                found += 1
                yield Document(text=extract, id=record_id(doc.id, qualname),
                               metadata={"seed_id": doc.id, "seed_path": path, "seed_symbol": qualname, "seed_kind": kind,
                                         "source": doc.metadata.get("source"), "license": doc.metadata.get("license")})
            self.stat_update("files")
            self.stat_update("extracts", value=found)


class PlanPrompts(PipelineStep):
    """One task: extracts per task (from the seeds stage's files) -> how many prompts each task and extract get."""

    type = "🌱 - SEEDS"
    name = "plan prompts"

    def __init__(self, seeds_dir: str | os.PathLike, plan_dir: str | os.PathLike, n: int, tasks: int, combinations: int):
        super().__init__()
        self.seeds_dir, self.plan_dir = Path(seeds_dir), Path(plan_dir)
        self.n, self.tasks, self.combinations = n, tasks, combinations

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        per_task = []
        for r in range(self.tasks):
            path = self.seeds_dir / f"{r:05d}.jsonl"
            per_task.append(sum(1 for _ in path.open("rb")) if path.is_file() else 0)
        total = sum(per_task)
        if self.n > total * self.combinations:
            raise ValueError(f"--n {self.n}: the seeds allow only {total} extracts x {self.combinations} audience / "
                             f"style / difficulty combinations = {total * self.combinations} distinct prompts; give "
                             "a larger seed corpus (--seed-input) or longer lists")
        # Extract i (in corpus order) gets base + 1 prompts if i < extra, else base: n in all.
        base, extra = divmod(self.n, total)
        plan = {"n": self.n, "extracts": total, "combinations": self.combinations, "base": base, "extra": extra,
                "first_extract": [sum(per_task[:r]) for r in range(self.tasks)], "extracts_per_task": per_task}
        self.plan_dir.mkdir(parents=True, exist_ok=True)
        (self.plan_dir / PLAN_FILE).write_text(json.dumps(plan))
        self.stat_update("extracts", value=total)
        self.stat_update("prompts", value=self.n)
        return iter(())


class SeededPrompts(PipelineStep):
    """Extract -> its share of prompts: `text` is the user message, metadata the system message, the
    constraints (JSON) and the seed's provenance."""

    type = "🌱 - SEEDS"
    name = "seeded prompts"

    def __init__(self, plan_dir: str | os.PathLike, lists: dict[str, list[str]], template: dict[str, str],
                 seed: int = 0, kind: str = "textbook"):
        super().__init__()
        self.plan_dir, self.lists, self.template, self.seed, self.kind = Path(plan_dir), lists, template, seed, kind
        self.sizes = [len(lists[f]) for f in SEEDED_FIELDS]

    def combination(self, index: int) -> dict[str, str]:
        constraints = {}
        for field, size in zip(SEEDED_FIELDS, self.sizes):
            index, i = divmod(index, size)
            constraints[field] = self.lists[field][i]
        return constraints

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        plan = json.loads((self.plan_dir / PLAN_FILE).read_text())
        position = plan["first_extract"][rank]
        total = 1
        for size in self.sizes:
            total *= size
        for doc in data:
            count = plan["base"] + (position < plan["extra"])
            position += 1
            picks = random.Random(f"{self.seed}:{doc.id}").sample(range(total), count)
            for index in picks:
                values = self.combination(index)
                constraints = {"audience": values["audiences"], "style": values["styles"],
                               "difficulty": values["difficulties"], "subject": f"the `{doc.metadata['seed_symbol']}` "
                               f"{doc.metadata['seed_kind']}", "seed_path": doc.metadata["seed_path"]}
                user = self.template["user"].format(extract=doc.text, **constraints).strip()
                system = self.template.get("system", "").strip()
                yield Document(text=user, id=record_id(self.kind, system, user), metadata={
                    "generation_system": system, "constraints": json.dumps(constraints, sort_keys=True),
                    "seed_id": doc.id, "seed_symbol": doc.metadata["seed_symbol"], "seed_path": doc.metadata["seed_path"],
                    "seed_license": doc.metadata.get("license")})
                self.stat_update("prompts")


def seeded_lists(sampler: Any) -> dict[str, list[str]]:
    """The audience / style / difficulty lists of a PromptSampler (the user's files or the shipped ones)."""
    return {f: sampler.lists[f] for f in SEEDED_FIELDS}

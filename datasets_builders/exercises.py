"""Build verified Python exercises (columns `prompt`, `completion`, `tests`): teacher-written or mined.

An exercise is a function's signature + docstring (`prompt`), its body (`completion`) and `assert`
statements that run after it (`tests`), like phi-1's CodeExercises. With a teacher (`--teacher-url` +
`--teacher-model`, or `--teacher-local`), each exercise answers one prompt constrained by topic, audience,
difficulty and function name (lists in datasets_builders/data/, replaceable with flags); replies are cached
beside the output, so a killed run resumes. Without a teacher, self-contained documented functions of the
standard library are mined, their doctests turned into asserts.

Every exercise is executed in the sandbox (evaluation.sandbox) and kept only if it runs and its tests pass;
exact and near duplicates are removed. Removed records go to removed/ with their reason (not_code,
wrong_function_name, no_tests, tests_failed, duplicate, ...); the card has the counts and a diversity report.

Examples:
    phi data exercises --output out/exercises --n 200 --seed 0
    phi data exercises --output out/exercises --n 5000 --teacher-url http://localhost:8000/v1 \\
        --teacher-model Qwen/Qwen2.5-Coder-7B-Instruct
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .diversity import NearDuplicates, write_with_report
from .mining import exercise_from_code, mine_exercises, program, seeded_order
from .pipeline import Filter, Record, Step, run_pipeline
from .prompts import PromptSampler
from .sources import LocalPythonFiles
from .teachers import add_builder_arguments, builder_kwargs
from .textbook import Take, teacher_records

CODE_BLOCK = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)
VERIFY_CHUNK = 64
TIMEOUT = 5.0


def code_of(reply: str) -> str:
    """The Python in a reply: its first fenced block that parses, else the reply itself."""
    blocks = CODE_BLOCK.findall(reply)
    for block in blocks:
        try:
            compile(block, "<reply>", "exec")
            return block
        except (SyntaxError, ValueError):
            continue
    return blocks[0] if blocks else reply


class ParseExercise(Filter):
    """A teacher reply -> prompt / completion / tests / entry_point, or removed with the reason."""

    name = "parse"

    def keep(self, record: Record) -> bool | tuple[bool, str]:
        reply = record.pop("reply")
        if reply is None:
            return False, "request_failed"
        record["reply"] = reply  # kept on the record only if it is removed, for inspection
        if not reply.strip():
            return False, "empty_reply"
        wanted = json.loads(record["constraints"]).get("function_name")
        exercise, reason = exercise_from_code(code_of(reply), wanted)
        if exercise is None:
            return False, reason
        del record["reply"]
        record.update(prompt=exercise.prompt, completion=exercise.completion, tests=exercise.tests,
                      entry_point=exercise.entry_point)
        return True


class Deduplicate(Filter):
    """Exact (whitespace-normalised hash) and near (MinHash-LSH) duplicates of prompt + completion."""

    name = "dedup"

    def __init__(self) -> None:
        super().__init__()
        self.hashes: set[str] = set()
        self.near = NearDuplicates()

    def keep(self, record: Record) -> bool | tuple[bool, str]:
        text = record["prompt"] + record["completion"]
        digest = hashlib.sha1(" ".join(text.split()).encode("utf-8")).hexdigest()
        if digest in self.hashes:
            return False, "duplicate"
        self.hashes.add(digest)
        if self.near.seen(text):
            return False, "near_duplicate"
        return True


class Verify(Step):
    """Run prompt + completion + tests in the sandbox, in chunks; keep what passes (`verified` says how)."""

    name = "verify"

    def __init__(self, timeout: float = TIMEOUT, chunk: int = VERIFY_CHUNK, workers: int | None = None):
        super().__init__()
        self.timeout = timeout
        self.chunk = chunk
        self.workers = workers

    def run(self, records: Iterable[Record]) -> Iterator[Record]:
        from evaluation.sandbox import run_programs

        batch: list[Record] = []
        for record in records:
            batch.append(record)
            if len(batch) == self.chunk:
                yield from self._verify(batch, run_programs)
                batch = []
        if batch:
            yield from self._verify(batch, run_programs)

    def _verify(self, batch: list[Record], run_programs: Any) -> Iterator[Record]:
        results = run_programs([program(r) for r in batch], timeout=self.timeout, workers=self.workers)
        for record, result in zip(batch, results):
            self.stats["in"] += 1
            if result.passed:
                self.stats["kept"] += 1
                yield {**record, "verified": "tests_passed" if record["tests"].strip() else "executed"}
            else:
                kind = "timed_out" if "timed out" in result.result else "tests_failed" if record["tests"].strip() \
                    else "does_not_run"
                self.remove({**record, "result": result.result[:500]}, kind)


def build_exercises(output_dir: str | os.PathLike, teacher: Any = None, n: int | None = 200, seed: int = 0,
                    sampler: PromptSampler | None = None, source_root: str | os.PathLike | None = None,
                    require_tests: bool = False, timeout: float = TIMEOUT, embed: bool = True) -> Path:
    """Build the verified exercise dataset at `output_dir` and return it.

    teacher=None mines the standard library (or `source_root`) until `n` exercises pass verification
    (`require_tests`: only those with doctests); otherwise `teacher` answers `n` prompts from `sampler`.
    """
    steps_after = [Deduplicate(), Verify(timeout)]
    if teacher is None:
        files = LocalPythonFiles(source_root)
        candidates, rejected = mine_exercises(files)
        if require_tests:
            rejected["no_doctests"] = sum(not c["tests"] for c in candidates)
            candidates = [c for c in candidates if c["tests"]]
        result = run_pipeline([*steps_after, Take(n)], seeded_order(candidates, seed))
        info: dict[str, Any] = {"generator": "mined", "candidates": len(candidates), "rejected": dict(rejected),
                                "with_doctests": sum(bool(c["tests"]) for c in candidates),
                                "skipped_files": dict(files.skipped)}
        list_sizes = None
    else:
        if n is None:
            raise ValueError("--n is required with a teacher (how many exercises to ask for)")
        sampler = sampler or PromptSampler(seed)
        result = run_pipeline([ParseExercise(), *steps_after], teacher_records(teacher, sampler, "exercises", n))
        info = {"generator": teacher.name, "teacher_stats": dict(teacher.stats), "params": teacher.params}
        list_sizes = sampler.list_sizes()
    info.update(seed=seed, n=n, stages=result.stats, removed_by_reason=result.removed_by_reason(),
                verified=dict(_count(result.kept, "verified")))
    return write_with_report(result.kept, output_dir, name="exercises", text_of=lambda r: r["prompt"] + r["completion"],
                             description="Verified Python exercises: docstring prompt -> function body, with tests "
                                         "(phi-1 CodeExercises style).", build_info=info, removed=result.removed,
                             list_sizes=list_sizes, embed=embed, seed=seed)


def _count(records: list[Record], column: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in records:
        counts[r[column]] = counts.get(r[column], 0) + 1
    return counts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--require-tests", action="store_true",
                        help="mined default: keep only functions whose doctests pass (default: also those that run)")
    parser.add_argument("--exec-timeout", type=float, default=TIMEOUT, help="seconds per verification program")
    add_builder_arguments(parser, "exercises")


def main(args: argparse.Namespace) -> None:
    out = build_exercises(args.output, require_tests=args.require_tests, timeout=args.exec_timeout,
                          **builder_kwargs(args))
    print(f"wrote {out}")

"""Build verified Python exercises (columns `prompt`, `completion`, `tests`): teacher-written or mined.

An exercise is a function's signature + docstring (`prompt`), its body (`completion`) and `assert`
statements that run after it (`tests`), like phi-1's CodeExercises. With a teacher (`--teacher-url` +
`--teacher-model`, or `--teacher-local`), each exercise answers one prompt constrained by topic, audience,
difficulty and function name (lists in datasets_builders/data/, replaceable with flags); replies are cached
beside the output, so a killed run resumes. Without a teacher, self-contained documented functions of the
standard library are mined, their doctests turned into asserts (the card says how many have them).

Verified means verified by tests the solution's author did not write: with a teacher, the tests come from a
separate request that sees only the exercise's prompt (templates `exercise_tests`), `--candidates K`
solutions are asked for (the first writes the prompt, the others complete it), every candidate runs against
every independent test in the sandbox (evaluation.sandbox), and the candidates are ranked CodeT-style (dual
agreement: candidates passing the same tests form a group scored by group size x tests passed); the best
one is kept only if it passes all the independent tests. Mined exercises are verified by their doctests,
or only executed where they have none (`--require-tests` keeps only the former). Exact and near duplicates
are removed. Removed records go to removed/ with their reason (not_code, wrong_function_name, no_tests,
tests_failed, duplicate, ...); the card reports the share verified by tests, the counts and a diversity report.

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

from .diversity import write_with_report
from .filters.dedup import NearDuplicateIndex
from .mining import assert_statements, exercise_from_code, mine_exercises, program, seeded_order
from .pipeline import Filter, Record, Step, run_pipeline
from .prompts import GenerationPrompt, PromptSampler
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
    """A teacher reply -> prompt / completion / entry_point, or removed with the reason (the reply's own asserts,
    if any, are dropped: the tests come from `IndependentTests`)."""

    name = "parse"

    def keep(self, record: Record) -> bool | tuple[bool, str]:
        reply = record.pop("reply")
        if reply is None:
            return False, "request_failed"
        record["reply"] = reply  # kept on the record only if it is removed, for inspection
        if not reply.strip():
            return False, "empty_reply"
        wanted = json.loads(record["constraints"]).get("function_name")
        exercise, reason = exercise_from_code(code_of(reply), wanted, require_tests=False)
        if exercise is None:
            return False, reason
        del record["reply"]
        record.update(prompt=exercise.prompt, completion=exercise.completion, entry_point=exercise.entry_point)
        return True


class IndependentTests(Step):
    """Asks the teacher, in separate requests that see only the exercise's prompt, for tests (`tests`, one
    assert statement per line group) and for `candidates - 1` more solutions (`candidates`, JSON list of
    completions, the parsed one first). No test: removed as no_tests."""

    name = "independent_tests"

    def __init__(self, teacher: Any, templates: dict[str, dict[str, str]], candidates: int = 3):
        super().__init__()
        missing = [k for k in ("exercise_tests", "exercise_solutions") if k not in templates]
        if missing:
            raise ValueError(f"the prompt templates lack {missing} (fields {{prompt}}, {{function_name}}); see "
                             "datasets_builders/data/prompts.yaml")
        if candidates < 1:
            raise ValueError(f"--candidates must be at least 1, got {candidates}")
        self.teacher, self.templates, self.candidates = teacher, templates, candidates

    def _prompt(self, kind: str, record: Record, suffix: str = "") -> GenerationPrompt:
        template = self.templates[kind]
        user = template["user"].format(prompt=record["prompt"].rstrip(), function_name=record["entry_point"]).strip()
        return GenerationPrompt(kind, (template.get("system", "").strip() + suffix).strip(), user)

    def run(self, records: Iterable[Record]) -> Iterator[Record]:
        records = list(records)
        asks = [self._prompt("exercise_tests", r) for r in records]
        for j in range(1, self.candidates):  # the system message tells the candidates apart (and their cache keys)
            asks += [self._prompt("exercise_solutions", r, f" (Candidate {j + 1}.)") for r in records]
        replies = self.teacher.generate(asks) if records else []
        for i, record in enumerate(records):
            self.stats["in"] += 1
            tests = assert_statements(code_of(replies[i] or ""))
            if not tests:
                self.remove({**record, "tests": "", "tests_reply": replies[i]}, "no_tests")
                continue
            completions = [record["completion"]]
            for j in range(1, self.candidates):
                reply = replies[j * len(records) + i]
                exercise, _ = exercise_from_code(code_of(reply or ""), record["entry_point"], require_tests=False)
                if exercise is not None:
                    completions.append(exercise.completion)
            self.stats["kept"] += 1
            yield {**record, "tests": "\n".join(tests) + "\n", "candidates": json.dumps(completions)}


class Deduplicate(Filter):
    """Exact (whitespace-normalised hash) and near (MinHash-LSH) duplicates of prompt + completion."""

    name = "dedup"

    def __init__(self) -> None:
        super().__init__()
        self.hashes: set[str] = set()
        self.near = NearDuplicateIndex()

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
        ranked = [r for r in batch if r.get("candidates")]
        yield from self._rank(ranked, run_programs)
        plain = [r for r in batch if not r.get("candidates")]
        results = run_programs([program(r) for r in plain], timeout=self.timeout, workers=self.workers)
        for record, result in zip(plain, results):
            self.stats["in"] += 1
            if result.passed:
                self.stats["kept"] += 1
                yield {**record, "verified": "doctests" if record["tests"].strip() else "executed"}
            else:
                kind = "timed_out" if "timed out" in result.result else "tests_failed" if record["tests"].strip() \
                    else "does_not_run"
                self.remove({**record, "result": result.result[:500]}, kind)

    def _rank(self, batch: list[Record], run_programs: Any) -> Iterator[Record]:
        """Every candidate x every independent test; CodeT dual agreement picks the candidate."""
        jobs = []
        for i, record in enumerate(batch):
            tests = assert_statements(record["tests"])
            for c, completion in enumerate(json.loads(record["candidates"])):
                jobs += [(i, c, t, record["prompt"] + completion + "\n\n" + test + "\n") for t, test in enumerate(tests)]
        results = run_programs([j[3] for j in jobs], timeout=self.timeout, workers=self.workers) if jobs else []
        passed: dict[tuple[int, int], set[int]] = {}
        for (i, c, t, _), result in zip(jobs, results):
            passed.setdefault((i, c), set())
            if result.passed:
                passed[(i, c)].add(t)
        for i, record in enumerate(batch):
            self.stats["in"] += 1
            n_tests = len(assert_statements(record["tests"]))
            candidates = json.loads(record["candidates"])
            sets = [frozenset(passed.get((i, c), set())) for c in range(len(candidates))]
            groups: dict[frozenset[int], list[int]] = {}
            for c, tests_passed in enumerate(sets):
                groups.setdefault(tests_passed, []).append(c)
            # CodeT: score a group of candidates that pass the same tests by (group size) x (tests passed).
            best_set, members = max(groups.items(), key=lambda g: (len(g[1]) * len(g[0]), len(g[0]), -g[1][0]))
            best = members[0]
            record = {k: v for k, v in record.items() if k != "candidates"}
            record.update(completion=candidates[best], candidates=len(candidates), agreement=len(members),
                          tests_passed=f"{len(best_set)}/{n_tests}")
            if len(best_set) == n_tests:
                self.stats["kept"] += 1
                yield {**record, "verified": "independent_tests"}
            else:
                self.remove(record, "tests_failed")


def build_exercises(output_dir: str | os.PathLike, teacher: Any = None, n: int | None = 200, seed: int = 0,
                    sampler: PromptSampler | None = None, source_root: str | os.PathLike | None = None,
                    require_tests: bool = False, timeout: float = TIMEOUT, embed: bool = True,
                    candidates: int = 3) -> Path:
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
        result = run_pipeline([ParseExercise(), IndependentTests(teacher, sampler.templates, candidates), *steps_after],
                              teacher_records(teacher, sampler, "exercises", n))
        info = {"generator": teacher.name, "teacher_stats": dict(teacher.stats), "params": teacher.params}
        list_sizes = sampler.list_sizes()
    verified = _count(result.kept, "verified")
    by_tests = sum(v for k, v in verified.items() if k != "executed")
    info.update(seed=seed, n=n, stages=result.stats, removed_by_reason=result.removed_by_reason(), verified=verified,
                verified_by_tests_share=round(by_tests / len(result.kept), 4) if result.kept else 0.0)
    how = ("tests from a separate request than the solution, best of "
           f"{candidates} candidates by CodeT dual agreement" if teacher is not None else
           f"the standard library's doctests ({info.get('with_doctests', 0)} of {info.get('candidates', 0)} mined "
           "candidates have them); the others were only executed")
    sections = {"Verification": (f"{by_tests} of {len(result.kept)} exercises "
                                 f"({info['verified_by_tests_share']:.1%}) are verified by tests: {how}. "
                                 f"Counts by kind: {json.dumps(verified, sort_keys=True)}.")}
    return write_with_report(result.kept, output_dir, name="exercises", text_of=lambda r: r["prompt"] + r["completion"],
                             description="Verified Python exercises: docstring prompt -> function body, with tests "
                                         "(phi-1 CodeExercises style).", build_info=info, removed=result.removed,
                             list_sizes=list_sizes, embed=embed, seed=seed, sections=sections)


def _count(records: list[Record], column: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in records:
        counts[r[column]] = counts.get(r[column], 0) + 1
    return counts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--require-tests", action="store_true",
                        help="mined default: keep only functions whose doctests pass (default: also those that run)")
    parser.add_argument("--exec-timeout", type=float, default=TIMEOUT, help="seconds per verification program")
    parser.add_argument("--candidates", type=int, default=3, help="with a teacher: solutions per exercise, ranked by "
                        "the independent tests (CodeT)")
    add_builder_arguments(parser, "exercises")


def main(args: argparse.Namespace) -> None:
    out = build_exercises(args.output, require_tests=args.require_tests, timeout=args.exec_timeout,
                          candidates=args.candidates,
                          **builder_kwargs(args))
    print(f"wrote {out}")

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
are removed (datatrove's exact + MinHash stages). Removed records go to removed/ with their reason (not_code,
wrong_function_name, no_tests, tests_failed, duplicate, ...); the card reports the share verified by tests, the
counts and a diversity report (on a sample of at most 2,000 records).

It runs as datatrove stages on `--executor` (local, ray, slurm; `--tasks`, `--workers`):
  mine | generate   files -> candidates (mined), or prompts -> teacher -> parse -> independent tests + candidates
  dedup stages      exact + MinHash (filters.dedup)
  verify            dedup filters -> sandbox verification (CodeT ranking with a teacher) -> seeded draw key
  choose, write     the first `--n` in the seeded draw -> Parquet shards; card from the per-task stats
Completion records under OUTPUT.work/ make a rerun skip finished tasks.

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
from pathlib import Path
from typing import Any

from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.writers.disk_base import DiskWriter

from .filters.dedup import Dedup
from .filters.prefilters import Readable
from .generate.teach import REPLY, SampledPrompts, Teach, ask, build_teacher
from .hub_dataset import read_build_info
from .mining import MineExercises, assert_statements, exercise_from_code, program
from .pipelines.executors import (
    ExecutorOptions,
    Stage,
    add_executor_arguments,
    executor_options,
    open_build,
    run_stages,
    stage_stats,
)
from .pipelines.synthetic import (
    ChooseFirst,
    SeededKey,
    SharedObject,
    TakeChosen,
    block_stats,
    dedup_filters,
    dedup_stages,
    diversity_section,
    removed_by_reason,
)
from .prompts import GenerationPrompt, PromptSampler
from .readers import IntermediateReader, PythonFilesReader
from .teachers import add_builder_arguments, builder_kwargs, teacher_options
from .writers import HubWriter, IntermediateWriter, RemovedWriter, finalize_dataset

CODE_BLOCK = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)
VERIFY_CHUNK = 64
TIMEOUT = 5.0
TEACHER_LICENSE = "generated (check the teacher model's terms)"
DESCRIPTION = "Verified Python exercises: docstring prompt -> function body, with tests (phi-1 CodeExercises style)."


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


class ParseExercise(BaseFilter):
    """A teacher reply -> prompt / completion / entry_point (text = prompt + completion), or removed with the
    reason (the reply's own asserts, if any, are dropped: the tests come from `IndependentTests`)."""

    name = "parse"

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        reply = doc.metadata.pop(REPLY)
        if reply is None:
            return False, "request_failed"
        doc.metadata["reply"] = reply  # kept on the record only if it is removed, for inspection
        if not reply.strip():
            return False, "empty_reply"
        wanted = json.loads(doc.metadata["constraints"]).get("function_name")
        exercise, reason = exercise_from_code(code_of(reply), wanted, require_tests=False)
        if exercise is None:
            return False, reason
        del doc.metadata["reply"]
        doc.metadata.update(prompt=exercise.prompt, completion=exercise.completion, entry_point=exercise.entry_point)
        doc.text = exercise.prompt + exercise.completion
        return True


class IndependentTests(BaseFilter):
    """Asks the teacher, in separate requests that see only the exercise's prompt, for tests (`tests`, one
    assert statement per line group) and for `candidates - 1` more solutions (`candidates`, JSON list of
    completions, the parsed one first), `chunk` exercises at a time. No test: removed as no_tests."""

    name = "independent_tests"

    def __init__(self, teacher: Any, templates: dict[str, dict[str, str]], candidates: int = 3,
                 chunk: int = VERIFY_CHUNK, exclusion_writer: DiskWriter | None = None):
        super().__init__(exclusion_writer, batch_size=chunk)
        missing = [k for k in ("exercise_tests", "exercise_solutions") if k not in templates]
        if missing:
            raise ValueError(f"the prompt templates lack {missing} (fields {{prompt}}, {{function_name}}); see "
                             "datasets_builders/data/prompts.yaml")
        if candidates < 1:
            raise ValueError(f"--candidates must be at least 1, got {candidates}")
        self.teacher, self.templates, self.candidates = teacher, templates, candidates
        self._teacher: Any = None

    def _prompt(self, kind: str, doc: Document, suffix: str = "") -> GenerationPrompt:
        template = self.templates[kind]
        user = template["user"].format(prompt=doc.metadata["prompt"].rstrip(),
                                       function_name=doc.metadata["entry_point"]).strip()
        return GenerationPrompt(kind, (template.get("system", "").strip() + suffix).strip(), user)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return self.filter_batch([doc])[0]

    def filter_batch(self, batch: list[Document]) -> list[bool | tuple[bool, str]]:
        if self._teacher is None:
            self._teacher = build_teacher(self.teacher)
        asks = [self._prompt("exercise_tests", d) for d in batch]
        for j in range(1, self.candidates):  # the system message tells the candidates apart (and their cache keys)
            asks += [self._prompt("exercise_solutions", d, f" (Candidate {j + 1}.)") for d in batch]
        replies = ask(self, self._teacher, asks)
        results: list[bool | tuple[bool, str]] = []
        for i, doc in enumerate(batch):
            tests = assert_statements(code_of(replies[i] or ""))
            if not tests:
                doc.metadata.update(tests="", tests_reply=replies[i])
                results.append((False, "no_tests"))
                continue
            completions = [doc.metadata["completion"]]
            for j in range(1, self.candidates):
                reply = replies[j * len(batch) + i]
                exercise, _ = exercise_from_code(code_of(reply or ""), doc.metadata["entry_point"], require_tests=False)
                if exercise is not None:
                    completions.append(exercise.completion)
            doc.metadata.update(tests="\n".join(tests) + "\n", candidates=json.dumps(completions))
            results.append(True)
        return results


class RequireTests(BaseFilter):
    """Mined default with `--require-tests`: keeps candidates with doctests (others: `no_doctests`)."""

    name = "require_tests"

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return True if doc.metadata["tests"].strip() else (False, "no_doctests")


class Verify(BaseFilter):
    """Runs prompt + completion + tests in the sandbox, `chunk` exercises at a time; keeps what passes
    (`verified` says how). Exercises with `candidates` are ranked CodeT-style (see `rank`)."""

    name = "verify"

    def __init__(self, timeout: float = TIMEOUT, chunk: int = VERIFY_CHUNK, workers: int | None = None,
                 exclusion_writer: DiskWriter | None = None):
        super().__init__(exclusion_writer, batch_size=chunk)
        self.timeout, self.workers = timeout, workers

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return self.filter_batch([doc])[0]

    def filter_batch(self, batch: list[Document]) -> list[bool | tuple[bool, str]]:
        from evaluation.sandbox import run_programs

        results: list[bool | tuple[bool, str]] = [True] * len(batch)
        ranked = [i for i, d in enumerate(batch) if d.metadata.get("candidates")]
        for i, verdict in zip(ranked, self.rank([batch[i] for i in ranked], run_programs)):
            results[i] = verdict
        plain = [i for i, d in enumerate(batch) if not d.metadata.get("candidates")]
        outcomes = run_programs([program(batch[i].metadata) for i in plain], timeout=self.timeout,
                                workers=self.workers) if plain else []
        for i, outcome in zip(plain, outcomes):
            meta = batch[i].metadata
            has_tests = bool(meta["tests"].strip())
            if outcome.passed:
                meta["verified"] = "doctests" if has_tests else "executed"
            else:
                meta["result"] = outcome.result[:500]
                results[i] = False, ("timed_out" if "timed out" in outcome.result else
                                     "tests_failed" if has_tests else "does_not_run")
        return results

    def rank(self, batch: list[Document], run_programs: Any) -> list[bool | tuple[bool, str]]:
        """Every candidate x every independent test; CodeT dual agreement picks the candidate: candidates that
        pass the same tests form a group scored by (group size) x (tests passed)."""
        jobs = []
        for i, doc in enumerate(batch):
            tests = assert_statements(doc.metadata["tests"])
            for c, completion in enumerate(json.loads(doc.metadata["candidates"])):
                jobs += [(i, c, t, doc.metadata["prompt"] + completion + "\n\n" + test + "\n")
                         for t, test in enumerate(tests)]
        outcomes = run_programs([j[3] for j in jobs], timeout=self.timeout, workers=self.workers) if jobs else []
        passed: dict[tuple[int, int], set[int]] = {}
        for (i, c, t, _), outcome in zip(jobs, outcomes):
            passed.setdefault((i, c), set())
            if outcome.passed:
                passed[(i, c)].add(t)
        verdicts: list[bool | tuple[bool, str]] = []
        for i, doc in enumerate(batch):
            meta = doc.metadata
            n_tests = len(assert_statements(meta["tests"]))
            candidates = json.loads(meta["candidates"])
            groups: dict[frozenset[int], list[int]] = {}
            for c in range(len(candidates)):
                groups.setdefault(frozenset(passed.get((i, c), set())), []).append(c)
            best_set, members = max(groups.items(), key=lambda g: (len(g[1]) * len(g[0]), len(g[0]), -g[1][0]))
            meta.update(completion=candidates[members[0]], candidates=len(candidates), agreement=len(members),
                        tests_passed=f"{len(best_set)}/{n_tests}")
            doc.text = meta["prompt"] + meta["completion"]
            if len(best_set) == n_tests:
                meta["verified"] = "independent_tests"
                verdicts.append(True)
            else:
                verdicts.append((False, "tests_failed"))
        return verdicts


def exercise_stages(work: Path, staging: Path, executor: ExecutorOptions, teacher: Any, sampler: PromptSampler | None,
                    n: int | None, seed: int, source_root: str | os.PathLike | None, require_tests: bool,
                    timeout: float, candidates: int) -> list[Stage]:
    """mine | generate -> dedup stages -> verify -> choose -> write (see the module docstring)."""
    tasks = executor.tasks
    candidates_dir, verified_dir = work / "candidates", work / "verified"
    dedup = Dedup(work, seed=seed)

    def removed(step: str, reason: str | None = None, part: str | None = None) -> RemovedWriter:
        return RemovedWriter(staging, step, reason, part)

    if teacher is None:
        first = [PythonFilesReader(source_root), Readable(), MineExercises(),
                 *([RequireTests()] if require_tests else [])]
        first_stage = "mine"
    else:
        first = [SampledPrompts(sampler, "exercises", n, TEACHER_LICENSE), Teach(teacher, "exercises"),
                 ParseExercise(removed("parse")),
                 IndependentTests(teacher, sampler.templates, candidates, exclusion_writer=removed("independent_tests"))]
        first_stage = "generate"
    return [
        Stage(first_stage, [*first, IntermediateWriter(candidates_dir)], tasks),
        *dedup_stages(dedup, candidates_dir, tasks),
        Stage("verify", [IntermediateReader(candidates_dir),
                         *dedup_filters(dedup, lambda step, reason: removed(step, reason, reason)),
                         Verify(timeout, exclusion_writer=removed("verify")), SeededKey(seed),
                         IntermediateWriter(verified_dir)], tasks),
        Stage("choose", [ChooseFirst(verified_dir, work, n)], 1),
        Stage("write", [IntermediateReader(verified_dir), TakeChosen(work), HubWriter(staging, row="no_text")], tasks),
    ]


REMOVING = {"parse": "parse", "independent_tests": "independent_tests", "exact-deduplication": "dedup:duplicate",
            "MinHash": "dedup:near_duplicate", "verify": "verify"}


def build_exercises(output_dir: str | os.PathLike, teacher: Any = None, n: int | None = 200, seed: int = 0,
                    sampler: PromptSampler | None = None, source_root: str | os.PathLike | None = None,
                    require_tests: bool = False, timeout: float = TIMEOUT, embed: bool = True,
                    candidates: int = 3, executor: ExecutorOptions | None = None) -> Path:
    """Build the verified exercise dataset at `output_dir` and return it.

    teacher=None mines the standard library (or `source_root`) and keeps the first `n` exercises of a seeded
    draw that pass verification (`require_tests`: only those with doctests); otherwise `teacher` (options of
    `teachers.make_teacher`, or a teacher object for an in-process run) answers `n` prompts from `sampler`.
    """
    output_dir = Path(output_dir)
    executor = executor or ExecutorOptions()
    if teacher is not None:
        if n is None:
            raise ValueError("--n is required with a teacher (how many exercises to ask for)")
        sampler = sampler or PromptSampler(seed)
        sampler.sample("exercises", n)  # too few distinct prompts: one line now, not inside a task
    shared = teacher
    if teacher is not None and not isinstance(teacher, dict):
        if executor.executor != "local" or executor.workers > 1:
            raise ValueError("a teacher object runs in this process only: pass teacher options "
                             "(teachers.teacher_options) to run on other workers")
        shared = SharedObject(teacher)
    config = {"n": n, "seed": seed, "source_root": str(source_root), "require_tests": require_tests, "timeout": timeout,
              "candidates": candidates, "tasks": executor.tasks,
              "teacher": _teacher_config(teacher), "lists": sampler.lists if sampler else None,
              "templates": sampler.templates if sampler else None}
    fingerprint = hashlib.sha1(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]
    if (folders := open_build(output_dir, fingerprint)) is None:
        return output_dir
    work, staging = folders
    stages = exercise_stages(work, staging, executor, shared, sampler, n, seed, source_root, require_tests, timeout,
                             candidates)
    if not run_stages(stages, work, executor):
        print(f"submitted to Slurm; logs in {work / 'logs'}")
        return output_dir
    return _finalize(work, staging, output_dir, fingerprint, config, teacher, sampler, candidates, embed, seed)


def _teacher_config(teacher: Any) -> Any:
    if teacher is None:
        return None
    if isinstance(teacher, dict):
        return {k: v for k, v in teacher.items() if k not in ("cache_dir", "concurrency", "timeout")}
    return {"name": teacher.name, "params": teacher.params}


def _finalize(work: Path, staging: Path, output_dir: Path, fingerprint: str, config: dict[str, Any], teacher: Any,
              sampler: PromptSampler | None, candidates: int, embed: bool, seed: int) -> Path:
    first = "mine" if teacher is None else "generate"
    info: dict[str, Any] = {"fingerprint": fingerprint, "config": config, "seed": seed, "n": config["n"]}
    if teacher is None:
        mined = block_stats(work, first, "mine exercises")
        skipped = block_stats(work, first, "readable")
        info.update(generator="mined", candidates=mined.get("candidates", 0), with_doctests=mined.get("with_doctests", 0),
                    rejected={k.removeprefix("rejected_"): v for k, v in mined.items() if k.startswith("rejected_")},
                    skipped_files={k.removeprefix("dropped_"): v for k, v in skipped.items() if k.startswith("dropped_")})
        if config["require_tests"]:
            info["rejected"]["no_doctests"] = block_stats(work, first, "require_tests").get("dropped_no_doctests", 0)
            info["with_doctests"] = info["candidates"] - info["rejected"]["no_doctests"]
            info["candidates"] = info["with_doctests"]
        list_sizes = None
    else:
        teacher_stats: dict[str, int] = {}
        for name in ("teach", "independent_tests"):
            for k, v in block_stats(work, first, name).items():
                if k.startswith("teacher_"):
                    teacher_stats[k.removeprefix("teacher_")] = teacher_stats.get(k.removeprefix("teacher_"), 0) + v
        info.update(generator=_teacher_config(teacher).get("name") or f"{teacher['backend']}:{teacher['model']}",
                    teacher_stats=teacher_stats, params=_teacher_config(teacher).get("params"))
        list_sizes = sampler.list_sizes()
    kept = block_stats(work, "write", "take chosen").get("taken", 0)
    verified = _verified_counts(staging)
    by_tests = sum(v for k, v in verified.items() if k != "executed")
    info.update(stages={f"{s}/{b['name']}": b["stats"] for s in (first, "verify", "write") for b in stage_stats(work, s)},
                removed_by_reason=removed_by_reason(work, [first, "verify"], REMOVING), verified=verified,
                not_chosen=block_stats(work, "write", "take chosen").get("not_chosen", 0),
                verified_by_tests_share=round(by_tests / kept, 4) if kept else 0.0)
    report, markdown = diversity_section(staging, lambda r: r["prompt"] + r["completion"], list_sizes, embed, seed)
    info["diversity"] = report
    how = ("tests from a separate request than the solution, best of "
           f"{candidates} candidates by CodeT dual agreement" if teacher is not None else
           f"the standard library's doctests ({info.get('with_doctests', 0)} of {info.get('candidates', 0)} mined "
           "candidates have them); the others were only executed")
    sections = {"Verification": (f"{by_tests} of {kept} exercises ({info['verified_by_tests_share']:.1%}) are verified "
                                 f"by tests: {how}. Counts by kind: {json.dumps(verified, sort_keys=True)}."),
                "Removed records": "Under `removed/` with `removed_by` and `removed_reason`: " + (
                    ", ".join(f"{k} {v}" for k, v in info["removed_by_reason"].items()) or "none") + ".",
                "Diversity": markdown}
    out = finalize_dataset(staging, output_dir, name="exercises", description=DESCRIPTION, build_info=info,
                           sections=sections, tags=["synthetic"])
    print(f"wrote {read_build_info(out)['rows']} exercises to {out}")
    return out


def _verified_counts(staging: Path) -> dict[str, int]:
    """`verified` kind -> rows, read from the shards' one column."""
    import pyarrow.parquet as pq

    counts: dict[str, int] = {}
    for shard in sorted((staging / "data").glob("*.parquet")):
        for value in pq.read_table(shard, columns=["verified"]).column("verified").to_pylist():
            counts[value] = counts.get(value, 0) + 1
    return dict(sorted(counts.items()))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--require-tests", action="store_true",
                        help="mined default: keep only functions whose doctests pass (default: also those that run)")
    parser.add_argument("--exec-timeout", type=float, default=TIMEOUT, help="seconds per verification program")
    parser.add_argument("--candidates", type=int, default=3, help="with a teacher: solutions per exercise, ranked by "
                        "the independent tests (CodeT)")
    add_builder_arguments(parser, "exercises")
    add_executor_arguments(parser)


def main(args: argparse.Namespace) -> None:
    kwargs = builder_kwargs(args)
    kwargs["teacher"] = teacher_options(args)
    out = build_exercises(args.output, require_tests=args.require_tests, timeout=args.exec_timeout,
                          candidates=args.candidates, executor=executor_options(args), **kwargs)
    print(f"wrote {out}")

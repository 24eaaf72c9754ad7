"""Build a synthetic Python textbook (column `text`): teacher-written sections, or mined from the stdlib.

With a teacher (`--teacher-url` + `--teacher-model`, or `--teacher-local`), each section answers one
constrained prompt (topic x audience x style x difficulty, phi-1 section 2.2), sampled with the seed from the
lists in datasets_builders/data/ (replace them with --topics FILE etc.). Replies are cached beside the output
(OUTPUT.cache/), so a killed run started again asks only for what is missing and writes the same records.
Without a teacher, sections are mined from the standard library's module and class docstrings with their code.
Every record keeps the prompt and constraints it was built from; the card carries a diversity report.

Examples:
    phi data textbook --output out/textbook --n 200 --seed 0
    phi data textbook --output out/textbook --n 1000 --teacher-url http://localhost:8000/v1 \\
        --teacher-model Qwen/Qwen2.5-7B-Instruct --concurrency 16
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .diversity import write_with_report
from .mining import mine_sections, seeded_order
from .pipeline import Filter, Record, Step, run_pipeline
from .prompts import PromptSampler
from .sources import LocalPythonFiles
from .teachers import add_builder_arguments, builder_kwargs

MIN_CHARS = 100
TEACHER_LICENSE = "generated (check the teacher model's terms)"


class Take(Step):
    """Stop after `n` records (None: all); upstream steps are lazy, so nothing beyond the n-th is computed."""

    name = "take"

    def __init__(self, n: int | None):
        super().__init__()
        self.n = n

    def run(self, records: Iterable[Record]) -> Iterator[Record]:
        for record in records:
            if self.n is not None and self.stats["kept"] >= self.n:
                return
            self.stats["kept"] += 1
            yield record


class ReplyFilter(Filter):
    """A teacher reply becomes the section's `text`; missing (failed request), empty or too-short ones are removed."""

    name = "reply"

    def __init__(self, min_chars: int = MIN_CHARS):
        super().__init__()
        self.min_chars = min_chars

    def keep(self, record: Record) -> bool | tuple[bool, str]:
        reply = record.pop("reply")
        if reply is None:
            return False, "request_failed"
        record["text"] = reply.strip()
        if not record["text"]:
            return False, "empty_reply"
        if len(record["text"]) < self.min_chars:
            return False, "too_short"
        return True


def teacher_records(teacher: Any, sampler: PromptSampler, kind: str, n: int) -> list[Record]:
    """Ask the teacher one constrained prompt per record; `reply` holds its answer (None if it failed)."""
    prompts = sampler.sample(kind, n)
    replies = teacher.generate(prompts)
    if prompts and all(r is None for r in replies):
        failed = {k: v for k, v in teacher.stats.items() if k.startswith("failed")}
        raise ConnectionError(f"teacher {teacher.name}: every request failed ({failed}); check the URL, the model "
                              "name and the server's log")
    return [{"id": p.id, "reply": r, "source": teacher.name, "license": TEACHER_LICENSE, "generator": teacher.name,
             **p.provenance()} for p, r in zip(prompts, replies)]


def build_textbook(output_dir: str | os.PathLike, teacher: Any = None, n: int | None = 200, seed: int = 0,
                   sampler: PromptSampler | None = None, source_root: str | os.PathLike | None = None,
                   min_chars: int = MIN_CHARS, embed: bool = True) -> Path:
    """Build the textbook dataset at `output_dir` and return it.

    teacher=None mines the standard library (or `source_root`); otherwise `teacher` (OpenAITeacher /
    TransformersTeacher) answers `n` prompts from `sampler` (default: the shipped lists with `seed`).
    """
    if teacher is None:
        files = LocalPythonFiles(source_root)
        candidates, rejected = mine_sections(files)
        result = run_pipeline([Take(n)], seeded_order(candidates, seed))
        info: dict[str, Any] = {"generator": "mined", "candidates": len(candidates), "rejected": dict(rejected),
                                "skipped_files": dict(files.skipped)}
        list_sizes = None
    else:
        if n is None:
            raise ValueError("--n is required with a teacher (how many sections to generate)")
        sampler = sampler or PromptSampler(seed)
        result = run_pipeline([ReplyFilter(min_chars)], teacher_records(teacher, sampler, "textbook", n))
        info = {"generator": teacher.name, "teacher_stats": dict(teacher.stats), "params": teacher.params}
        list_sizes = sampler.list_sizes()
    info.update(seed=seed, n=n, stages=result.stats, removed_by_reason=result.removed_by_reason())
    return write_with_report(result.kept, output_dir, name="textbook", text_of=lambda r: r["text"],
                             description="Synthetic Python textbook sections (phi-1 style).", build_info=info,
                             removed=result.removed, list_sizes=list_sizes, embed=embed, seed=seed)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--min-chars", type=int, default=MIN_CHARS, help="shorter teacher replies are removed")
    add_builder_arguments(parser, "sections")


def main(args: argparse.Namespace) -> None:
    out = build_textbook(args.output, min_chars=args.min_chars, **builder_kwargs(args))
    print(f"wrote {out}")

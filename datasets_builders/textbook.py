"""Build a synthetic Python textbook (column `text`): teacher-written sections, or mined from the stdlib.

With a teacher (`--teacher-url` + `--teacher-model`, or `--teacher-local` on `--device`), each section answers
one prompt seeded by a real code extract (Cosmopedia's method; `generate/seeds.py`): an extract of the seed
corpus (`--seed-input`, default the standard library) x audience x style x difficulty (lists in
datasets_builders/data/, replace them with --audiences FILE etc.), so the prompt space grows with the seed
corpus. It runs as a datatrove pipeline (seeds -> plan -> prompts -> teach -> write) on `--executor`;
`--dry-run` stops after planning the prompts and says how many distinct ones there are. Replies are cached
(OUTPUT.cache/), so a killed run started again asks only for what is missing; failed requests land in
removed/ with the reason. Without a teacher, sections are mined from the standard library's module and
class docstrings with their code (stages mine -> choose -> write: the first `--n` of a seeded draw). Every record keeps its prompt, constraints and seed; the card carries a
diversity report (on a sample of at most 2,000 records).

Examples:
    phi data textbook --output out/textbook --n 200 --seed 0
    phi data textbook --output out/textbook --n 500000 --teacher-url http://localhost:8000/v1 \\
        --teacher-model Qwen/Qwen2.5-7B-Instruct --concurrency 16 --dry-run
    phi data textbook --output out/textbook --n 1000 --teacher-local Qwen/Qwen2.5-0.5B-Instruct --device cuda
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from .filters.prefilters import Readable
from .generate.seeds import PLAN_FILE, SEEDED_FIELDS, PlanPrompts, SeededPrompts, SeedExtracts, seeded_lists
from .generate.teach import ReplyFilter, Teach
from .hub_dataset import is_complete, read_build_info
from .mining import MineSections
from .pipelines.executors import (
    ExecutorOptions,
    Stage,
    add_executor_arguments,
    check_work_dir,
    executor_options,
    open_build,
    run_stages,
    stage_stats,
)
from .pipelines.synthetic import ChooseFirst, SeededKey, TakeChosen, block_stats, diversity_section, sample_rows
from .prompts import PromptSampler
from .readers import IntermediateReader, PythonFilesReader, make_reader
from .teachers import add_builder_arguments, builder_kwargs, teacher_options
from .writers import HubWriter, IntermediateWriter, RemovedWriter, finalize_dataset

MIN_CHARS = 100
TEACHER_LICENSE = "generated (check the teacher model's terms)"


def textbook_stages(options: dict[str, Any], n: int, seed: int, sampler: PromptSampler, work: Path, staging: Path,
                    executor: ExecutorOptions, seed_input: str | None, min_chars: int, dry_run: bool) -> list[Stage]:
    """seeds -> plan -> prompts [-> teach + reply filter -> Hub writer] as datatrove stages."""
    tasks = executor.tasks
    lists = seeded_lists(sampler)
    combinations = 1
    for field in SEEDED_FIELDS:
        combinations *= len(lists[field])
    template = sampler.templates.get("textbook_seeded")
    if not template:
        raise ValueError("the prompt templates have no `textbook_seeded:` entry (fields {extract}, {subject}, "
                         "{seed_path}, {audience}, {style}, {difficulty}); see datasets_builders/data/prompts.yaml")
    plan = [
        Stage("seeds", [make_reader(seed_input), SeedExtracts(), IntermediateWriter(work / "seeds")], tasks),
        Stage("plan", [PlanPrompts(work / "seeds", work, n, tasks, combinations)], 1),
        Stage("prompts", [IntermediateReader(work / "seeds"), SeededPrompts(work, lists, template, seed),
                          IntermediateWriter(work / "prompts")], tasks),
    ]
    if not dry_run:
        plan.append(Stage("generate", [IntermediateReader(work / "prompts"), Teach(options),
                                       ReplyFilter(min_chars, RemovedWriter(staging, "reply")), HubWriter(staging)],
                          tasks))
    return plan


def build_textbook(output_dir: str | os.PathLike, teacher: dict[str, Any] | None = None, n: int | None = 200,
                   seed: int = 0, sampler: PromptSampler | None = None, source_root: str | os.PathLike | None = None,
                   min_chars: int = MIN_CHARS, embed: bool = True, seed_input: str | None = None,
                   executor: ExecutorOptions | None = None, dry_run: bool = False) -> Path:
    """Build the textbook dataset at `output_dir` and return it (with `dry_run`: the work folder with the plan).

    teacher=None mines the standard library (or `source_root`); otherwise `teacher` (options of
    `teachers.make_teacher`) answers `n` prompts seeded by `seed_input` (default: the standard library).
    """
    if teacher is None:
        return build_mined_textbook(Path(output_dir), n, seed, source_root, embed, executor or ExecutorOptions())
    if not n:
        raise ValueError("--n is required with a teacher (how many sections to generate)")
    output_dir = Path(output_dir)
    sampler = sampler or PromptSampler(seed)
    executor = executor or ExecutorOptions()
    work = output_dir.with_name(output_dir.name + ".work")
    staging = output_dir.with_name(output_dir.name + ".staging")
    config = {"n": n, "seed": seed, "seed_input": seed_input, "min_chars": min_chars, "tasks": executor.tasks,
              "lists": seeded_lists(sampler), "template": sampler.templates.get("textbook_seeded"),
              "teacher": {k: v for k, v in teacher.items() if k not in ("cache_dir", "concurrency", "timeout")}}
    fingerprint = json.dumps(config, sort_keys=True, default=str)
    if is_complete(output_dir) and read_build_info(output_dir).get("config") == json.loads(fingerprint):
        print(f"{output_dir}: already complete with these options")
        return output_dir
    check_work_dir(work, hash_text(fingerprint))
    if not (work / "logs" / "generate").is_dir():
        shutil.rmtree(staging, ignore_errors=True)
    stages = textbook_stages(teacher, n, seed, sampler, work, staging, executor, seed_input, min_chars, dry_run)
    if not run_stages(stages, work, executor):
        print(f"submitted to Slurm; logs in {work / 'logs'}")
        return output_dir
    plan = json.loads((work / PLAN_FILE).read_text())
    if dry_run:
        ids = set()
        for f in sorted((work / "prompts").glob("*.jsonl")):
            with f.open("rb") as lines:
                ids.update(json.loads(line)["id"] for line in lines)
        plan["distinct_prompts"] = len(ids)
        (work / PLAN_FILE).write_text(json.dumps(plan))
        print(f"dry run: {plan['n']} prompts planned from {plan['extracts']} seed extracts x {plan['combinations']} "
              f"combinations, {len(ids)} distinct, in {work / 'prompts'}; no request sent")
        return work
    generate = {b["name"]: b["stats"] for b in stage_stats(work, "generate")}
    lists = {"audience": len(sampler.lists["audiences"]), "style": len(sampler.lists["styles"]),
             "difficulty": len(sampler.lists["difficulties"])}
    report, markdown = diversity_section(staging, lambda r: r["text"], lists, embed, seed)
    generator = next(iter(sample_rows(staging / "data", 1, ["generator"])), {}).get("generator")
    removed = {f"reply:{k.removeprefix('dropped_')}": v for k, v in generate.get("reply", {}).items()
               if k.startswith("dropped_")}
    info = {"generator": generator, "config": config,
            "seed": seed, "n": n, "plan": plan, "stages": generate, "removed_by_reason": removed,
            "diversity": report}
    sections = {"Prompts": (f"{n} prompts seeded by {plan['extracts']} real code extracts x {plan['combinations']} "
                            "audience / style / difficulty combinations (Cosmopedia's method); each record keeps its "
                            "prompt, constraints and seed (`seed_path`, `seed_symbol`)."),
                "Failures": "Prompts without a usable reply are under `removed/` with the reason: " + (
                    ", ".join(f"{k} {v}" for k, v in removed.items()) or "none") + ".",
                "Diversity": markdown}
    out = finalize_dataset(staging, output_dir, name="textbook", description="Synthetic Python textbook sections "
                           "(phi-1 style), seeded by real code extracts.", build_info=info, sections=sections,
                           tags=["synthetic"])
    print(f"wrote {read_build_info(out)['rows']} sections to {out}")
    return out


def hash_text(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def build_mined_textbook(output_dir: Path, n: int | None, seed: int, source_root: str | os.PathLike | None,
                         embed: bool, executor: ExecutorOptions) -> Path:
    """The offline default: module / class docstrings with their code (mining.MineSections), the first `n` of
    a seeded draw, as datatrove stages: mine -> choose -> write."""
    config = {"generator": "mined", "n": n, "seed": seed, "source_root": str(source_root), "tasks": executor.tasks}
    fingerprint = hash_text(json.dumps(config, sort_keys=True))
    if (folders := open_build(output_dir, fingerprint)) is None:
        return output_dir
    work, staging = folders
    stages = [Stage("mine", [PythonFilesReader(source_root), Readable(), MineSections(), SeededKey(seed),
                             IntermediateWriter(work / "candidates")], executor.tasks),
              Stage("choose", [ChooseFirst(work / "candidates", work, n)], 1),
              Stage("write", [IntermediateReader(work / "candidates"), TakeChosen(work), HubWriter(staging)],
                    executor.tasks)]
    if not run_stages(stages, work, executor):
        print(f"submitted to Slurm; logs in {work / 'logs'}")
        return output_dir
    mined = block_stats(work, "mine", "mine sections")
    skipped = block_stats(work, "mine", "readable")
    taken = block_stats(work, "write", "take chosen")
    report, markdown = diversity_section(staging, lambda r: r["text"], None, embed, seed)
    info: dict[str, Any] = {
        "generator": "mined", "fingerprint": fingerprint, "config": config, "seed": seed, "n": n,
        "candidates": mined.get("candidates", 0),
        "rejected": {k.removeprefix("rejected_"): v for k, v in mined.items() if k.startswith("rejected_")},
        "skipped_files": {k.removeprefix("dropped_"): v for k, v in skipped.items() if k.startswith("dropped_")},
        "not_chosen": taken.get("not_chosen", 0), "removed_by_reason": {},
        "stages": {f"{s}/{b['name']}": b["stats"] for s in ("mine", "write") for b in stage_stats(work, s)},
        "diversity": report}
    out = finalize_dataset(staging, output_dir, name="textbook", description="Synthetic Python textbook sections "
                           "(phi-1 style).", build_info=info, sections={"Diversity": markdown}, tags=["synthetic"])
    print(f"wrote {read_build_info(out)['rows']} sections to {out}")
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--min-chars", type=int, default=MIN_CHARS, help="shorter teacher replies are removed")
    parser.add_argument("--seed-input", default=None, help="seed corpus for the prompts: a folder of .py files, a "
                        "dataset folder (e.g. the filtered-code output), JSONL / Parquet (default: the standard library)")
    parser.add_argument("--dry-run", action="store_true", help="plan the prompts only (no request sent)")
    add_builder_arguments(parser, "sections")
    add_executor_arguments(parser)


def main(args: argparse.Namespace) -> None:
    kwargs = builder_kwargs(args)
    kwargs["teacher"] = teacher_options(args)
    out = build_textbook(args.output, min_chars=args.min_chars, seed_input=args.seed_input,
                         executor=executor_options(args), dry_run=args.dry_run, **kwargs)
    print(f"wrote {out}")

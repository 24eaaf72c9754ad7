"""Reproduce the whole phi-1 recipe at tiny scale, in one run directory, with a report.

Stages (each reuses the project's builders / recipes / evaluators, and is skipped on a rerun once its
marker `stages/<name>.json` exists, so a killed run resumes at the stage it was in; pretraining and
finetuning resume from their latest checkpoint):
standard-library corpus -> filtered code -> mined textbook + exercises -> decontamination ->
tokenizer -> pretrain -> finetune on exercises -> HumanEval, MBPP, multiple choice -> report.
`--ablation [--seeds K]` adds the paper's central comparison (recipes/ablation.py): the same pretraining compute
on the unfiltered corpus, K seeds per arm, scored in bits per byte on items neither arm trained on.

Example:
    phi reproduce                                              # recipes/configs/tiny.yaml, runs/tiny
    phi reproduce --ablation --seeds 3 --run_dir runs/tiny-ablation
    phi reproduce --pretrain.max_steps 50 --finetune.max_steps 10 --eval_limit 5 --run_dir runs/smoke
    phi reproduce --push_to_hub my-org --dry_run               # what would be uploaded
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recipes.config import add_config_arguments, load_config
from recipes.profiling import StageProfiler

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "recipes" / "configs" / "tiny.yaml"
DEFAULT_FINETUNE_CONFIG = REPO / "recipes" / "configs" / "finetune-tiny.yaml"


@dataclass
class Run:
    """The run directory and the knobs every stage reads."""

    dir: Path
    args: argparse.Namespace
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    # multiple-choice tasks whose data the start-up check did not find: {task: why}, skipped without a retry
    unavailable: dict[str, str] = field(default_factory=dict)

    def path(self, *parts: str) -> Path:
        return self.dir.joinpath(*parts)

    def marker(self, stage: str) -> Path:
        return self.path("stages", f"{stage}.json")


@dataclass
class Stage:
    name: str
    run: Callable[[Run], dict[str, Any]]
    description: str


def run_stage(run: Run, stage: Stage) -> dict[str, Any]:
    """Run `stage` unless its marker says it finished; the marker (written last) holds its summary."""
    marker = run.marker(stage.name)
    if marker.is_file():
        summary = json.loads(marker.read_text())
        print(f"[{stage.name}] done already ({summary['seconds']:.0f}s), skipping")
    else:
        print(f"[{stage.name}] {stage.description}")
        profiler = StageProfiler().start()
        start, cpu = time.time(), os.times()
        try:
            summary = {"description": stage.description, **stage.run(run)}
        finally:
            seconds = time.time() - start
            profile = profiler.stop(wall=seconds)
        summary["seconds"] = round(seconds, 1)
        # CPU seconds of this process and its finished children: what the stage costs, whatever the machine's load
        summary["cpu_seconds"] = round(sum(os.times()[:4]) - sum(cpu[:4]), 1)
        summary["profile"] = profile  # sampled sub-steps, scaled to the stage's wall time (recipes/profiling.py)
        summary["load_average"] = round(os.getloadavg()[0], 2)  # how shared the machine was
        marker.parent.mkdir(parents=True, exist_ok=True)
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(json.dumps(summary, indent=2, default=str))
        os.replace(tmp, marker)
    run.summaries[stage.name] = summary
    return summary


def dataset_summary(folder: Path) -> dict[str, Any]:
    from datasets_builders.hub_dataset import read_build_info

    info = read_build_info(folder)
    return {"output": str(folder), "rows": info.get("rows"), "removed_rows": info.get("removed_rows"),
            "build_info": info}


# ---- data stages ------------------------------------------------------------------------------


def filtered_code(run: Run, quality_filter: bool = True) -> dict[str, Any]:
    from datasets_builders.pipelines.filtered_code import build_filtered_code

    name = "filtered-code" if quality_filter else "unfiltered-code"
    out = build_filtered_code(run.args.source, run.path("datasets", name), annotate=run.args.annotate,
                              keep_fraction=run.args.keep_fraction if quality_filter else 1.0, seed=run.args.seed,
                              quality_filter=quality_filter, embed_precision=run.args.embedding_precision,
                              device=run.args.embedding_device)
    return {"input": str(run.args.source or "python standard library"), **dataset_summary(out)}


def textbook(run: Run) -> dict[str, Any]:
    from datasets_builders.textbook import build_textbook

    out = build_textbook(run.path("datasets", "textbook"), n=run.args.textbook_n, seed=run.args.seed,
                         source_root=run.args.source)
    return {"input": "python standard library (mined module / class docstrings)", **dataset_summary(out)}


def exercises(run: Run) -> dict[str, Any]:
    from datasets_builders.exercises import build_exercises

    out = build_exercises(run.path("datasets", "exercises-raw"), n=run.args.exercises_n, seed=run.args.seed,
                          source_root=run.args.source)
    return {"input": "python standard library (mined functions, verified by execution)", **dataset_summary(out)}


def decontamination(run: Run) -> dict[str, Any]:
    from datasets_builders.decontaminate import decontaminate

    out = decontaminate(run.path("datasets", "exercises-raw"), run.path("datasets", "exercises"),
                        detectors=run.args.detectors, embedding_cache=run.path("cache"),
                        embedding_precision=run.args.embedding_precision, embedding_device=run.args.embedding_device)
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").is_file() else {}
    return {"input": str(run.path("datasets", "exercises-raw")), **dataset_summary(out), "report": report}


def tokenizer(run: Run) -> dict[str, Any]:
    from datasets_builders.tokenizer import train_tokenizer

    sources = [run.path("datasets", "filtered-code"), run.path("datasets", "textbook")]
    tok = train_tokenizer(sources, run.path("tokenizer"), vocab_size=run.args.vocab_size)
    return {"input": [str(s) for s in sources], "output": str(run.path("tokenizer")), "vocab_size": len(tok)}


# ---- training stages --------------------------------------------------------------------------


def _overrides(run: Run, stage: str) -> dict[str, Any]:
    """The `--pretrain.key value` / `--finetune.key value` flags: the recipes' own syntax, types and checks."""
    from recipes.config import ConfigParser, overrides_from

    return ConfigParser().parse(overrides_from(run.args, f"{stage}."))


def _resume(output_dir: Path) -> dict[str, Any]:
    from recipes.training import list_checkpoints

    return {"resume_from_checkpoint": "latest"} if output_dir.is_dir() and list_checkpoints(output_dir) else {}


def pretrain_stage(run: Run, datasets: list[str], name: str = "pretrain", tokenizer: str = "tokenizer",
                   seed: int | None = None) -> dict[str, Any]:
    from recipes.pretrain import run as pretrain

    out = run.path(name)
    overrides = {"datasets": [{"path": str(run.path("datasets", d))} for d in datasets],
                 "tokenizer": str(run.path(tokenizer)), "packed_dir": str(run.path("packed", name)),
                 "output_dir": str(out), "seed": run.args.seed if seed is None else seed,
                 **_overrides(run, "pretrain"), **_resume(out)}
    result = pretrain(str(run.args.config), overrides)
    return {"input": datasets, "output": str(out / "final"), "config": str(run.args.config), "overrides": overrides,
            "result": result}


def finetune_stage(run: Run, pretrained: str = "pretrain", name: str = "finetune") -> dict[str, Any]:
    from recipes.finetune import run as finetune

    out = run.path(name)
    overrides = {"model": str(run.path(pretrained, "final")), "tokenizer": str(run.path(pretrained, "final")),
                 "datasets": [{"path": str(run.path("datasets", "exercises")), "format": "exercises"}],
                 "packed_dir": str(run.path("packed", name)), "output_dir": str(out), "seed": run.args.seed,
                 **_overrides(run, "finetune"), **_resume(out)}
    result = finetune(str(run.args.finetune_config), overrides)
    return {"input": str(run.path("datasets", "exercises")), "output": str(out / "final"),
            "config": str(run.args.finetune_config), "overrides": overrides, "result": result}


# ---- evaluation stages ------------------------------------------------------------------------


def code_eval_stage(run: Run, task: str, model_dir: str) -> dict[str, Any]:
    from evaluation.code_eval import evaluate_code_task

    out = run.path("eval", Path(model_dir).parent.name, task)
    # One batch for the default 20 problems: a batch decodes until its longest completion ends, so fewer batches
    # are fewer decoding steps (greedy, left padding: the same completions up to fp32 rounding).
    results = evaluate_code_task(task, str(run.path(model_dir)), out_dir=out, limit=run.args.eval_limit,
                                 max_new_tokens=run.args.max_new_tokens, seed=run.args.seed, trust_remote_code=True,
                                 dtype="float32", device="cpu", progress=False, batch_size=run.args.eval_batch_size)
    return {"input": model_dir, "output": str(out), "results": results}


def mc_eval_stage(run: Run, model_dir: str) -> dict[str, Any]:
    from evaluation.multiple_choice import evaluate_multiple_choice
    from evaluation.registry import resolve_tasks

    out = run.path("eval", Path(model_dir).parent.name, "commonsense")
    # Tasks the start-up check found no data for are not asked again (offline, the Hub client would retry
    # each for half a minute); the report lists them with the check's reason.
    tasks = [t for t in resolve_tasks(list(run.args.mc_tasks)) if t not in run.unavailable]
    results = evaluate_multiple_choice(str(run.path(model_dir)), tasks=tasks, out_dir=out,
                                       limit=run.args.mc_limit, seed=run.args.seed, dtype="float32", device="cpu",
                                       trust_remote_code=True, skip_missing=True)
    results["skipped"] = {**{t: f"data not found: {why}" for t, why in run.unavailable.items()}, **results["skipped"]}
    return {"input": model_dir, "output": str(out), "results": results}


MODEL_CARD_BODY = """# {name}

A tiny phi-1-style model trained by `phi reproduce` (phi-textbooks): pretrained on the quality-filtered
standard-library corpus plus mined textbook sections, finetuned on mined, execution-verified and
decontaminated exercises. It exists to show every stage of the recipe working, not to be useful.
Evaluations below are on a small `--limit` of each benchmark; see the run's report.md.

Load it with `AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)`.
"""


def write_model_card(run: Run, stage: str, name: str) -> Path:
    """The evaluated model's README.md: a short body and the `model-index` block of its evaluations."""
    from evaluation.model_card import update_model_card

    readme = run.path(stage, "final", "README.md")
    if not readme.is_file():
        readme.write_text(MODEL_CARD_BODY.format(name=name), encoding="utf-8")
    results = sorted(run.path("eval", stage).glob("*/results.json"))
    update_model_card(readme, name, results)
    return readme


def report_stage(run: Run) -> dict[str, Any]:
    from recipes.report import write_report

    cards = [write_model_card(run, "finetune", "phi-tiny")]
    md, html = write_report(run.dir, run.summaries, ablation=run.args.ablation)
    return {"output": [str(md), str(html), *map(str, cards)]}


def stages(args: argparse.Namespace) -> list[Stage]:
    evals = lambda model, tag: [  # noqa: E731
        Stage(f"eval-humaneval{tag}", lambda r: code_eval_stage(r, "humaneval", model), f"HumanEval on {model}"),
        Stage(f"eval-mbpp{tag}", lambda r: code_eval_stage(r, "mbpp", model), f"MBPP on {model}"),
        Stage(f"eval-commonsense{tag}", lambda r: mc_eval_stage(r, model), f"multiple-choice tasks on {model}"),
    ]
    plan = [
        Stage("filtered-code", filtered_code, "standard library -> pre-filters -> judge labels -> embedding forest"),
        Stage("textbook", textbook, "mine textbook sections from the standard library"),
        Stage("exercises", exercises, "mine exercises from the standard library, verify by execution"),
        Stage("decontaminate", decontamination, "decontaminate exercises against HumanEval and MBPP"),
        Stage("tokenizer", tokenizer, "train a byte-level BPE on filtered code + textbook"),
        Stage("pretrain", lambda r: pretrain_stage(r, ["filtered-code", "textbook"]),
              "pretrain on filtered code + textbook"),
        Stage("finetune", finetune_stage, "finetune on the decontaminated exercises"),
        *evals("finetune/final", ""),
    ]
    if args.ablation:
        from recipes import ablation

        plan += ablation.stages(args)
    return plan


# ---- Hub upload -------------------------------------------------------------------------------


def push(run: Run, org: str, dry_run: bool) -> None:
    from recipes.push import push_folder

    targets = [(run.path("datasets", d), f"{org}/phi-tiny-{d}", "dataset") for d in ("filtered-code", "textbook", "exercises")]
    targets.append((run.path("finetune", "final"), f"{org}/phi-tiny", "model"))
    for folder, repo, kind in targets:
        push_folder(folder, repo, kind, dry_run=dry_run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="pretraining config (YAML)")
    parser.add_argument("--finetune_config", type=Path, default=DEFAULT_FINETUNE_CONFIG)
    parser.add_argument("--run_dir", "--output", dest="run_dir", type=Path, default=None,
                        help="default: runs/<config name>")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source", default=None, help="folder of .py files for every data stage (default: the stdlib)")
    parser.add_argument("--annotate", type=int, default=300, help="files the judge labels for the quality classifier")
    parser.add_argument("--keep_fraction", type=float, default=0.5, help="fraction the quality filter keeps")
    parser.add_argument("--textbook_n", type=int, default=400, help="textbook sections to mine")
    parser.add_argument("--exercises_n", type=int, default=1000, help="exercises to mine (verified)")
    parser.add_argument("--detectors", type=lambda s: s.split(","), default=["ngram", "embedding", "ast"],
                        help="decontamination detectors")
    parser.add_argument("--embedding_precision", choices=("auto", "fp32", "bf16", "int8"), default="auto",
                        help="embedder of the quality classifier and decontamination (datasets_builders/embedder.py)")
    parser.add_argument("--embedding_device", default="cpu", help="embedder device: cpu, cuda, cuda:1 or auto")
    parser.add_argument("--vocab_size", type=int, default=8192)
    # Config overrides in the recipes' syntax behind a prefix: --pretrain.max_steps 50 --finetune.lora
    add_config_arguments(parser, "pretrain.")
    add_config_arguments(parser, "finetune.")
    parser.add_argument("--eval_limit", type=int, default=20, help="HumanEval / MBPP problems evaluated")
    parser.add_argument("--max_new_tokens", type=int, default=128)
    parser.add_argument("--eval_batch_size", type=int, default=32, help="HumanEval / MBPP prompts generated together")
    parser.add_argument("--mc_tasks", type=lambda s: s.split(","), default=["commonsense"],
                        help="multiple-choice tasks or groups of the evaluation registry (default: commonsense)")
    parser.add_argument("--mc_limit", type=int, default=50, help="documents per multiple-choice task")
    parser.add_argument("--ablation", action="store_true", help="also train on the unfiltered corpus, same compute")
    parser.add_argument("--seeds", type=int, default=1, help="with --ablation: seeds per arm (init + data order)")
    parser.add_argument("--push_to_hub", metavar="ORG", default=None, help="upload datasets and model (online)")
    parser.add_argument("--dry_run", action="store_true", help="with --push_to_hub: list what would be uploaded")
    parser.add_argument("--restart", action="store_true", help="delete the run directory first")


def check_benchmark_data(args: argparse.Namespace) -> dict[str, str]:
    """Before any work: the data decontamination and code evaluation need must be there (one line naming the
    Hub id and PHI_DATA_DIR otherwise); multiple-choice tasks without data are named now, returned as
    {task: what is missing}, and skipped later."""
    from evaluation.data import check_data, missing_data, resolve_data_dir
    from evaluation.registry import resolve_tasks

    check_data(["humaneval", "mbpp"])
    data_dir = resolve_data_dir(None)
    missing = {task: "; ".join(m) for task in resolve_tasks(args.mc_tasks) if (m := missing_data([task], data_dir))}
    if missing:
        print(f"multiple-choice data not found, these tasks will be skipped: {'; '.join(missing.values())}")
    return missing


def main(args: argparse.Namespace) -> None:
    if not args.config.is_file():
        raise FileNotFoundError(f"{args.config}: no such config; the presets are in {DEFAULT_CONFIG.parent}")
    run_dir = args.run_dir or Path("runs") / args.config.stem
    if args.restart:
        shutil.rmtree(run_dir, ignore_errors=True)
    if args.ablation:  # every data stage reads the source tree without the yardstick's held-out files
        from recipes.ablation import heldout_view

        if args.seeds < 1:
            raise ValueError(f"--seeds {args.seeds}: give at least 1")
        args.source = str(heldout_view(run_dir, args.source))
    run = Run(run_dir, args)
    for stage, config in (("pretrain", args.config), ("finetune", args.finetune_config)):  # bad keys: before any work
        try:
            load_config(config, _overrides(run, stage))
        except ValueError as err:
            raise ValueError(f"--{stage}.* overrides: {err}") from None
    run.unavailable = check_benchmark_data(args)
    start = time.time()
    for stage in stages(args):
        run_stage(run, stage)
    run.marker("report").unlink(missing_ok=True)  # the report always reflects every stage
    run_stage(run, Stage("report", report_stage, "write report.md / report.html"))
    print(f"done in {time.time() - start:.0f}s: {run.path('report.md')}")
    if args.push_to_hub:
        push(run, args.push_to_hub, args.dry_run)

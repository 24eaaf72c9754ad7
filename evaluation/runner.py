"""Evaluate a model on any mix of registry tasks and groups, each with its own evaluator.

`--tasks` takes task names and groups (tags: `phi-1.5-report`, `code`, `commonsense`, `evalplus`, `math`,
...; `--list` shows them). Every dataset the tasks need is checked before the model loads; a missing one
stops the run with one line naming its Hub id and PHI_DATA_DIR. Generation tasks take completions from a
local model (--model) or any OpenAI-compatible server (--base-url, --model-name); multiple-choice tasks
need log-likelihoods, so they need --model. Each task writes into OUTPUT/<task>/ (its own results.json);
OUTPUT/results.json and results.md gather the headline numbers (evaluation/report.py).

Examples:
    phi eval --tasks humaneval,mbpp,piqa --model microsoft/phi-1_5 --output runs/eval
    phi eval --tasks code --base-url http://localhost:8000/v1 --model-name phi-1_5 --output runs/served
    phi eval --tasks phi-1.5-report --model ./ckpt --limit 50 --output runs/quick
    phi eval --tasks my_task --include_path ./my_tasks --model ./ckpt --output runs/mine
    phi eval --list
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from evaluation import registry
from evaluation.code_eval import add_generation_arguments, add_model_arguments, make_backend, run_task
from evaluation.data import check_data
from evaluation.report import write_summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tasks", default=None, help="comma-separated tasks and groups, e.g. humaneval,mbpp,piqa")
    parser.add_argument("--list", action="store_true", help="list the registered tasks and groups, then exit")
    parser.add_argument("--include_path", action="append", default=[],
                        help="also read task folders from this folder (repeatable; or $PHI_TASKS_PATH)")
    parser.add_argument("--model", default=None, help="local checkpoint folder or Hub id")
    parser.add_argument("--output", default=None, help="output folder (one subfolder per task)")
    parser.add_argument("--num_fewshot", default=None, help="multiple choice: N, or task=N,...")
    parser.add_argument("--mc_batch_size", type=int, default=32, help="multiple choice: rows per forward pass")
    add_model_arguments(parser)
    add_generation_arguments(parser)


def list_tasks() -> str:
    lines = ["tasks:"]
    for name in registry.known_tasks():
        spec = registry.get_task(name)
        lines.append(f"  {name:<16} {spec.output_type:<16} {', '.join(spec.tags)}")
    lines.append("groups: " + ", ".join(f"{g} ({len(t)})" for g, t in registry.groups().items()))
    return "\n".join(lines)


def evaluate(names: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Run every task; returns {task: its results.json}."""
    kinds = {n: registry.get_task(registry.subtask_base(n) or n).output_type for n in names}
    mc = [n for n in names if kinds[n] == "multiple_choice"]
    if mc and not args.model:
        raise ValueError(f"multiple-choice tasks ({', '.join(mc)}) are scored by log-likelihood: pass --model "
                         "(a local checkpoint or Hub id); a completions server cannot score them")
    check_data(names, args.data_dir)   # before the model loads
    out = Path(args.output)
    backend = make_backend(args, out / "_requests") if args.base_url or args.model else None
    results: dict[str, Any] = {}
    for name in names:
        if kinds[name] == "generate_until":
            if backend is None:
                raise ValueError("generation tasks need --model or --base-url (+ --model-name)")
            results[name] = run_task(name, args, out / name, backend)
        else:
            from evaluation.multiple_choice import evaluate_multiple_choice
            model = backend.model if hasattr(backend, "model") else args.model
            tokenizer = getattr(backend, "tokenizer", None)
            results[name] = evaluate_multiple_choice(model, tokenizer, [name], out / name, limit=args.limit,
                                                     num_fewshot=args.num_fewshot, batch_size=args.mc_batch_size,
                                                     data_dir=args.data_dir, seed=args.seed)
    return results


def main(args: argparse.Namespace) -> None:
    for folder in args.include_path:
        registry.register_tasks_dir(folder)
    if args.list:
        print(list_tasks())
        return
    if not args.tasks or not args.output:
        raise ValueError("give --tasks (tasks or groups; `phi eval --list` shows them) and --output")
    if args.allow_unisolated:
        from evaluation.sandbox import allow_unisolated_execution
        allow_unisolated_execution()
    results = evaluate(registry.resolve_tasks(args.tasks), args)
    print(write_summary(results, Path(args.output)))

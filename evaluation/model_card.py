"""Evaluation results -> the `model-index` block of a Hugging Face model card.

Reads the results.json of multiple-choice runs (evaluation/multiple_choice.py: accuracies per task) and of
generation tasks (evaluation/code_eval.py: pass@k, EvalPlus base / plus, exact match), and writes the Hub's
`model-index` metadata (one result per task: task, dataset, metrics, source), which the Hub shows as the
evaluation results of the model. Values are as the results files give them: fractions (0.766 = 76.6%).

Example:
    python -m evaluation.model_card --name phi-1_5-repro --readme runs/final/README.md \\
        runs/eval/commonsense/results.json runs/eval/humaneval/results.json runs/eval/mbpp/results.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

METRIC_NAMES = {"acc": "accuracy", "acc_norm": "normalized accuracy"}
TASK = {"type": "text-generation", "name": "Text Generation"}
FRONT_MATTER = re.compile(r"\A---\n(.*?\n)?---\n", re.DOTALL)


class _PlainDumper(yaml.SafeDumper):
    """No `&id001` anchors: the Hub's model-index parser wants every entry written out."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def read_results(source: dict | str | os.PathLike) -> dict[str, Any]:
    """A results dict, a results.json, or a folder that holds one."""
    if isinstance(source, dict):
        return source
    path = Path(source)
    path = path / "results.json" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no results.json here; pass the --output folder of a `phi eval` run")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None


def _metric(kind: str, value: float, name: str) -> dict[str, Any]:
    return {"type": kind, "value": round(float(value), 4), "name": name, "verified": False}


def _source(url: str | None) -> dict[str, str]:
    return {"name": "phi-textbooks evaluation", **({"url": url} if url else {})}


def commonsense_entries(results: dict[str, Any], url: str | None = None) -> list[dict[str, Any]]:
    """One model-index result per task of a `phi eval commonsense` results.json."""
    entries = []
    for name, r in results["results"].items():
        dataset = {"name": r.get("title", name), "type": (r.get("dataset") or {}).get("hub_id") or name,
                   "split": r["split"], "args": {"num_few_shot": r["num_fewshot"]}}
        if (r.get("dataset") or {}).get("config"):
            dataset["config"] = r["dataset"]["config"]
        metrics = [_metric(m, r[m], METRIC_NAMES.get(m, m)) for m in r.get("metrics", ["acc"]) if r.get(m) is not None]
        entries.append({"task": TASK, "dataset": dataset, "metrics": metrics, "source": _source(url)})
    return entries


def _generation_dataset(task: str, split: str) -> dict[str, Any]:
    """Name, Hub id and config of a generation task, from its registry folder."""
    from evaluation.registry import get_task, known_tasks

    if task not in known_tasks():
        return {"name": task, "type": task}
    spec = get_task(task)
    config = spec.config
    block = config["splits"].get(split, {}) if "splits" in config else config.get("data", {})
    hub = block.get("hub") or {}
    dataset = {"name": spec.title, "type": hub.get("path", task)}
    if hub.get("name"):
        dataset["config"] = hub["name"]
    return dataset


def code_entry(results: dict[str, Any], url: str | None = None) -> dict[str, Any]:
    """The model-index result of a generation task's results.json (pass@k; EvalPlus base and plus; exact
    match), with the sandbox mode the programs ran in."""
    split = results.get("split", "test")
    dataset = {**_generation_dataset(results["task"], split), "split": split, "args": {"num_few_shot": 0}}
    execution = results.get("protocol", {}).get("execution") or {}
    if execution.get("sandbox_mode"):
        dataset["args"]["sandbox_mode"] = execution["sandbox_mode"]
    if "exact_match" in results:
        metrics = [_metric("exact_match", results["exact_match"], "exact match")]
    elif "base_pass@k" in results:
        metrics = [_metric(f"{k} ({kind})", v, f"{k} ({kind} tests)") for kind in ("base", "plus")
                   for k, v in results[f"{kind}_pass@k"].items()]
    else:
        metrics = [_metric(k, v, k) for k, v in results["pass@k"].items()]
    return {"task": TASK, "dataset": dataset, "metrics": metrics, "source": _source(url)}


def model_index(name: str, results: Iterable[dict | str | os.PathLike], url: str | None = None) -> list[dict]:
    """The `model-index` value for model `name` from any mix of commonsense and code results."""
    entries = []
    for source in results:
        r = read_results(source)
        if "pass@k" in r and "task" in r:
            entries.append(code_entry(r, url))
        elif isinstance(r.get("results"), dict):
            entries += commonsense_entries(r, url)
        else:
            raise ValueError(f"{source if not isinstance(source, dict) else 'results'}: neither a commonsense "
                             "results.json (`results`) nor a code one (`task`, `pass@k`)")
    return [{"name": name, "results": entries}]


def model_index_yaml(name: str, results: Iterable[dict | str | os.PathLike], url: str | None = None) -> str:
    return yaml.dump({"model-index": model_index(name, results, url)}, Dumper=_PlainDumper, sort_keys=False,
                     allow_unicode=True)


def update_model_card(readme: str | os.PathLike, name: str, results: Iterable[dict | str | os.PathLike],
                      url: str | None = None) -> str:
    """Set `model-index` in the card's YAML front matter (other keys and the body kept); returns the card."""
    path = Path(readme)
    text = path.read_text(encoding="utf-8") if path.is_file() else f"# {name}\n"
    match = FRONT_MATTER.match(text)
    meta = yaml.safe_load(match.group(1) or "") if match else {}
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: the YAML front matter is not a mapping")
    meta["model-index"] = model_index(name, results, url)
    body = text[match.end():] if match else text
    card = "---\n" + yaml.dump(meta, Dumper=_PlainDumper, sort_keys=False, allow_unicode=True) + "---\n" + body
    path.write_text(card, encoding="utf-8")
    return card


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("results", nargs="+", help="results.json files (or the folders holding them)")
    parser.add_argument("--name", required=True, help="model name shown on the Hub")
    parser.add_argument("--readme", help="model card to update (created if missing); default: print the YAML")
    parser.add_argument("--url", help="where the evaluation can be read (code or logs)")
    args = parser.parse_args(argv)
    if args.readme:
        update_model_card(args.readme, args.name, args.results, args.url)
        print(f"wrote model-index into {args.readme}")
    else:
        print(model_index_yaml(args.name, args.results, args.url), end="")


if __name__ == "__main__":
    main()

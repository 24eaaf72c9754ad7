"""The headline number of each task's results.json, in one table (`phi eval --tasks`, `phi reproduce`).

Generation tasks: pass@1 (EvalPlus tasks: base and plus), exact match for SQuAD, accuracy for GSM8K (its
pass@1); multiple choice: acc_norm where the task defines it, else acc. The numbers are read, never
recomputed, and each row says which backend and sandbox mode produced it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """{metric: value, ...} of one task's results.json (either output type)."""
    if "pass@k" in results:   # generate_until
        proto = results.get("protocol", {})
        row = {"pass@1": results["pass@k"].get("pass@1")}
        if "base_pass@k" in results:
            row = {"base pass@1": results["base_pass@k"].get("pass@1"), "plus pass@1": row["pass@1"]}
        if "exact_match" in results:
            row = {"exact_match": results["exact_match"]}
        row["n"] = results["num_problems"]
        row["backend"] = proto.get("backend", {}).get("backend", "samples")
        row["sandbox"] = proto.get("execution", {}).get("sandbox_mode", "-")
        return row
    task_results = next(iter(results["results"].values()))   # multiple choice: one task per run here
    metric = "acc_norm" if task_results.get("acc_norm") is not None else "acc"
    return {metric: task_results[metric], "n": task_results["n"], "backend": "transformers (log-likelihood)",
            "sandbox": "-"}


def summary_markdown(results: dict[str, dict[str, Any]]) -> str:
    lines = ["| task | metric | value | n | backend | sandbox |", "| --- | --- | --- | --- | --- | --- |"]
    for task, res in results.items():
        row = headline(res)
        meta = {k: row.pop(k) for k in ("n", "backend", "sandbox")}
        for metric, value in row.items():
            shown = "-" if value is None else f"{value:.4f}"
            lines.append(f"| {task} | {metric} | {shown} | {meta['n']} | {meta['backend']} | {meta['sandbox']} |")
    return "\n".join(lines) + "\n"


def write_summary(results: dict[str, dict[str, Any]], out_dir: Path) -> str:
    """OUTPUT/results.json ({task: headline}) and results.md; returns the table."""
    out_dir.mkdir(parents=True, exist_ok=True)
    table = summary_markdown(results)
    (out_dir / "results.json").write_text(json.dumps({t: headline(r) for t, r in results.items()}, indent=2) + "\n")
    (out_dir / "results.md").write_text("# Evaluation\n\n" + table)
    return table

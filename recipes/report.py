"""The report of a `phi reproduce` run: report.md and report.html in the run directory, images beside them.

Everything comes from what the stages wrote (stage markers, dataset build_info.json, metrics.jsonl,
evaluation results.json): the report reads, it never recomputes.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

# Published numbers (phi-1: arXiv:2306.11644 Table 1; phi-1.5: arXiv:2309.05463 Tables 1-3).
PUBLISHED = {
    "phi-1 (1.3B)": {"humaneval": 0.506, "mbpp": 0.555},
    "phi-1.5 (1.3B)": {"humaneval": 0.341, "mbpp": 0.377, "winogrande": 0.734, "arc_easy": 0.756,
                       "arc_challenge": 0.444, "boolq": 0.758, "siqa": 0.526, "piqa": 0.766, "hellaswag": 0.476,
                       "mmlu": 0.376, "openbookqa": 0.372},
}
DATASET_STAGES = ("filtered-code", "textbook", "exercises", "decontaminate", "unfiltered-code")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "-" if value is None else str(value)


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _short(value: Any, limit: int = 70) -> str:
    text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def stages_section(summaries: dict[str, dict[str, Any]]) -> str:
    rows = [[name, _short(s.get("input", "")), _short(s.get("output", "")), s.get("rows"), s.get("removed_rows"),
             s.get("seconds")] for name, s in summaries.items()]
    total = sum(s.get("seconds", 0) for s in summaries.values())
    return table(["stage", "in", "out", "rows", "removed", "seconds"], rows) + f"\n\nTotal: {total:.0f} s."


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "-"


def profile_section(summaries: dict[str, dict[str, Any]], min_share: float = 0.05) -> str:
    """Where the time went: each stage's wall time and share of the run, and under it the sub-steps the stage
    profiler sampled (recipes/profiling.py) that took at least `min_share` of the stage (the rest summed)."""
    stages = {name: s for name, s in summaries.items() if s.get("seconds") is not None}
    total = sum(s["seconds"] for s in stages.values())
    rows = []
    for name, s in stages.items():  # in run order, as the Stages table
        wall = s["seconds"]
        load, cpu = s.get("load_average"), s.get("cpu_seconds")
        rows.append([f"**{name}**", f"{wall:.1f}", _pct(wall, total), None if cpu is None else f"{cpu:.1f}",
                     None if load is None else f"{load:.2f}"])
        profile = s.get("profile") or {}
        shown = {k: v for k, v in profile.items() if k != "other" and v >= min_share * wall and v >= 0.5}
        rest = sum(profile.values()) - sum(shown.values())
        for step, seconds in shown.items():
            rows.append([f"&nbsp;&nbsp;{step}", f"{seconds:.1f}", f"{_pct(seconds, wall)} of stage", "", ""])
        if shown and rest >= 0.5:
            rows.append(["&nbsp;&nbsp;other", f"{rest:.1f}", f"{_pct(rest, wall)} of stage", "", ""])
    cpu_total = sum(s.get("cpu_seconds") or 0.0 for s in stages.values())
    rows.append(["**total (stages)**", f"{total:.1f}", "100%", f"{cpu_total:.1f}", ""])
    note = ("Wall seconds per stage (exact) and, under each, its main sub-steps: the main thread's stack sampled every "
            "20 ms (recipes/profiling.py), scaled to the stage's wall time; a stage skipped on a rerun shows the time "
            "of the run that did it. CPU s: the run's processes' CPU seconds in the stage (user + system, finished "
            f"children included), what it costs whatever else runs. Load: the machine's 1-minute load average as the "
            f"stage ended ({os.cpu_count()} CPUs here); on a shared machine a stage takes longer in proportion.")
    return table(["stage / sub-step", "wall s", "share", "CPU s", "load"], rows) + "\n\n" + note


def _scalars(info: dict[str, Any], prefix: str = "", depth: int = 0) -> list[tuple[str, Any]]:
    """Numbers and short strings of a build_info, one level of nesting flattened (counts, metrics)."""
    out = []
    for key, value in info.items():
        if key in ("columns", "shards", "name", "fingerprint", "config", "settings"):
            continue
        if isinstance(value, (int, float)) or (isinstance(value, str) and len(value) < 60):
            out.append((prefix + key, value))
        elif isinstance(value, dict) and depth < 1:
            out += _scalars(value, f"{prefix}{key}.", depth + 1)
    return out


def datasets_section(run_dir: Path, summaries: dict[str, dict[str, Any]]) -> str:
    parts = []
    for name in DATASET_STAGES:
        if name not in summaries:
            continue
        folder = Path(summaries[name]["output"])
        info = summaries[name].get("build_info", {})
        parts.append(f"### {name}\n\n`{folder}` (`load_dataset` reads it; card: `{folder / 'README.md'}`)\n")
        parts.append(table(["field", "value"], [[k, v] for k, v in _scalars(info)[:40]]))
        for png in sorted(folder.glob("*.png")):
            target = run_dir / "images" / f"{name}-{png.name}"
            target.parent.mkdir(exist_ok=True)
            shutil.copyfile(png, target)
            parts.append(f"\n![{name} {png.stem}](images/{target.name})")
        parts.append("")
    return "\n".join(parts)


def _metrics(output_dir: Path) -> list[dict[str, Any]]:
    path = output_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _packing(output_dir: Path) -> str | None:
    """How packed documents saw each other in this run (README, "Packed documents")."""
    path = output_dir / "train_config.json"
    if not path.is_file():
        return None
    masked = json.loads(path.read_text(encoding="utf-8")).get("document_masking")
    return "per-document masks" if masked else "documents attend within a block (as the papers)"


def training_section(run_dir: Path, summaries: dict[str, dict[str, Any]]) -> str:
    parts, rows = [], []
    for name in ("pretrain", "finetune", "pretrain-unfiltered", "finetune-unfiltered"):
        if name not in summaries:
            continue
        output_dir = run_dir / name
        metrics = _metrics(output_dir)
        evals = [m["eval_loss"] for m in metrics if m.get("eval_loss") is not None]
        speed = [m["tokens_per_second"] for m in metrics if m.get("tokens_per_second")]
        mfu = [m["mfu"] for m in metrics if m.get("mfu")]
        last_step = max((m.get("step", 0) for m in metrics), default=None)
        rows.append([name, last_step, evals[0] if evals else None, evals[-1] if evals else None,
                     sum(speed) / len(speed) if speed else None, sum(mfu) / len(mfu) if mfu else None,
                     summaries[name].get("seconds"), _packing(output_dir)])
        png = output_dir / "loss_curve.png"
        if png.is_file():
            target = run_dir / "images" / f"{name}-loss_curve.png"
            target.parent.mkdir(exist_ok=True)
            shutil.copyfile(png, target)
            parts.append(f"![{name} loss](images/{target.name})")
    head = table(["run", "steps", "first eval loss", "final eval loss", "tokens/s", "MFU", "seconds", "packing"], rows)
    return head + "\n\n" + "\n".join(parts)


def eval_scores(summaries: dict[str, dict[str, Any]], tag: str) -> dict[str, float | None]:
    """pass@1 and multiple-choice acc_norm (acc where no acc_norm) of the model evaluated under `tag`."""
    from evaluation.registry import get_task, known_tasks

    scores: dict[str, float | None] = {}
    for task in known_tasks():   # the registry's generation tasks this run evaluated
        if f"eval-{task}{tag}" in summaries and get_task(task).output_type == "generate_until":
            results = summaries[f"eval-{task}{tag}"].get("results", {})
            scores[task] = results.get("pass@k", {}).get("pass@1")
    mc = summaries.get(f"eval-commonsense{tag}", {}).get("results", {}).get("results", {})
    for task, metrics in mc.items():
        scores[task] = metrics.get("acc_norm", metrics.get("acc"))
    return scores


def evaluation_section(summaries: dict[str, dict[str, Any]]) -> str:
    columns = {"ours (filtered + textbook)": eval_scores(summaries, ""), **PUBLISHED}
    tasks = list(dict.fromkeys(t for scores in columns.values() for t in scores))
    rows = [[task, *(scores.get(task) for scores in columns.values())] for task in tasks]
    skipped = {task: why for k, v in summaries.items() if k.startswith("eval-commonsense")
               for task, why in v.get("results", {}).get("skipped", {}).items()}
    skipped_note = "".join(f"\n- `{task}` not evaluated: {why}" for task, why in skipped.items())
    limits = {k: v.get("results", {}).get("protocol", {}) for k, v in summaries.items() if k.startswith("eval-")}
    note = ("HumanEval / MBPP: pass@1, greedy; multiple choice: acc_norm where the task defines it, else acc. "
            "Our numbers are on a small `--limit` of each benchmark and a model ~200x smaller than phi-1: they "
            "show that every stage runs, not the paper's scores.")
    return table(["benchmark", *columns], rows) + "\n\n" + note + skipped_note + f"\n\n<!-- protocols: {json.dumps(limits, default=str)[:2000]} -->"


def decontamination_section(summaries: dict[str, dict[str, Any]]) -> str:
    if "decontaminate" not in summaries:
        return "(not run)"
    md = Path(summaries["decontaminate"]["output"]) / "report.md"
    return md.read_text() if md.is_file() else "(no report.md)"


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_report(run_dir: Path, summaries: dict[str, dict[str, Any]], ablation: bool = False) -> tuple[Path, Path]:
    import markdown

    sections = [
        f"# phi reproduction report: `{run_dir}`",
        f"Generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}, commit {git_commit()}.",
        "## Stages", stages_section(summaries),
        "## Where the time went", profile_section(summaries),
        "## Datasets", datasets_section(run_dir, summaries),
        "## Training", training_section(run_dir, summaries),
        "## Evaluation", evaluation_section(summaries),
        "## Decontamination (phi-1 Table 3 layout)", decontamination_section(summaries),
    ]
    if ablation:
        from recipes.ablation import ablation_section

        sections += ["## Ablation: filtered + textbook vs unfiltered, same compute, bits per byte over seeds",
                     ablation_section(run_dir, summaries)]
    text = "\n\n".join(sections) + "\n"
    md_path, html_path = run_dir / "report.md", run_dir / "report.html"
    md_path.write_text(text, encoding="utf-8")
    body = markdown.markdown(text, extensions=["tables", "fenced_code"])
    html_path.write_text(f"<!doctype html><meta charset='utf-8'><title>phi report</title>"
                         f"<style>body{{font-family:sans-serif;max-width:60em;margin:auto}}table{{border-collapse:collapse}}"
                         f"td,th{{border:1px solid #ccc;padding:2px 6px}}img{{max-width:100%}}</style>{body}",
                         encoding="utf-8")
    return md_path, html_path

"""Wall time of `phi eval commonsense` vs lm-evaluation-harness on the same model, tasks and examples.

Both run in this process, interleaved (lm-eval, ours, ours, lm-eval, ...) so machine noise hits both;
each timing covers the whole call (model load, data, prompts, scoring). Wall time is the target; the
process CPU time is printed beside it, because on a shared machine it is the less noisy of the two. lm-eval uses its `hf` model and
its own templates over the local files (tests/lm_eval_tasks/); ours uses evaluation/tasks/. The results
must be identical: same acc / acc_norm per task, per-choice log-likelihoods within 1e-4.

The model is a random phi of the given preset with the real phi tokenizer (the weights do not change the
work). HellaSwag reads the HellaSwag-format sample of the tests (its original file is not in the shared
data); MMLU runs two subjects (anatomy, and high_school_european_history, whose 2-shot prompts of
1250-1550 tokens overflow the `tiny` preset's 1024-token window and are then truncated as lm-eval does,
one unshared row per question on both sides; with phi's 2048-token window, --window 2048, they fit).

    python benchmarks/multiple_choice.py --preset tiny --layers 2 --limit 10 --repeats 2
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
LM_EVAL_TASKS = REPO / "tests" / "lm_eval_tasks"

from evaluation.data_paths import shared_data_dir  # noqa: E402

TASKS = ["piqa", "hellaswag", "arc_easy", "arc_challenge", "winogrande", "boolq", "openbookqa", "siqa"]
MMLU = ["anatomy", "high_school_european_history"]
OURS = TASKS + [f"mmlu_{s}" for s in MMLU]


def build_model(preset: str, layers: int | None, window: int | None, out: Path, data: Path) -> Path:
    import torch
    from transformers import AutoTokenizer

    from modeling_phi import PhiConfig, PhiForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(data / "tokenizers" / "phi-2")
    overrides = {**({"num_hidden_layers": layers} if layers else {}),
                 **({"max_position_embeddings": window} if window else {})}
    config = PhiConfig.from_preset(preset, **overrides).set_tokenizer(tokenizer)
    torch.manual_seed(0)
    PhiForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def run_lm_eval(model: Path, limit: int, batch_size: int) -> tuple[float, float, dict]:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    start, cpu = time.perf_counter(), time.process_time()
    manager = TaskManager(include_path=str(LM_EVAL_TASKS), include_defaults=False)
    out = simple_evaluate(model="hf", model_args=f"pretrained={model},trust_remote_code=True",
                          tasks=[f"local_{t}" for t in TASKS] + ["local_mmlu"], limit=limit, batch_size=batch_size,
                          device="cpu", task_manager=manager, log_samples=True)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    per_doc = {t: [[r[0][0] for r in s["resps"]] for s in sorted(out["samples"][f"local_{t}"], key=lambda s: s["doc_id"])]
               for t in OURS}
    metrics = {t: {m: out["results"][f"local_{t}"][f"{m},none"] for m in ("acc", "acc_norm")} for t in OURS}
    return seconds, cpu, {"lls": per_doc, "metrics": metrics}


def run_ours(model: Path, limit: int, batch_size: int, data: Path, out_dir: Path) -> tuple[float, float, dict]:
    from evaluation.multiple_choice import evaluate_multiple_choice

    start, cpu = time.perf_counter(), time.process_time()
    report = evaluate_multiple_choice(model, tasks=OURS, out_dir=out_dir, limit=limit, batch_size=batch_size,
                                      data_dir=data)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    per_doc = {t: [json.loads(line)["lls"] for line in open(out_dir / "samples" / f"{t}.jsonl")] for t in OURS}
    metrics = {t: {m: report["results"][t][m] for m in ("acc", "acc_norm")} for t in OURS}
    return seconds, cpu, {"lls": per_doc, "metrics": metrics}


def compare(ours: dict, theirs: dict) -> tuple[bool, float]:
    worst = max(abs(a - b) for t in OURS for mine, ref in zip(ours["lls"][t], theirs["lls"][t])
                for a, b in zip(mine, ref))
    return ours["metrics"] == theirs["metrics"] and worst <= 1e-4, worst


def machine() -> dict:
    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "load_average": os.getloadavg()}


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--window", type=int, default=None,
                        help="max_position_embeddings (default: the preset's; phi's own is 2048)")
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--data_dir", default=str(shared_data_dir()))
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "multiple_choice.json"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

    from tests.lm_eval_tasks.local_data import data_with_hellaswag_sample

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = data_with_hellaswag_sample(Path(args.data_dir), tmp / "data")
        os.environ["PHI_DATA_DIR"] = str(data)  # read by the lm-eval side's loaders
        model = build_model(args.preset, args.layers, args.window, tmp / "model", Path(args.data_dir))
        times: dict[str, list[float]] = {"lm_eval": [], "ours": []}
        cpu_times: dict[str, list[float]] = {"lm_eval": [], "ours": []}
        identical, worst = True, 0.0
        for r in range(args.repeats):
            order = ["lm_eval", "ours"] if r % 2 == 0 else ["ours", "lm_eval"]
            outputs = {}
            for name in order:
                if name == "lm_eval":
                    seconds, cpu, outputs[name] = run_lm_eval(model, args.limit, args.batch_size)
                else:
                    seconds, cpu, outputs[name] = run_ours(model, args.limit, args.batch_size, data, tmp / f"ours{r}")
                times[name].append(seconds)
                cpu_times[name].append(cpu)
                print(f"repeat {r}: {name:8s} {seconds:8.1f} s wall {cpu:8.1f} s cpu", flush=True)
            same, diff = compare(outputs["ours"], outputs["lm_eval"])
            identical, worst = identical and same, max(worst, diff)

    ratios = [o / t for o, t in zip(times["ours"], times["lm_eval"])]
    cpu_ratios = [o / t for o, t in zip(cpu_times["ours"], cpu_times["lm_eval"])]
    rows = [(label, statistics.median(times[key]), statistics.median(cpu_times[key]))
            for label, key in (("lm-eval (hf)", "lm_eval"), ("ours", "ours"))]
    print(f"\nmodel: random phi `{args.preset}` ({args.layers} layers, window {args.window or 'preset'}), "
          f"limit {args.limit} per task "
          f"({len(OURS)} tasks), batch {args.batch_size}, cpu")
    print("| harness | median wall s | median cpu s |\n| --- | --- | --- |")
    for name, seconds, cpu in rows:
        print(f"| {name} | {seconds:.1f} | {cpu:.1f} |")
    print(f"ratio ours / lm-eval per repeat, wall: {', '.join(f'{x:.2f}' for x in ratios)} "
          f"(median {statistics.median(ratios):.2f}); cpu: {', '.join(f'{x:.2f}' for x in cpu_ratios)} "
          f"(median {statistics.median(cpu_ratios):.2f}); identical results: {identical} (max |ll diff| {worst:.1e})")
    result = {"benchmark": "multiple_choice", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
              "git_commit": git_commit(), "machine": machine(),
              "config": {"preset": args.preset, "layers": args.layers, "window": args.window, "limit": args.limit,
                         "tasks": OURS,
                         "batch_size": args.batch_size, "repeats": args.repeats, "device": "cpu"},
              "seconds": times, "cpu_seconds": cpu_times, "ratio_ours_over_lm_eval": ratios,
              "median_ratio": statistics.median(ratios), "cpu_ratio_ours_over_lm_eval": cpu_ratios,
              "median_cpu_ratio": statistics.median(cpu_ratios),
              "identical_results": identical, "max_abs_ll_diff": worst}
    # Runs accumulate (one entry per configuration and date), like a benchmark log.
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    runs = json.loads(out.read_text())["runs"] if out.is_file() else []
    out.write_text(json.dumps({"runs": runs + [result]}, indent=2) + "\n")
    print(f"appended to {out}")


if __name__ == "__main__":
    main()

"""`phi reproduce` stage by stage, this tree vs a reference tree, interleaved on the same inputs.

A finished run directory is the template. For each stage asked, each round, and each tree in turn (the order
alternates between rounds, so load drifts hit both alike): copy the template, delete that stage's marker and
outputs (its caches included), and run `python -m recipes.cli reproduce --run_dir COPY` from the tree. Every other
stage's marker is there, so only that stage runs again (then the report); its marker gives the wall seconds and
the sampled sub-steps (recipes/profiling.py, where the tree has it). Per stage: median seconds per tree, the
median of the per-round ratios, the median CPU seconds of the whole `phi reproduce` process (user + system, the
skipped stages and the report included: the same small overhead for both), the load average. The reference tree is a checkout of another commit, e.g.
`git worktree add /tmp/ref <commit>` or `git archive <commit> | tar -x -C /tmp/ref`.

    python benchmarks/reproduce.py --template runs/tiny --reference-tree /tmp/ref \\
        --stages decontaminate,eval-commonsense --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import print_table, write_results  # noqa: E402

# What a stage writes (relative to the run directory): deleted before it runs again.
OUTPUTS = {
    "filtered-code": ["datasets/filtered-code", "datasets/filtered-code.work", "datasets/filtered-code.staging"],
    "textbook": ["datasets/textbook", "datasets/textbook.work", "datasets/textbook.staging"],
    "exercises": ["datasets/exercises-raw", "datasets/exercises-raw.work", "datasets/exercises-raw.staging"],
    "decontaminate": ["datasets/exercises", "datasets/exercises.work", "datasets/exercises.staging", "cache"],
    "tokenizer": ["tokenizer"],
    "pretrain": ["pretrain", "packed/pretrain"],
    "finetune": ["finetune", "packed/finetune"],
    "eval-humaneval": ["eval/finetune/humaneval"],
    "eval-mbpp": ["eval/finetune/mbpp"],
    "eval-commonsense": ["eval/finetune/commonsense"],
}


def commit_of(tree: Path) -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        stamp = tree / "COMMIT"
        return stamp.read_text().strip() if stamp.is_file() else "unknown"


def run_stage(tree: Path, template: Path, stage: str, work: Path, lock: str | None = None) -> dict[str, Any]:
    run_dir = work / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.copytree(template, run_dir, symlinks=True)
    for marker in run_dir.glob("stages/*.json"):  # the markers name the template's folders
        marker.write_text(marker.read_text().replace(str(template), str(run_dir)))
    (run_dir / "stages" / f"{stage}.json").unlink()
    for rel in OUTPUTS[stage]:
        shutil.rmtree(run_dir / rel, ignore_errors=True)
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    command = [sys.executable, "-m", "recipes.cli", "reproduce", "--run_dir", str(run_dir)]
    result = subprocess.run((["flock", lock] if lock else []) + command, cwd=tree,
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(tree)})
    if result.returncode:
        raise RuntimeError(f"{tree}: reproduce failed on stage {stage}:\n{result.stderr[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    marker = json.loads((run_dir / "stages" / f"{stage}.json").read_text())
    return {"seconds": marker["seconds"], "process_s": round(time.perf_counter() - started, 1), "load": load,
            "process_cpu_s": round(cpu, 1), "profile": marker.get("profile", {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--template", type=Path, required=True, help="a finished `phi reproduce` run directory")
    parser.add_argument("--reference-tree", type=Path, required=True)
    parser.add_argument("--stages", default="decontaminate,eval-commonsense")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--lock", default=None, help="a file to flock around each rerun (a shared machine's timing lock)")
    args = parser.parse_args()
    trees = {"reference": args.reference_tree.resolve(), "ours": ROOT}
    work = Path(tempfile.mkdtemp(prefix="reproduce-bench-"))
    rows, samples = [], {}
    for stage in args.stages.split(","):
        if stage not in OUTPUTS:
            raise ValueError(f"unknown stage {stage!r}; choose from {', '.join(OUTPUTS)}")
        times: dict[str, list[dict[str, Any]]] = {"reference": [], "ours": []}
        for r in range(args.rounds):
            for name in (("reference", "ours") if r % 2 == 0 else ("ours", "reference")):
                times[name].append(run_stage(trees[name], args.template.resolve(), stage, work, args.lock))
                print(f"{stage} round {r} {name}: {times[name][-1]['seconds']} s (load {times[name][-1]['load']:.1f})",
                      flush=True)
        ref, ours = ([t["seconds"] for t in times[k]] for k in ("reference", "ours"))
        ref_cpu, ours_cpu = ([t["process_cpu_s"] for t in times[k]] for k in ("reference", "ours"))
        rows.append({"stage": stage, "reference_s": statistics.median(ref), "ours_s": statistics.median(ours),
                     "speedup": round(statistics.median(a / b for a, b in zip(ref, ours)), 2),
                     "reference_cpu_s": statistics.median(ref_cpu), "ours_cpu_s": statistics.median(ours_cpu),
                     "load": round(statistics.mean(t["load"] for k in times for t in times[k]), 1)})
        samples[stage] = times
    table = print_table(rows, ["stage", "reference_s", "ours_s", "speedup", "reference_cpu_s", "ours_cpu_s", "load"])
    write_results("reproduce", rows, table=table, rounds=args.rounds, reference_commit=commit_of(trees["reference"]),
                  template=str(args.template), samples=samples)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

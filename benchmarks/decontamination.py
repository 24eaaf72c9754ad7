"""AST decontamination speed: blocked edit distances vs naive all-pairs, standard library vs HumanEval + MBPP.

Every function of the standard library (the default LocalPythonFiles corpus) is compared with all 1,138
HumanEval + MBPP solutions. The blocked comparison (`AstMatch.compare`: length blocks + rapidfuzz
`process.cdist` with `score_cutoff`) is timed against a naive loop computing every pair's edit distance,
on the same random sample of functions, in interleaved rounds; the matches above the threshold must be
identical. On the whole corpus the blocked matches are also checked against an unblocked all-pairs cdist.
Pairs "effectively compared" = functions x benchmark functions, whether or not a block skipped them.
Also reported: the false-positive rates on the (clean) standard library per tau (uncalibrated, and calibrated on
the standard library itself, which is in-sample: benchmarks/decontamination_precision.py measures held-out
precision), the calibration's own time (once per benchmark index and background, then read from the cache),
and a projection to one million functions from the measured rates.

With --reference-tree (a checkout of another commit, e.g. `git worktree add /tmp/ref <commit>`), the whole-stdlib
`AstMatch.scan` (parse + normalise + compare + matches) of that tree and of this one run in alternating
subprocesses, --rounds times each, and the median ratio is reported: calibration is not part of a scan.

    python benchmarks/decontamination.py --sample 300 --rounds 3
    python benchmarks/decontamination.py --reference-tree /tmp/ref --rounds 5
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets_builders.benchmark_index import load_benchmarks  # noqa: E402
from datasets_builders.decontaminate import TAUS  # noqa: E402
from datasets_builders.detectors import AstMatch, NgramOverlap  # noqa: E402
from datasets_builders.sources import LocalPythonFiles  # noqa: E402
from evaluation.data_paths import shared_data_dir  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "decontamination.json"
# One whole-stdlib scan with the default AST detector of the tree given as argv[1]; prints its time as JSON.
SCAN_SNIPPET = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from datasets_builders.benchmark_index import load_benchmarks
from datasets_builders.detectors import AstMatch
from datasets_builders.sources import LocalPythonFiles
texts = [r["text"] for r in LocalPythonFiles()]
detector = AstMatch(threshold=float(sys.argv[2])).index(load_benchmarks(("humaneval", "mbpp")))
start = time.perf_counter()
matches = detector.scan(texts)
print(json.dumps({"scan_s": time.perf_counter() - start, "units": detector.stats["units"], "matches": len(matches),
                  "benchmark_units": len(detector.bench_seqs)}))
"""


def reference_timing(reference: Path, rounds: int, tau: float) -> dict[str, object]:
    """Whole-stdlib scan time of `reference` vs this tree, alternating subprocesses (same interpreter)."""
    this = Path(__file__).resolve().parents[1]
    times: dict[str, list[float]] = {"reference": [], "this": []}
    info: dict[str, dict] = {}
    env = {**os.environ, "PHI_DATA_DIR": str(shared_data_dir())}  # a checkout elsewhere finds the same benchmark data
    for _ in range(rounds):
        for name, tree in (("reference", reference), ("this", this)):
            out = subprocess.run([sys.executable, "-c", SCAN_SNIPPET, str(tree), str(tau)], capture_output=True, text=True,
                                 cwd=tree, check=True, env=env).stdout.strip().splitlines()[-1]
            info[name] = json.loads(out)
            times[name].append(info[name]["scan_s"])
    ref_commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=reference).stdout.strip()
    ratio = statistics.median(times["this"]) / statistics.median(times["reference"])
    return {"reference_commit": ref_commit, "rounds": rounds, "scan_s": times, "median_ratio_this_over_reference": round(ratio, 3),
            "last": info}


def naive_pairs(seqs: list[str], bench: list[str], tau: float) -> set[tuple[int, int]]:
    """Every pair's normalised Levenshtein similarity, one call per pair, no cutoff, no blocking."""
    from rapidfuzz.distance import Levenshtein

    return {(i, j) for i, a in enumerate(seqs) for j, b in enumerate(bench) if Levenshtein.normalized_similarity(a, b) >= tau}


def allpairs_cdist(seqs: list[str], bench: list[str], tau: float, workers: int) -> set[tuple[int, int]]:
    """All pairs in rapidfuzz's C++ loop, without cutoff or length blocks (in row chunks for memory)."""
    from rapidfuzz import process
    from rapidfuzz.distance import Levenshtein

    found = set()
    for start in range(0, len(seqs), 2048):
        scores = process.cdist(seqs[start:start + 2048], bench, scorer=Levenshtein.normalized_similarity,
                               dtype=np.float64, workers=workers)
        found |= {(start + int(r), int(c)) for r, c in zip(*np.nonzero(scores >= tau))}
    return found


def blocked_pairs(detector: AstMatch, seqs: list[str]) -> set[tuple[int, int]]:
    return {(s, b) for s, b, _ in detector.compare(seqs)}


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def machine() -> dict[str, object]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "load_avg_1m": os.getloadavg()[0]}


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=300, help="functions in the naive all-pairs sample")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved naive / blocked rounds")
    parser.add_argument("--tau", type=float, default=0.8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference-tree", default=None, help="checkout of a reference commit to time the scan against")
    args = parser.parse_args()
    if args.reference_tree:
        timing = reference_timing(Path(args.reference_tree), args.rounds, args.tau)
        print(f"whole-stdlib scan, median of {args.rounds}: reference {statistics.median(timing['scan_s']['reference']):.2f} s, "
              f"this tree {statistics.median(timing['scan_s']['this']):.2f} s, ratio {timing['median_ratio_this_over_reference']}")
        out = RESULTS.with_name("decontamination_vs_reference.json")
        out.write_text(json.dumps({"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                                   "commit": git_commit(), "machine": machine(), "tau": args.tau, **timing}, indent=2) + "\n")
        print(f"wrote {out}")
        return

    items = load_benchmarks(("humaneval", "mbpp"))
    texts = [r["text"] for r in LocalPythonFiles()]
    detector = AstMatch(threshold=args.tau, workers=args.workers).index(items)
    bench = detector.bench_seqs

    # The whole corpus, end to end: parse + normalise, then blocked comparison.
    per_text, parse_s = timed(detector.units, texts)
    units = [(row, u) for row, us in enumerate(per_text) for u in us]
    seqs = sorted({u.seq for _, u in units})
    full, compare_s = timed(detector.compare, seqs)
    pairs_scored = detector.stats["pairs_scored"]
    blocked = {(s, b) for s, b, _ in full}
    allpairs, allpairs_s = timed(allpairs_cdist, seqs, bench, args.tau, args.workers)
    pairs_total = len(seqs) * len(bench)

    # Naive vs blocked on the same sample, interleaved so machine noise hits both alike.
    rng = random.Random(args.seed)
    sample = rng.sample(seqs, min(args.sample, len(seqs)))
    naive_times, blocked_times, identical = [], [], True
    for _ in range(args.rounds):
        naive, t_naive = timed(naive_pairs, sample, bench, args.tau)
        fast, t_fast = timed(blocked_pairs, detector, sample)
        naive_times.append(t_naive)
        blocked_times.append(t_fast)
        identical &= naive == fast
    t_naive, t_fast = statistics.median(naive_times), statistics.median(blocked_times)
    sample_pairs = len(sample) * len(bench)

    # False positives: the standard library is clean, so every function it matches is a false positive.
    scores: dict[str, float] = {}
    for s, _, rate in full:
        scores[seqs[s]] = max(rate, scores.get(seqs[s], 0.0))
    fp = {str(tau): {"functions": sum(scores.get(u.seq, 0.0) >= tau for _, u in units),
                     "files": len({row for row, u in units if scores.get(u.seq, 0.0) >= tau})} for tau in TAUS}
    # Calibration on the same standard library (what a run does once per benchmark index; then cached), timed
    # alone; the calibrated false positives are in-sample here.
    calibration, calibration_s = timed(detector.calibrate, texts)
    counted: dict[str, float] = {}
    for s, b, rate in full:
        if rate > detector.bench_bound[b]:
            counted[seqs[s]] = max(rate, counted.get(seqs[s], 0.0))
    fp_calibrated = {str(tau): {"functions": sum(counted.get(u.seq, 0.0) >= tau for _, u in units),
                                "files": len({row for row, u in units if counted.get(u.seq, 0.0) >= tau})} for tau in TAUS}
    ngram_hits = len(NgramOverlap(13).index(items).scan(texts))

    functions_per_s = len(units) / parse_s
    pairs_per_s = pairs_total / compare_s
    million = 1_000_000 * (1 / functions_per_s + len(bench) / pairs_per_s)
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "commit": git_commit(),
        "machine": machine(), "tau": args.tau, "workers": args.workers, "seed": args.seed,
        "corpus": {"files": len(texts), "functions": len(units), "unique_functions": len(seqs)},
        "benchmark_functions": len(bench),
        "stdlib": {"parse_s": round(parse_s, 2), "compare_s": round(compare_s, 2), "total_s": round(parse_s + compare_s, 2),
                   "pairs_effective": pairs_total, "pairs_scored": pairs_scored,
                   "effective_pairs_per_s_compare": round(pairs_per_s), "functions_per_s_parse": round(functions_per_s),
                   "matches": len(blocked), "allpairs_cdist_s": round(allpairs_s, 2),
                   "identical_to_allpairs_cdist": blocked == allpairs},
        "sample": {"functions": len(sample), "pairs": sample_pairs, "naive_s": round(t_naive, 3), "blocked_s": round(t_fast, 4),
                   "naive_pairs_per_s": round(sample_pairs / t_naive), "blocked_pairs_per_s": round(sample_pairs / t_fast),
                   "speedup": round(t_naive / t_fast, 1), "matches": len(naive), "identical_matches": identical,
                   "rounds": args.rounds},
        "calibration": {"seconds": round(calibration_s, 2), "background_units": calibration.background_units,
                        "items_with_background_match": len(calibration.items), "floor": calibration.floor,
                        "undecidable_items": len(detector.undecidable)},
        "false_positives_stdlib": fp, "false_positives_stdlib_calibrated_in_sample": fp_calibrated,
        "ngram13_hits_stdlib": ngram_hits,
        "projection_1M_functions_s_per_core": round(million),
    }
    print(f"standard library: {len(texts)} files, {len(units):,} functions ({len(seqs):,} unique) x {len(bench)} benchmark functions")
    print(f"{'':34} {'time (s)':>10} {'pairs/s':>14} {'matches':>8} {'identical':>9}")
    print(f"{'naive all-pairs, sample':34} {t_naive:>10.3f} {sample_pairs / t_naive:>14,.0f} {len(naive):>8} {'-':>9}")
    print(f"{'blocked cdist, same sample':34} {t_fast:>10.4f} {sample_pairs / t_fast:>14,.0f} {len(fast):>8} {str(identical):>9}")
    print(f"{'speedup (naive / blocked)':34} {t_naive / t_fast:>10.1f}x")
    print(f"{'all-pairs cdist, whole stdlib':34} {allpairs_s:>10.2f} {pairs_total / allpairs_s:>14,.0f} {len(allpairs):>8} {'-':>9}")
    print(f"{'blocked cdist, whole stdlib':34} {compare_s:>10.2f} {pairs_per_s:>14,.0f} {len(blocked):>8} {str(blocked == allpairs):>9}")
    print(f"{'parse + normalise, whole stdlib':34} {parse_s:>10.2f} {functions_per_s:>11,.0f} fn/s")
    print(f"{'calibration on the stdlib (once)':34} {calibration_s:>10.2f}")
    print("false positives on the stdlib (functions / files): " + ", ".join(f"tau {t}: {v['functions']}/{v['files']}" for t, v in fp.items()))
    print("  calibrated (in-sample): " + ", ".join(f"tau {t}: {v['functions']}/{v['files']}" for t, v in fp_calibrated.items()))
    print(f"13-gram hits on the stdlib: {ngram_hits}; projected 1M functions: {million / 60:.1f} min per core")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

"""The mined offline default on this machine's standard library: how many exercises and textbook sections it
finds, how many exercises pass verification by execution, the diversity report, the wall time, and whether a
second build with the same seed writes byte-identical shards.

    python benchmarks/synthetic_mined.py                 # every candidate (n = all), seed 0
    python benchmarks/synthetic_mined.py --n 200 --seed 1
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import print_table, write_results  # noqa: E402
from datasets_builders.exercises import build_exercises  # noqa: E402
from datasets_builders.hub_dataset import read_build_info  # noqa: E402
from datasets_builders.textbook import build_textbook  # noqa: E402
from evaluation.sandbox import sandbox_mode  # noqa: E402


def shards(folder: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted((folder / "data").glob("*.parquet"))]


def run(kind: str, build, tmp: Path, n: int | None, seed: int) -> dict:
    start = time.perf_counter()
    out = build(tmp / kind, n=n, seed=seed)
    seconds = time.perf_counter() - start
    again = build(tmp / f"{kind}-again", n=n, seed=seed, embed=False)
    info = read_build_info(out)
    div = info["diversity"]
    row = {"set": kind, "candidates": info["candidates"], "rows": info["rows"], "removed": info["removed_rows"],
           "seconds": round(seconds, 1), "same_seed_identical": shards(out) == shards(again),
           "distinct_2": div["distinct_2"], "distinct_3": div["distinct_3"],
           "near_dup_rate": div["near_duplicate_rate"], "emb_dispersion": div["embedding_dispersion"],
           "modules": div["coverage"]["module"]["distinct"]}
    return {"row": row, "info": info}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=0, help="records per set (0 = every candidate)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    n = args.n or None
    with tempfile.TemporaryDirectory() as tmp:
        results = [run("textbook", build_textbook, Path(tmp), n, args.seed),
                   run("exercises", build_exercises, Path(tmp), n, args.seed)]
    rows = [r["row"] for r in results]
    ex = results[1]["info"]
    rows[1].update(verified_tests=ex["verified"].get("doctests", 0), verified_runs=ex["verified"].get("executed", 0),
                   with_doctests=ex["with_doctests"])
    print_table(rows, list(rows[1]))
    print("exercise candidates rejected before verification:", ex["rejected"])
    print("removed by reason:", ex["removed_by_reason"])
    write_results("synthetic_mined", rows, sandbox=sandbox_mode(), n=n, seed=args.seed,
                  exercises_rejected=ex["rejected"], exercises_removed=ex["removed_by_reason"],
                  textbook_rejected=results[0]["info"]["rejected"],
                  diversity={"textbook": results[0]["info"]["diversity"], "exercises": ex["diversity"]})


if __name__ == "__main__":
    main()

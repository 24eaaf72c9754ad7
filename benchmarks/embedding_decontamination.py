"""Decontamination matches, fp32 embedder vs `precision="auto"` (bf16 on this CPU): the same records removed?

The corpus is benchmarks/decontamination_precision.py's: whole standard-library modules (seeded sample, none
derived from a benchmark) mixed with disguised HumanEval / MBPP solutions in five containers, and the hand-written
paraphrases of problem statements of tests/test_decontaminate.py (the matches this detector exists for). Both runs go
through `decontaminate()` (the CLI's function) with the embedding detector alone, once at the default threshold
(0.8) -- the removed record ids and the items they matched must be the same -- and once at a
loose threshold (0.6, many more pairs near the boundary), where the pairs above 0.8 / 0.7 / 0.6 are compared and
the largest score difference over the pairs both found is reported. Times are each run's wall seconds
(embedding dominates; each precision has its own cache, the loose run reads it; `--work` of an earlier run reuses
its caches, and then the seconds are not embedding times).

    python benchmarks/embedding_decontamination.py                 # 100 modules + 30 plants
    python benchmarks/embedding_decontamination.py --clean 300
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import print_table, write_results  # noqa: E402
from benchmarks.decontamination_precision import CONTAINERS, code_lines, contain, disguise, flagged  # noqa: E402
from datasets_builders.benchmark_index import load_benchmarks  # noqa: E402
from datasets_builders.decontaminate import decontaminate  # noqa: E402
from datasets_builders.detectors import _parse, extract_code  # noqa: E402
from datasets_builders.sources import LocalPythonFiles  # noqa: E402

PRECISIONS = ("fp32", "auto")
LOOSE = 0.6


def corpus(clean: int, plants: int, seed: int) -> list[dict[str, Any]]:
    from tests.test_decontaminate import PARAPHRASES

    rng = random.Random(seed)
    items = [it for it in load_benchmarks(("humaneval", "mbpp")) if it.kind == "code"]
    stdlib = [r for r in LocalPythonFiles() if _parse(r["text"]) is not None]
    rng.shuffle(stdlib)
    records = [{"id": r["path"], "text": r["text"], "source": "stdlib"} for r in stdlib[:clean]]
    hosts = stdlib[clean:]
    for k, it in enumerate(rng.sample([it for it in items if code_lines(it) >= 5], plants)):
        code, entry = disguise(it, k, rng)
        text = contain(code, entry, CONTAINERS[k % len(CONTAINERS)], hosts[k % len(hosts)]["text"])
        if any(f"def {entry}(" in c for c in extract_code(text)):
            records.append({"id": f"planted/{k}", "text": text, "source": "planted"})
    # The hand-written paraphrases of problem statements (tests/test_decontaminate.py): what this detector is for.
    records += [{"id": f"paraphrase/{item}", "text": text, "source": "paraphrase"} for item, text in PARAPHRASES.items()]
    return records


def pairs(hits: dict[str, list[dict[str, Any]]]) -> dict[tuple[str, str], float]:
    return {(rid, c["item_id"]): float(c["score"]) for rid, entries in hits.items() for c in entries}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clean", type=int, default=100, help="whole standard-library modules")
    parser.add_argument("--plants", type=int, default=30)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--work", default=None, help="working folder (an earlier run's: its embedding caches are reused)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="embedding-decontamination-"))
    records = corpus(args.clean, args.plants, args.seed)
    source = work / "corpus.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    load_start = os.getloadavg()[0]
    runs: dict[str, dict[str, Any]] = {}
    for threshold in (0.8, LOOSE):
        for precision in PRECISIONS:
            out = work / f"{precision}-{threshold}"
            started = time.perf_counter()
            decontaminate(source, out, detectors=["embedding"], embedding_threshold=threshold,
                          embedding_precision=precision, embedding_cache=work / f"cache-{precision}")
            runs[f"{precision}@{threshold}"] = {"seconds": round(time.perf_counter() - started, 1),
                                                "hits": flagged(out)}
    default = {p: runs[f"{p}@0.8"]["hits"] for p in PRECISIONS}
    loose = {p: pairs(runs[f"{p}@{LOOSE}"]["hits"]) for p in PRECISIONS}
    same_default = (sorted(default["fp32"]) == sorted(default["auto"])
                    and {k: sorted(c["item_id"] for c in v) for k, v in default["fp32"].items()}
                    == {k: sorted(c["item_id"] for c in v) for k, v in default["auto"].items()})
    by_threshold = {}
    for t in (0.8, 0.7, LOOSE):
        ref = {k for k, s in loose["fp32"].items() if s >= t}
        new = {k for k, s in loose["auto"].items() if s >= t}
        by_threshold[str(t)] = {"fp32_pairs": len(ref), "auto_pairs": len(new), "only_fp32": sorted(map(list, ref - new)),
                                "only_auto": sorted(map(list, new - ref))}
    common = set(loose["fp32"]) & set(loose["auto"])
    rows = [{"run": f"{p} @ {t}", "seconds": runs[f"{p}@{t}"]["seconds"], "removed": len(runs[f"{p}@{t}"]["hits"]),
             "pairs": len(pairs(runs[f"{p}@{t}"]["hits"]))} for t in (0.8, LOOSE) for p in PRECISIONS]
    table = print_table(rows, ["run", "seconds", "removed", "pairs"])
    result = {
        "records": len(records), "plants": sum(r["source"] == "planted" for r in records),
        "paraphrases": sum(r["source"] == "paraphrase" for r in records), "seed": args.seed,
        "reused_work_folder": args.work is not None,
        "load_avg_1m_start": load_start, "load_avg_1m_end": os.getloadavg()[0],
        "default_threshold": {"removed_fp32": len(default["fp32"]), "removed_auto": len(default["auto"]),
                              "same_records_and_items": same_default,
                              "removed_ids": sorted(default["fp32"])},
        "loose_threshold_pairs": by_threshold,
        "max_score_difference_common_pairs": round(max((abs(loose["fp32"][k] - loose["auto"][k]) for k in common),
                                                       default=0.0), 6),
    }
    from datasets_builders.embedder import precision_report

    result["precision_probe"] = precision_report()
    for key, value in result.items():
        print(f"{key}: {json.dumps(value)[:300]}")
    write_results("embedding_decontamination", rows, table=table, **result)


if __name__ == "__main__":
    main()

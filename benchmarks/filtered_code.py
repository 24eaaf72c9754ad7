"""Files per second for each stage of `phi data filtered-code` on the standard library, and MinHash
near-dedup against a naive all-pairs Jaccard baseline.

Stages run one after the other on the output of the previous one (read -> parses -> size -> generated /
data-only -> exact dedup -> near dedup -> heuristic annotation -> embedding -> classifier), `--rounds`
times, and the median is reported. Each stage parses for itself here; in the builder the parse stage's
AST is reused by the generated / data-only filter, so the pipeline is faster than the sum of these rows.

The dedup comparison plants `--planted` near copies (a few lines edited) among `--sample` stdlib files;
both methods shingle the same way and keep the first copy; rounds interleave them (naive, MinHash, naive,
...) so the machine's noise hits both. We report the speed ratio and how many of the naive method's
removals MinHash finds (recall) and how many of its removals are true (precision).

    python benchmarks/filtered_code.py                  # 3 rounds, 64 files embedded, 300 + 30 for dedup
    python benchmarks/filtered_code.py --rounds 1 --embed 32
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import print_table, write_results  # noqa: E402
from datasets_builders.annotators import HeuristicAnnotator  # noqa: E402
from datasets_builders.embedder import Embedder, default_model_path  # noqa: E402
from datasets_builders.pipeline import run_pipeline  # noqa: E402
from datasets_builders.prefilters import (  # noqa: E402
    ExactDedup,
    GeneratedOrData,
    MinHashDedup,
    ParsesAsPython,
    SizeBounds,
    parse_python,
    shingles,
)
from datasets_builders.quality_classifier import QualityClassifier  # noqa: E402
from datasets_builders.sources import LocalPythonFiles  # noqa: E402


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def stage_round(embed_n: int, embedder: Embedder) -> dict[str, tuple[int, float]]:
    """One pass over the stdlib; {stage: (files in, seconds)}."""
    parse_python.cache_clear()  # each round parses for itself
    times: dict[str, tuple[int, float]] = {}
    records, seconds = timed(lambda: list(LocalPythonFiles()))
    times["read"] = (len(records), seconds)
    for step in (ParsesAsPython(), SizeBounds(), GeneratedOrData(), ExactDedup(), MinHashDedup(seed=0)):
        parse_python.cache_clear()  # as if the step ran alone: no AST left over from the previous one
        kept, seconds = timed(lambda s=step, rs=records: run_pipeline([s], [dict(r) for r in rs]).kept)
        times[step.name] = (len(records), seconds)
        records = kept
    texts = [r["text"] for r in records]
    parse_python.cache_clear()
    _, seconds = timed(lambda: HeuristicAnnotator().scores(texts))
    times["annotate (heuristic)"] = (len(texts), seconds)
    embedder.cache = None  # measure the model, not the cache
    vectors, seconds = timed(lambda: embedder.embed(texts[:embed_n]))
    name = "all-MiniLM-L6-v2" if embedder.model_id == default_model_path() else Path(embedder.model_id).name
    times[f"embed ({name}, {embedder.max_length} tok)"] = (len(vectors), seconds)
    X = np.resize(vectors, (len(texts), vectors.shape[1]))  # every file, for the classifier's timing
    y = np.arange(len(texts)) % 2 == 0
    clf = QualityClassifier(seed=0)
    _, seconds = timed(lambda: (clf.fit(X, y), clf.score(X)))
    times["classifier fit+score"] = (len(texts), seconds)
    return times


def planted_corpus(n: int, planted: int, seed: int = 0) -> list[dict]:
    """`n` stdlib files plus `planted` near copies of some of them (3 lines changed each), shuffled."""
    rng = random.Random(seed)
    files = [r for r in LocalPythonFiles() if 2_000 < len(r["text"]) < 60_000][:n]
    copies = []
    for i, original in enumerate(rng.sample(files, planted)):
        lines = original["text"].splitlines()
        for j in rng.sample(range(len(lines)), 3):
            lines[j] = f"# edited {i}-{j}"
        copies.append({"id": f"copy-of-{original['id']}", "text": "\n".join(lines)})
    corpus = files + copies
    rng.shuffle(corpus)
    return corpus


def naive_dedup(records: list[dict], threshold: float = 0.8, ngram: int = 5) -> set[str]:
    """Exact Jaccard against every kept file: O(n^2) set intersections. Returns the removed ids."""
    kept: list[set[bytes]] = []
    removed = set()
    for record in records:
        s = shingles(record["text"], ngram)
        if any(len(s & k) / len(s | k) >= threshold for k in kept):
            removed.add(record["id"])
        else:
            kept.append(s)
    return removed


def minhash_dedup(records: list[dict], threshold: float = 0.8) -> set[str]:
    result = run_pipeline([MinHashDedup(threshold, seed=0)], records)
    return {r["id"] for r in result.removed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--embed", type=int, default=64, help="files embedded per round")
    parser.add_argument("--sample", type=int, default=300)
    parser.add_argument("--planted", type=int, default=30)
    args = parser.parse_args()

    embedder = Embedder()
    embedder.embed(["warm up"])
    rounds = [stage_round(args.embed, embedder) for _ in range(args.rounds)]
    stage_rows = []
    for stage in rounds[0]:
        n = rounds[0][stage][0]
        seconds = statistics.median(r[stage][1] for r in rounds)
        stage_rows.append({"stage": stage, "files": n, "seconds": round(seconds, 3), "files_per_s": round(n / seconds, 1)})
    print_table(stage_rows, ["stage", "files", "seconds", "files_per_s"])

    corpus = planted_corpus(args.sample, args.planted)
    naive_times, minhash_times = [], []
    for _ in range(args.rounds):
        truth, seconds = timed(lambda: naive_dedup(corpus))
        naive_times.append(seconds)
        found, seconds = timed(lambda: minhash_dedup([dict(r) for r in corpus]))
        minhash_times.append(seconds)
    naive_s, minhash_s = statistics.median(naive_times), statistics.median(minhash_times)
    dedup_row = {"files": len(corpus), "planted": args.planted, "naive_removed": len(truth),
                 "minhash_removed": len(found), "naive_s": round(naive_s, 3), "minhash_s": round(minhash_s, 3),
                 "speedup": round(naive_s / minhash_s, 2),
                 "recall": round(len(found & truth) / len(truth), 3) if truth else None,
                 "precision": round(len(found & truth) / len(found), 3) if found else None}
    print()
    print_table([dedup_row], list(dedup_row))
    import os

    write_results("filtered_code", stage_rows, dedup=dedup_row, rounds=args.rounds, load_average=os.getloadavg(),
                  note="stages run sequentially on the previous stage's output; median of rounds; the machine is "
                       "shared (see load_average)")


if __name__ == "__main__":
    main()

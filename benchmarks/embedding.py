"""Embedding throughput and neighbour agreement: today's fp32 embedder vs the new precisions, standard library.

The corpus is what the decontamination's embedding detector embeds: every file of the standard library
(`LocalPythonFiles()`) cut by `detectors.text_chunks` (1000 characters). The reference is the embedder as it
was before issue 18 (`datasets_builders/embedder.py` at `REFERENCE_COMMIT`, loaded from git into a module:
fp32, batches of 32 texts sorted by characters), run in the same process as the new `Embedder` at each
precision. The chunks are shuffled (seeded) and cut into `--rounds` slices; each round embeds its slice with
every method, in a rotated order, so machine noise hits all alike. No cache; model loading is timed apart.

Agreement with the reference, per method:
- cosine of each chunk's vector with its reference vector (min / mean; how many below 0.99);
- the decontamination matches: `EmbeddingSimilarity` (default threshold) indexed on the benchmark items
  and scanning the standard-library files, fed each method's vectors -- the (file, item) pairs must be
  the reference's;
- nearest neighbours of the decontamination-style queries (each benchmark item's statement, prose and
  solution): the nearest standard-library chunk of each query, and the nearest query of each chunk, must
  be the reference's (mismatches are listed with the reference's top-1 / top-2 margin).

    python benchmarks/embedding.py                     # the whole standard library (~11k chunks)
    python benchmarks/embedding.py --sample 1000       # a seeded sample, for a quick look
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import print_table, write_results  # noqa: E402
from datasets_builders.benchmark_index import DEFAULT_BENCHMARKS, load_benchmarks  # noqa: E402
from datasets_builders.detectors import EmbeddingSimilarity, prose, text_chunks  # noqa: E402
from datasets_builders.embedder import Embedder, precision_report  # noqa: E402
from datasets_builders.sources import LocalPythonFiles  # noqa: E402

# The last commit of datasets_builders/embedder.py before issue 18 (fp32 only, batches of 32 texts).
REFERENCE_COMMIT = "8b5f3dcbe5decb1b9ea7fae09f56ca1ec353f541"
MIN_COSINE = 0.99


def reference_embedder_class(commit: str) -> type:
    """`Embedder` as it was at `commit`, loaded from `git show` into its own module."""
    source = subprocess.run(["git", "show", f"{commit}:datasets_builders/embedder.py"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp(prefix="embedder_reference_")) / "embedder_reference.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("embedder_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Embedder


class Precomputed:
    """An embedder answering from vectors computed beforehand (the timed pass), computing only what is new."""

    def __init__(self, embedder: Any):
        self.embedder, self.table = embedder, {}

    def embed(self, texts: list[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self.table))
        if missing:
            self.table.update(zip(missing, self.embedder.embed(missing)))
        return np.stack([self.table[t] for t in texts]) if texts else np.zeros((0, 1), dtype=np.float32)


def cpu_model() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


def nearest_agreement(ref_q: np.ndarray, ref_c: np.ndarray, q: np.ndarray, c: np.ndarray) -> dict[str, Any]:
    """Top-1 chunk per query and top-1 query per chunk: how many equal the reference's, and for those that
    differ the reference's margin between its first and second choice (a near tie flips on rounding)."""
    ref_sims, sims = ref_q @ ref_c.T, q @ c.T
    out: dict[str, Any] = {}
    for name, axis in (("query_to_chunk", 1), ("chunk_to_query", 0)):
        ref_top, top = ref_sims.argmax(axis), sims.argmax(axis)
        differ = np.nonzero(ref_top != top)[0]
        ordered = np.sort(ref_sims if axis == 1 else ref_sims.T, axis=1)
        margins = (ordered[:, -1] - ordered[:, -2])[differ]
        out[name] = {"same": int(len(top) - len(differ)), "of": int(len(top)),
                     "max_ref_margin_where_different": round(float(margins.max()), 6) if len(differ) else None}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=None,
                        help="whole files, drawn (seeded) until they give this many chunks (default: every file)")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved slices")
    parser.add_argument("--precisions", default="fp32,auto,int8", help="new-embedder precisions to compare")
    parser.add_argument("--reference", default=REFERENCE_COMMIT, help="commit whose embedder.py is the reference")
    parser.add_argument("--benchmarks", default=",".join(DEFAULT_BENCHMARKS), help="benchmarks whose items are the queries")
    parser.add_argument("--loose-threshold", type=float, default=0.7,
                        help="also compare the matches at this cosine (the default 0.8 finds none in the clean stdlib)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    load_start = os.getloadavg()[0]  # a shared machine: the load says how far to trust the times
    files = [r["text"] for r in LocalPythonFiles()]
    rng = random.Random(args.seed)
    if args.sample:  # whole files, so that the detector below scans complete files
        rng.shuffle(files)
        count = np.cumsum([len(text_chunks(f)) for f in files])
        files = files[:int(np.searchsorted(count, args.sample)) + 1]
    chunks = list(dict.fromkeys(c for text in files for c in text_chunks(text)))  # the detector's chunks, each once
    rng.shuffle(chunks)  # every round gets the same mix of lengths
    print(f"{len(files)} standard-library files, {len(chunks)} distinct chunks; precision probe: {precision_report()}")

    methods: dict[str, Any] = {}
    load_s: dict[str, float] = {}
    start = time.perf_counter()
    reference = reference_embedder_class(args.reference)()  # today's defaults: fp32, batch 32
    reference.embed(chunks[:4])  # loads the model: kept out of the timed rounds
    methods["reference fp32"], load_s["reference fp32"] = reference, time.perf_counter() - start
    for precision in args.precisions.split(","):
        start = time.perf_counter()
        embedder = Embedder(precision=precision)
        embedder.embed(chunks[:4])
        name = f"new {precision}" + (f" -> {embedder.precision}" if precision == "auto" else "")
        methods[name], load_s[name] = embedder, time.perf_counter() - start

    bounds = np.linspace(0, len(chunks), args.rounds + 1).astype(int)
    seconds = {name: 0.0 for name in methods}
    per_round: dict[str, list[float]] = {name: [] for name in methods}
    parts: dict[str, list[np.ndarray]] = {name: [] for name in methods}
    names = list(methods)
    for r in range(args.rounds):
        piece = chunks[bounds[r]:bounds[r + 1]]
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            parts[name].append(methods[name].embed(piece))
            per_round[name].append(time.perf_counter() - start)
            seconds[name] += per_round[name][-1]
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {bounds[r + 1] / seconds[n]:.1f}/s" for n in names), flush=True)
    vectors = {name: np.concatenate(p) for name, p in parts.items()}

    # Decontamination-style queries: each item's statement, prose and solution, as EmbeddingSimilarity.index.
    benchmarks = args.benchmarks.split(",")
    items = load_benchmarks(benchmarks)
    queries = list(dict.fromkeys(t for it in items for t in (it.statement, prose(it.statement), it.solution) if t.strip()))
    ref_name = "reference fp32"
    lookups, matches, loose = {}, {}, {}
    for name, embedder in methods.items():
        lookups[name] = Precomputed(embedder)
        lookups[name].table.update(zip(chunks, vectors[name]))
        detector = EmbeddingSimilarity(embedder=lookups[name]).index(items)
        matches[name] = {(m.row, m.item) for m in detector.scan(files)}
        detector = EmbeddingSimilarity(embedder=lookups[name], threshold=args.loose_threshold).index(items)
        loose[name] = {(m.row, m.item) for m in detector.scan(files)}
    query_vectors = {name: lookups[name].embed(queries) for name in methods}

    # The reference's padding, recounted: its batches were 32 texts sorted by characters, padded to the longest.
    lengths = [len(x) for x in methods[names[1]]._tokenize(chunks)] if len(names) > 1 else []
    by_chars = [lengths[i] for i in sorted(range(len(chunks)), key=lambda i: len(chunks[i]))]
    ref_padded = sum(len(b) * max(b) for b in (by_chars[i:i + 32] for i in range(0, len(by_chars), 32)))
    rows = []
    for name in methods:
        cos = (vectors[name] * vectors[ref_name]).sum(1)
        nn = nearest_agreement(query_vectors[ref_name], vectors[ref_name], query_vectors[name], vectors[name])
        stats = getattr(methods[name], "stats", {})
        rows.append({
            "method": name, "chunks_per_s": round(len(chunks) / seconds[name], 2), "seconds": round(seconds[name], 2),
            "speedup": round(seconds[ref_name] / seconds[name], 2), "load_s": round(load_s[name], 2),
            # per round (same slice, back to back): robust to the machine's load drifting between rounds
            "round_speedups": [round(a / b, 2) for a, b in zip(per_round[ref_name], per_round[name])],
            "median_round_speedup": round(float(np.median([a / b for a, b in zip(per_round[ref_name], per_round[name])])), 2),
            "cos_min": round(float(cos.min()), 5), "cos_mean": round(float(cos.mean()), 6),
            "below_0.99": int((cos < MIN_COSINE).sum()),
            "matches": len(matches[name]), "matches_same": matches[name] == matches[ref_name],
            "loose_matches": len(loose[name]), "loose_differing": len(loose[name] ^ loose[ref_name]),
            "nn_query": f"{nn['query_to_chunk']['same']}/{nn['query_to_chunk']['of']}",
            "nn_chunk": f"{nn['chunk_to_query']['same']}/{nn['chunk_to_query']['of']}",
            "nearest": nn, "padding": round(1 - stats["tokens"] / stats["padded_tokens"], 3) if stats.get("padded_tokens")
            else round(1 - sum(lengths) / ref_padded, 3) if ref_padded else None,
        })
    columns = ["method", "chunks_per_s", "speedup", "median_round_speedup", "cos_min", "cos_mean", "below_0.99", "matches",
               "matches_same", "loose_matches", "loose_differing", "nn_query", "nn_chunk", "padding", "load_s"]
    shown = [{**r, "cos_min": f"{r['cos_min']:.5f}", "cos_mean": f"{r['cos_mean']:.6f}"} for r in rows]
    table = print_table(shown, columns)
    write_results("embedding", rows, table=table, reference_commit=args.reference, chunks=len(chunks),
                  files=len(files), queries=len(queries), rounds=args.rounds,
                  seed=args.seed, sample=args.sample, cpu=cpu_model(), load_avg_1m_start=load_start,
                  load_avg_1m_end=os.getloadavg()[0],
                  precision_probe=precision_report(), benchmarks=benchmarks, loose_threshold=args.loose_threshold,
                  detector_threshold=EmbeddingSimilarity(embedder=object()).min_cosine)


if __name__ == "__main__":
    main()

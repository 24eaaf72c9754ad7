"""Bounded memory and throughput of `phi data filtered-code` on synthetic JSONL corpora of distinct Python files.

Each size runs as its own `phi data filtered-code` process (default executor: local, 1 task); we report its
peak RSS (ru_maxrss of the child), wall time and files/s, and the RSS growth from the smallest size to the
largest. With the datatrove pipeline nothing holds the corpus, so the growth must stay small while the
corpus grows 32x (the list-based builder before it grew ~26 KB a file: 521 MB at 1,000 -> 1,339 MB at 32,000).

    python benchmarks/filtered_code.py                                  # --no-quality-filter, 1,000 and 32,000
    python benchmarks/filtered_code.py --quality-filter --sizes 500 4000  # annotate + embed + classify too
    python benchmarks/filtered_code.py --sizes 1000 4000 --tasks 2 --workers 2
    python benchmarks/filtered_code.py --sizes 1000 4000 --reference 1f565b6   # interleaved with an older commit

`--reference REV` runs that commit's `phi data filtered-code` (extracted with `git archive`, same venv) on the
same rows (one JSONL file: the list-based builder did not read folders of JSONL) right after ours, per size,
so both see the same machine load; the table then has both rows and the JSON their ratios.

The corpus: `synthetic_code_corpus` writes documented functions with loops and branches, ~3.5 KB a file, all
distinct, plus a few planted exact copies (re-indented blank lines) and near copies (one line changed), in
JSONL shards of 1,000 rows.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import print_table, write_results  # noqa: E402

WORDS = ("value", "total", "count", "index", "item", "result", "buffer", "node", "weight", "score", "limit", "key",
         "row", "column", "name", "price", "level", "queue", "stack", "path", "token", "width", "height", "step")
VERBS = ("compute", "merge", "count", "find", "sort", "parse", "update", "filter", "collect", "scale", "split", "walk")


def synthetic_file(rng: random.Random, index: int) -> str:
    """One distinct, documented Python module of about 3.5 KB."""
    parts = [f'"""Utilities for the {rng.choice(WORDS)} {rng.choice(WORDS)} problem number {index}."""\n']
    while sum(map(len, parts)) < 3400:
        a, b, c = rng.sample(WORDS, 3)
        name = f"{rng.choice(VERBS)}_{a}_{b}_{index}_{len(parts)}"
        k = rng.randint(2, 97)
        parts.append(
            f"\n\ndef {name}({a}s, {c}={k}):\n"
            f'    """Return the {b} of the {a}s, {rng.choice(VERBS)}ing each above {c}."""\n'
            f"    {b} = 0\n"
            f"    for {a} in {a}s:\n"
            f"        if {a} > {c}:\n"
            f"            {b} += {a} * {rng.randint(2, 9)}\n"
            f"        elif {a} % {rng.randint(2, 7)} == 0:\n"
            f"            {b} -= {rng.randint(1, 50)}\n"
            f"    return {b}\n")
    return "".join(parts)


def synthetic_code_corpus(folder: Path, n: int, seed: int = 0, shard_rows: int = 1000,
                          planted: float = 0.01) -> dict[str, int]:
    """`n` rows in JSONL shards under `folder`; about `planted` of them exact copies and as many near copies of
    earlier rows (in other shards where possible). Returns the counts."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    originals: list[str] = []
    counts = {"rows": 0, "exact_copies": 0, "near_copies": 0}
    shard = None
    for i in range(n):
        if i % shard_rows == 0:
            if shard:
                shard.close()
            shard = (folder / f"code-{i // shard_rows:05d}.jsonl").open("w")
        roll = rng.random()
        if originals and roll < planted:
            text = rng.choice(originals).replace("\n\n\n", "\n\n  \n\n")  # same once normalised
            counts["exact_copies"] += 1
        elif originals and roll < 2 * planted:
            lines = rng.choice(originals).splitlines()
            j = rng.randrange(1, len(lines))
            lines[j] = lines[j] + "  # edited"
            text = "\n".join(lines) + "\n"
            counts["near_copies"] += 1
        else:
            text = synthetic_file(rng, i)
            if len(originals) < 1000:
                originals.append(text)
        shard.write(json.dumps({"id": f"doc-{i:07d}", "content": text, "path": f"synthetic/{i}.py",
                                "license": "MIT"}) + "\n")
        counts["rows"] += 1
    if shard:
        shard.close()
    return counts


def median_heuristic_score(seed: int) -> float:
    """The synthetic files all look educational to the heuristic (8.84-8.85 of 10): label at the median, so the
    classifier has two classes to learn (the benchmark is about memory and speed, not about the labels)."""
    import statistics

    from datasets_builders.annotate.judge import HeuristicAnnotator

    rng, annotator = random.Random(seed), HeuristicAnnotator()
    return statistics.median(annotator.score(synthetic_file(rng, i))[0] for i in range(200))


def run_size(n: int, args: argparse.Namespace, root: Path, reference: Path | None = None) -> dict[str, object]:
    corpus = root / f"corpus-{n}"
    counts = synthetic_code_corpus(corpus, n, seed=args.seed)
    out = root / f"out-{n}" if reference is None else root / f"ref-out-{n}"
    source = corpus
    if reference is not None:
        source = corpus.with_suffix(".jsonl")
        with source.open("w") as f:
            for shard in sorted(corpus.glob("*.jsonl")):
                f.write(shard.read_text())
    cmd = [sys.executable, "-m", "recipes.cli", "data", "filtered-code", "--input", str(source), "--output", str(out),
           "--content-column", "content"]
    cmd += ["--tasks", str(args.tasks), "--workers", str(args.workers)] if reference is None else []
    if args.quality_filter:
        cmd += ["--annotate", str(args.annotate), "--label-threshold", str(median_heuristic_score(args.seed))]
    else:
        cmd += ["--no-quality-filter"]
    # ru_maxrss of RUSAGE_CHILDREN is the largest child so far: measure each size in its own wrapper process.
    wrapper = ("import resource, subprocess, sys, json; r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, "
               "stderr=subprocess.PIPE, text=True); print(json.dumps({'rc': r.returncode, 'err': r.stderr[-2000:], "
               "'maxrss_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))")
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True,
                            cwd=reference, env={**os.environ, "PYTHONPATH": str(reference or REPO)})
    seconds = time.perf_counter() - start
    report = json.loads(result.stdout.strip().splitlines()[-1])
    if report["rc"] != 0:
        raise RuntimeError(f"size {n} failed:\n{report['err']}")
    info = json.loads((out / "build_info.json").read_text())
    if reference is None:
        assert info["count_check"]["read"] == info["count_check"]["kept_plus_removed"] == n, info["count_check"]
    return {"builder": "datatrove pipeline" if reference is None else f"reference {args.reference}", "files": n, "quality_filter": args.quality_filter, "tasks": args.tasks, "workers": args.workers,
            "peak_rss_mb": round(report["maxrss_kb"] / 1024, 1), "seconds": round(seconds, 1),
            "files_per_s": round(n / seconds, 1), "kept": info["rows"], "removed": info["removed_rows"],
            "removed_by_reason": info.get("removed_by_reason"), **counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="default: 1000 32000 (500 4000 with "
                        "--quality-filter)")
    parser.add_argument("--quality-filter", action="store_true", help="annotate + embed + classify as well")
    parser.add_argument("--annotate", type=int, default=200)
    parser.add_argument("--tasks", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference", default=None, help="a commit whose builder runs on the same rows, interleaved")
    parser.add_argument("--keep", default=None, help="folder to keep corpora and outputs in (default: a temp dir)")
    args = parser.parse_args()
    sizes = args.sizes or ([500, 4000] if args.quality_filter else [1000, 32000])
    rows, ratios = [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep) if args.keep else Path(tmp)
        reference = None
        if args.reference:
            reference = root / "reference"
            reference.mkdir(parents=True, exist_ok=True)
            archive = subprocess.run(["git", "archive", args.reference], cwd=REPO, capture_output=True, check=True)
            subprocess.run(["tar", "-x", "-C", str(reference)], input=archive.stdout, check=True)
        for n in sizes:
            rows.append(run_size(n, args, root))
            if reference is not None:
                rows.append(run_size(n, args, root, reference))
                ratios.append({"files": n, "files_per_s_ratio": round(rows[-2]["files_per_s"] / rows[-1]["files_per_s"], 2),
                               "peak_rss_ratio": round(rows[-2]["peak_rss_mb"] / rows[-1]["peak_rss_mb"], 2)})
    ours = [r for r in rows if r["builder"] == "datatrove pipeline"]
    growth = ours[-1]["peak_rss_mb"] - ours[0]["peak_rss_mb"]
    print_table(rows, ["builder", "files", "quality_filter", "tasks", "peak_rss_mb", "seconds", "files_per_s", "kept",
                       "removed"])
    print(f"peak RSS growth {sizes[0]} -> {sizes[-1]} files: {growth:+.1f} MB")
    for r in ratios:
        print(f"{r['files']} files: ours / reference files/s {r['files_per_s_ratio']}, peak RSS {r['peak_rss_ratio']}")
    name = "filtered_code_memory" + ("_quality" if args.quality_filter else "") + f"_{sizes[0]}_{sizes[-1]}"
    write_results(name, rows, rss_growth_mb=round(growth, 1), sizes=sizes, ratios=ratios, reference=args.reference)


if __name__ == "__main__":
    main()

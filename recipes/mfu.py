"""Model FLOPs utilisation: the phi-1 formula and a measured peak.

FLOPs per token = 6 * N_matmul + 12 * layers * hidden * seq_len (PaLM appendix B: 6N for the
matmul weights forward + backward, plus the attention scores, which grow with the context).
The peak is taken from the device: on a CPU there is no datasheet number worth trusting, so we
time a large bf16 matmul in the same process.
"""

from __future__ import annotations

import time

import torch


def matmul_params(model: torch.nn.Module) -> int:
    """Parameters that take part in matmuls: every Linear weight (the embedding is a lookup)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def flops_per_token(model: torch.nn.Module, seq_len: int) -> float:
    config = model.config
    return 6 * matmul_params(model) + 12 * config.num_hidden_layers * config.hidden_size * seq_len


def measure_peak_flops(device: str | torch.device = "cpu", dtype: torch.dtype = torch.bfloat16, n: int = 2048,
                       repeats: int = 10) -> float:
    """Best-of-`repeats` FLOP/s of an n x n x n matmul (CUDA: synchronised)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    a @ b  # warm-up: first call allocates and picks kernels
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best

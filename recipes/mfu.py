"""Model FLOPs utilisation: the phi-1 formula and the device's peak.

FLOPs per token = 6 * N_matmul + 12 * layers * hidden * seq_len (PaLM, Chowdhery et al. 2022, appendix B:
6N for the matmul weights forward + backward, plus the attention scores, which grow with the context).
The peak is a datasheet number on known GPUs (dense bf16 / fp16, no sparsity); on a CPU there is no
datasheet number worth trusting, so a large matmul is timed in the same process.
"""

from __future__ import annotations

import time

import torch

# bf16 / fp16 dense peak FLOP/s per device (datasheets, without sparsity).
GPU_PEAK_FLOPS = {"A100": 312e12, "H100": 989e12, "H200": 989e12, "A10G": 125e12, "L4": 121e12, "V100": 125e12,
                  "4090": 165e12, "3090": 71e12, "T4": 65e12}


def matmul_params(model: torch.nn.Module) -> int:
    """Parameters that take part in matmuls: every Linear weight (the embedding is a lookup)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def flops_per_token(model: torch.nn.Module, seq_len: int) -> float:
    """Training FLOPs per token of `model` at context `seq_len` (forward + backward)."""
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


def peak_flops(device: torch.device, mixed_precision: str) -> float:
    """Peak FLOP/s of one device: the datasheet for known GPUs, else a timed matmul in the training's dtype."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, value in GPU_PEAK_FLOPS.items():
            if key in name:
                return value
    dtype = torch.float32 if mixed_precision == "no" else (torch.bfloat16 if device.type == "cpu" else torch.float16)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # leave the training's RNG alone
        return measure_peak_flops(device, dtype, n=1024 if device.type == "cpu" else 4096, repeats=5)

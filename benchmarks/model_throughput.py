"""Throughput of our PhiForCausalLM vs transformers' native PhiForCausalLM on the same config and weights.

Training step (forward + backward + AdamW) tokens/s and greedy-generation tokens/s, for the `tiny` and
`small` presets, fp32 and bf16 autocast. Runs are interleaved (ours, native, ours, ...) so machine noise
hits both; we report medians, the ratio ours / native as the median of the per-round ratios (each round
times ours then native back to back), and MFU against a bf16 matmul peak measured in the same run.

    python benchmarks/model_throughput.py                 # full table
    python benchmarks/model_throughput.py --rounds 3 --presets tiny
    python benchmarks/model_throughput.py --kinds train --clock cpu   # 1 thread, CPU seconds: robust to load

`--clock cpu` times CPU seconds of the process on one thread instead of wall seconds: on a machine that other
jobs share, wall time mostly measures the scheduler; it writes model_throughput_cpu.json.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import print_table, write_results  # noqa: E402
from modeling_phi import PhiConfig, PhiForCausalLM  # noqa: E402
from modeling_phi.convert import native_state_dict  # noqa: E402
from recipes.mfu import flops_per_token, measure_peak_flops  # noqa: E402

SHAPES = {"tiny": dict(batch=8, seq_len=256), "small": dict(batch=4, seq_len=256)}
clock = time.perf_counter  # --clock cpu: time.process_time


def build_pair(preset: str) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    config = PhiConfig.from_preset(preset)
    ours = PhiForCausalLM(config)
    fields = {k: v for k, v in config.to_dict().items() if k not in ("model_type", "auto_map", "transformers_version")}
    native = transformers.PhiForCausalLM(transformers.PhiConfig(**fields))
    native.load_state_dict(native_state_dict(ours))
    for m in (ours, native):
        m.set_attn_implementation("sdpa")
    return {"ours": ours, "native": native}


def autocast(dtype: str):
    return torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()


def time_train(model, optimizer, ids, dtype: str, steps: int) -> float:
    model.train()
    start = clock()
    for _ in range(steps):
        with autocast(dtype):
            loss = model(ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return ids.numel() * steps / (clock() - start)


@torch.no_grad()
def time_generate(model, prompt, dtype: str, new_tokens: int) -> float:
    model.eval()
    start = clock()
    with autocast(dtype):
        out = model.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                             pad_token_id=0)
    assert out.shape[1] == prompt.shape[1] + new_tokens
    return prompt.shape[0] * new_tokens / (clock() - start)


def bench(preset: str, dtype: str, rounds: int, steps: int, new_tokens: int, peak: float,
          kinds: tuple[str, ...] = ("train", "generate")) -> list[dict]:
    models = build_pair(preset)
    shape = SHAPES[preset]
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, models["ours"].config.vocab_size, (shape["batch"], shape["seq_len"]), generator=g)
    prompt = ids[:4, :32]
    # Fused AdamW on both sides: the optimizer recipes/pretrain.py and transformers' Trainer (torch >= 2.8) use.
    optimizers = {k: torch.optim.AdamW(m.parameters(), lr=1e-4, fused=True) for k, m in models.items()}
    timers = {"train": lambda name, m, n: time_train(m, optimizers[name], ids, dtype, n),
              "generate": lambda name, m, n: time_generate(m, prompt, dtype, n)}
    timed = {"train": steps, "generate": new_tokens}
    for name, m in models.items():  # warm-up both (allocator, kernel selection)
        for kind in kinds:
            timers[kind](name, m, 1 if kind == "train" else 4)
    by_kind = {kind: {k: [] for k in models} for kind in kinds}
    for _ in range(rounds):
        for name, m in models.items():
            for kind in kinds:
                by_kind[kind][name].append(timers[kind](name, m, timed[kind]))
    fpt = flops_per_token(models["ours"], shape["seq_len"])
    rows = []
    for kind, results in by_kind.items():
        med = {k: statistics.median(v) for k, v in results.items()}
        ratios = [o / n for o, n in zip(results["ours"], results["native"])]
        row = {"preset": preset, "dtype": dtype, "kind": kind, "ours_tok_s": med["ours"], "native_tok_s": med["native"],
               "ratio": statistics.median(ratios), "min_ratio": min(ratios), "max_ratio": max(ratios)}
        if kind == "train":
            row["ours_mfu"] = med["ours"] * fpt / peak
            row["native_mfu"] = med["native"] * fpt / peak
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="tiny,small")
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="training steps per timed run")
    parser.add_argument("--new_tokens", type=int, default=32)
    parser.add_argument("--kinds", default="train,generate", help="train, generate or both")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="cpu: process CPU time, 1 thread")
    args = parser.parse_args()
    if args.clock == "cpu":
        global clock
        clock, args.threads = time.process_time, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    peak = measure_peak_flops("cpu", torch.bfloat16)
    print(f"measured bf16 matmul peak: {peak / 1e12:.2f} TFLOP/s, torch threads {torch.get_num_threads()}")
    rows = []
    for preset in args.presets.split(","):
        for dtype in args.dtypes.split(","):
            kinds = tuple(args.kinds.split(","))
            rows += bench(preset, dtype, args.rounds, args.steps, args.new_tokens, peak, kinds)
            print_table(rows[-len(kinds):], ["preset", "dtype", "kind", "ours_tok_s", "native_tok_s", "ratio"])
    print()
    table = print_table(rows, ["preset", "dtype", "kind", "ours_tok_s", "native_tok_s", "ratio", "min_ratio", "max_ratio",
                               "ours_mfu", "native_mfu"])
    load = {"before": load_before, "after": os.getloadavg()}
    print(f"load average (1, 5, 15 min) before / after: {load['before']} / {load['after']}")
    write_results("model_throughput" + ("_cpu" if args.clock == "cpu" else ""), rows, clock=args.clock,
                  threads=torch.get_num_threads(), peak_bf16_flops=peak, shapes=SHAPES, rounds=args.rounds,
                  steps=args.steps, table=table, load_average=load)


if __name__ == "__main__":
    main()

"""Training throughput: recipes/pretrain.py vs a plain transformers Trainer on native PhiForCausalLM.

Same packed data (standard-library code, our BPE), same shapes (`tiny`, `small` presets), same micro-batch,
accumulation, optimizer settings and bf16 autocast on CPU. Runs are interleaved (ours, Trainer, ours, ...)
so machine noise hits both sides; per side the median step throughput (first step and the step that ends
with the eval are left out), MFU against a bf16 matmul peak measured in the same run, and the ratio: the median
of the per-round ratios (each round: ours' median step / Trainer's median step, run back to back).
`--compile` adds a third run per round, ours with `torch_compile: true`: its steady-state steps apart from its
compile time (the first step's excess over the median step). Also prints what phi-1 needs on 8 x A100 (memory
per GPU, tokens/s at the paper's ~53% MFU, days).

    python benchmarks/training.py                      # tiny and small, 3 rounds
    python benchmarks/training.py --presets tiny --rounds 1 --steps 6 --compile
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see recipes/pretrain.py

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import print_table, write_results  # noqa: E402
from modeling_phi import PRESETS  # noqa: E402
from recipes.mfu import flops_per_token, measure_peak_flops  # noqa: E402

SHAPES = {"tiny": dict(seq_len=256, micro=8, accum=2), "small": dict(seq_len=256, micro=4, accum=2)}
A100_BF16 = 312e12


def prepare(work: Path, seq_len: int) -> dict[str, str]:
    """The standard-library corpus, an 8192-token BPE and its packed blocks (built once, cached)."""
    from datasets_builders.packing import build_stdlib_corpus, pack
    from datasets_builders.tokenizer import train_tokenizer

    corpus = work / "stdlib"
    if not corpus.exists():
        build_stdlib_corpus(corpus)
    if not (work / "tokenizer").exists():
        train_tokenizer([corpus], work / "tokenizer", vocab_size=8192)
    from datasets_builders.tokenizer import load_tokenizer

    pack([corpus], load_tokenizer(work / "tokenizer"), work / f"packed-{seq_len}", seq_len=seq_len, eval_fraction=0.01)
    return {"corpus": str(corpus), "tokenizer": str(work / "tokenizer"), "packed": str(work / f"packed-{seq_len}")}


def run_ours(preset: str, data: dict[str, str], shape: dict, steps: int, out: Path,
             torch_compile: bool = False) -> tuple[list[float], float]:
    """Step tokens/s of recipes/pretrain.py (not the first step, nor the last: it includes the eval), and the
    first step's tokens/s (with torch.compile: the compilation)."""
    from recipes import pretrain
    from recipes.training import read_metrics

    pretrain.run({"model": preset, "tokenizer": data["tokenizer"], "datasets": [data["corpus"]],
                  "packed_dir": data["packed"], "seq_len": shape["seq_len"], "eval_fraction": 0.01,
                  "global_batch_size": shape["micro"] * shape["accum"], "micro_batch_size": shape["micro"],
                  "max_steps": steps, "learning_rate": 1e-3, "warmup_steps": 2, "weight_decay": 0.1,
                  "mixed_precision": "bf16", "output_dir": str(out), "eval_steps": 10**6, "eval_batches": 1,
                  "logging_steps": 1, "save_steps": 10**6, "save_total_limit": 1, "report_to": [],
                  "torch_compile": torch_compile})
    rows = read_metrics(out)
    return [r["tokens_per_second"] for r in rows[1:-1]], rows[0]["tokens_per_second"]


def run_trainer(preset: str, data: dict[str, str], shape: dict, steps: int, out: Path) -> list[float]:
    """transformers' Trainer + transformers' own PhiForCausalLM, the same shapes and batch."""
    from accelerate.state import AcceleratorState
    from datasets import load_dataset
    from transformers import PhiConfig, PhiForCausalLM, Trainer, TrainerCallback, TrainingArguments

    AcceleratorState._reset_state(True)
    fields = {k: v for k, v in PRESETS[preset].items()}
    torch.manual_seed(0)
    model = PhiForCausalLM(PhiConfig(**fields, attn_implementation="sdpa"))
    train = load_dataset(data["packed"], split="train")  # the same blocks, as the Hub-layout Parquet shards
    train = train.map(lambda b: {"labels": b["input_ids"]}, batched=True)
    times: list[float] = []

    class StepTimer(TrainerCallback):
        """Wall time between consecutive step ends: data, forward/backward, optimizer, logging, as ours."""

        def on_train_begin(self, args, state, control, **kw):
            self.last = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            now = time.perf_counter()
            times.append(now - self.last)
            self.last = now

    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=shape["micro"],
                             gradient_accumulation_steps=shape["accum"], max_steps=steps, learning_rate=1e-3,
                             warmup_steps=2, weight_decay=0.1, adam_beta2=0.98, adam_epsilon=1e-7, max_grad_norm=1.0,
                             bf16=True, use_cpu=True, logging_steps=1, report_to=[], save_strategy="no",
                             dataloader_num_workers=0, disable_tqdm=True, seed=0)
    Trainer(model=model, args=args, train_dataset=train, callbacks=[StepTimer()]).train()
    tokens = shape["micro"] * shape["accum"] * shape["seq_len"]
    return [tokens / t for t in times[1:]]


def preset_flops_per_token(preset: str, seq_len: int) -> float:
    """recipes/mfu.py's FLOPs per token for a preset's shape (the model built on the meta device: no weights)."""
    from modeling_phi import PhiConfig, PhiForCausalLM

    with torch.device("meta"):
        model = PhiForCausalLM(PhiConfig.from_preset(preset))
    return flops_per_token(model, seq_len)


def phi1_on_8_a100(mfu: float = 0.53) -> dict:
    """What phi-1's pretraining needs on 8 A100-80GB (the paper's batch, 24k steps), computed."""
    p = PRESETS["phi-1"]
    h, layers, vocab, seq, micro = p["hidden_size"], p["num_hidden_layers"], p["vocab_size"], 2048, 8
    params = layers * (4 * h * h + 4 * h + 2 * h * p["intermediate_size"] + p["intermediate_size"] + h + 2 * h) \
        + 2 * vocab * h + vocab + 2 * h
    fpt = preset_flops_per_token("phi-1", seq)
    gib = 2**30
    # Mixed precision with fp32 master weights: weights 4 B + grads 4 B + Adam m, v 8 B per parameter.
    ddp_states = 16 * params / gib
    zero2_states = (4 * params + 12 * params / 8) / gib
    # Activations per sequence with flash / SDPA attention (no S x S scores kept): ~34 S H bytes per layer
    # (Korthikanti et al. 2022, 16-bit, with dropout masks), plus the fp32 logits and their grad.
    act_per_seq = (34 * seq * h * layers + seq * vocab * (2 + 4 + 4)) / gib
    ckpt_per_seq = (2 * seq * h * layers + 34 * seq * h + seq * vocab * 10) / gib  # with gradient checkpointing
    tokens_per_s = 8 * A100_BF16 * mfu / fpt
    tokens = 24_000 * 1024 * 2048
    return {"params": params, "flops_per_token": fpt, "ddp_optimizer_states_gib": ddp_states,
            "zero2_optimizer_states_gib": zero2_states, "activations_per_sequence_gib": act_per_seq,
            "activations_per_sequence_checkpointed_gib": ckpt_per_seq,
            "ddp_memory_per_gpu_micro8_gib": ddp_states + micro * act_per_seq,
            "ddp_memory_per_gpu_micro8_checkpointed_gib": ddp_states + micro * ckpt_per_seq,
            "mfu": mfu, "tokens_per_second_8xA100": tokens_per_s, "tokens_24k_steps": tokens,
            "days_24k_steps": tokens / tokens_per_s / 86400, "gpu_hours_24k_steps": 8 * tokens / tokens_per_s / 3600}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"], choices=sorted(SHAPES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--compile", action="store_true", help="also time ours with torch_compile: true")
    parser.add_argument("--work_dir", default=None, help="where the corpus / tokenizer / packs are cached")
    args = parser.parse_args()
    work = Path(args.work_dir or Path(tempfile.gettempdir()) / "phi-bench-training")
    work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    peak = measure_peak_flops("cpu", torch.bfloat16)
    rows = []
    for preset in args.presets:
        shape = SHAPES[preset]
        data = prepare(work, shape["seq_len"])
        tokens = shape["micro"] * shape["accum"] * shape["seq_len"]
        ours, theirs, compiled, ratios, compile_ratios, compile_s = [], [], [], [], [], []
        for r in range(args.rounds):  # interleaved
            o, _ = run_ours(preset, data, shape, args.steps, work / f"ours-{preset}-{r}")
            t = run_trainer(preset, data, shape, args.steps, work / f"trainer-{preset}-{r}")
            ours += o
            theirs += t
            ratios.append(statistics.median(o) / statistics.median(t))
            if args.compile:
                c, first = run_ours(preset, data, shape, args.steps, work / f"compiled-{preset}-{r}",
                                       torch_compile=True)
                compiled += c
                compile_ratios.append(statistics.median(c) / statistics.median(t))
                compile_s.append(tokens / first - tokens / statistics.median(c))
        fpt = preset_flops_per_token(preset, shape["seq_len"])
        o, t = statistics.median(ours), statistics.median(theirs)
        row = {"preset": preset, "seq_len": shape["seq_len"], "batch": shape["micro"] * shape["accum"],
               "ours_tok_s": o, "trainer_tok_s": t, "ours_mfu": o * fpt / peak, "trainer_mfu": t * fpt / peak,
               "ratio": statistics.median(ratios), "round_ratios": ratios, "steps_timed": f"{len(ours)}/{len(theirs)}"}
        if args.compile:
            row.update(compiled_tok_s=statistics.median(compiled), compiled_ratio=statistics.median(compile_ratios),
                       compiled_round_ratios=compile_ratios, compile_s=statistics.median(compile_s))
        rows.append(row)
    columns = ["preset", "seq_len", "batch", "ours_tok_s", "trainer_tok_s", "ours_mfu", "trainer_mfu", "ratio",
               "steps_timed"] + (["compiled_tok_s", "compiled_ratio", "compile_s"] if args.compile else [])
    table = print_table(rows, columns)
    print(f"load average before / after: {load_before} / {os.getloadavg()}")
    gpu = phi1_on_8_a100()
    print("\nphi-1 on 8 x A100 (computed):")
    for key, value in gpu.items():
        print(f"  {key}: {value:,.3f}" if isinstance(value, float) else f"  {key}: {value:,}")
    # A --compile run goes to its own file: compiling takes minutes here, so it runs with fewer presets / rounds.
    write_results("training_compile" if args.compile else "training", rows, peak_bf16_flops=peak,
                  threads=torch.get_num_threads(), phi1_8xA100=gpu, rounds=args.rounds, steps=args.steps, table=table,
                  load_before=load_before, load_after=os.getloadavg(),
                  note="CPU, bf16 autocast; ours = recipes/pretrain.py (modeling_phi), "
                       "trainer = transformers Trainer + transformers PhiForCausalLM")


if __name__ == "__main__":
    main()

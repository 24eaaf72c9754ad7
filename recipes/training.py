"""The training loop shared by pretrain.py and finetune.py: a plain accelerate loop, readable in one sitting.

What it does, in order: check the config, the model shape and the data before spending compute; build
what a tiny run lacks (the standard-library corpus, a BPE tokenizer); pack the data; then train with
AdamW, linear warmup + linear decay (or constant) learning rate, gradient accumulation to the global
batch, clipping, bf16/fp16 autocast, optional gradient checkpointing and torch.compile; log loss,
eval loss, lr, grad norm, tokens/s and MFU to metrics.jsonl, TensorBoard and a progress bar; write
checkpoints that are Hub-ready model folders plus the full training state; draw the loss curve.

Exactness. The global batch of step s is a pure function of (seed, s): every process computes the same
block indices and takes its slice, and the loss of a micro-batch is its summed token loss divided by
the number of target tokens in the whole global batch (times the world size, since DDP averages
gradients). One process and N processes with the same global batch therefore take the same steps, and
a resumed run (model, optimizer, scheduler and every process's RNG restored by accelerate, the data
position implied by the step) continues bit for bit.

MFU follows PaLM (Chowdhery et al. 2022, appendix B): 6 N_matmul + 12 L H S FLOPs per token, against
the device's peak (a datasheet number on known GPUs; on CPU a measured bf16 matmul).
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datasets_builders.packing import Source, load_any_dataset, load_packed, pack
from recipes.config import TrainConfig, check_config
from recipes.mfu import flops_per_token, measure_peak_flops

CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"  # written last into a checkpoint: its presence marks it complete
BEST_FILE = "best_checkpoint.json"
# bf16 / fp16 dense peak FLOP/s per device (datasheets, without sparsity).
GPU_PEAK_FLOPS = {"A100": 312e12, "H100": 989e12, "H200": 989e12, "A10G": 125e12, "L4": 121e12, "V100": 125e12,
                  "4090": 165e12, "3090": 71e12, "T4": 65e12}

# A checkpoint callback gets (checkpoint folder, step) and returns a score (higher is better) or None.
CheckpointCallback = Callable[[Path, int], "float | None"]


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------

def model_config(cfg: TrainConfig):
    """The model's config, without weights: a preset, or the config of a model folder / Hub id."""
    import modeling_phi  # noqa: F401  (registers phi with the Auto classes)
    from modeling_phi import PRESETS, PhiConfig
    from modeling_phi.configuration_phi import PRESET_ALIASES

    if cfg.model in PRESETS or cfg.model in PRESET_ALIASES:
        config = PhiConfig.from_preset(cfg.model, **cfg.model_overrides)
    else:
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(cfg.model)
        except OSError as err:
            raise FileNotFoundError(f"config key model: {cfg.model!r} is neither a preset ({', '.join(PRESETS)}) "
                                    f"nor a model folder / Hub id ({str(err).splitlines()[0]})") from None
        for key, value in cfg.model_overrides.items():
            setattr(config, key, value)
    if cfg.seq_len > config.max_position_embeddings:
        raise ValueError(f"config key seq_len: {cfg.seq_len} is above the model's max_position_embeddings "
                         f"({config.max_position_embeddings}); lower seq_len")
    return config


def build_model(cfg: TrainConfig, config, tokenizer):
    """Random init from a preset (seeded), or the pretrained weights of a folder / Hub id; LoRA if asked."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(cfg.seed)
    if hasattr(config, "set_tokenizer") and cfg.model in _presets():
        config.set_tokenizer(tokenizer)
        model = AutoModelForCausalLM.from_config(config, attn_implementation=cfg.attn_implementation)
    else:
        model = AutoModelForCausalLM.from_pretrained(cfg.model, config=config, dtype=torch.float32,
                                                     attn_implementation=cfg.attn_implementation)
    if len(tokenizer) > model.config.vocab_size:
        raise ValueError(f"tokenizer {cfg.tokenizer} has {len(tokenizer)} tokens, more than the model's "
                         f"vocab_size {model.config.vocab_size}")
    model.config.use_cache = False  # a cache in training would merge packed documents (DESIGN.md)
    if cfg.gradient_checkpointing:  # transformers v5 renamed it; keep working on both
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                                 target_modules=cfg.lora_target_modules, task_type="CAUSAL_LM"))
    return model


def _presets() -> set[str]:
    from modeling_phi import PRESETS
    from modeling_phi.configuration_phi import PRESET_ALIASES

    return set(PRESETS) | set(PRESET_ALIASES)


def peak_flops(device: torch.device, mixed_precision: str) -> float:
    """Peak FLOP/s of one device: the datasheet for known GPUs, else a timed matmul (recipes/mfu.py)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, value in GPU_PEAK_FLOPS.items():
            if key in name:
                return value
    dtype = torch.float32 if mixed_precision == "no" else (torch.bfloat16 if device.type == "cpu" else torch.float16)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # leave the training's RNG alone
        return measure_peak_flops(device, dtype, n=1024 if device.type == "cpu" else 4096, repeats=5)


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------

def check_sources(cfg: TrainConfig) -> list[Source]:
    """Each dataset exists (or can be built), has its columns and is not empty: before any compute."""
    sources = [Source.parse(s) for s in cfg.datasets]
    for source in sources:
        if not Path(source.path).exists() and source.build:
            if source.build not in BUILDERS:
                raise ValueError(f"dataset {source.path}: unknown build {source.build!r}; known: {sorted(BUILDERS)}")
            continue
        load_any_dataset(source.path, source.columns)
    return sources


def build_stdlib_corpus(path: str | os.PathLike) -> Path:
    """The tiny runs' default corpus: the standard library's .py files, one record per file."""
    from datasets_builders.hub_dataset import write_dataset
    from datasets_builders.sources import LocalPythonFiles

    files = LocalPythonFiles()
    return write_dataset(list(files), path, name="python-stdlib", tags=["code"], license="psf-2.0",
                         description="The .py files of the Python standard library (tests and vendored trees excluded).",
                         build_info={"source": str(files.root), "skipped": dict(files.skipped)})


def build_filtered_code_corpus(path: str | os.PathLike) -> Path:
    """phi-1's filtered code corpus (datasets_builders/filtered_code.py) from the standard library, offline."""
    from datasets_builders.filtered_code import build_filtered_code

    return Path(build_filtered_code(output_dir=path))


BUILDERS: dict[str, Callable[[str], Any]] = {"stdlib": build_stdlib_corpus, "filtered-code": build_filtered_code_corpus}


def prepare_data(cfg: TrainConfig, sources: list[Source], log: Callable[[str], None]):
    """Build missing corpora and tokenizer, pack; returns (tokenizer, {'train', 'eval'} datasets)."""
    from datasets_builders.tokenizer import load_tokenizer, train_tokenizer

    for source in sources:
        if not Path(source.path).exists():
            log(f"building {source.path} ({source.build})")
            BUILDERS[source.build](source.path)
    if not Path(cfg.tokenizer).exists() and cfg.tokenizer_vocab_size:
        log(f"training a {cfg.tokenizer_vocab_size}-token BPE on {[s.path for s in sources if s.format == 'text']}")
        train_tokenizer([s.path for s in sources if s.format == "text"], cfg.tokenizer, cfg.tokenizer_vocab_size,
                        column=sources[0].column, model_max_length=cfg.seq_len)
    tokenizer = load_tokenizer(cfg.tokenizer)
    packed_dir = cfg.packed_dir or str(Path(cfg.output_dir) / "packed")
    pack(sources, tokenizer, packed_dir, cfg.seq_len, cfg.eval_fraction, cfg.seed, cfg.num_proc)
    return tokenizer, load_packed(packed_dir)


@functools.lru_cache(maxsize=2)
def _epoch_order(n_rows: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n_rows)


def global_batch_indices(step: int, n_rows: int, global_batch: int, seed: int) -> np.ndarray:
    """Row indices of optimizer step `step`: epochs of seeded permutations, read in order."""
    start = step * global_batch
    out: list[int] = []
    while len(out) < global_batch:
        epoch, offset = divmod(start + len(out), n_rows)
        out.extend(_epoch_order(n_rows, seed, epoch)[offset:offset + global_batch - len(out)].tolist())
    return np.asarray(out)


def document_position_ids(input_ids: np.ndarray, eos: int) -> np.ndarray:
    """Positions restarting at 0 after every eos, so the mask becomes block-diagonal per document."""
    positions = np.broadcast_to(np.arange(input_ids.shape[1]), input_ids.shape)
    starts = np.zeros_like(positions)
    starts[:, 1:] = np.where(input_ids[:, :-1] == eos, positions[:, 1:], 0)
    return positions - np.maximum.accumulate(starts, axis=1)


def make_batch(ds, rows: np.ndarray, device: torch.device, eos: int | None) -> dict[str, torch.Tensor]:
    data = ds[np.sort(rows).tolist()]
    order = np.argsort(np.argsort(rows))  # back to the sampled order after the sorted (faster) read
    input_ids = np.asarray(data["input_ids"])[order].astype(np.int64)
    labels = np.asarray(data["labels"])[order].astype(np.int64) if "labels" in data else input_ids
    batch = {"input_ids": torch.from_numpy(input_ids).to(device), "labels": torch.from_numpy(labels).to(device)}
    if eos is not None:
        batch["position_ids"] = torch.from_numpy(document_position_ids(input_ids, eos)).to(device)
    return batch


def count_targets(ds, rows: np.ndarray) -> int:
    """Tokens that carry a loss in these rows (labels shifted by one, -100 ignored)."""
    if "labels" not in ds.column_names:
        return len(rows) * (len(ds[0]["input_ids"]) - 1)
    labels = np.asarray(ds[np.sort(rows).tolist()]["labels"])
    return int((labels[:, 1:] != -100).sum())


def token_loss_sum(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed next-token cross-entropy (fp32) over the batch's targets."""
    logits = model(input_ids=batch["input_ids"], position_ids=batch.get("position_ids"), use_cache=False).logits
    # Shift the labels, not the logits: slicing the (batch, seq, vocab) logits costs two full copies.
    targets = torch.nn.functional.pad(batch["labels"][:, 1:], (0, 1), value=-100)
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100,
                                             reduction="sum")


# ----------------------------------------------------------------------------------------------
# Optimizer and schedule
# ----------------------------------------------------------------------------------------------

def build_optimizer(cfg: TrainConfig, model: torch.nn.Module, device: torch.device) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and LayerNorms (1-d parameters)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    import inspect

    fused = "fused" in inspect.signature(torch.optim.AdamW).parameters and device.type in ("cuda", "cpu")
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
                             eps=cfg.adam_epsilon, fused=fused or None)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of the peak lr at optimizer step `step` (0-based): linear warmup, then linear decay or flat."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.lr_scheduler == "constant":
        return 1.0
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * (1.0 - progress)


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------

def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints (with trainer_state.json), oldest first; temp folders never count."""
    out = Path(output_dir)
    found = [p for p in out.glob(f"{CHECKPOINT_PREFIX}*") if p.is_dir() and p.name[len(CHECKPOINT_PREFIX):].isdigit()
             and (p / STATE_FILE).is_file()] if out.is_dir() else []
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def resolve_checkpoint(resume: str | None, output_dir: str) -> Path | None:
    if not resume:
        return None
    if resume == "latest":
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"resume_from_checkpoint: {path} is not a complete checkpoint (no {STATE_FILE})")
    return path


def export_model(accelerator, model, tokenizer, folder: Path) -> None:
    """A Hub-ready folder: weights (LoRA merged), config, custom code, tokenizer. Collective call."""
    state_dict = accelerator.get_state_dict(model)
    if not accelerator.is_main_process:
        return
    unwrapped = accelerator.unwrap_model(model)
    if hasattr(unwrapped, "merge_and_unload"):  # peft: export the merged model, keep training the adapter
        import copy

        copy.deepcopy(unwrapped).merge_and_unload().save_pretrained(folder)
    else:
        unwrapped.save_pretrained(folder, state_dict=state_dict)
    tokenizer.save_pretrained(folder)


def save_checkpoint(accelerator, model, tokenizer, output_dir: Path, step: int, state: dict[str, Any]) -> Path:
    """checkpoint-<step>: model folder + training_state/ (optimizer, scheduler, RNG of every process).

    Written under a temp name and renamed once complete, so a kill mid-write never leaves a folder
    that `latest` would pick up.
    """
    final = output_dir / f"{CHECKPOINT_PREFIX}{step}"
    tmp = output_dir / f".{final.name}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    export_model(accelerator, model, tokenizer, tmp)
    accelerator.save_state(str(tmp / "training_state"))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2, default=str), encoding="utf-8")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    accelerator.wait_for_everyone()
    return final


def rotate_checkpoints(output_dir: Path, keep: int | None) -> None:
    """Keep the newest `keep` checkpoints, and the best one whatever its age."""
    if not keep:
        return
    best = read_best(output_dir)
    for path in list_checkpoints(output_dir)[:-keep]:
        if not best or Path(best["path"]).name != path.name:
            shutil.rmtree(path, ignore_errors=True)


def read_best(output_dir: Path) -> dict[str, Any] | None:
    path = output_dir / BEST_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def record_score(output_dir: Path, checkpoint: Path, step: int, score: float) -> dict[str, Any]:
    """Write the checkpoint's score beside it, and update best_checkpoint.json if it beats the best."""
    (checkpoint / "eval_results.json").write_text(json.dumps({"step": step, "score": score}), encoding="utf-8")
    best = read_best(output_dir)
    if best is None or score > best["score"]:
        best = {"step": step, "score": score, "path": str(checkpoint)}
        (output_dir / BEST_FILE).write_text(json.dumps(best, indent=2), encoding="utf-8")
    return best


# ----------------------------------------------------------------------------------------------
# Logging
# ----------------------------------------------------------------------------------------------

class MetricsLog:
    """metrics.jsonl (one JSON object per logged step) + TensorBoard, on the main process only."""

    def __init__(self, output_dir: Path, start_step: int, enabled: bool, tensorboard: bool):
        self.path = output_dir / "metrics.jsonl"
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        # On resume, drop what a killed run logged after its last checkpoint: the curve stays one curve.
        kept = [line for line in self._lines() if json.loads(line)["step"] <= start_step] if start_step else []
        self.path.write_text("".join(kept), encoding="utf-8")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(output_dir / "tensorboard"), purge_step=start_step + 1 if start_step else None)

    def _lines(self) -> list[str]:
        return self.path.read_text(encoding="utf-8").splitlines(keepends=True) if self.path.is_file() else []

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self.writer is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, int | float):
                    self.writer.add_scalar(key, value, row["step"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_loss_curve(metrics_path: str | os.PathLike, png: str | os.PathLike, title: str = "") -> Path:
    """Train and eval loss against step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    fig, ax = plt.subplots(figsize=(7, 4))
    train = [(r["step"], r["loss"]) for r in rows if r.get("loss") is not None]
    evals = [(r["step"], r["eval_loss"]) for r in rows if r.get("eval_loss") is not None]
    if train:
        ax.plot(*zip(*train), label="train loss", lw=1)
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss", ms=3)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats / token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return Path(png)


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------

def make_accelerator(cfg: TrainConfig):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    cpu = not torch.cuda.is_available()
    precision = cfg.mixed_precision
    if cpu and precision == "fp16":
        precision = "bf16"  # fp16 autocast needs a GPU; on CPU bf16 autocast is the fast mixed precision
    if "WORLD_SIZE" not in os.environ:
        AcceleratorState._reset_state(True)  # in-process calls (tests, `phi reproduce`) may run several trainings
    # cpu=True lets `accelerate launch --multi_gpu` on a machine without GPU run gloo data parallel.
    return Accelerator(cpu=cpu, mixed_precision=precision)


def evaluate(model, accelerator, ds, cfg: TrainConfig, eos: int | None) -> float:
    """Mean token loss over the eval split (its first eval_batches x micro_batch_size rows), over all processes."""
    model.eval()
    # The same rows whatever the number of processes, so eval losses compare across world sizes.
    n = len(ds) if cfg.eval_batches is None else min(len(ds), cfg.eval_batches * cfg.micro_batch_size)
    rows = np.arange(n)[accelerator.process_index::accelerator.num_processes]
    total = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    with torch.no_grad():
        for start in range(0, len(rows), cfg.micro_batch_size):
            batch = make_batch(ds, rows[start:start + cfg.micro_batch_size], accelerator.device, eos)
            with accelerator.autocast():
                total[0] += token_loss_sum(model, batch).double()
            total[1] += (batch["labels"][:, 1:] != -100).sum()
    total = accelerator.reduce(total, reduction="sum")
    model.train()
    return (total[0] / total[1].clamp(min=1)).item()


def train(cfg: TrainConfig, on_checkpoint: CheckpointCallback | None = None) -> dict[str, Any]:
    """Run (or resume) one training; returns {'final': model folder, 'metrics': last row, 'best': ...}."""
    check_config(cfg)
    config = model_config(cfg)  # seq_len vs max_position_embeddings, before any compute
    sources = check_sources(cfg)
    accelerator = make_accelerator(cfg)
    world = accelerator.num_processes
    if cfg.global_batch_size % (cfg.micro_batch_size * world):
        raise ValueError(f"config key global_batch_size: {cfg.global_batch_size} is not a multiple of "
                         f"micro_batch_size x processes = {cfg.micro_batch_size} x {world}")
    accum = cfg.global_batch_size // (cfg.micro_batch_size * world)
    log = accelerator.print
    output_dir = Path(cfg.output_dir)
    with accelerator.main_process_first():  # the main process builds and packs; the others read its cache
        tokenizer, data = prepare_data(cfg, sources, log)
    train_ds, eval_ds = data["train"], data["eval"]
    eos = tokenizer.eos_token_id if cfg.document_masking else None

    model = build_model(cfg, config, tokenizer)
    fpt = flops_per_token(accelerator.unwrap_model(model), cfg.seq_len)
    optimizer = build_optimizer(cfg, model, accelerator.device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    if cfg.torch_compile:
        model = torch.compile(model)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)

    start_step = 0
    checkpoint = resolve_checkpoint(cfg.resume_from_checkpoint, cfg.output_dir)
    if checkpoint is not None:
        state = json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))
        for key in ("global_batch_size", "seq_len", "seed"):
            if state["config"][key] != getattr(cfg, key):
                raise ValueError(f"config key {key}: {getattr(cfg, key)} differs from the checkpoint's "
                                 f"{state['config'][key]} ({checkpoint}); resume with the same value")
        accelerator.load_state(str(checkpoint / "training_state"))
        start_step = state["step"]
        log(f"resumed from {checkpoint} at step {start_step}")
    elif cfg.resume_from_checkpoint == "latest":
        log(f"no checkpoint in {output_dir}: starting from scratch")
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        for debris in output_dir.glob(f".{CHECKPOINT_PREFIX}*.tmp"):  # checkpoints a kill left half-written
            shutil.rmtree(debris, ignore_errors=True)
        (output_dir / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2), encoding="utf-8")
    metrics = MetricsLog(output_dir, start_step, accelerator.is_main_process, "tensorboard" in cfg.report_to)
    peak = peak_flops(accelerator.device, accelerator.mixed_precision) * world

    from tqdm.auto import tqdm

    bar = tqdm(total=cfg.max_steps, initial=start_step, disable=not accelerator.is_local_main_process,
               desc=output_dir.name, dynamic_ncols=True, file=sys.stderr)
    model.train()
    window_losses, window_start, window_tokens, row = [], time.perf_counter(), 0, {}
    for step in range(start_step, cfg.max_steps):
        rows = global_batch_indices(step, len(train_ds), cfg.global_batch_size, cfg.seed)
        n_targets = count_targets(train_ds, rows)
        mine = rows.reshape(world, -1)[accelerator.process_index].reshape(accum, cfg.micro_batch_size)
        step_loss = torch.zeros((), dtype=torch.float64, device=accelerator.device)
        for i, micro in enumerate(mine):
            batch = make_batch(train_ds, micro, accelerator.device, eos)
            with accelerator.no_sync(model) if i < accum - 1 else nullcontext(), accelerator.autocast():
                loss_sum = token_loss_sum(model, batch)
                accelerator.backward(loss_sum * (world / n_targets))  # DDP averages over processes
            step_loss += loss_sum.detach().double() / n_targets
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm or math.inf)
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        window_losses.append(accelerator.reduce(step_loss, reduction="sum").item())
        window_tokens += cfg.global_batch_size * cfg.seq_len
        done = step + 1
        bar.update(1)

        eval_loss = evaluate(model, accelerator, eval_ds, cfg, eos) if eval_ds is not None and (
            done % cfg.eval_steps == 0 or done == cfg.max_steps) else None
        if done % cfg.logging_steps == 0 or eval_loss is not None or done == cfg.max_steps:
            elapsed = time.perf_counter() - window_start
            tps = window_tokens / elapsed
            row = {"step": done, "loss": sum(window_losses) / len(window_losses), "eval_loss": eval_loss, "lr": lr,
                   "grad_norm": float(grad_norm), "tokens_per_second": tps, "mfu": tps * fpt / peak,
                   "tokens": done * cfg.global_batch_size * cfg.seq_len}
            metrics.write(row)
            bar.set_postfix(loss=f"{row['loss']:.3f}", **({"eval": f"{eval_loss:.3f}"} if eval_loss else {}))
            window_losses, window_start, window_tokens = [], time.perf_counter(), 0
        if done % cfg.save_steps == 0 or done == cfg.max_steps:
            _checkpoint(accelerator, model, tokenizer, output_dir, done, cfg, on_checkpoint, log)
    bar.close()
    metrics.close()
    return _finish(accelerator, model, tokenizer, output_dir, cfg, row, log)


def _checkpoint(accelerator, model, tokenizer, output_dir: Path, step: int, cfg: TrainConfig,
                on_checkpoint: CheckpointCallback | None, log) -> None:
    state = {"step": step, "samples_seen": step * cfg.global_batch_size, "config": cfg.to_dict(),
             "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    path = save_checkpoint(accelerator, model, tokenizer, output_dir, step, state)
    if on_checkpoint is not None and accelerator.is_main_process:
        with torch.random.fork_rng(devices=[]):  # scoring must not shift the training's random stream
            score = on_checkpoint(path, step)
        if score is not None:
            best = record_score(output_dir, path, step, score)
            log(f"step {step}: score {score:.4f} (best {best['score']:.4f} at step {best['step']})")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        rotate_checkpoints(output_dir, cfg.save_total_limit)


def _finish(accelerator, model, tokenizer, output_dir: Path, cfg: TrainConfig, last: dict[str, Any], log) -> dict[str, Any]:
    """The final model folder (the best checkpoint's model where a score picked one), loss curve, push."""
    final, tmp = output_dir / "final", output_dir / ".final.tmp"
    best = read_best(output_dir)
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        if best and Path(best["path"]).is_dir():
            shutil.copytree(best["path"], tmp, ignore=shutil.ignore_patterns("training_state", STATE_FILE))
        else:
            tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    if not best:
        export_model(accelerator, model, tokenizer, tmp)
    result = {"final": str(final), "metrics": last, "best": best, "output_dir": str(output_dir)}
    if accelerator.is_main_process:
        (tmp / "training_results.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        if (output_dir / "metrics.jsonl").is_file():
            plot_loss_curve(output_dir / "metrics.jsonl", output_dir / "loss_curve.png", title=output_dir.name)
        if cfg.push_to_hub:
            from recipes.push import push_folder

            push_folder(final, cfg.push_to_hub)
            log(f"pushed {final} to {cfg.push_to_hub}")
        log(f"done: {final}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return result

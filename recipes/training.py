"""The training loop shared by pretrain.py and finetune.py: a plain accelerate loop, readable in one sitting.

What it does, in order: check the model shape and the data before spending compute; have the data
pipeline prepare the packed blocks (datasets_builders.packing.prepare_packed: missing corpora, tokenizer,
packing), or read a packed folder as it is; then train with AdamW, linear warmup + linear decay (or
constant) learning rate, gradient accumulation to the global batch (accelerate's `accumulate`, so DDP,
FSDP and DeepSpeed each sync or step only at the boundary), clipping, bf16/fp16 autocast, optional
gradient checkpointing and torch.compile; log loss, eval loss, lr, grad norm, tokens/s and MFU
(recipes/metrics.py, recipes/mfu.py); write checkpoints (recipes/checkpoints.py); draw the loss curve.

Exactness. The global batch of step s is a pure function of (seed, s): every process computes the same
block indices and takes its slice, and the loss of a micro-batch is its summed token loss divided by
the number of target tokens in the whole global batch (times the world size, since data parallel
averages gradients, and times the accumulation steps, which accelerate divides by). One process and N
processes with the same global batch therefore take the same steps, and a resumed run (model,
optimizer, scheduler and every process's RNG restored by accelerate, the data position implied by the
step) continues bit for bit. Packed blocks are memory-mapped: a step reads its own rows only.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datasets_builders.packing import PackedSplit, check_sources, load_packed, prepare_packed
from recipes.checkpoints import (
    CHECKPOINT_PREFIX,
    STATE_FILE,
    CheckpointCallback,
    export_model,
    list_checkpoints,  # noqa: F401  (part of this module's interface)
    read_best,
    record_score,
    resolve_checkpoint,
    rotate_checkpoints,
    save_checkpoint,
)
from recipes.config import TrainConfig
from recipes.metrics import MetricsLog, plot_loss_curve, read_metrics  # noqa: F401  (read_metrics: interface)
from recipes.mfu import flops_per_token, peak_flops

# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------


def _presets() -> set[str]:
    from modeling_phi import PRESETS
    from modeling_phi.configuration_phi import PRESET_ALIASES

    return set(PRESETS) | set(PRESET_ALIASES)


def model_config(cfg: TrainConfig):
    """The model's config, without weights: a preset, or the config of a model folder / Hub id."""
    import modeling_phi  # noqa: F401  (registers phi with the Auto classes)
    from modeling_phi import PRESETS, PhiConfig

    if cfg.model in _presets():
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
    model.config.use_cache = False  # with a cache, packed documents would attend across (README: Packed documents)
    if cfg.gradient_checkpointing:  # transformers v5 renamed it; keep working on both
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                                 target_modules=cfg.lora_target_modules, task_type="CAUSAL_LM"))
    return model


# ----------------------------------------------------------------------------------------------
# Data: packed blocks only
# ----------------------------------------------------------------------------------------------

def prepare_data(cfg: TrainConfig, log) -> tuple[Any, dict[str, PackedSplit | None]]:
    """(tokenizer, {'train', 'eval'} memory-mapped blocks): packed from cfg.datasets, or packed_dir as it is."""
    packed_dir = cfg.packed_dir or str(Path(cfg.output_dir) / "packed")
    if cfg.datasets:
        tokenizer, packed = prepare_packed(check_sources(cfg.datasets), cfg.tokenizer, packed_dir, cfg.seq_len,
                                           cfg.eval_fraction, cfg.seed, cfg.num_proc, cfg.tokenizer_vocab_size, log)
    else:
        from datasets_builders.tokenizer import load_tokenizer

        tokenizer, packed = load_tokenizer(cfg.tokenizer), packed_dir
    data = load_packed(packed)
    if data["train"].seq_len != cfg.seq_len:
        raise ValueError(f"config key seq_len: {cfg.seq_len}, but {packed} holds blocks of {data['train'].seq_len}")
    return tokenizer, data


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


def _read_rows(array: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Rows of a memory-mapped array in the given order (read sorted: sequential pages)."""
    order = np.argsort(rows, kind="stable")
    out = np.empty((len(rows), array.shape[1]), dtype=np.int64)
    out[order] = array[rows[order]]
    return out


def make_batch(ds: PackedSplit, rows: np.ndarray, device: torch.device, eos: int | None) -> dict[str, torch.Tensor]:
    input_ids = _read_rows(ds.input_ids, rows)
    labels = _read_rows(ds.labels, rows) if ds.labels is not None else input_ids
    batch = {"input_ids": torch.from_numpy(input_ids).to(device), "labels": torch.from_numpy(labels).to(device)}
    if eos is not None:
        batch["position_ids"] = torch.from_numpy(document_position_ids(input_ids, eos)).to(device)
    return batch


def count_targets(ds: PackedSplit, rows: np.ndarray) -> int:
    """Tokens that carry a loss in these rows (labels shifted by one, -100 ignored)."""
    if ds.labels is None:
        return len(rows) * (ds.seq_len - 1)
    return int((_read_rows(ds.labels, rows)[:, 1:] != -100).sum())


def token_loss_sum(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed next-token cross-entropy (fp32) over the batch's targets: the model's own causal-LM loss (labels
    shifted by one, -100 ignored) with `num_items_in_batch=1`, which transformers defines as sum / num_items.
    modeling_phi's loss runs blockwise, without fp32 copies of the (batch, seq, vocab) logits."""
    return model(input_ids=batch["input_ids"], position_ids=batch.get("position_ids"), labels=batch["labels"],
                 num_items_in_batch=1, use_cache=False).loss


# ----------------------------------------------------------------------------------------------
# Optimizer and schedule
# ----------------------------------------------------------------------------------------------

def build_optimizer(cfg: TrainConfig, model: torch.nn.Module, device: torch.device) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and LayerNorms (1-d parameters)."""
    import inspect

    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
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
# The loop
# ----------------------------------------------------------------------------------------------

def make_accelerator(cfg: TrainConfig):
    """An Accelerator whose accumulation reaches the global batch; DDP, FSDP or DeepSpeed as launched."""
    from accelerate import Accelerator, PartialState
    from accelerate.state import AcceleratorState
    from accelerate.utils import GradientAccumulationPlugin

    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    # cpu=True would make accelerate drop DeepSpeed for plain DDP; DeepSpeed brings its own CPU accelerator.
    cpu = not torch.cuda.is_available() and not deepspeed
    precision = cfg.mixed_precision
    if not torch.cuda.is_available() and precision == "fp16":
        precision = "bf16"  # fp16 autocast needs a GPU; on CPU bf16 autocast is the fast mixed precision
    if "WORLD_SIZE" not in os.environ:
        AcceleratorState._reset_state(True)  # in-process calls (tests, `phi reproduce`) may run several trainings
    # DeepSpeed without a GPU: accelerate finds no device backend, so name gloo (DeepSpeed's CPU accelerator's).
    world = PartialState(cpu=cpu, **({"backend": "gloo"} if deepspeed and cpu is False and not torch.cuda.is_available()
                                     else {})).num_processes
    if cfg.global_batch_size % (cfg.micro_batch_size * world):
        raise ValueError(f"config key global_batch_size: {cfg.global_batch_size} is not a multiple of "
                         f"micro_batch_size x processes = {cfg.micro_batch_size} x {world}")
    accum = cfg.global_batch_size // (cfg.micro_batch_size * world)
    # A plugin, not gradient_accumulation_steps=: `accelerate launch` exports the YAML's accumulation (1),
    # which Accelerator would prefer to its argument; the global batch decides.
    # cpu=True lets `accelerate launch --multi_gpu` on a machine without GPU run gloo data parallel.
    accelerator = Accelerator(cpu=cpu, mixed_precision=precision,
                              gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=accum))
    if cpu and world > 1 and os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        # accelerate shards only on accelerators: on CPU an FSDP launch silently runs plain DDP. FSDP2 runs
        # on gloo, so shard for real (the plugin reads the launch's FSDP_* settings); autocast stays the
        # mixed precision, as in a 1-process run.
        from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

        accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin()
        for state in (PartialState(), accelerator.state):  # AcceleratorState() re-reads PartialState's
            state.distributed_type = DistributedType.FSDP
    plugin = accelerator.state.deepspeed_plugin
    if plugin is not None:  # no DataLoader is prepared: DeepSpeed's "auto" batch keys are set here
        plugin.deepspeed_config.update({"train_micro_batch_size_per_gpu": cfg.micro_batch_size,
                                        "gradient_accumulation_steps": accum,
                                        "train_batch_size": cfg.global_batch_size,
                                        "gradient_clipping": cfg.max_grad_norm})
    return accelerator


def evaluate(model, accelerator, ds: PackedSplit, cfg: TrainConfig, eos: int | None) -> float:
    """Mean token loss over the eval split (its first eval_batches x micro_batch_size rows), over all processes."""
    model.eval()
    # The same rows whatever the number of processes, so eval losses compare across world sizes.
    n = len(ds) if cfg.eval_batches is None else min(len(ds), cfg.eval_batches * cfg.micro_batch_size)
    rows = np.arange(n)[accelerator.process_index::accelerator.num_processes]
    total = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    # Every process runs the same number of forward passes (FSDP's are collective), the last maybe empty.
    n_batches = math.ceil(math.ceil(n / accelerator.num_processes) / cfg.micro_batch_size)
    with torch.no_grad():
        for i in range(n_batches):
            micro = rows[i * cfg.micro_batch_size:(i + 1) * cfg.micro_batch_size]
            batch = make_batch(ds, micro if len(micro) else np.arange(1), accelerator.device, eos)
            with accelerator.autocast():
                loss = token_loss_sum(model, batch).double()
            if len(micro):
                total[0] += loss
                total[1] += (batch["labels"][:, 1:] != -100).sum()
    total = accelerator.reduce(total, reduction="sum")
    model.train()
    return (total[0] / total[1].clamp(min=1)).item()


def check_push(cfg: TrainConfig) -> None:
    """Before any compute: a real push needs the Hub reachable and a token (one-line error otherwise)."""
    if cfg.push_to_hub and not cfg.push_dry_run:
        from recipes.push import check_hub

        check_hub(cfg.push_to_hub)


def train(cfg: TrainConfig, on_checkpoint: CheckpointCallback | None = None) -> dict[str, Any]:
    """Run (or resume) one training; returns {'final': model folder, 'metrics': last row, 'best': ...}."""
    config = model_config(cfg)  # seq_len vs max_position_embeddings, before any compute
    if cfg.datasets:
        check_sources(cfg.datasets)
    check_push(cfg)
    accelerator = make_accelerator(cfg)
    world, accum = accelerator.num_processes, accelerator.gradient_accumulation_steps
    log = accelerator.print
    log(f"{accelerator.distributed_type.value} on {world} x {accelerator.device}, {accum} accumulation step(s), "
        f"mixed precision {accelerator.mixed_precision}")
    output_dir = Path(cfg.output_dir)
    with accelerator.main_process_first():  # the main process builds and packs; the others read its cache
        tokenizer, data = prepare_data(cfg, log)
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
        accelerator.step = 0  # checkpoints sit on step boundaries; the accumulation count restarts there
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
        for micro in mine:
            batch = make_batch(train_ds, micro, accelerator.device, eos)
            # accumulate(): no gradient sync (DDP, FSDP) and no engine step (DeepSpeed) before the last micro-batch.
            with accelerator.accumulate(model), accelerator.autocast():
                loss_sum = token_loss_sum(model, batch)
                # backward divides by accum; data parallel averages over processes: the step's mean token loss.
                accelerator.backward(loss_sum * (world * accum / n_targets))
            step_loss += loss_sum.detach().double() / n_targets
        assert accelerator.sync_gradients, "the accumulation boundary must fall on the last micro-batch"
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
                   "grad_norm": float(grad_norm) if grad_norm is not None else None, "tokens_per_second": tps,
                   "mfu": tps * fpt / peak, "tokens": done * cfg.global_batch_size * cfg.seq_len}
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

            result["push"] = push_folder(final, cfg.push_to_hub, "model", dry_run=cfg.push_dry_run, log=log)
        log(f"done: {final}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return result

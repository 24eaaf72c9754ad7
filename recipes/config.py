"""Training configuration: one typed dataclass, read from YAML, overridden from the command line.

`load_config("recipes/configs/tiny.yaml", ["--max_steps", "50"])` (or a dict of overrides) returns a
`TrainConfig`. Every key is a field below; an unknown key, in the YAML or on the command line, is an
error naming it. Values on the command line are parsed as YAML scalars (`--lr 1e-3`, `--lora true`,
`--datasets '[{path: a, weight: 0.8}, {path: b, weight: 0.2}]'`); a bool key given alone means true.
`include: other.yaml` in a YAML file starts from another config (paths relative to the including file).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class TrainConfig:
    """Everything a pretraining or finetuning run needs. Defaults are phi-1's where the paper gives one."""

    # Model: a preset of modeling_phi (`tiny`, `small`, `phi-1`, `phi-1-small`, `phi-1.5`) initialised at
    # random, or a model folder / Hub id to start from (finetuning).
    model: str = "tiny"
    model_overrides: dict[str, Any] = field(default_factory=dict)  # PhiConfig fields, e.g. {resid_pdrop: 0.1}
    attn_implementation: str = "sdpa"
    # Tokenizer folder or Hub id; where a folder is missing and tokenizer_vocab_size is set, a byte-level
    # BPE of that size is trained on the training datasets first.
    tokenizer: str = "microsoft/phi-1"
    tokenizer_vocab_size: int | None = None

    # Data: a list of {path, weight, format (text | exercises), column, build}; a plain string = one path.
    datasets: list[Any] = field(default_factory=list)
    packed_dir: str | None = None  # cache of packed blocks; default <output_dir>/packed
    seq_len: int = 2048
    eval_fraction: float = 0.01
    num_proc: int | None = None
    # Reset position_ids after every <|endoftext|>, so a packed document attends only to itself.
    document_masking: bool = False

    # Optimisation (phi-1 pretraining: batch 1024 x 2048, AdamW, lr 1e-3, 750 warmup, wd 0.1).
    global_batch_size: int = 1024  # sequences per optimizer step, over all processes
    micro_batch_size: int = 8  # sequences per forward pass on one process
    max_steps: int = 36_000
    learning_rate: float = 1e-3
    lr_scheduler: str = "linear"  # linear warmup then linear decay to min_lr_ratio x lr; or "constant"
    warmup_steps: int = 750
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.98
    adam_epsilon: float = 1e-7
    max_grad_norm: float = 1.0
    mixed_precision: str = "fp16"  # fp16 | bf16 | no; fp16 means bf16 autocast on CPU
    gradient_checkpointing: bool = False
    torch_compile: bool = False
    seed: int = 0

    # Evaluation, logging, checkpoints.
    output_dir: str = "runs/phi-1/pretrain"
    eval_steps: int = 1000
    eval_batches: int | None = None  # eval on the first eval_batches x micro_batch_size blocks (None: all)
    logging_steps: int = 10
    save_steps: int = 1000
    save_total_limit: int | None = 3
    resume_from_checkpoint: str | None = None  # a checkpoint folder, or "latest"
    push_to_hub: str | None = None
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])

    # Finetuning.
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"])
    humaneval: bool = False  # score HumanEval pass@1 (greedy) on every saved checkpoint; keep the best
    eval_limit: int | None = None  # HumanEval problems per checkpoint (None: all 164)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _check_keys(keys: typing.Iterable[str], where: str) -> None:
    unknown = [k for k in keys if k not in FIELDS]
    if unknown:
        import difflib

        hints = [f"{k} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(k, FIELDS, 1)) else k for k in unknown]
        raise ValueError(f"{where}: unknown config key(s) {', '.join(hints)}; see recipes/config.py for the keys")


def _coerce(name: str, value: Any) -> Any:
    """Check a value against the field's type (int -> float allowed); a clear error names the key."""
    hint = typing.get_type_hints(TrainConfig)[name]
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    origins = [typing.get_origin(a) or a for a in allowed]
    if value is None and type(None) in origins:
        return None
    if float in origins and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if float in origins and isinstance(value, str):  # YAML 1.1 reads `1e-3` (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if list in origins and isinstance(value, str | dict):
        return [value]
    if str in origins and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if not any(isinstance(value, o) and not (o is int and isinstance(value, bool)) for o in origins):
        names = " or ".join(getattr(o, "__name__", str(o)) for o in origins)
        raise ValueError(f"config key {name}: expected {names}, got {value!r}")
    return value


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config keys at the top level")
    base = data.pop("include", None)
    if base is not None:
        data = {**read_yaml(path.parent / base), **data}
    _check_keys(data, str(path))
    return data


def parse_overrides(argv: list[str]) -> dict[str, Any]:
    """`--key value` / `--key=value` / `--bool_key` pairs -> {key: value}; values parsed as YAML."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--"):
            raise ValueError(f"unexpected argument {token!r}; overrides are --key value")
        key, eq, value = token[2:].partition("=")
        key = key.replace("-", "_")
        _check_keys([key], "command line")
        if not eq:
            is_flag = i + 1 >= len(argv) or argv[i + 1].startswith("--")
            if is_flag and FIELDS[key].type in ("bool", bool):
                value, i = "true", i + 1
            elif is_flag:
                raise ValueError(f"--{key} needs a value")
            else:
                value, i = argv[i + 1], i + 2
        else:
            i += 1
        try:
            out[key] = yaml.safe_load(value) if value != "" else None
        except yaml.YAMLError:
            out[key] = value
    return out


def load_config(config: str | os.PathLike | dict[str, Any] | TrainConfig | None = None,
                overrides: list[str] | dict[str, Any] | None = None) -> TrainConfig:
    """A TrainConfig from a YAML path, a dict or a TrainConfig, with overrides (argv list or dict) on top."""
    if isinstance(config, TrainConfig):
        data = config.to_dict()
    elif isinstance(config, dict):
        data = dict(config)
        _check_keys(data, "config")
    elif config is None:
        data = {}
    else:
        data = read_yaml(config)
    extra = parse_overrides(overrides) if isinstance(overrides, list) else dict(overrides or {})
    _check_keys(extra, "overrides")
    data.update(extra)
    return TrainConfig(**{k: _coerce(k, v) for k, v in data.items()})


def check_config(cfg: TrainConfig) -> None:
    """Cheap checks of values that do not need the model or the data."""
    if cfg.lr_scheduler not in ("linear", "constant"):
        raise ValueError(f"config key lr_scheduler: {cfg.lr_scheduler!r}; use linear or constant")
    if cfg.mixed_precision not in ("fp16", "bf16", "no"):
        raise ValueError(f"config key mixed_precision: {cfg.mixed_precision!r}; use fp16, bf16 or no")
    for key in ("global_batch_size", "micro_batch_size", "max_steps", "seq_len", "eval_steps", "save_steps",
                "logging_steps"):
        if getattr(cfg, key) <= 0:
            raise ValueError(f"config key {key}: must be > 0, got {getattr(cfg, key)}")
    if not cfg.datasets:
        raise ValueError("config key datasets: empty; give at least one training dataset")

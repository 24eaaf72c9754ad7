"""Training configuration: grouped, typed dataclasses; YAML files, flags and overrides all derive from them.

Seven groups (model, data, optimizer, schedule, checkpointing, LoRA, evaluation) each document their
fields (`help`, shown by `--help`) and validate them in `__post_init__`; `TrainConfig` is their union, so
a run reads `cfg.learning_rate` and a YAML file or a flag names `learning_rate`, whatever the group.

One syntax everywhere: `--key value` (underscores canonical, `--key-value` accepted), `--key=value`, a bool
key alone means true; lists take several values (`--datasets a b`, `--report_to tensorboard`); a mapping
or dataset entry is YAML flow (`--model_overrides '{resid_pdrop: 0.1}'`, `--datasets '{path: a, weight: 0.8}'`).
The flags are built by transformers' `HfArgumentParser` from the dataclasses; `phi reproduce` takes the same
flags behind a prefix (`--pretrain.max_steps 50`). A YAML file holds the same keys; `include: other.yaml`
starts from another file (relative to the including one). A typo, a wrong type or an out-of-range value is
a ValueError of one line naming the key.

    cfg = load_config("recipes/configs/tiny.yaml", ["--max_steps", "50"])   # or a dict of overrides
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


def _help(text: str, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with its documentation (the `help` of its flag)."""
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


def _yaml_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"{text!r} is not valid YAML ({str(err).splitlines()[0]})") from None


class Mapping(dict):
    """A mapping; on the command line a YAML flow mapping (`{resid_pdrop: 0.1}`)."""

    def __init__(self, value: Any = ()):
        value = _yaml_value(value) if isinstance(value, str) else value
        if not isinstance(value, dict):
            raise ValueError(f"expected a mapping such as {{key: value}}, got {value!r}")
        super().__init__(value)


class DatasetEntry(dict):
    """One training dataset: a path, or a YAML mapping {path, weight, format, column, build}."""

    def __init__(self, value: Any = ()):
        if isinstance(value, str):
            value = _yaml_value(value) if value.lstrip().startswith("{") else {"path": value}
        if not isinstance(value, dict):
            raise ValueError(f"expected a path or {{path: ..., weight: ...}}, got {value!r}")
        super().__init__(value)


class _Typed:
    """Checks every field against its annotation (YAML and Python dicts bypass the flag parser)."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _check_type(f.name, getattr(self, f.name), hints[f.name]))


def _check_type(name: str, value: Any, hint: Any) -> Any:
    """`value` if it has type `hint` (an int where a float is due becomes a float), else a ValueError naming `name`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _check_type(name, value, arg)
            except ValueError as err:
                errors.append(err)
        raise errors[0]
    if origin is Literal:
        if value not in args:
            raise ValueError(f"config key {name}: {value!r} is not one of {', '.join(map(str, args))}")
        return value
    if origin is list:
        if isinstance(value, str | dict) and args[0] in (str, DatasetEntry):
            value = [value]  # `datasets: path` or `report_to: tensorboard`: a list of one
        if not isinstance(value, list | tuple):
            raise ValueError(f"config key {name}: expected a list, got {value!r}")
        return [_check_type(name, v, args[0]) for v in value]
    if hint in (Mapping, dict) or origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"config key {name}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is DatasetEntry:
        if not isinstance(value, str | dict | os.PathLike):
            raise ValueError(f"config key {name}: expected a path or a mapping, got {value!r}")
        return dict(value) if isinstance(value, dict) else str(value)
    if hint is float:
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `1e-3` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    if hint is str and isinstance(value, os.PathLike):
        return str(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ValueError(f"config key {name}: expected {hint.__name__}, got {value!r}")
    return value


def _require(ok: bool, name: str, rule: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"config key {name}: must be {rule}, got {value!r}")


@dataclass
class ModelConfig(_Typed):
    """What is trained: the architecture or starting weights, the tokenizer, memory / speed switches."""

    _argument_group_name = "model"
    model: str = _help("a modeling_phi preset (tiny, small, phi-1, phi-1-small, phi-1.5), initialised at random, "
                       "or a model folder / Hub id to start from", "tiny")
    model_overrides: Mapping = _help("PhiConfig fields to change, e.g. {resid_pdrop: 0.1}", factory=dict)
    attn_implementation: str = _help("sdpa, eager or flash_attention_2 (with the [flash] extra)", "sdpa")
    tokenizer: str = _help("tokenizer folder or Hub id", "microsoft/phi-1")
    tokenizer_vocab_size: int | None = _help("where the tokenizer folder is missing, train a byte-level BPE of this "
                                             "size on the text datasets first", None)
    gradient_checkpointing: bool = _help("recompute activations in the backward pass (less memory, ~30% slower)",
                                         False)
    torch_compile: bool = _help("torch.compile the model", False)

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.tokenizer_vocab_size is None or self.tokenizer_vocab_size >= 257, "tokenizer_vocab_size",
                 ">= 257 (256 bytes + <|endoftext|>)", self.tokenizer_vocab_size)


@dataclass
class DataConfig(_Typed):
    """Which data, and how it is packed into blocks."""

    _argument_group_name = "data"
    datasets: list[DatasetEntry] = _help("training datasets: paths or {path, weight, format (text | exercises), "
                                         "column, build}; empty = train on packed_dir as it is", factory=list)
    packed_dir: str | None = _help("packed blocks (written by `phi data pack`); default <output_dir>/packed", None)
    seq_len: int = _help("tokens per block (the context length trained)", 2048)
    eval_fraction: float = _help("fraction of documents held out for the eval loss", 0.01)
    num_proc: int | None = _help("processes tokenizing and packing", None)
    document_masking: bool = _help("reset position_ids after every <|endoftext|>, so a packed document attends "
                                   "only to itself", False)

    def __post_init__(self) -> None:
        super().__post_init__()
        from datasets_builders.packing import Source

        for entry in self.datasets:
            Source.parse(entry)  # unknown keys, bad format or weight: one line naming the dataset
        _require(self.seq_len > 0, "seq_len", "> 0", self.seq_len)
        _require(0 <= self.eval_fraction < 1, "eval_fraction", "in [0, 1)", self.eval_fraction)
        _require(self.num_proc is None or self.num_proc > 0, "num_proc", "> 0", self.num_proc)


@dataclass
class OptimizerConfig(_Typed):
    """AdamW, batch, precision (phi-1 pretraining: batch 1024 x 2048, lr 1e-3, wd 0.1, betas 0.9 / 0.98)."""

    _argument_group_name = "optimizer"
    global_batch_size: int = _help("sequences per optimizer step, over all processes", 1024)
    micro_batch_size: int = _help("sequences per forward pass on one process", 8)
    learning_rate: float = _help("peak learning rate", 1e-3)
    weight_decay: float = _help("AdamW weight decay (not on biases and LayerNorms)", 0.1)
    adam_beta1: float = _help("AdamW beta1", 0.9)
    adam_beta2: float = _help("AdamW beta2", 0.98)
    adam_epsilon: float = _help("AdamW epsilon", 1e-7)
    max_grad_norm: float = _help("clip the global gradient norm to this (0: no clipping)", 1.0)
    mixed_precision: Literal["fp16", "bf16", "no"] = _help("autocast precision; fp16 means bf16 on CPU", "fp16")
    seed: int = _help("seed of the initialisation, the data order and dropout", 0)

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.global_batch_size > 0, "global_batch_size", "> 0", self.global_batch_size)
        _require(self.micro_batch_size > 0, "micro_batch_size", "> 0", self.micro_batch_size)
        _require(self.global_batch_size % self.micro_batch_size == 0, "global_batch_size",
                 f"a multiple of micro_batch_size ({self.micro_batch_size})", self.global_batch_size)
        _require(self.learning_rate > 0, "learning_rate", "> 0", self.learning_rate)
        _require(self.weight_decay >= 0, "weight_decay", ">= 0", self.weight_decay)
        for key in ("adam_beta1", "adam_beta2"):
            _require(0 <= getattr(self, key) < 1, key, "in [0, 1)", getattr(self, key))
        _require(self.adam_epsilon > 0, "adam_epsilon", "> 0", self.adam_epsilon)
        _require(self.max_grad_norm >= 0, "max_grad_norm", ">= 0", self.max_grad_norm)


@dataclass
class ScheduleConfig(_Typed):
    """How long, and the learning-rate schedule."""

    _argument_group_name = "schedule"
    max_steps: int = _help("optimizer steps", 36_000)
    lr_scheduler: Literal["linear", "constant"] = _help("linear warmup, then linear decay to min_lr_ratio x lr "
                                                        "(linear) or flat (constant)", "linear")
    warmup_steps: int = _help("steps of linear warmup from 0", 750)
    min_lr_ratio: float = _help("the linear decay ends at min_lr_ratio x learning_rate", 0.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.max_steps > 0, "max_steps", "> 0", self.max_steps)
        _require(self.warmup_steps >= 0, "warmup_steps", ">= 0", self.warmup_steps)
        _require(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", "in [0, 1]", self.min_lr_ratio)


@dataclass
class CheckpointConfig(_Typed):
    """Where the run writes, how often it checkpoints, resuming, the Hub."""

    _argument_group_name = "checkpointing"
    output_dir: str = _help("run folder: checkpoints, metrics.jsonl, final/", "runs/phi-1/pretrain")
    save_steps: int = _help("checkpoint every this many steps (and at the end)", 1000)
    save_total_limit: int | None = _help("keep the newest N checkpoints (and the best one); none: keep all", 3)
    resume_from_checkpoint: str | None = _help("a checkpoint folder, or latest", None)
    push_to_hub: str | None = _help("upload final/ to this Hub model repo (org/name) at the end", None)
    push_dry_run: bool = _help("with push_to_hub: print the repo, files and model card, upload nothing", False)

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.save_steps > 0, "save_steps", "> 0", self.save_steps)
        _require(self.save_total_limit is None or self.save_total_limit > 0, "save_total_limit", "> 0",
                 self.save_total_limit)
        _require(self.push_to_hub is None or self.push_to_hub.count("/") == 1, "push_to_hub", "a repo id org/name",
                 self.push_to_hub)


@dataclass
class LoraConfig(_Typed):
    """Finetuning with LoRA adapters (peft); the exported folders hold the merged model."""

    _argument_group_name = "lora"
    lora: bool = _help("train LoRA adapters instead of all weights", False)
    lora_r: int = _help("adapter rank", 16)
    lora_alpha: int = _help("adapter scale numerator (scale = alpha / r)", 32)
    lora_dropout: float = _help("dropout on the adapter input", 0.05)
    lora_target_modules: list[str] = _help("modules that get adapters (modeling_phi fuses q/k/v into qkv_proj)",
                                           factory=lambda: ["qkv_proj", "dense", "fc1", "fc2"])

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.lora_r > 0, "lora_r", "> 0", self.lora_r)
        _require(0 <= self.lora_dropout < 1, "lora_dropout", "in [0, 1)", self.lora_dropout)
        # Native Phi's separate projections do not exist in modeling_phi: peft would silently skip them.
        _require(not {"q_proj", "k_proj", "v_proj"} & set(self.lora_target_modules), "lora_target_modules",
                 "module names of modeling_phi (q_proj / k_proj / v_proj are one fused qkv_proj)",
                 self.lora_target_modules)


@dataclass
class EvalConfig(_Typed):
    """Eval loss, logging, and HumanEval on checkpoints."""

    _argument_group_name = "evaluation"
    eval_steps: int = _help("eval loss every this many steps (and at the end)", 1000)
    eval_batches: int | None = _help("eval on the first eval_batches x micro_batch_size blocks; none: all", None)
    logging_steps: int = _help("log train loss, lr, grad norm, tokens/s, MFU every this many steps", 10)
    report_to: list[str] = _help("tensorboard, or none", factory=lambda: ["tensorboard"])
    humaneval: bool = _help("score HumanEval pass@1 (greedy) on every saved checkpoint; the best becomes final/",
                            False)
    eval_limit: int | None = _help("HumanEval problems per checkpoint; none: all 164", None)

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("eval_steps", "logging_steps"):
            _require(getattr(self, key) > 0, key, "> 0", getattr(self, key))
        for key in ("eval_batches", "eval_limit"):
            _require(getattr(self, key) is None or getattr(self, key) > 0, key, "> 0", getattr(self, key))
        self.report_to = [r for r in self.report_to if r != "none"]
        unknown = set(self.report_to) - {"tensorboard"}
        _require(not unknown, "report_to", "tensorboard or none", self.report_to)


GROUPS = (ModelConfig, DataConfig, OptimizerConfig, ScheduleConfig, CheckpointConfig, LoraConfig, EvalConfig)


@dataclass
class TrainConfig(EvalConfig, LoraConfig, CheckpointConfig, ScheduleConfig, OptimizerConfig, DataConfig, ModelConfig):
    """Everything a pretraining or finetuning run needs: the union of the groups. Defaults are phi-1's."""

    def __post_init__(self) -> None:
        super().__post_init__()  # every group's checks, types first
        if not self.datasets and not self.packed_dir:
            raise ValueError("config key datasets: empty; give training datasets, or a packed_dir to train on")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def group(self, cls: type) -> Any:
        """One group of this config, e.g. `cfg.group(OptimizerConfig)`."""
        return cls(**{f.name: getattr(self, f.name) for f in dataclasses.fields(cls)})


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _unknown(keys: typing.Iterable[str], where: str, prefix: str = "") -> None:
    unknown = [k for k in keys if k not in FIELDS]
    if unknown:
        hints = [f"{prefix}{k} (did you mean {prefix}{m[0]}?)" if (m := difflib.get_close_matches(k, FIELDS, 1))
                 else f"{prefix}{k}" for k in unknown]
        raise ValueError(f"{where}: unknown config key(s) {', '.join(hints)}; see recipes/config.py for the keys")


class ConfigParser:
    """The flags of every config key, built by `HfArgumentParser` from the groups; errors are ValueErrors."""

    def __init__(self):
        from transformers import HfArgumentParser

        class Parser(HfArgumentParser):
            def error(self, message: str) -> typing.NoReturn:  # argparse would print usage and exit
                raise ValueError(f"command line: {message}")

        self.parser = Parser(GROUPS, allow_abbrev=False, add_help=False, prog="recipes")
        # `--learning_rate -1e-3` is a value (argparse alone takes only -1 and -0.5 for numbers)
        self.parser._negative_number_matcher = re.compile(r"^-\d*\.?\d+(e[-+]?\d+)?$", re.IGNORECASE)
        # Only what is given on the command line: defaults come from the YAML file, then the dataclasses.
        self.actions = [a for a in self.parser._actions if a.dest in FIELDS]
        for action in self.actions:
            action.default = argparse.SUPPRESS

    def parse(self, argv: list[str]) -> dict[str, Any]:
        """`--key value ...` -> {key: typed value}; unknown keys get a 'did you mean'."""
        namespace, rest = self.parser.parse_known_args(argv)
        if rest:
            keys = [a[2:].split("=")[0].replace("-", "_") for a in rest if a.startswith("--")]
            _unknown(keys or rest, "command line", "--")
            raise ValueError(f"command line: unexpected argument(s) {' '.join(rest)}; overrides are --key value")
        return vars(namespace)

    def help(self, description: str = "", prog: str = "recipes/pretrain.py") -> str:
        """--help of a training script: its docstring, then every key by group."""
        self.parser.prog, self.parser.usage = prog, f"{prog} [--config FILE.yaml] [--key value ...]"
        self.parser.description = description
        self.parser.formatter_class = argparse.RawDescriptionHelpFormatter
        return self.parser.format_help()


def add_config_arguments(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """Every config key as `--{prefix}key` on another parser (`phi pretrain`, `phi reproduce --pretrain.key`).

    The values stay strings; `overrides_from(args, prefix)` turns them back into the flags `load_config`
    parses, so the types, the checks and the error messages are the recipes' own.
    """
    parser.allow_abbrev = False  # `--learning_rat` must be an error, not learning_rate
    group = parser.add_argument_group(f"config overrides{f' ({prefix.rstrip(chr(46))})' if prefix else ''}",
                                      "see recipes/config.py")
    for action in ConfigParser().actions:
        options = [f"--{prefix}{o[2:]}" for o in action.option_strings]
        kwargs = {"nargs": action.nargs, "help": action.help if not prefix else argparse.SUPPRESS}
        if action.nargs == "?":
            kwargs["const"] = "true"
        group.add_argument(*options, dest=f"{prefix}{action.dest}", default=argparse.SUPPRESS,
                           metavar=action.dest.upper(), **kwargs)


def overrides_from(args: argparse.Namespace, prefix: str = "") -> list[str]:
    """The `--key value` flags given through `add_config_arguments(parser, prefix)`."""
    argv: list[str] = []
    for dest, value in vars(args).items():
        if dest.startswith(prefix) and dest[len(prefix):] in FIELDS:
            argv += [f"--{dest[len(prefix):]}", *(value if isinstance(value, list) else [value])]
    return argv


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """The keys of a YAML config (after `include:`), each checked to be a config key."""
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
    _unknown(data, str(path))
    return data


def load_config(config: str | os.PathLike | dict[str, Any] | TrainConfig | None = None,
                overrides: list[str] | dict[str, Any] | None = None) -> TrainConfig:
    """A TrainConfig from a YAML path, a dict or a TrainConfig, with overrides (flags or a dict) on top."""
    if isinstance(config, TrainConfig):
        data = config.to_dict()
    elif isinstance(config, dict):
        data = dict(config)
        _unknown(data, "config")
    elif config is None:
        data = {}
    else:
        data = read_yaml(config)
    if isinstance(overrides, list):
        data.update(ConfigParser().parse(overrides))
    else:
        _unknown(overrides or {}, "overrides")
        data.update(overrides or {})
    return TrainConfig(**data)

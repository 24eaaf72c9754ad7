"""Pretrain phi from scratch on packed code / textbook data (phi-1, phi-1.5, or the tiny CPU preset).

The YAML config carries the paper's hyper-parameters; any key can be overridden on the command line
(`--max_steps 100`, `--output_dir runs/x`; the dashed spelling `--max-steps` works too); a typo, a wrong
type or an out-of-range value is a one-line error naming the key. `--help` lists every key by group.
Resume a killed run exactly with `--resume_from_checkpoint latest`. From Python:
`recipes.pretrain.run("recipes/configs/tiny.yaml", {"max_steps": 50})`.

Examples:
    accelerate launch recipes/pretrain.py --config recipes/configs/tiny.yaml
    phi pretrain --config recipes/configs/tiny.yaml --max_steps 50 --output_dir runs/try
    accelerate launch --config_file recipes/configs/accelerate/ddp.yaml \\
        recipes/pretrain.py --config recipes/configs/phi-1.yaml --resume_from_checkpoint latest
    accelerate launch --config_file recipes/configs/accelerate/deepspeed-zero2.yaml \\
        recipes/pretrain.py --config recipes/configs/phi-1_5.yaml
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (`accelerate launch recipes/pretrain.py`) from a clone
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    # Before torch loads OpenMP: spinning worker threads make CPU training 10-50x slower on a shared,
    # oversubscribed machine; sleeping ones cost next to nothing on an idle one.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from recipes.config import TrainConfig, add_config_arguments, load_config, overrides_from  # noqa: E402


def run(config: str | os.PathLike | dict[str, Any] | TrainConfig | None = "recipes/configs/tiny.yaml",
        overrides: list[str] | dict[str, Any] | None = None) -> dict[str, Any]:
    """Pretrain with `config` (YAML path, dict or TrainConfig) and `overrides`; returns the run's summary."""
    from recipes.training import train

    return train(load_config(config, overrides))


def split_config(argv: list[str]) -> tuple[str | None, list[str]]:
    """(--config FILE, the other flags)."""
    for i, arg in enumerate(argv):
        if arg == "--config":
            if i + 1 >= len(argv):
                raise ValueError("--config needs a YAML file")
            return argv[i + 1], argv[:i] + argv[i + 2:]
        if arg.startswith("--config="):
            return arg.partition("=")[2], argv[:i] + argv[i + 1:]
    return None, argv


def main(argv: list[str] | argparse.Namespace | None = None, runner: Callable[..., dict[str, Any]] = run) -> None:
    """Script: `--config FILE` then `--key value` overrides, bad input exits with one line naming the problem.
    `phi pretrain`: the parsed arguments of `add_arguments`."""
    from recipes.cli import exit_on_user_errors
    from recipes.config import ConfigParser

    if isinstance(argv, argparse.Namespace):  # from `phi pretrain` (recipes/cli.py reports the errors)
        runner(argv.config, overrides_from(argv))
        return
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(ConfigParser().help(sys.modules[runner.__module__].__doc__, Path(sys.argv[0]).name))
        return
    exit_on_user_errors(Path(sys.argv[0]).name, lambda: runner(*split_config(argv)))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`phi pretrain`: --config and every config key (the same flags as the script)."""
    parser.add_argument("--config", default=None, help="YAML config, e.g. recipes/configs/tiny.yaml")
    add_config_arguments(parser)


if __name__ == "__main__":
    main()

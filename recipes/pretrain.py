"""Pretrain phi from scratch on packed code / textbook data (phi-1, phi-1.5, or the tiny CPU preset).

The YAML config carries the paper's hyper-parameters; any key can be overridden on the command line
(`--max_steps 100`, `--output_dir runs/x`); an unknown key is an error. Resume a killed run exactly with
`--resume_from_checkpoint latest`. From Python: `recipes.pretrain.run("recipes/configs/tiny.yaml",
{"max_steps": 50})`.

Examples:
    accelerate launch recipes/pretrain.py --config recipes/configs/tiny.yaml
    python recipes/pretrain.py --config recipes/configs/tiny.yaml --max_steps 50 --output_dir runs/try
    accelerate launch --config_file recipes/configs/accelerate/ddp.yaml \\
        recipes/pretrain.py --config recipes/configs/phi-1.yaml --resume_from_checkpoint latest
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (`accelerate launch recipes/pretrain.py`) from a clone
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    # Before torch loads OpenMP: spinning worker threads make CPU training 10-50x slower on a shared,
    # oversubscribed machine; sleeping ones cost next to nothing on an idle one.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from recipes.config import TrainConfig, load_config  # noqa: E402


def run(config: str | os.PathLike | dict[str, Any] | TrainConfig | None = "recipes/configs/tiny.yaml",
        overrides: list[str] | dict[str, Any] | None = None) -> dict[str, Any]:
    """Pretrain with `config` (YAML path, dict or TrainConfig) and `overrides`; returns the run's summary."""
    from recipes.training import train

    return train(load_config(config, overrides))


def main(argv: list[str] | None = None, runner=run) -> None:
    """`--config FILE` then `--key value` overrides; bad input exits with one line naming the problem."""
    from recipes.cli import exit_on_user_errors

    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(sys.modules[runner.__module__].__doc__)
        return
    config = None
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            sys.exit("error: --config needs a YAML file")
        config, argv = argv[i + 1], argv[:i] + argv[i + 2:]
    exit_on_user_errors(Path(sys.argv[0]).name, lambda: runner(config, argv))


if __name__ == "__main__":
    main()

"""Finetune a pretrained phi on exercises (prompt -> completion, loss on the completion only), full or LoRA.

phi-1's recipe (finetune-phi-1.yaml): batch 256, lr 1e-4, 50 warmup steps, weight decay 0.01, 6k steps, a
checkpoint every 1k steps, the best by HumanEval kept. With `humaneval: true` every saved checkpoint is
scored (greedy pass@1, `--eval_limit N` problems) through evaluation/code_eval.py, the best is recorded
in best_checkpoint.json and becomes final/. With `lora: true` only LoRA adapters train (peft); the exported
folders hold the merged model, loadable without peft. From Python:
`recipes.finetune.run("recipes/configs/finetune-tiny.yaml", {"max_steps": 20})`.

Examples:
    accelerate launch recipes/finetune.py --config recipes/configs/finetune-tiny.yaml
    phi finetune --config recipes/configs/finetune-tiny.yaml --lora --humaneval --eval_limit 20
    accelerate launch --config_file recipes/configs/accelerate/ddp.yaml \\
        recipes/finetune.py --config recipes/configs/finetune-phi-1.yaml
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (`accelerate launch recipes/finetune.py`) from a clone
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see recipes/pretrain.py

from recipes.config import TrainConfig, load_config  # noqa: E402
from recipes.pretrain import add_arguments  # noqa: E402,F401  (`phi finetune`: the same flags)


def humaneval_callback(limit: int | None = None, batch_size: int = 8, max_new_tokens: int = 256):
    """A checkpoint callback: greedy HumanEval pass@1 of the checkpoint folder, outputs in <checkpoint>/humaneval/."""
    from evaluation.code_eval import evaluate_code_task

    def score(checkpoint: Path, step: int) -> float:
        results = evaluate_code_task("humaneval", checkpoint, out_dir=checkpoint / "humaneval", limit=limit,
                                     batch_size=batch_size, max_new_tokens=max_new_tokens, trust_remote_code=True,
                                     dtype="float32", progress=False)
        return float(results["pass@k"]["pass@1"])

    return score


def run(config: str | os.PathLike | dict[str, Any] | TrainConfig | None = "recipes/configs/finetune-tiny.yaml",
        overrides: list[str] | dict[str, Any] | None = None) -> dict[str, Any]:
    """Finetune with `config` and `overrides`; returns the run's summary (final folder, metrics, best)."""
    from recipes.training import train

    cfg = load_config(config, overrides)
    callback = humaneval_callback(cfg.eval_limit) if cfg.humaneval else None
    return train(cfg, on_checkpoint=callback)


def main(argv: list[str] | argparse.Namespace | None = None) -> None:
    """The script's or `phi finetune`'s entry point: as recipes/pretrain.py, with this module's `run`."""
    from recipes.pretrain import main as pretrain_main

    pretrain_main(argv, runner=run)


if __name__ == "__main__":
    main()

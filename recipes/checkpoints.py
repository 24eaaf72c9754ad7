"""Checkpoints: Hub-ready model folders plus the full training state, written atomically, rotated, scored.

`checkpoint-<step>/` holds the model (weights with LoRA merged, config, custom code, tokenizer: loadable
with `from_pretrained(..., trust_remote_code=True)`), `training_state/` (model, optimizer, scheduler and
every process's RNG, through `accelerator.save_state`) and `trainer_state.json`, written last: a folder
without it is incomplete and never resumed from. A checkpoint callback's score goes to
`eval_results.json` beside it and, when it beats the best, to `<output_dir>/best_checkpoint.json`.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"  # written last into a checkpoint: its presence marks it complete
BEST_FILE = "best_checkpoint.json"

# A checkpoint callback gets (checkpoint folder, step) and returns a score (higher is better) or None.
CheckpointCallback = Callable[[Path, int], "float | None"]


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
        # FSDP2 swaps the model's class for a generated FSDP<Name> subclass; saved as it is, the folder's
        # auto_map and custom code would point into torch (`_fsdp_init.FSDPPhiForCausalLM`).
        sharded = type(unwrapped)
        unwrapped.__class__ = _unsharded_class(sharded)
        try:
            unwrapped.save_pretrained(folder, state_dict=state_dict)
        finally:
            unwrapped.__class__ = sharded
    tokenizer.save_pretrained(folder)


def _unsharded_class(cls: type) -> type:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        return cls
    return next(c for c in cls.__mro__ if not issubclass(c, FSDPModule)) if issubclass(cls, FSDPModule) else cls


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

"""Upload a dataset or model folder we wrote to the Hugging Face Hub.

The token comes from the usual places (HF_TOKEN, `hf auth login`) and is never written anywhere. A model
folder without a README.md gets a model card (rendered from its training_results.json); a dataset folder
already has its card. Before any upload work the Hub is asked who the token belongs to, so offline, with
no token or a refused one, the push fails at once with one line naming the endpoint. `--dry_run` prints
the repo id, the files and the card that would be uploaded, and contacts nothing.

Example:
    phi push runs/tiny/datasets/filtered-code my-org/phi-filtered-code --repo_type dataset --private
    phi push runs/tiny/finetune/final my-org/phi-tiny --dry_run
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

MODEL_CARD = """---
library_name: transformers
pipeline_tag: text-generation
tags:
- phi
- code
- phi-textbooks
---

# {name}

A phi-1-style causal language model trained with phi-textbooks (`recipes/pretrain.py` / `recipes/finetune.py`).
Load it with `AutoModelForCausalLM.from_pretrained("{repo_id}", trust_remote_code=True)`.

## Training

{training}
"""


def render_model_card(folder: Path, repo_id: str) -> str:
    """The README.md of a model folder: its own if it has one, else rendered from training_results.json."""
    readme = folder / "README.md"
    if readme.is_file():
        return readme.read_text(encoding="utf-8")
    results_file = folder / "training_results.json"
    results = json.loads(results_file.read_text(encoding="utf-8")) if results_file.is_file() else {}
    metrics = results.get("metrics") or {}
    lines = [f"- {key}: {metrics[key]:.4g}" if isinstance(metrics[key], float) else f"- {key}: {metrics[key]}"
             for key in ("step", "tokens", "loss", "eval_loss") if metrics.get(key) is not None]
    if results.get("best"):
        lines.append(f"- best checkpoint: step {results['best']['step']} (score {results['best']['score']:.4f})")
    return MODEL_CARD.format(name=repo_id.split("/")[-1], repo_id=repo_id,
                             training="\n".join(lines) or "No training_results.json in the uploaded folder.")


def check_hub(repo_id: str) -> str:
    """The Hub user of the token; a one-line ConnectionError where offline, without a token or refused."""
    from huggingface_hub import HfApi, constants, get_token

    endpoint = constants.ENDPOINT
    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise ConnectionError(f"push to {repo_id}: the Hub ({endpoint}) is unreachable: HF_HUB_OFFLINE is set; "
                              "unset it, or use --dry_run")
    token = get_token()
    if not token:
        raise ConnectionError(f"push to {repo_id}: no Hub token; set HF_TOKEN or run `hf auth login`")
    try:
        return HfApi(endpoint=endpoint).whoami(token=token)["name"]
    except Exception as err:  # connection refused, DNS, timeout, 401: one line, the token never printed
        reason = str(err).replace(token, "***").splitlines()[0] if str(err) else ""
        raise ConnectionError(f"push to {repo_id}: the Hub ({endpoint}) is unreachable or refused the token "
                              f"({err.__class__.__name__}: {reason})") from None


def push_folder(folder: str | Path, repo_id: str, repo_type: str = "model", private: bool = False,
                dry_run: bool = False, log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Create `repo_id` if needed and upload `folder`; returns {repo_id, repo_type, files, card}."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder to push")
    if repo_id.count("/") != 1:
        raise ValueError(f"repo id {repo_id!r}: expected org/name")
    readme = folder / "README.md"
    card = render_model_card(folder, repo_id) if repo_type == "model" else \
        readme.read_text(encoding="utf-8") if readme.is_file() else None
    files = sorted({str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} | ({"README.md"} if card else set()))
    plan = {"repo_id": repo_id, "repo_type": repo_type, "private": private, "files": files, "card": card}
    if dry_run:
        log(f"would upload {len(files)} files to {repo_type} {repo_id}")
        for f in files:
            log(f"  {f}")
        if card:
            log("README.md:\n" + card)
        return plan
    user = check_hub(repo_id)
    from huggingface_hub import HfApi

    if card and not readme.is_file():
        readme.write_text(card, encoding="utf-8")
    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type=repo_type,
                          commit_message="Upload with phi-textbooks")
    except OSError as err:  # the Hub's HTTP errors are OSErrors
        raise ConnectionError(f"could not push {folder} to {repo_id}: {str(err).splitlines()[0]}") from None
    log(f"uploaded {len(files)} files to {repo_type} {repo_id} (as {user})")
    return plan


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", help="dataset or model folder written by phi")
    parser.add_argument("repo_id", help="Hub repo id, e.g. my-org/phi-filtered-code")
    parser.add_argument("--repo_type", choices=["model", "dataset"], default=None,
                        help="default: dataset if the folder has data/*.parquet, else model")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--dry_run", action="store_true", help="print the repo, files and card; upload nothing")


def main(args: argparse.Namespace) -> None:
    repo_type = args.repo_type or ("dataset" if list(Path(args.folder).glob("data/*.parquet")) else "model")
    push_folder(args.folder, args.repo_id, repo_type, args.private, args.dry_run)

"""Upload a dataset or model folder we wrote to the Hugging Face Hub.

The token comes from the usual places (HF_TOKEN, `hf auth login`) and is never written to disk.

Example:
    phi push runs/tiny/datasets/filtered-code my-org/phi-filtered-code --repo_type dataset --private
    phi push runs/tiny/finetune/final my-org/phi-tiny
"""

from __future__ import annotations

import argparse
from pathlib import Path


def push_folder(folder: str | Path, repo_id: str, repo_type: str = "model", private: bool = False,
                dry_run: bool = False) -> list[str]:
    """Create `repo_id` if needed and upload `folder`; returns the files uploaded (or that would be)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder to push")
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    if dry_run:
        return files
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type=repo_type,
                          commit_message="Upload with phi-textbooks")
    except OSError as err:  # requests' ConnectionError and the Hub's HTTP errors are OSErrors
        raise ConnectionError(f"could not push {folder} to {repo_id}: {err}") from None
    return files


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", help="dataset or model folder written by phi")
    parser.add_argument("repo_id", help="Hub repo id, e.g. my-org/phi-filtered-code")
    parser.add_argument("--repo_type", choices=["model", "dataset"], default=None,
                        help="default: dataset if the folder has data/*.parquet, else model")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--dry_run", action="store_true", help="list the files, upload nothing")


def main(args: argparse.Namespace) -> None:
    repo_type = args.repo_type or ("dataset" if list(Path(args.folder).glob("data/*.parquet")) else "model")
    files = push_folder(args.folder, args.repo_id, repo_type, args.private, args.dry_run)
    verb = "would upload" if args.dry_run else "uploaded"
    print(f"{verb} {len(files)} files to {repo_type} {args.repo_id}")
    for f in files:
        print(f"  {f}")

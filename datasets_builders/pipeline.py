"""Composable data steps, datatrove-style: each step is one small class over a stream of records.

A record is a plain dict (`id`, `text` or `prompt`/`completion`/`tests`, provenance columns, ...).
A `Step` maps a stream to a stream and counts what it did; a `Filter` answers `keep(record)` with
`True` or `(False, reason)`, and what it drops goes to the pipeline's `removed` list with the reason,
never silently. `run_pipeline` chains steps and returns kept records, removed records and counts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

Record = dict[str, Any]


class Step:
    """A pipeline stage: `run` consumes records and yields records; `stats` counts what happened."""

    name: str = "step"

    def __init__(self) -> None:
        self.stats: Counter[str] = Counter()
        self.on_removed: Callable[[Record], None] = lambda record: None

    def run(self, records: Iterable[Record]) -> Iterator[Record]:
        raise NotImplementedError

    def remove(self, record: Record, reason: str) -> None:
        """Count a dropped record and hand it to the pipeline with its reason."""
        self.stats[f"removed:{reason}"] += 1
        self.on_removed({**record, "removed_by": self.name, "removed_reason": reason})


class Filter(Step):
    """A step that keeps or drops each record: `keep` returns True or (False, reason)."""

    def keep(self, record: Record) -> bool | tuple[bool, str]:
        raise NotImplementedError

    def run(self, records: Iterable[Record]) -> Iterator[Record]:
        for record in records:
            self.stats["in"] += 1
            verdict = self.keep(record)
            ok, reason = (verdict, self.name) if isinstance(verdict, bool) else verdict
            if ok:
                self.stats["kept"] += 1
                yield record
            else:
                self.remove(record, reason)


@dataclass
class PipelineResult:
    kept: list[Record]
    removed: list[Record] = field(default_factory=list)
    stats: dict[str, dict[str, int]] = field(default_factory=dict)

    def removed_by_reason(self) -> dict[str, int]:
        return dict(Counter(f"{r['removed_by']}:{r['removed_reason']}" for r in self.removed))


def run_pipeline(steps: list[Step], records: Iterable[Record], keep_removed: bool = True) -> PipelineResult:
    """Chain `steps` over `records`; removed records are collected (or only counted if keep_removed=False)."""
    removed: list[Record] = []
    stream: Iterable[Record] = records
    for step in steps:
        step.on_removed = removed.append if keep_removed else (lambda record: None)
        stream = step.run(stream)
    kept = list(stream)
    return PipelineResult(kept=kept, removed=removed, stats={s.name: dict(s.stats) for s in steps})

"""The teacher as datatrove blocks: prompts in, replies out, failures removed with their reason.

`Teach` sends `chunk` prompts at a time to the teacher (an OpenAI-compatible endpoint with bounded
concurrency, retries and a request-hash reply cache; or a local transformers model on `--device`) and
attaches each reply (None: no reply after the retries). `ReplyFilter` turns the reply into the record's
`text` and removes failed, empty and too-short replies with the reason, so failures are recorded apart.
The teacher is built inside the task from its options (clients and models are not shipped to workers), or
is the caller's own object in an in-process run; the reply cache makes a rerun (a killed task started
again) ask only for what is missing. `SampledPrompts` is the source of the unseeded (list-sampled) prompts.
"""

from __future__ import annotations

import json
from typing import Any

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.writers.disk_base import DiskWriter

from ..prompts import GenerationPrompt

REPLY = "_reply"


def build_teacher(teacher: Any) -> Any:
    """The teacher of a block: made from its options (in the task), or the caller's own object
    (`pipelines.synthetic.SharedObject`, in-process runs)."""
    from ..pipelines.synthetic import SharedObject
    from ..teachers import make_teacher

    return teacher.obj if isinstance(teacher, SharedObject) else make_teacher(teacher)


def ask(step: PipelineStep, teacher: Any, prompts: list[GenerationPrompt]) -> list[str | None]:
    """`teacher.generate(prompts)`, its stats' increase recorded in `step`'s stats as `teacher_<key>`."""
    before = dict(teacher.stats)
    replies = teacher.generate(prompts)
    for key, value in teacher.stats.items():
        if value - before.get(key, 0):
            step.stat_update(f"teacher_{key}", value=value - before.get(key, 0))
    return replies


class SampledPrompts(PipelineStep):
    """The `n` constrained prompts of `PromptSampler.sample(kind, n)` (topic x audience x ...), task `rank`
    taking its contiguous share: `text` is the user message, metadata the system message and constraints."""

    type = "🌱 - SEEDS"
    name = "sampled prompts"

    def __init__(self, sampler: Any, kind: str, n: int, license: str):
        super().__init__()
        self.sampler, self.kind, self.n, self.license = sampler, kind, n, license

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from ..readers import contiguous_shard

        for p in contiguous_shard(self.sampler.sample(self.kind, self.n), rank, world_size):
            self.stat_update("prompts")
            yield Document(text=p.user, id=p.id, metadata={"generation_system": p.system, "license": self.license,
                                                            "constraints": json.dumps(p.constraints, sort_keys=True)})


class Teach(PipelineStep):
    """Ask the teacher each prompt document (`text` = user message, `generation_system` = system message)."""

    type = "🧑‍🏫 - TEACHER"
    name = "teach"

    def __init__(self, teacher: Any, kind: str = "textbook", chunk: int = 64):
        super().__init__()
        self.teacher, self.kind, self.chunk = teacher, kind, chunk

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from datatrove.utils.batching import batched

        teacher = build_teacher(self.teacher)
        for batch in batched(data, self.chunk):
            prompts = [GenerationPrompt(self.kind, doc.metadata.get("generation_system", ""), doc.text,
                                        json.loads(doc.metadata.get("constraints") or "{}")) for doc in batch]
            with self.track_time("batch"):
                replies = ask(self, teacher, prompts)
            if replies and all(r is None for r in replies) and not self.stats["replied"].total:
                failed = {k: v for k, v in teacher.stats.items() if k.startswith("failed")}
                raise ConnectionError(f"teacher {teacher.name}: every request failed ({failed}); check the URL, the "
                                      "model name and the server's log")
            for doc, prompt, reply in zip(batch, prompts, replies):
                doc.metadata[REPLY] = reply
                doc.metadata["generation_prompt"] = doc.text
                doc.metadata["request_hash"] = teacher.request_hash(prompt)  # lineage: the cached request
                doc.metadata["generator"] = teacher.name
                doc.metadata.setdefault("source", teacher.name)
                self.stat_update("replied" if reply is not None else "no_reply")
                yield doc


class ReplyFilter(BaseFilter):
    """A reply becomes the record's `text`; missing (failed request), empty or too-short ones are removed."""

    name = "reply"

    def __init__(self, min_chars: int = 100, exclusion_writer: DiskWriter | None = None):
        super().__init__(exclusion_writer)
        self.min_chars = min_chars

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        reply = doc.metadata.pop(REPLY)
        if reply is None:
            return False, "request_failed"
        doc.text = reply.strip()
        if not doc.text:
            return False, "empty_reply"
        if len(doc.text) < self.min_chars:
            return False, "too_short"
        return True

"""HellaSwag's hook: `process_doc: hellaswag_preprocess` in task.yaml (lm-eval's preprocessing, by name)."""

from __future__ import annotations

import re
from typing import Any

Record = dict[str, Any]


def _clean_hellaswag(text: str) -> str:
    # "[title]" and other bracketed tags are artifacts of HellaSwag's WikiHow half; lm-evaluation-harness
    # removes them this way, and the prompts must match its prompts character for character.
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def hellaswag_preprocess(doc: Record) -> Record:
    """Add `query` ("<activity>: <ctx_a> <Ctx_b>") and the cleaned `choices` to a HellaSwag record."""
    context = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
    return {**doc, "query": _clean_hellaswag(doc["activity_label"] + ": " + context),
            "choices": [_clean_hellaswag(ending) for ending in doc["endings"]]}


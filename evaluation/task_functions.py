"""Named per-document functions that task definitions (evaluation/tasks/*.yaml) point to by `process_doc`.

A task is data; the rare step a template cannot express (regular expressions, say) is a small function
here, looked up by name. Each takes one record and returns it with the fields the templates read added.
"""

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


PROCESS_DOC = {"hellaswag_preprocess": hellaswag_preprocess}

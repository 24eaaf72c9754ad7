"""`phi reproduce` end to end on a smaller config: report, loadable model and datasets, exact resume after a kill."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from datasets_builders.sources import stdlib_root

pytestmark = pytest.mark.slow

# The `email` package (29 files) instead of the whole standard library; n-gram + AST decontamination (the
# embedding detector is exercised by the default run and by tests/test_decontaminate.py).
SMALL = ["--source", str(stdlib_root() / "email"), "--annotate", "24", "--textbook_n", "20", "--exercises_n", "40",
         "--detectors", "ngram,ast", "--vocab_size", "1024",
         "--pretrain.max_steps", "16", "--pretrain.eval_steps", "8", "--pretrain.save_steps", "4",
         "--pretrain.logging_steps", "4", "--pretrain.global_batch_size", "8", "--pretrain.micro_batch_size", "8",
         "--pretrain.seq_len", "128",
         "--finetune.max_steps", "4", "--finetune.eval_steps", "4", "--finetune.save_steps", "2",
         "--finetune.global_batch_size", "4", "--finetune.micro_batch_size", "4", "--finetune.seq_len", "128",
         "--eval_limit", "2", "--max_new_tokens", "16", "--mc_tasks", "piqa,arc_easy,winogrande,mmlu", "--mc_limit", "2"]
DATA_STAGES = ("filtered-code", "textbook", "exercises", "decontaminate", "tokenizer")


def reproduce(run_dir: Path, *extra: str, wait: bool = True):
    cmd = [sys.executable, "-m", "recipes.cli", "reproduce", "--run_dir", str(run_dir), *SMALL, *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def pretrain_losses(run_dir: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run_dir / "pretrain" / "metrics.jsonl").read_text().splitlines() if line]
    return [(r["step"], r["loss"]) for r in rows if r.get("loss") is not None]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("reproduce") / "run"
    reproduce(run_dir)
    return run_dir


def test_report_model_and_datasets(full_run):
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM

    report = (full_run / "report.md").read_text()
    for section in ("## Stages", "## Datasets", "## Training", "## Evaluation", "## Decontamination"):
        assert section in report
    assert "phi-1.5 (1.3B)" in report and (full_run / "report.html").is_file()
    assert list((full_run / "images").glob("*loss_curve.png"))
    card = (full_run / "finetune" / "final" / "README.md").read_text()
    assert "model-index" in card and "humaneval" in card.lower() and "piqa" in card.lower()
    model = AutoModelForCausalLM.from_pretrained(full_run / "finetune" / "final", trust_remote_code=True)
    assert model.config.model_type == "phi_textbooks"
    for name in ("filtered-code", "textbook", "exercises"):
        ds = load_dataset(str(full_run / "datasets" / name), split="train")
        assert len(ds) > 0 and "id" in ds.column_names
    for stage in ("eval-humaneval", "eval-mbpp", "eval-commonsense"):
        assert (full_run / "stages" / f"{stage}.json").is_file()


def test_rerun_skips_completed_stages(full_run):
    before = (full_run / "stages" / "pretrain.json").read_text()
    result = reproduce(full_run)
    assert "[pretrain] done already" in result.stdout
    assert (full_run / "stages" / "pretrain.json").read_text() == before


def test_killed_mid_pretraining_resumes_to_same_metrics(full_run, tmp_path):
    run_dir = tmp_path / "run"
    # Reuse the finished data stages; the kill happens in pretraining.
    (run_dir / "stages").mkdir(parents=True)
    for stage in DATA_STAGES:
        shutil.copy(full_run / "stages" / f"{stage}.json", run_dir / "stages")
    shutil.copytree(full_run / "datasets", run_dir / "datasets")
    shutil.copytree(full_run / "tokenizer", run_dir / "tokenizer")
    for stage in DATA_STAGES:  # the markers name the first run's folders; point them at this one
        marker = run_dir / "stages" / f"{stage}.json"
        marker.write_text(marker.read_text().replace(str(full_run), str(run_dir)))

    proc = reproduce(run_dir, wait=False)
    deadline = time.time() + 900
    while not list((run_dir / "pretrain").glob("checkpoint-8")) and time.time() < deadline:
        assert proc.poll() is None, "reproduce exited before the kill"
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "stages" / "pretrain.json").exists()
    reproduce(run_dir)
    assert pretrain_losses(run_dir) == pretrain_losses(full_run)
    ours = json.loads((run_dir / "stages" / "eval-humaneval.json").read_text())["results"]["pass@k"]
    theirs = json.loads((full_run / "stages" / "eval-humaneval.json").read_text())["results"]["pass@k"]
    assert ours == theirs

"""Training recipes: the typed config and its one-line errors (pretrain, finetune, phi reproduce), schedule,
data order, exact resume after SIGKILL, 2-process gloo DDP and FSDP == 1 process, learning below the unigram
entropy, LoRA finetune export, Hub push (dry run, offline failure)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from datasets_builders.hub_dataset import read_build_info, write_dataset
from datasets_builders.packing import pack
from datasets_builders.sources import LocalPythonFiles
from datasets_builders.tokenizer import train_tokenizer
from recipes import pretrain
from recipes.config import GROUPS, TrainConfig, load_config
from recipes.training import (
    document_position_ids,
    global_batch_indices,
    list_checkpoints,
    lr_factor,
    read_metrics,
    resolve_checkpoint,
)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "recipes" / "configs"
# A 2-layer, 64-wide phi with dropout everywhere (so resume must restore the RNG), on 32-token blocks.
MICRO_MODEL = {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 1,
               "vocab_size": 512, "resid_pdrop": 0.1, "attention_dropout": 0.1, "embd_pdrop": 0.1}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    """40 standard-library files, a 512-token BPE trained on them, and their packed 32-token blocks."""
    root = tmp_path_factory.mktemp("train-data")
    corpus = write_dataset(list(LocalPythonFiles())[:40], root / "code", name="code", description="t", build_info={})
    tokenizer = train_tokenizer([corpus], root / "tokenizer", vocab_size=512)
    packed = pack([corpus], tokenizer, root / "packed", seq_len=32, eval_fraction=0.1, seed=0)
    return {"corpus": str(corpus), "tokenizer": str(root / "tokenizer"), "packed": str(packed)}


def micro(data: dict[str, str], output_dir: Path, **overrides) -> dict:
    cfg = {"model": "tiny", "model_overrides": MICRO_MODEL, "tokenizer": data["tokenizer"], "datasets": [data["corpus"]],
           "packed_dir": data["packed"], "seq_len": 32, "eval_fraction": 0.1, "global_batch_size": 8,
           "micro_batch_size": 4, "max_steps": 10, "learning_rate": 3e-3, "warmup_steps": 2, "mixed_precision": "bf16",
           "output_dir": str(output_dir), "eval_steps": 5, "eval_batches": 2, "logging_steps": 1, "save_steps": 3,
           "save_total_limit": 2, "report_to": [], "seed": 0}
    return {**cfg, **overrides}


def _env(**extra: str) -> dict[str, str]:
    # One thread everywhere: in-process and subprocess runs then do the same float operations, and the
    # shared test machine is not oversubscribed.
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": "1", **extra}


@pytest.fixture(autouse=True)
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- configuration -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_shipped_configs_load_and_fit_their_model(name):
    from recipes.training import model_config

    cfg = load_config(CONFIGS / name)
    assert cfg.datasets
    if not Path(cfg.model).parent.name.startswith("checkpoint") and "/" not in cfg.model:
        assert model_config(cfg).max_position_embeddings >= cfg.seq_len


def test_phi1_config_carries_the_paper_numbers():
    cfg = load_config(CONFIGS / "phi-1.yaml")
    assert (cfg.global_batch_size, cfg.seq_len, cfg.learning_rate, cfg.warmup_steps, cfg.weight_decay) == \
        (1024, 2048, 1e-3, 750, 0.1)
    assert cfg.mixed_precision == "fp16" and cfg.lr_scheduler == "linear"
    ft = load_config(CONFIGS / "finetune-phi-1.yaml")
    assert (ft.global_batch_size, ft.learning_rate, ft.warmup_steps, ft.weight_decay, ft.max_steps, ft.save_steps) == \
        (256, 1e-4, 50, 0.01, 6000, 1000)
    p15 = load_config(CONFIGS / "phi-1_5.yaml")
    assert (p15.lr_scheduler, p15.learning_rate, p15.warmup_steps, p15.global_batch_size) == ("constant", 2e-4, 0, 2048)
    assert [d["weight"] for d in p15.datasets] == [0.8, 0.1, 0.1]


def test_overrides_flags_aliases_and_yaml_values(tmp_path):
    cfg = load_config(CONFIGS / "tiny.yaml", ["--max_steps", "7", "--learning-rate=1e-4", "--lora", "--seed", "3",
                                              "--datasets", "a", "{path: b, weight: 0.2}",
                                              "--model_overrides", "{resid_pdrop: 0.1}", "--report_to", "none"])
    assert (cfg.max_steps, cfg.learning_rate, cfg.lora, cfg.seed) == (7, 1e-4, True, 3)
    assert cfg.datasets == [{"path": "a"}, {"path": "b", "weight": 0.2}] and cfg.model_overrides == {"resid_pdrop": 0.1}
    assert cfg.report_to == [] and cfg.warmup_steps == 20  # the rest from the YAML file
    assert load_config(cfg, {"max_steps": 9}).to_dict() == {**cfg.to_dict(), "max_steps": 9}
    bad = tmp_path / "bad.yaml"
    bad.write_text("include: " + str(CONFIGS / "tiny.yaml") + "\nwarmup: 3\n")
    with pytest.raises(ValueError, match=r"bad.yaml: unknown config key\(s\) warmup \(did you mean warmup_steps\?\)"):
        load_config(bad)


@pytest.mark.parametrize("flags, message", [
    (["--learning_rat", "1e-3"], r"^command line: unknown config key\(s\) --learning_rat \(did you mean --learning_rate\?\)"),
    (["--max_steps", "many"], r"^command line: argument --max_steps/--max-steps: invalid int value: 'many'$"),
    (["--learning_rate", "-1e-3"], r"^config key learning_rate: must be > 0, got -0.001$"),
    (["--lr_scheduler", "cosine"], r"lr_scheduler.*invalid choice: 'cosine'"),
    (["--global_batch_size", "12", "--micro_batch_size", "8"], r"global_batch_size: must be a multiple of micro_batch_size"),
])
def test_config_errors_name_the_key(flags, message):
    with pytest.raises(ValueError, match=message):
        load_config(CONFIGS / "tiny.yaml", flags)


def test_config_groups_are_documented_and_validate_values_from_yaml_and_dicts():
    import dataclasses

    for group in GROUPS:
        assert group.__doc__ and issubclass(TrainConfig, group)
        for f in dataclasses.fields(group):
            assert f.metadata.get("help"), f"{group.__name__}.{f.name} has no documentation"
    names = [f.name for g in GROUPS for f in dataclasses.fields(g)]
    assert sorted(names) == sorted(f.name for f in dataclasses.fields(TrainConfig))  # the union, no stray key
    with pytest.raises(ValueError, match=r"^config key max_steps: expected int, got 'many'$"):
        load_config(CONFIGS / "tiny.yaml", {"max_steps": "many"})
    with pytest.raises(ValueError, match=r"^config key eval_fraction: must be in \[0, 1\), got 1.5$"):
        load_config(CONFIGS / "tiny.yaml", {"eval_fraction": 1.5})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['wieght'\]"):
        load_config(CONFIGS / "tiny.yaml", {"datasets": [{"path": "x", "wieght": 1}]})
    assert load_config(CONFIGS / "tiny.yaml", {"learning_rate": 1, "datasets": "x"}).learning_rate == 1.0


def test_bad_input_fails_before_any_compute(data, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"seq_len: 2048 is above the model's max_position_embeddings \(1024\)"):
        pretrain.run(micro(data, out, seq_len=2048))
    write_dataset([{"id": "1", "content": "x = 1\n"}], tmp_path / "nocol", name="n", description="t", build_info={})
    with pytest.raises(ValueError, match=r"missing column\(s\) \['text'\]"):
        pretrain.run(micro(data, out, datasets=[str(tmp_path / "nocol")]))
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="empty.jsonl: the dataset is empty"):
        pretrain.run(micro(data, out, datasets=[str(tmp_path / "empty.jsonl")]))
    assert not out.exists()  # nothing was built, packed or trained


BAD_INPUT = [("--learning_rat", "1e-3", "learning_rat (did you mean"),
             ("--max_steps", "many", "max_steps"),
             ("--learning_rate", "-1", "config key learning_rate: must be > 0, got -1.0")]


@pytest.mark.parametrize("command", ["pretrain.py", "phi finetune", "phi reproduce"])
def test_cli_reports_bad_input_in_one_line(command, tmp_path):
    """A typo, a wrong type, an out-of-range value: one line naming the key, in every entry point, before any work."""
    for key, value, expected in BAD_INPUT:
        if command == "pretrain.py":
            cmd = [sys.executable, "recipes/pretrain.py", "--config", "recipes/configs/tiny.yaml", key, value]
        elif command == "phi finetune":
            cmd = [sys.executable, "-m", "recipes.cli", "finetune", "--config", "recipes/configs/finetune-tiny.yaml",
                   key, value]
        else:
            cmd = [sys.executable, "-m", "recipes.cli", "reproduce", "--run_dir", str(tmp_path / "run"),
                   f"--pretrain.{key[2:]}", value]
        proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
        assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert expected in proc.stderr and "error" in proc.stderr, proc.stderr
    assert not (tmp_path / "run").exists()


# --- Hub push -------------------------------------------------------------------------------------

SECRET = "hf_NotARealTokenButSecret0123456789"


def _phi(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "recipes.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**_env(), "HF_TOKEN": SECRET, **env})


def _model_folder(tiny_model_dir: Path, tmp_path: Path) -> Path:
    import shutil

    folder = tmp_path / "final"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "training_results.json").write_text(json.dumps({"metrics": {"step": 6, "loss": 2.5, "eval_loss": 2.75},
                                                              "best": {"step": 4, "score": 0.25}}))
    return folder


def test_push_dry_run_shows_repo_files_and_card_and_never_writes_the_token(tiny_model_dir, tmp_path):
    folder = _model_folder(tiny_model_dir, tmp_path)
    files = sorted(p.name for p in folder.iterdir())
    proc = _phi("push", str(folder), "my-org/phi-tiny", "--dry_run", HF_HUB_OFFLINE="0")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"would upload {len(files) + 1} files to model my-org/phi-tiny" in out
    for name in [*files, "README.md"]:
        assert f"  {name}\n" in out
    card = out.split("README.md:\n", 1)[1]
    assert card.startswith("---\nlibrary_name: transformers\n") and "# phi-tiny" in card
    assert 'from_pretrained("my-org/phi-tiny", trust_remote_code=True)' in card
    assert "- eval_loss: 2.75" in card and "best checkpoint: step 4 (score 0.2500)" in card
    assert not (folder / "README.md").exists()  # a dry run writes nothing
    data = write_dataset([{"id": "1", "text": "x = 1\n"}], tmp_path / "ds", name="d", description="t", build_info={})
    proc = _phi("push", str(data), "my-org/phi-data", "--dry-run")  # the dashed spelling works too
    assert proc.returncode == 0 and "would upload" in proc.stdout and "to dataset my-org/phi-data" in proc.stdout
    assert (data / "README.md").read_text() in proc.stdout
    # the token appears nowhere: not in the output, not in any file
    assert SECRET not in out + proc.stdout + proc.stderr
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]


def test_real_push_offline_fails_fast_in_one_line_before_any_upload_work(tiny_model_dir, tmp_path):
    folder = _model_folder(tiny_model_dir, tmp_path)
    start = time.time()
    offline = _phi("push", str(folder), "my-org/phi-tiny", HF_HUB_OFFLINE="1")
    unreachable = _phi("push", str(folder), "my-org/phi-tiny", HF_HUB_OFFLINE="0", HF_ENDPOINT="http://127.0.0.1:9")
    assert time.time() - start < 60
    for proc, names in ((offline, "HF_HUB_OFFLINE is set"), (unreachable, "http://127.0.0.1:9")):
        assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert proc.stderr.startswith("phi push: error: push to my-org/phi-tiny: the Hub") and names in proc.stderr
        assert SECRET not in proc.stderr
    assert not (folder / "README.md").exists()  # no upload work was started


def test_training_with_a_real_push_fails_before_compute_when_offline(data, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ConnectionError, match=r"push to my-org/phi-tiny: the Hub .* HF_HUB_OFFLINE is set"):
        pretrain.run(micro(data, out, push_to_hub="my-org/phi-tiny"))
    assert not out.exists()


# --- pieces of the loop --------------------------------------------------------------------------

def test_schedules():
    cfg = load_config(CONFIGS / "tiny.yaml", {"warmup_steps": 10, "max_steps": 110, "min_lr_ratio": 0.0})
    assert lr_factor(0, cfg) == pytest.approx(0.1) and lr_factor(9, cfg) == 1.0
    assert lr_factor(60, cfg) == pytest.approx(0.5) and lr_factor(110, cfg) == 0.0
    const = load_config(CONFIGS / "phi-1_5.yaml")
    assert {lr_factor(s, const) for s in (0, 100, 30000)} == {1.0}


def test_global_batches_are_seeded_epochs():
    rows = np.concatenate([global_batch_indices(s, 10, 4, seed=1) for s in range(5)])  # 2 epochs
    assert sorted(rows[:10]) == list(range(10)) and sorted(rows[10:20]) == list(range(10))
    assert (global_batch_indices(3, 10, 4, seed=1) == global_batch_indices(3, 10, 4, seed=1)).all()
    assert not (global_batch_indices(0, 10, 4, seed=1) == global_batch_indices(0, 10, 4, seed=2)).all()


def test_document_masking_isolates_packed_documents():
    import torch

    from modeling_phi import PhiConfig, PhiForCausalLM

    ids = np.array([[5, 6, 0, 7, 8, 9, 0, 3]])
    assert document_position_ids(ids, eos=0).tolist() == [[0, 1, 2, 0, 1, 2, 3, 0]]
    torch.manual_seed(0)
    model = PhiForCausalLM(PhiConfig.from_preset("tiny", **MICRO_MODEL)).eval()
    first, second = torch.randint(1, 512, (1, 5)), torch.randint(1, 512, (1, 6))
    packed = torch.cat([first, torch.zeros(1, 1, dtype=torch.long), second], 1)
    positions = torch.from_numpy(document_position_ids(packed.numpy(), 0))
    with torch.no_grad():
        masked = model(input_ids=packed, position_ids=positions, use_cache=False).logits[0, 6:]
        alone = model(input_ids=second, use_cache=False).logits[0]
        unmasked = model(input_ids=packed, use_cache=False).logits[0, 6:]
    assert torch.allclose(masked, alone, atol=1e-5) and not torch.allclose(unmasked, alone, atol=1e-5)


def test_latest_ignores_half_written_checkpoints(tmp_path):
    for step, complete in ((2, True), (4, True), (6, False)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if complete:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (tmp_path / ".checkpoint-8.tmp").mkdir()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-4"]
    assert resolve_checkpoint("latest", str(tmp_path)).name == "checkpoint-4"


# --- end to end ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_sigkill_after_checkpoint_then_resume_is_bitwise_identical(data, tmp_path):
    full = pretrain.run(micro(data, tmp_path / "full"))
    reference = read_metrics(tmp_path / "full")
    assert [r["step"] for r in reference] == list(range(1, 11))
    assert Path(full["final"], "model.safetensors").is_file()
    assert [p.name for p in list_checkpoints(tmp_path / "full")] == ["checkpoint-9", "checkpoint-10"]  # keep last 2

    # A real kill: a subprocess SIGKILLed once its first checkpoint is complete.
    out = tmp_path / "killed"
    config = tmp_path / "micro.yaml"
    config.write_text(yaml.safe_dump(micro(data, out)))
    proc = subprocess.Popen([sys.executable, "recipes/pretrain.py", "--config", str(config)], cwd=REPO, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not list_checkpoints(out) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "final").exists(), "the run finished before it could be killed"
    # Debris a kill mid-save would leave: neither may be picked up as `latest`.
    (out / ".checkpoint-99.tmp").mkdir()
    (out / "checkpoint-98").mkdir()
    resumed_from = list_checkpoints(out)[-1].name
    pretrain.run(config, ["--resume_from_checkpoint", "latest"])
    resumed = read_metrics(out)
    assert not (out / ".checkpoint-99.tmp").exists()  # debris cleared on resume
    assert [r["step"] for r in resumed] == list(range(1, 11)), resumed_from
    for a, b in zip(reference, resumed):
        assert (a["step"], a["loss"], a["eval_loss"], a["lr"], a["grad_norm"]) == \
            (b["step"], b["loss"], b["eval_loss"], b["lr"], b["grad_norm"]), f"differs at step {a['step']} ({resumed_from})"


NO_DROPOUT = {**MICRO_MODEL, "resid_pdrop": 0.0, "attention_dropout": 0.0, "embd_pdrop": 0.0}
LAUNCH_CONFIGS = REPO / "recipes" / "configs" / "accelerate"


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL `proc` and every process it started (torchrun starts its workers in their own sessions)."""
    import psutil

    parent = psutil.Process(proc.pid)
    for p in [*parent.children(recursive=True), parent]:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    proc.wait()


def launch(config: Path, launch_config: str, port: int, *flags: str, kill_after: Path | None = None,
           processes: int = 2) -> str:
    """`accelerate launch --config_file <launch_config> --num_processes 2 recipes/pretrain.py`; with `kill_after`,
    SIGKILL everything as soon as that checkpoint is complete. Returns the log."""
    cmd = ["accelerate", "launch", "--config_file", str(LAUNCH_CONFIGS / launch_config), "--num_processes", str(processes),
           "--main_process_port", str(port), "recipes/pretrain.py", "--config", str(config), *flags]
    log = config.with_suffix(f".{port}.log")
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=out, stderr=subprocess.STDOUT)
        deadline = time.time() + 600
        while proc.poll() is None and time.time() < deadline:
            if kill_after is not None and (kill_after / "trainer_state.json").is_file():
                _kill_tree(proc)
                break
            time.sleep(0.02)
        else:
            if proc.poll() is None:
                _kill_tree(proc)
    text = log.read_text()
    assert kill_after is not None or proc.returncode == 0, text[-3000:]
    return text


def _losses(rows: list[dict]) -> list[tuple]:
    return [(r["step"], r["loss"], r["eval_loss"], r["grad_norm"]) for r in rows]


def assert_same_metrics(one_dir, two_dir, steps: int) -> None:
    """Two runs logged the same steps, with train and eval losses within 1e-4 at each."""
    one, two = read_metrics(one_dir), read_metrics(two_dir)
    assert [r["step"] for r in two] == [r["step"] for r in one] == list(range(1, steps + 1))
    for a, b in zip(one, two):
        assert abs(a["loss"] - b["loss"]) < 1e-4, (a, b)
        if a["eval_loss"] is not None:
            assert abs(a["eval_loss"] - b["eval_loss"]) < 1e-4, (a, b)


@pytest.mark.slow
def test_two_process_gloo_matches_one_process(data, tmp_path):
    cfg = micro(data, tmp_path / "one", max_steps=6, model_overrides=NO_DROPOUT, save_steps=100, eval_steps=3)
    pretrain.run(cfg)
    config = tmp_path / "two.yaml"  # no datasets: training reads the packed folder as it is
    config.write_text(yaml.safe_dump({**cfg, "datasets": [], "output_dir": str(tmp_path / "two")}))
    log = launch(config, "ddp.yaml", 29517)
    assert re.search(r"MULTI_CPU on 2 x cpu(:\d)?, 1 accumulation step\(s\)", log), log[-3000:]
    assert_same_metrics(tmp_path / "one", tmp_path / "two", steps=6)


@pytest.mark.slow
def test_multi_node_config_as_two_machines_on_localhost(data, tmp_path):
    """multi-node.yaml, machine ranks 0 and 1 started apart (one process each, gloo over 127.0.0.1) = 1 process."""
    cfg = micro(data, tmp_path / "one", max_steps=4, model_overrides=NO_DROPOUT, save_steps=100, eval_steps=4)
    pretrain.run(cfg)
    config = tmp_path / "nodes.yaml"
    config.write_text(yaml.safe_dump({**cfg, "output_dir": str(tmp_path / "nodes")}))
    nodes = [subprocess.Popen(["accelerate", "launch", "--config_file", str(LAUNCH_CONFIGS / "multi-node.yaml"),
                               "--num_processes", "2", "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
                               "--main_process_port", "29529", "recipes/pretrain.py", "--config", str(config)],
                              cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in (0, 1)]
    logs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], logs[0][-2000:] + logs[1][-2000:]
    assert all(re.search(r"MULTI_CPU on 2 x cpu(:\d)?, 1 accumulation step\(s\)", log) for log in logs)
    one, two = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "nodes")
    assert [r["step"] for r in two] == [1, 2, 3, 4]
    assert all(abs(a["loss"] - b["loss"]) < 1e-4 and abs((a["eval_loss"] or 0) - (b["eval_loss"] or 0)) < 1e-4
               for a, b in zip(one, two))


@pytest.mark.slow
@pytest.mark.parametrize("launch_config, kind, port", [("fsdp.yaml", "FSDP", 29521),
                                                       ("deepspeed-zero2.yaml", "DEEPSPEED", 29525)])
def test_sharded_two_processes_match_one_process_and_resume_after_sigkill(data, tmp_path, launch_config, kind, port):
    """FSDP2 (really sharded on gloo, not accelerate's silent DDP fallback on CPU) and DeepSpeed ZeRO-2 (its CPU
    accelerator): 12 steps within 1e-4 of one process (fp32), then a run SIGKILLed after its step-4 checkpoint
    resumes to the same losses as the uninterrupted 2-process run."""
    if kind == "DEEPSPEED":
        pytest.importorskip("deepspeed", reason="DeepSpeed is the [deepspeed] extra")
    cfg = micro(data, tmp_path / "one", max_steps=12, model_overrides=NO_DROPOUT, save_steps=4, eval_steps=6,
                mixed_precision="no", save_total_limit=None)
    pretrain.run(cfg)
    config = tmp_path / "two.yaml"
    config.write_text(yaml.safe_dump({**cfg, "output_dir": str(tmp_path / "two")}))
    log = launch(config, launch_config, port)
    assert re.search(rf"{kind} on 2 x cpu(:\d)?, 1 accumulation step\(s\)", log), log[-3000:]
    assert_same_metrics(tmp_path / "one", tmp_path / "two", steps=12)
    state = sorted(p.name for p in (tmp_path / "two" / "checkpoint-12" / "training_state").iterdir())
    assert {"FSDP": "pytorch_model_fsdp.bin", "DEEPSPEED": "pytorch_model"}[kind] in state, state  # sharded state
    # the exported folder is a plain model folder (FSDP2's generated class must not leak into auto_map)
    auto_map = json.loads((tmp_path / "two" / "final" / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForCausalLM"] == "modeling_phi.PhiForCausalLM"

    killed = tmp_path / "killed"
    config.write_text(yaml.safe_dump({**cfg, "output_dir": str(killed)}))
    launch(config, launch_config, port + 1, kill_after=killed / "checkpoint-4")
    assert not (killed / "final").exists() and not (killed / "checkpoint-12").exists(), "not killed in time"
    log = launch(config, launch_config, port + 2, "--resume_from_checkpoint", "latest")
    assert "resumed from" in log
    assert _losses(read_metrics(killed)) == _losses(read_metrics(tmp_path / "two"))


@pytest.mark.slow
def test_deepspeed_steps_once_per_global_batch(data, tmp_path):
    """DeepSpeed with 2 accumulation steps (1 process, micro 4, global 8): the engine steps at the boundary only,
    so the run equals the plain 1-process run (it would take twice the steps otherwise)."""
    pytest.importorskip("deepspeed", reason="DeepSpeed is the [deepspeed] extra")
    cfg = micro(data, tmp_path / "one", max_steps=6, model_overrides=NO_DROPOUT, save_steps=100, eval_steps=6,
                mixed_precision="no")
    pretrain.run(cfg)
    config = tmp_path / "ds.yaml"
    config.write_text(yaml.safe_dump({**cfg, "output_dir": str(tmp_path / "ds")}))
    log = launch(config, "deepspeed-zero2.yaml", 29537, processes=1)
    assert "DEEPSPEED on 1 x cpu, 2 accumulation step(s)" in log
    one, ds = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "ds")
    assert [r["step"] for r in ds] == list(range(1, 7))
    for a, b in zip(one, ds):
        assert abs(a["loss"] - b["loss"]) < 1e-4 and abs(a["grad_norm"] - b["grad_norm"]) < 1e-4, (a, b)


@pytest.mark.slow
def test_learns_below_unigram_entropy_then_lora_finetune_exports_merged(data, tmp_path):
    from transformers import AutoModelForCausalLM

    from recipes import finetune

    out = tmp_path / "learn"
    result = pretrain.run(micro(data, out, max_steps=80, learning_rate=1e-2, warmup_steps=5, eval_steps=40,
                                eval_batches=None, save_steps=80, logging_steps=10, report_to=["tensorboard"]))
    unigram = read_build_info(data["packed"])["unigram_entropy_nats"]
    final_eval = read_metrics(out)[-1]["eval_loss"]
    assert final_eval < unigram - 0.5, (final_eval, unigram)
    assert (out / "loss_curve.png").stat().st_size > 0 and list((out / "tensorboard").iterdir())
    assert {"step", "loss", "eval_loss", "lr", "grad_norm", "tokens_per_second", "mfu"} <= set(read_metrics(out)[-1])

    rows = [{"id": str(i), "prompt": f"def f{i}(x):\n", "completion": f"    return x + {i}\n"} for i in range(40)]
    (tmp_path / "ex.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ft = finetune.run(micro(data, tmp_path / "ft", model=result["final"], tokenizer=result["final"],
                            datasets=[{"path": str(tmp_path / "ex.jsonl"), "format": "exercises"}],
                            packed_dir=str(tmp_path / "ft-packed"), model_overrides={}, lora=True, lora_r=4,
                            max_steps=4, save_steps=2, eval_steps=2, weight_decay=0.01, humaneval=True, eval_limit=2,
                            push_to_hub="my-org/phi-ft", push_dry_run=True))
    best = json.loads((tmp_path / "ft" / "best_checkpoint.json").read_text())
    assert best["step"] in (2, 4) and 0.0 <= best["score"] <= 1.0
    assert (tmp_path / "ft" / f"checkpoint-{best['step']}" / "humaneval" / "results.json").is_file()
    assert ft["push"]["repo_id"] == "my-org/phi-ft" and {"model.safetensors", "README.md"} <= set(ft["push"]["files"])
    assert f"best checkpoint: step {best['step']}" in ft["push"]["card"]
    model = AutoModelForCausalLM.from_pretrained(ft["final"], trust_remote_code=True)
    assert not any("lora" in k for k in model.state_dict())  # merged: loads without peft
    base = AutoModelForCausalLM.from_pretrained(result["final"], trust_remote_code=True)
    changed = [k for k, v in model.state_dict().items() if not (v == base.state_dict()[k]).all()]
    assert changed and all(k.split(".")[-2] in {"qkv_proj", "dense", "fc1", "fc2"} for k in changed)
    assert any(k.split(".")[-2] == "qkv_proj" for k in changed)  # attention got adapters too

"""Shared fixtures: everything local and offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Before torch loads: OpenMP threads that spin-wait starve the subprocesses the tests start (servers,
# sandboxes, accelerate workers) on a 2-core machine; passive waiting costs nothing when cores are free.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PHI_DATA_DIR", REPO.parent / "shared" / "data"))
PHI2_TOKENIZER = SHARED_DATA / "tokenizers" / "phi-2"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"benchmark data not found at {SHARED_DATA}; set PHI_DATA_DIR")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A randomly initialised `tiny` phi (seed 0) with the real phi CodeGen tokenizer, saved Hub-style."""
    import torch
    from transformers import AutoTokenizer

    from modeling_phi import PhiConfig, PhiForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(PHI2_TOKENIZER)
    config = PhiConfig.from_preset("tiny", num_hidden_layers=2).set_tokenizer(tokenizer)
    torch.manual_seed(0)
    model = PhiForCausalLM(config)
    out = tmp_path_factory.mktemp("tiny-phi")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out

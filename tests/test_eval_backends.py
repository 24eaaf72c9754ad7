"""Generation backends: a real `transformers serve` gives the local backend's greedy completions and pass@1."""

from __future__ import annotations

import json

import pytest

from evaluation.backends import OpenAIBackend
from evaluation.code_eval import evaluate_code_task
from tests.serving import TransformersServer, save_tiny_chat_model


def _completions(folder) -> list[str]:
    return [json.loads(line)["completion"] for line in (folder / "samples.jsonl").open()]


@pytest.mark.slow
def test_served_humaneval_equals_the_local_backend(tmp_path):
    from recipes.cli import main

    model_dir = save_tiny_chat_model(tmp_path / "model")
    # Greedy, batch 1 on both sides: the same float32 computation, so the same tokens.
    local = evaluate_code_task("humaneval", str(model_dir), out_dir=tmp_path / "local", limit=4, max_new_tokens=24,
                               batch_size=1, progress=False)
    with TransformersServer(model_dir, log_path=tmp_path / "server.log") as server:
        main(["eval", "--tasks", "humaneval", "--base-url", server.base_url, "--model-name", server.model,
              "--limit", "4", "--max_new_tokens", "24", "--output", str(tmp_path / "served")])
        served = json.loads((tmp_path / "served" / "humaneval" / "results.json").read_text())
    assert any(_completions(tmp_path / "local"))   # the tiny model writes something
    assert _completions(tmp_path / "served" / "humaneval") == _completions(tmp_path / "local")
    assert served["pass@k"] == local["pass@k"]
    assert served["per_problem"] == local["per_problem"]
    assert served["protocol"]["backend"]["backend"] == "openai"
    assert local["protocol"]["backend"]["backend"] == "transformers"
    summary = json.loads((tmp_path / "served" / "results.json").read_text())
    assert summary["humaneval"]["backend"] == "openai" and summary["humaneval"]["pass@1"] == local["pass@k"]["pass@1"]

    # The request cache makes the run resumable: with the server gone, the same run is answered from it.
    backend = OpenAIBackend(server.base_url, server.model, cache_dir=tmp_path / "served" / "_requests" / "requests",
                            max_retries=0)
    again = evaluate_code_task("humaneval", backend, out_dir=tmp_path / "again", limit=4, max_new_tokens=24,
                               progress=False)
    assert _completions(tmp_path / "again") == _completions(tmp_path / "local")
    assert again["protocol"]["backend"]["requests"] == {"cached": 4}


def test_unreachable_server_is_one_line(tmp_path):
    from tests.serving import free_port
    backend = OpenAIBackend(f"http://127.0.0.1:{free_port()}/v1", "m", max_retries=0, cache_dir=tmp_path)
    with pytest.raises(ConnectionError, match=r"127\.0\.0\.1.*unreachable"):
        backend.generate(["def f():\n"], ["\ndef"], max_new_tokens=4)
    with pytest.raises(ValueError, match="--model-name"):
        OpenAIBackend("http://127.0.0.1:1/v1", "")

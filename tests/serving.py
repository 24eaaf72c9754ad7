"""A real OpenAI-compatible server for tests: `transformers serve` with a tiny local model on a free port.

`save_tiny_chat_model(dir)` writes a randomly initialised 2-layer model of transformers' native `phi`
architecture with the real phi tokenizer and a minimal chat template (the server applies it to chat
requests), so the server needs neither this package nor remote code. `TransformersServer` starts the
server as a subprocess in its own process group, waits for /health, and stops it (`kill()` for a crash).

    with TransformersServer(model_dir) as server:
        OpenAIClient(server.base_url, server.model).complete(["hi"], max_tokens=8)

The `served_model` fixture (module-scoped) gives a running server; import it in a test module with
`from tests.serving import served_model  # noqa: F401`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PHI2_TOKENIZER = Path(os.environ.get("PHI_DATA_DIR", REPO.parent / "shared" / "data")) / "tokenizers" / "phi-2"
# Role-tagged turns, then the assistant's turn: enough for the server to turn messages into a prompt.
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] | upper }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}ASSISTANT:{% endif %}")
# No generation marker after the last message: the scripted model reads the prompt's last word.
SCRIPTED_CHAT_TEMPLATE = "{% for m in messages %}{{ m['role'] | upper }}: {{ m['content'] }}{% if not loop.last %}\n{% endif %}{% endfor %}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def save_tiny_chat_model(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """A tiny random native-`phi` model + the phi tokenizer with a chat template, saved Hub-style."""
    import torch
    from transformers import AutoTokenizer, PhiConfig, PhiForCausalLM

    out = Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(PHI2_TOKENIZER)
    tokenizer.chat_template = CHAT_TEMPLATE
    eos = tokenizer.eos_token_id
    config = PhiConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=2, max_position_embeddings=1024, bos_token_id=eos, eos_token_id=eos,
                       pad_token_id=eos)
    torch.manual_seed(seed)
    model = PhiForCausalLM(config)
    model.generation_config.pad_token_id = eos
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def save_scripted_chat_model(out_dir: str | os.PathLike, replies: dict[str, str]) -> Path:
    """A tiny native-`phi` model whose greedy reply is scripted by the last word of the prompt.

    `replies` maps a trigger word to the full reply. Each trigger and each reply is one added token; the
    attention and MLP outputs are zeroed, so the next token depends on the current token only: the prompt's
    last token (the chat template appends nothing after the last message) picks the reply token, the reply
    token is followed by end-of-text, and any other last token gives end-of-text (an empty reply). A real
    model served by the real server, with replies a test can predict.
    """
    import torch
    from transformers import AutoTokenizer, PhiConfig, PhiForCausalLM

    out = Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(PHI2_TOKENIZER)
    tokenizer.add_tokens(list(replies) + list(dict.fromkeys(replies.values())))
    tokenizer.chat_template = SCRIPTED_CHAT_TEMPLATE
    eos = tokenizer.eos_token_id
    slots = len(replies) + len(set(replies.values()))  # one embedding dimension per transition
    # A multiple of 16, so the (half-)rotary dimension of the single head stays even.
    config = PhiConfig(vocab_size=len(tokenizer), hidden_size=16 * -(-slots // 16), intermediate_size=16,
                       num_hidden_layers=1, num_attention_heads=1, max_position_embeddings=4096, bos_token_id=eos,
                       eos_token_id=eos, pad_token_id=eos)
    model = PhiForCausalLM(config)
    reply_ids = {r: tokenizer.convert_tokens_to_ids(r) for r in replies.values()}
    with torch.no_grad():
        for layer in model.model.layers:  # the blocks add nothing: logits = lm_head(ln(embedding))
            for p in (layer.self_attn.dense.weight, layer.self_attn.dense.bias, layer.mlp.fc2.weight, layer.mlp.fc2.bias):
                p.zero_()
        model.model.embed_tokens.weight.zero_()
        model.model.final_layernorm.bias.zero_()
        model.model.final_layernorm.weight.fill_(1.0)
        model.lm_head.weight.zero_()
        model.lm_head.bias.zero_()
        model.lm_head.bias[eos] = 1.0  # default next token: end of text
        transitions = [(tokenizer.convert_tokens_to_ids(t), reply_ids[r]) for t, r in replies.items()]
        transitions += [(rid, eos) for rid in reply_ids.values()]
        for slot, (current, following) in enumerate(transitions):
            model.model.embed_tokens.weight[current, slot] = 1.0
            model.lm_head.weight[following, slot] = 10.0
    model.generation_config.do_sample = False
    model.generation_config.pad_token_id = eos
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


class TransformersServer:
    """`transformers serve <model_dir>` on 127.0.0.1:<port>; `base_url` is the OpenAI base (…/v1)."""

    def __init__(self, model_dir: str | os.PathLike, port: int | None = None, startup_timeout: float = 120,
                 log_path: str | os.PathLike | None = None):
        self.model = str(model_dir)
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self.log_path = Path(log_path) if log_path else None
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> TransformersServer:
        cli = Path(sys.executable).with_name("transformers")
        cmd = [str(cli), "serve", self.model, "--host", "127.0.0.1", "--port", str(self.port), "--device", "cpu",
               "--dtype", "float32", "--default-seed", "0", "--log-level", "warning"]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
        log = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self._wait_healthy()
        return self

    def _wait_healthy(self) -> None:
        import httpx

        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"transformers serve exited with {self.process.returncode}; log: {self.log_path}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"transformers serve did not become healthy in {self.startup_timeout}s; log: {self.log_path}")

    def kill(self) -> None:
        """Crash the server (SIGKILL to its process group), as a dying node would."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        self._signal(signal.SIGTERM)

    def _signal(self, sig: int) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            pass

    def __enter__(self) -> TransformersServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="module")
def served_model(tmp_path_factory):
    """A running `transformers serve` with the tiny chat model; yields the TransformersServer."""
    root = tmp_path_factory.mktemp("served")
    model_dir = save_tiny_chat_model(root / "model")
    with TransformersServer(model_dir, log_path=root / "server.log") as server:
        yield server

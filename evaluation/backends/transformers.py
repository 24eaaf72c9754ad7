"""The local transformers backend: any AutoModelForCausalLM (ours registers on `import modeling_phi`).

Generation is batched with left padding and the KV cache; each sequence stops at the first stop sequence of
the task in its own generated text (a custom `StoppingCriteria`, so a finished sequence is marked done and
the batch ends when all are; transformers keeps finished rows in the batch, padded). Batches are fixed by
(prompts, n, batch_size) and each is seeded with (seed, batch index), so a resumed run gives the same samples.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .common import truncate_at_stop


def load_model(model: str, dtype: str = "auto", device: str | None = "auto", trust_remote_code: bool = False):
    """Any AutoModelForCausalLM (local path or Hub id) and its tokenizer, on `device` (auto: cuda if any)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        import modeling_phi  # noqa: F401 - registers our architecture with the Auto classes
    except ImportError:
        pass
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device in (None, "auto") else device
    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)
        lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype, trust_remote_code=trust_remote_code)
    except OSError as err:
        raise FileNotFoundError(f"--model {model}: could not load it as a causal LM: {err}") from None
    return lm.to(device), tokenizer


class TransformersBackend:
    """Generation with a local model: a path / Hub id (loaded here), or a loaded model + its tokenizer.

    `resume_file`: completions are appended there batch by batch and reused on a rerun (only for models
    loaded from a path: a model object passed in, e.g. a training loop's, may change under the same name).
    """

    name = "transformers"

    def __init__(self, model: Any, tokenizer: Any = None, *, batch_size: int = 8, dtype: str = "auto",
                 device: str = "auto", trust_remote_code: bool = False):
        if isinstance(model, (str, Path)):
            self.model_name = str(model)
            self.model, loaded = load_model(self.model_name, dtype, device, trust_remote_code)
            self.tokenizer = tokenizer or loaded
            self.from_path = True
        else:
            if tokenizer is None:
                raise ValueError("TransformersBackend: pass the tokenizer together with a loaded model")
            self.model, self.tokenizer, self.from_path = model, tokenizer, False
            self.model_name = getattr(model, "name_or_path", type(model).__name__)
        self.batch_size = batch_size
        self.resume_file: Path | None = None

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model_name, "batch_size": self.batch_size, "padding": "left",
                "kv_cache": True, "dtype": str(next(self.model.parameters()).dtype),
                "device": str(next(self.model.parameters()).device)}

    def generate(self, prompts: list[str], stop: list[str], *, n: int = 1, temperature: float = 0.0,
                 top_p: float = 0.95, max_new_tokens: int = 512, seed: int = 0,
                 progress: bool = True) -> list[list[str]]:
        with _EvalMode(self.model, self.tokenizer):
            return generate_completions(self.model, self.tokenizer, prompts, stop, n=n, temperature=temperature,
                                        top_p=top_p, max_new_tokens=max_new_tokens, batch_size=self.batch_size,
                                        seed=seed, resume_file=self.resume_file if self.from_path else None,
                                        progress=progress)


def _stopping_criteria(tokenizer, stop: list[str], prompt_len: int):
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class StopInGeneratedText(StoppingCriteria):
        """Per sequence: done once a stop sequence appears in its *generated* text (not the prompt)."""

        window = 16   # tokens; stop sequences are a few characters, each token at least one

        def __call__(self, input_ids, scores, **kwargs):
            tails = tokenizer.batch_decode(input_ids[:, prompt_len:][:, -self.window:],
                                           clean_up_tokenization_spaces=False)
            return torch.tensor([any(s in t for s in stop) for t in tails], device=input_ids.device)

    return StoppingCriteriaList([StopInGeneratedText()])


def generate_completions(model, tokenizer, prompts: list[str], stop: list[str], *, n: int = 1,
                         temperature: float = 0.0, top_p: float = 0.95, max_new_tokens: int = 512,
                         batch_size: int = 8, seed: int = 0, resume_file: Path | None = None,
                         progress: bool = True) -> list[list[str]]:
    """n completions per prompt, cut at the stop sequences. Batches are fixed by (prompts, n, batch_size) and
    each is seeded with (seed, batch index), so a resumed run (`resume_file`) gives the same samples."""
    import torch
    from tqdm.auto import tqdm
    lengths = [len(ids) for ids in tokenizer(prompts)["input_ids"]]
    # Longest first (less padding, and an out-of-memory shows at once); ties keep problem order.
    items = sorted(((i, j) for i in range(len(prompts)) for j in range(n)), key=lambda ij: (-lengths[ij[0]], ij))
    batches = [items[b:b + batch_size] for b in range(0, len(items), batch_size)]
    done = _read_resume(resume_file)
    out: list[list[str | None]] = [[None] * n for _ in prompts]
    for (i, j), text in done.items():
        if i < len(prompts) and j < n:
            out[i][j] = text
    sampling = temperature > 0
    params = {"do_sample": sampling, "max_new_tokens": max_new_tokens, "use_cache": True,
              "pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id}
    if sampling:
        params.update(temperature=temperature, top_p=top_p)
    device = next(model.parameters()).device
    for b, batch in enumerate(tqdm(batches, desc="generating", unit="batch", disable=not progress)):
        if all(out[i][j] is not None for i, j in batch):
            continue
        encoded = tokenizer([prompts[i] for i, _ in batch], return_tensors="pt", padding=True).to(device)
        prompt_len = encoded["input_ids"].shape[1]
        torch.manual_seed(seed * 1_000_003 + b)
        with torch.inference_mode():
            generated = model.generate(**encoded, **params,
                                       stopping_criteria=_stopping_criteria(tokenizer, stop, prompt_len))
        texts = tokenizer.batch_decode(generated[:, prompt_len:], skip_special_tokens=True,
                                       clean_up_tokenization_spaces=False)
        for (i, j), text in zip(batch, texts):
            out[i][j] = truncate_at_stop(text, stop)
        _append_resume(resume_file, [(i, j, out[i][j]) for i, j in batch])
    return out  # type: ignore[return-value]


def _read_resume(path: Path | None) -> dict[tuple[int, int], str]:
    if path is None or not path.is_file():
        return {}
    done = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:   # a line cut by an interrupted write: regenerate that batch
            continue
        done[(r["i"], r["j"])] = r["completion"]
    return done


def _append_resume(path: Path | None, rows: list[tuple[int, int, str]]) -> None:
    if path is None:
        return
    with path.open("a", encoding="utf-8") as f:
        f.writelines(json.dumps({"i": i, "j": j, "completion": c}) + "\n" for i, j, c in rows)


class _EvalMode:
    """Left padding, a pad token and eval mode for generation; the caller's settings come back afterwards
    (the fine-tuning callback passes its training model and tokenizer)."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer

    def __enter__(self):
        self.saved = (self.tokenizer.padding_side, self.tokenizer.pad_token, self.model.training)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.eval()

    def __exit__(self, *exc):
        side, pad, training = self.saved
        self.tokenizer.padding_side = side
        if pad is None:
            self.tokenizer.pad_token = None
        self.model.train(training)

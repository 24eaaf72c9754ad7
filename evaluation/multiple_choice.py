"""Evaluate a causal LM on commonsense / knowledge multiple choice, with lm-evaluation-harness's numbers.

The phi-1.5 report (arXiv:2309.05463, table 3) scores WinoGrande, ARC-Easy, ARC-Challenge, BoolQ, SIQA,
PIQA, HellaSwag, OpenBookQA (0-shot) and MMLU (2-shot) with LM-Eval conventions; this command gives the
same numbers lm-evaluation-harness (`lm_eval --model hf`) gives for the same model and data, faster.

Tasks are data: the registry's `output_type: multiple_choice` folders (evaluation/tasks/<task>/task.yaml: data
source, split, prompt template, choices, gold, metrics, few-shot source; hooks.py where a template cannot say
it), lm-eval's task YAMLs under another schema. Protocol: each choice is scored by the summed
log-likelihood of its continuation (tokenised as lm-eval does); `acc` = argmax, `acc_norm` = argmax of the
sum divided by the choice's length in characters; WinoGrande scores the shared suffix after each option
(partial scoring); MMLU takes the first k dev questions of the subject as shots, in order. Standard errors
are lm-eval's: sample standard deviation / sqrt(n), pooled over subjects for MMLU.

Speed, with the same numbers: the context of a document runs once and its KV cache serves all of its
choices; a prefix every document of a batch shares (MMLU's description and shots) runs once per batch;
only the scored positions go through the LM head; identical rows and positions run once. Prompts longer
than the model's window are truncated from the left exactly as lm-eval does (those run unshared).

Data: local files under --data_dir (default $PHI_DATA_DIR or <repo>/../shared/data, the layouts described
in each folder's SOURCE.md), else the task's Hub id when online. Writes results.json (every metric, its
standard error, the protocol, versions and timings), results.md and samples/<task>.jsonl (per document:
file:line, log-likelihood per choice, prediction, gold) to --output. `--limit N` = the first N documents
of each task (of each subject for MMLU), as lm-eval's --limit.

Example:
    phi eval commonsense --model microsoft/phi-1_5 --output runs/eval/phi-1_5
    phi eval commonsense --model runs/tiny/final --tasks piqa,arc_easy,mmlu --limit 50 --output runs/eval/tiny
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import registry
from .backends.loglikelihood import LoglikelihoodScorer, Request, resolve_max_length  # noqa: F401
from .backends.transformers import load_model
from .data import hub_offline
from .data_paths import shared_data_dir
from .metrics import aggregate, mean_stderr, pooled_stderr, summarize  # noqa: F401  (tests use them here)
from .versions import library_versions

REPORT_GROUP = "commonsense"   # the phi-1.5 report's multiple-choice tasks (their `tags`)
METRICS = ("acc", "acc_norm")
Record = dict[str, Any]


def default_data_dir() -> Path:
    return shared_data_dir()


# ----------------------------------------------------------------------------------------------------------
# Task definitions


@dataclass
class Task:
    """One task definition (tasks/<name>.yaml with `include:` merged), for one subject where it has several."""

    name: str
    title: str
    version: float
    split: str
    data: dict[str, Any]
    doc_to_choice: str
    doc_to_target: str
    doc_to_text: str = ""
    doc_to_continuation: str | None = None  # scoring: partial only
    scoring: str = "continuation"  # or "partial": the choice goes into the context, the continuation is shared
    process_doc: str | None = None
    description: str = ""
    fewshot: dict[str, Any] | None = None
    num_fewshot: int = 0
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    metrics: list[str] = field(default_factory=lambda: list(METRICS))
    group: str | None = None
    variables: dict[str, str] = field(default_factory=dict)
    process: Any = None  # the hook named by process_doc, resolved from the task's folder


def known_tasks() -> list[str]:
    """Registered tasks of output_type multiple_choice."""
    return [n for n in registry.known_tasks() if registry.get_task(n).output_type == "multiple_choice"]


def report_tasks() -> list[str]:
    return [n for n in registry.groups().get(REPORT_GROUP, []) if n in known_tasks()]


def load_tasks(name: str) -> list[Task]:
    """The task(s) behind a name: `piqa`, `mmlu` (one Task per subject), or `mmlu_<subject>`."""
    known = known_tasks()
    base, subject = name, None
    if name not in known:
        base = registry.subtask_base(name)
        subject = name[len(base) + 1:] if base else None
    if base is None or base not in known:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(known)} (and mmlu_<subject>)")
    task_spec = registry.get_task(base)
    spec = task_spec.body()
    subtasks = spec.pop("subtasks", None)
    spec.pop("aggregate", None)
    try:
        spec["process"] = task_spec.hook(spec["process_doc"]) if spec.get("process_doc") else None
        if subtasks is None:
            if subject is not None:
                raise ValueError(f"unknown task {name!r}; {base} has no subtasks; known tasks: {', '.join(known)}")
            return [Task(name=base, **spec)]
    except TypeError as err:   # a key Task does not know
        raise ValueError(f"{task_spec.folder / registry.TASK_FILE}: {err}") from None
    values = subtasks["values"]
    if subject is not None and subject not in values:
        raise ValueError(f"unknown task {name!r}; {base} subtasks: {', '.join(values)}")
    return [Task(name=f"{base}_{v}", group=base, variables={subtasks["field"]: v}, **spec)
            for v in values if subject in (None, v)]


# ----------------------------------------------------------------------------------------------------------
# Templates: text fields are Jinja templates, choice / target / field mappings are Jinja expressions that
# return Python values (lm-eval renders `{{[a, b]}}` to text and parses it back; the values are the same).


def _jinja():
    from jinja2 import Environment, StrictUndefined

    # keep_trailing_newline as lm-eval: a template ending in "\n" keeps it.
    return Environment(undefined=StrictUndefined, keep_trailing_newline=True)


class Templates:
    """A task's compiled templates; every call names the task and the record's file:line when it fails."""

    def __init__(self, task: Task):
        env = _jinja()
        self.task = task
        self.text = env.from_string(task.doc_to_text)
        self.description = env.from_string(task.description)
        self.choice = env.compile_expression(task.doc_to_choice, undefined_to_none=False)
        self.target = env.compile_expression(task.doc_to_target, undefined_to_none=False)
        self.continuation = (env.compile_expression(task.doc_to_continuation, undefined_to_none=False)
                             if task.doc_to_continuation else None)

    def _call(self, what: str, fn, doc: Record, where: str):
        from jinja2 import Undefined

        try:
            value = fn.render(**doc) if hasattr(fn, "render") else fn(**doc)
        except Exception as err:  # any template error is a data / definition error at this record
            raise ValueError(f"{where}: task {self.task.name}: {what} failed on this record: {err}") from None
        if isinstance(value, Undefined):
            raise ValueError(f"{where}: task {self.task.name}: {what} is undefined for this record")
        return value

    def choices(self, doc: Record, where: str) -> list[str]:
        choices = self._call("doc_to_choice", self.choice, doc, where)
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            raise ValueError(f"{where}: task {self.task.name}: doc_to_choice must give a list of strings")
        return choices

    def gold(self, doc: Record, where: str, n_choices: int) -> int:
        gold = self._call("doc_to_target", self.target, doc, where)
        if not isinstance(gold, int) or not 0 <= gold < n_choices:
            raise ValueError(f"{where}: task {self.task.name}: gold {gold!r} is not a choice index 0..{n_choices - 1}")
        return gold

    def render(self, doc: Record, where: str) -> str:
        return self._call("doc_to_text", self.text, doc, where)

    def suffix(self, doc: Record, where: str) -> str:
        return self._call("doc_to_continuation", self.continuation, doc, where)

    def shot(self, doc: Record, where: str) -> str:
        """A solved example: question, delimiter, gold answer, few-shot delimiter (lm-eval's layout)."""
        choices = self.choices(doc, where)
        gold = choices[self.gold(doc, where, len(choices))]
        if self.task.scoring == "partial":
            question, answer = gold, self.suffix(doc, where)
        else:
            question, answer = self.render(doc, where), gold
        return question + self.task.target_delimiter + answer + self.task.fewshot_delimiter


# ----------------------------------------------------------------------------------------------------------
# Data: local files in their published layouts (JSONL or header-less CSV, labels in a line-aligned file),
# or the Hub. Each record keeps where it came from ("file:line"), for error messages and samples.


def _read_jsonl(path: Path) -> list[tuple[Record, str]]:
    # Split on "\n" only: str.splitlines would also break inside strings holding U+2028 or U+0085.
    lines = [line.removesuffix("\r") for line in path.read_text(encoding="utf-8").split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    records = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: malformed JSON line ({err.msg}); fix or restore the file") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object per line, got {type(record).__name__}")
        records.append((record, f"{path}:{number}"))
    return records


def _read_csv(path: Path, columns: list[str]) -> list[tuple[Record, str]]:
    records = []
    # newline="" keeps embedded newlines and the CRLF / LF mix of the MMLU release as they are.
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        for row in reader:
            if len(row) != len(columns):
                raise ValueError(f"{path}:{reader.line_num}: expected {len(columns)} fields "
                                 f"({', '.join(columns)}), got {len(row)}")
            records.append((dict(zip(columns, row)), f"{path}:{reader.line_num}"))
    return records


def _attach_labels(records: list[tuple[Record, str]], data_path: Path, labels_path: Path, name: str) -> None:
    if not labels_path.is_file():
        raise FileNotFoundError(f"{labels_path}: label file for {data_path} not found")
    labels = labels_path.read_text(encoding="utf-8").splitlines()
    while labels and not labels[-1].strip():
        labels.pop()
    if len(labels) != len(records):
        raise ValueError(f"{labels_path}: {len(labels)} labels but {data_path} has {len(records)} records; "
                         "the files must be line-aligned")
    for (record, _), label in zip(records, labels):
        record[name] = label.strip()


def _hub_label(hub: dict[str, Any], variables: dict[str, str]) -> str:
    name = hub["name"].format(**variables) if hub.get("name") else None
    return f"{hub['path']}{'/' + name if name else ''}[{hub.get('split', 'validation')}]"


def _read_hub(hub: dict[str, Any], variables: dict[str, str]) -> list[tuple[Record, str]]:
    import datasets

    name = hub["name"].format(**variables) if hub.get("name") else None
    dataset = datasets.load_dataset(hub["path"], name, split=hub.get("split", "validation"))
    label = _hub_label(hub, variables)
    return [(dict(record), f"{label}#{i}") for i, record in enumerate(dataset)]


def load_records(source: dict[str, Any], task: Task, data_dir: Path,
                 limit: int | None = None) -> tuple[list[tuple[Record, str]], str]:
    """Records of one source block ({local: ..., hub: ...}) with fields mapped; returns them and their origin.

    The local files win; the Hub id is the fallback when they are missing (and the Hub is reachable).
    Every line is parsed and the labels counted; only the first `limit` records are mapped."""
    local, hub = source.get("local"), source.get("hub")
    path = data_dir / local["path"].format(**task.variables) if local else None
    if path is not None and path.is_file():
        records = _read_csv(path, local["columns"]) if path.suffix == ".csv" else _read_jsonl(path)
        if "labels" in local:
            labels = local["labels"]
            _attach_labels(records, path, data_dir / labels["path"].format(**task.variables), labels["field"])
        return _map_records(records[:limit], local.get("fields", {}), task), str(path)
    missing = f"task {task.name}: data not found: tried {path}" if path else f"task {task.name}: no local files"
    if hub is None:
        raise FileNotFoundError(f"{missing}; the task has no Hub id; put the files under --data_dir")
    hub_id = _hub_label(hub, task.variables)
    if hub_offline():
        raise FileNotFoundError(f"{missing}; Hub id {hub_id} not tried: offline (HF_HUB_OFFLINE=1); put the "
                                "files under --data_dir (see the folder's SOURCE.md) or go online")
    try:
        records = _read_hub(hub, task.variables)
    except Exception as err:  # datasets raises many types for "not reachable / not found"
        raise FileNotFoundError(f"{missing} and Hub id {hub_id}: {err}") from None
    return _map_records(records[:limit], hub.get("fields", {}), task), hub_id


def _map_records(records: list[tuple[Record, str]], fields: dict[str, str], task: Task) -> list[tuple[Record, str]]:
    env = _jinja()
    expressions = {k: env.compile_expression(v, undefined_to_none=False) for k, v in fields.items()}
    process = task.process
    out = []
    for record, where in records:
        record = {**record, **task.variables}
        try:
            # Every field reads the raw record, so the mapping's order does not matter.
            record = {**record, **{k: fn(**record) for k, fn in expressions.items()}}
            record = process(record) if process else record
        except Exception as err:
            raise ValueError(f"{where}: task {task.name}: could not map the record's fields: {err}") from None
        out.append((record, where))
    return out


# ----------------------------------------------------------------------------------------------------------
# Prompts: contexts and continuations exactly as lm-eval builds them (description, shots, question; the
# target delimiter starts the continuation).


@dataclass
class Doc:
    where: str
    contexts: list[str]
    continuations: list[str]
    choices: list[str]
    gold: int


def build_docs(task: Task, records: list[tuple[Record, str]], shots: list[tuple[Record, str]],
               num_fewshot: int) -> list[Doc]:
    t = Templates(task)
    examples = "".join(t.shot(r, w) for r, w in shots[:num_fewshot])
    docs = []
    for record, where in records:
        prefix = t.description.render(**record) + examples
        choices = t.choices(record, where)
        gold = t.gold(record, where, len(choices))
        if task.scoring == "partial":
            suffix = task.target_delimiter + t.suffix(record, where)
            contexts, continuations = [prefix + c for c in choices], [suffix] * len(choices)
        else:
            context = prefix + t.render(record, where)
            contexts, continuations = [context] * len(choices), [task.target_delimiter + c for c in choices]
        docs.append(Doc(where, contexts, continuations, choices, gold))
    return docs


def encode_pair(tokenizer, context: str, continuation: str) -> Request:
    """lm-eval's tokenisation: trailing context whitespace moves to the continuation, the pair is encoded
    whole and the context's own encoding is cut off, so merges across the boundary match the whole text."""
    if not context:
        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        return [prefix], tokenizer.encode(continuation, add_special_tokens=False)
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    # tokenizer defaults for special tokens, as lm-eval's HFLM with add_bos_token unset
    whole = tokenizer.encode(context + continuation)
    context_ids = tokenizer.encode(context)
    return context_ids, whole[len(context_ids):]


def encode_requests(tokenizer, pairs: Sequence[tuple[str, str]]) -> list[Request]:
    """`encode_pair` of each (context, continuation), the same ids, with every distinct text tokenized once and
    in one batch call (a document's choices share its context; the batch runs in the tokenizer's native code)."""
    moved = []
    for context, continuation in pairs:
        spaces = len(context) - len(context.rstrip())
        moved.append((context[:-spaces], context[-spaces:] + continuation) if spaces else (context, continuation))
    texts = list(dict.fromkeys(t for (original, _), (c, k) in zip(pairs, moved) if original for t in (c, c + k)))
    ids = dict(zip(texts, tokenizer(texts)["input_ids"])) if texts else {}
    requests = []
    for (original, continuation), (c, k) in zip(pairs, moved):
        if not original:
            requests.append(encode_pair(tokenizer, original, continuation))
        else:
            context_ids = ids[c]
            requests.append((context_ids, ids[c + k][len(context_ids):]))
    return requests


# ----------------------------------------------------------------------------------------------------------
# Per-document metrics (aggregation: evaluation/metrics.py)


def doc_metrics(doc: Doc, scores: list[tuple[float, bool]]) -> dict[str, Any]:
    lls = np.array([ll for ll, _ in scores])
    lengths = np.array([float(len(c)) for c in doc.choices])
    pred, pred_norm = int(np.argmax(lls)), int(np.argmax(lls / lengths))
    return {"where": doc.where, "gold": doc.gold, "pred": pred, "pred_norm": pred_norm, "lls": lls.tolist(),
            "greedy": [g for _, g in scores], "acc": float(pred == doc.gold), "acc_norm": float(pred_norm == doc.gold)}


# ----------------------------------------------------------------------------------------------------------
# The evaluation run


def _parse_fewshot(num_fewshot: int | str | dict[str, int] | None) -> dict[str, int] | int | None:
    if num_fewshot is None or isinstance(num_fewshot, (int, dict)):
        return num_fewshot
    if num_fewshot.strip().isdigit():
        return int(num_fewshot)
    out = {}
    for part in num_fewshot.split(","):
        task, _, k = part.partition("=")
        if not k.strip().isdigit():
            raise ValueError(f"--num_fewshot {num_fewshot!r}: expected N or task=N[,task=N...]")
        out[task.strip()] = int(k)
    return out


def _shots_for(task: Task, requested: int | dict[str, int] | None) -> int:
    if isinstance(requested, dict):
        return requested.get(task.name, requested.get(task.group or task.name, task.num_fewshot))
    return task.num_fewshot if requested is None else requested


def evaluate_multiple_choice(model_or_path: Any, tokenizer: Any = None, tasks: Sequence[str] | str | None = None,
                             out_dir: str | os.PathLike | None = None, limit: int | None = None,
                             num_fewshot: int | str | dict[str, int] | None = None, batch_size: int = 32,
                             data_dir: str | os.PathLike | None = None, dtype: str = "auto",
                             device: str | None = None, seed: int = 0, trust_remote_code: bool = False,
                             skip_missing: bool = False) -> dict:
    """Score `tasks` (names of evaluation/tasks/*.yaml, or mmlu_<subject>) and return results.json's content.

    `model_or_path` is a loaded causal LM (then pass its `tokenizer`) or a path / Hub id. `limit` = the
    first N documents of each task (of each subject for MMLU), as lm-eval's --limit. `num_fewshot` = N for
    every task, {task: N}, or None for each task's default. Writes results.json, results.md and
    samples/<task>.jsonl into `out_dir` when given. `skip_missing`: a task whose data cannot be found is
    listed under `skipped` with the reason instead of failing the run.
    """
    started = time.perf_counter()
    names = registry.resolve_tasks(tasks) if tasks is not None else report_tasks()
    definitions = {name: load_tasks(name) for name in names}  # unknown names fail before anything loads
    import torch

    torch.manual_seed(seed)
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    requested_shots = _parse_fewshot(num_fewshot)
    if isinstance(model_or_path, (str, os.PathLike)):
        model, loaded_tokenizer = load_model(str(model_or_path), dtype, device, trust_remote_code)
        tokenizer = tokenizer or loaded_tokenizer
        model_name = str(model_or_path)
    else:
        model, model_name = model_or_path, getattr(model_or_path, "name_or_path", type(model_or_path).__name__)
        if tokenizer is None:
            raise ValueError("evaluate_multiple_choice: pass the tokenizer with an already-loaded model")
    load_s = time.perf_counter() - started
    # All data and prompts first: a missing file or a bad record fails before any scoring is spent.
    prepared, skipped = {}, {}
    for name, task_list in list(definitions.items()):
        try:
            for task in task_list:
                prepared[task.name] = _prepare_task(task, tokenizer, data_dir, limit, _shots_for(task, requested_shots))
        except FileNotFoundError as err:
            if not skip_missing:
                raise
            skipped[name] = str(err)
            del definitions[name]
    scorer = LoglikelihoodScorer(model, tokenizer, batch_size=batch_size)

    results, timings, samples = {}, {}, {}
    for name, task_list in definitions.items():
        sub_results = {}
        for task in task_list:
            sub_results[task.name], samples[task.name], timings[task.name] = _score_task(task, scorer,
                                                                                          prepared[task.name])
        if task_list[0].group and len(task_list) > 1:
            first = sub_results[task_list[0].name]
            results[name] = {**aggregate(sub_results, task_list[0].metrics), **_protocol_of(task_list[0], group=True),
                             "num_fewshot": first["num_fewshot"], "source": first["source"],
                             "subtasks": sub_results}
        else:
            results[name] = next(iter(sub_results.values()))

    report = {
        "model": model_name,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "results": results,
        "skipped": skipped,
        "protocol": {"limit": limit, "batch_size": batch_size, "dtype": str(next(model.parameters()).dtype),
                     "device": str(scorer.device), "seed": seed, "max_length": scorer.max_length,
                     "data_dir": str(data_dir),
                     "scoring": "summed continuation log-likelihood (lm-evaluation-harness tokenisation); "
                                "acc_norm divides it by the choice's length in characters; stderr = sample "
                                "std / sqrt(n), pooled over subtasks",
                     "versions": _versions()},
        "timings": {"load_model_s": round(load_s, 3), "tasks": timings,
                    "total_s": round(time.perf_counter() - started, 3)},
    }
    if out_dir is not None:
        write_results(report, samples, Path(out_dir))
    return report


def _protocol_of(task: Task, group: bool = False) -> dict[str, Any]:
    hub = task.data.get("hub") or {}
    # The Hub dataset the task stands for (its config "all" for a whole group), for model cards.
    config = "all" if group else (hub["name"].format(**task.variables) if hub.get("name") else None)
    return {"title": task.title, "split": task.split, "version": task.version, "metrics": task.metrics,
            "dataset": {"hub_id": hub.get("path"), "config": config}}


@dataclass
class _Prepared:
    docs: list[Doc]
    groups: list[list[Request]]
    shots: int
    origin: str
    seconds: float


def _prepare_task(task: Task, tokenizer: Any, data_dir: Path, limit: int | None, shots: int) -> _Prepared:
    t0 = time.perf_counter()
    records, origin = load_records(task.data, task, data_dir, limit)
    examples: list[tuple[Record, str]] = []
    if shots > 0:
        if not task.fewshot:
            raise ValueError(f"task {task.name}: --num_fewshot {shots} but the task has no few-shot source "
                             "(its YAML has no `fewshot:` block); use 0")
        examples, _ = load_records(task.fewshot, task, data_dir)
        if len(examples) < shots:
            raise ValueError(f"task {task.name}: {shots} shots asked, the few-shot source has {len(examples)}")
    docs = build_docs(task, records, examples, shots)
    requests = iter(encode_requests(tokenizer, [(c, k) for d in docs for c, k in zip(d.contexts, d.continuations)]))
    groups = [[next(requests) for _ in d.contexts] for d in docs]
    return _Prepared(docs, groups, shots, origin, time.perf_counter() - t0)


def _score_task(task: Task, scorer: LoglikelihoodScorer, prep: _Prepared) -> tuple[dict, list[dict], dict]:
    t0 = time.perf_counter()
    scores = scorer.score(prep.groups)
    score_s = time.perf_counter() - t0
    task_samples = [doc_metrics(d, s) for d, s in zip(prep.docs, scores)]
    record = {**summarize(task_samples, task.metrics), **_protocol_of(task), "num_fewshot": prep.shots,
              "source": prep.origin}
    timing = {"prepare_s": round(prep.seconds, 3), "score_s": round(score_s, 3), "docs": len(prep.docs),
              "requests": sum(len(g) for g in prep.groups), **scorer.last_counts}
    return record, task_samples, timing


def _versions() -> dict[str, str]:
    return library_versions("phi-textbooks", "torch", "transformers", "datasets")


def markdown_table(report: dict[str, Any]) -> str:
    lines = [f"# Multiple-choice results: {report['model']}", "",
             "| task | split | shots | n | acc | ± | acc_norm | ± |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]

    def fmt(x: float | None) -> str:
        return "-" if x is None else f"{x:.4f}"

    for name, r in report["results"].items():
        lines.append(f"| {name} | {r['split']} | {r['num_fewshot']} | {r['n']} | {fmt(r.get('acc'))} | "
                     f"{fmt(r.get('acc_stderr'))} | {fmt(r.get('acc_norm'))} | {fmt(r.get('acc_norm_stderr'))} |")
    p = report["protocol"]
    lines += [f"| {name} | skipped: {reason} | | | | | | |" for name, reason in report.get("skipped", {}).items()]
    lines += ["", f"limit: {p['limit']}, dtype: {p['dtype']}, device: {p['device']}, "
                  f"total {report['timings']['total_s']:.1f} s. {p['scoring']}.", ""]
    return "\n".join(lines)


def write_results(report: dict[str, Any], samples: dict[str, list[dict]], out_dir: Path) -> None:
    (out_dir / "samples").mkdir(parents=True, exist_ok=True)
    for name, rows in samples.items():
        with open(out_dir / "samples" / f"{name}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
    (out_dir / "results.md").write_text(markdown_table(report), encoding="utf-8")
    (out_dir / "results.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------------------------------------
# CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="local checkpoint folder or Hub id (any AutoModelForCausalLM)")
    parser.add_argument("--tasks", default=REPORT_GROUP,
                        help="comma-separated tasks or groups; `phi eval --list` shows them (default: commonsense)")
    parser.add_argument("--num_fewshot", default=None,
                        help="N for every task, or task=N,...; default per task as the phi-1.5 report (mmlu 2, else 0)")
    parser.add_argument("--limit", type=int, default=None, help="first N documents of each task (of each MMLU subject)")
    parser.add_argument("--batch_size", type=int, default=32, help="rows per forward pass")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data_dir", default=None, help="benchmark files (default: $PHI_DATA_DIR or ../shared/data)")
    parser.add_argument("--trust_remote_code", action="store_true", help="allow model code from the checkpoint")
    parser.add_argument("--skip_missing", action="store_true",
                        help="skip (and list in results.json) tasks whose data is not found, instead of failing")
    parser.add_argument("--output", required=True, help="folder for results.json, results.md, samples/")


def main(args: argparse.Namespace) -> None:
    report = evaluate_multiple_choice(args.model, tasks=args.tasks, out_dir=args.output, limit=args.limit,
                                      num_fewshot=args.num_fewshot, batch_size=args.batch_size,
                                      data_dir=args.data_dir, dtype=args.dtype, device=args.device,
                                      seed=args.seed, trust_remote_code=args.trust_remote_code,
                                      skip_missing=args.skip_missing)
    print(markdown_table(report))
    print(f"wrote {Path(args.output) / 'results.json'}")

"""Educational-value labels for a sample of code files: an LLM judge, or an offline heuristic.

phi-1 had GPT-4 annotate ~100k files with their "educational value for a student whose goal is to learn
basic coding concepts", and trained a classifier on those labels. `LLMJudge` asks any OpenAI-compatible
endpoint the same question (prompt in data/educational_value.yaml) through `evaluation.backends.openai_client.OpenAIClient`
(concurrent, retried with backoff, cached by request content, so a rerun resumes) and parses the score
robustly; `HeuristicAnnotator` scores the same 0-10 scale from documented features when no endpoint is given.
`SampleKeys` -> `ChooseSample` pick a seeded sample of `--annotate N` documents out of the whole corpus
(the N smallest keys, whatever the number of tasks); `Annotate` labels the chosen ones and passes every
document on.
"""

from __future__ import annotations

import ast
import hashlib
import heapq
import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from ..filters.prefilters import literal_fraction, parse_python
from ..writers import IntermediateWriter

PROMPT_FILE = Path(__file__).parents[1] / "data" / "educational_value.yaml"
NUMBER = r"(\d+(?:\.\d+)?)"
# Most specific first; within a pattern the LAST match wins (a reply states its verdict at the end).
SCORE_PATTERNS = [
    re.compile(r"educational\s+value\W{0,5}(?:is\s+|of\s+|score\W{0,3}|rating\W{0,3})?" + NUMBER, re.IGNORECASE),
    re.compile(r"(?:score|rating|value)\s*(?:is|of|=|:)?\s*\**\s*" + NUMBER, re.IGNORECASE),
    re.compile(NUMBER + r"\s*(?:/|out\s+of)\s*10\b", re.IGNORECASE),
    re.compile(r"^\W*" + NUMBER + r"\W*$"),  # the whole reply is a number
]
WORD_SCORES = {"none": 0.0, "very low": 1.0, "low": 2.0, "medium": 5.0, "moderate": 5.0, "high": 8.0,
               "very high": 9.0, "excellent": 10.0}
WORD_PATTERN = re.compile(r"educational\s+value\W{0,5}(?:is\s+)?(very high|very low|none|low|medium|moderate|high|"
                          r"excellent)\b", re.IGNORECASE)


CONTROL_FLOW = (ast.For, ast.While, ast.If, ast.Return, ast.comprehension, ast.Try, ast.With)


@lru_cache(maxsize=1)
def load_config(path: str = str(PROMPT_FILE)) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


def parse_score(reply: str | None, low: float = 0, high: float = 10) -> float | None:
    """The 0-10 score in a judge's free-text reply, or None if it states none (or one out of range).

    Accepts "Educational value: 7", "**Score:** 7/10", "7 out of 10", a bare "7", "educational value is high".
    """
    if not reply:
        return None
    for pattern in SCORE_PATTERNS:
        matches = pattern.findall(reply.strip())
        if matches:
            value = float(matches[-1])
            return value if low <= value <= high else None
    words = WORD_PATTERN.findall(reply)
    return WORD_SCORES[words[-1].lower()] if words else None


class LLMJudge:
    """Scores code 0-10 with an OpenAI-compatible chat endpoint; `stats` counts failed and unparseable replies."""

    name = "llm-judge"

    def __init__(self, base_url: str, model: str, cache_dir: str | os.PathLike | None = None, concurrency: int = 8,
                 timeout: float = 120, max_retries: int = 5, prompt_file: str | os.PathLike = PROMPT_FILE,
                 **client_kwargs: Any):
        from evaluation.backends.openai_client import OpenAIClient

        if not model:
            raise ValueError("--judge-model is required with --judge-url (the model name the endpoint serves)")
        self.config = load_config(str(prompt_file))
        self.client = OpenAIClient(base_url, model, concurrency=concurrency, timeout=timeout, max_retries=max_retries,
                                   cache_dir=cache_dir, **client_kwargs)
        self.stats: dict[str, int] = {"asked": 0, "failed": 0, "unparseable": 0, "scored": 0}
        self.replies: list[str | None] = []

    def prompt(self, code: str) -> str:
        judge = self.config["judge"]
        limit = judge["max_code_chars"]
        if len(code) > limit:
            code = code[:limit] + "\n# ... (truncated)"
        return judge["user"].replace("{code}", code)

    def scores(self, texts: list[str]) -> list[float | None]:
        judge = self.config["judge"]
        self.replies = self.client.complete([self.prompt(t) for t in texts], system=judge["system"], **judge["params"])
        low, high = self.config["scale"]
        scores = [parse_score(r, low, high) for r in self.replies]
        self.stats["asked"] += len(texts)
        self.stats["failed"] += sum(r is None for r in self.replies)
        self.stats["unparseable"] += sum(r is not None and s is None for r, s in zip(self.replies, scores))
        self.stats["scored"] += sum(s is not None for s in scores)
        return scores

    def details(self) -> list[str | None]:
        """What to keep as each record's annotation: the judge's raw reply."""
        return self.replies


class HeuristicAnnotator:
    """An offline 0-10 score from documented features (weights in data/educational_value.yaml):
    documentation, comments, self-containedness, algorithmic content, no large literals."""

    name = "heuristic"

    def __init__(self, prompt_file: str | os.PathLike = PROMPT_FILE):
        self.config = load_config(str(prompt_file))["heuristic"]
        self.stats: dict[str, int] = {"asked": 0, "scored": 0, "unparseable": 0}
        self._features: list[dict[str, float]] = []

    def features(self, text: str) -> dict[str, float]:
        """Each feature in [0, 1], higher = more educational."""
        cfg = self.config
        tree = parse_python(text)
        if tree is None:
            return dict.fromkeys(cfg["weights"], 0.0)
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        comments = sum(line.startswith("#") for line in lines)
        defs = documented = names = relative = control = 0
        for node in ast.walk(tree):  # one pass: these files can be long
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defs += 1
                documented += ast.get_docstring(node, clean=False) is not None
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names += len(node.names)
                relative += isinstance(node, ast.ImportFrom) and node.level > 0
            elif isinstance(node, CONTROL_FLOW):
                control += 1
        code_lines = max(1, len(lines) - comments)
        return {
            "documentation": 0.3 * (ast.get_docstring(tree, clean=False) is not None) + 0.7 * (documented / defs if defs else 0.0),
            "comments": min(1.0, comments / code_lines / cfg["comment_ratio_full"]),
            "self_contained": max(0.0, 1 - names / cfg["imports_full_penalty"] - relative * cfg["relative_import_penalty"]),
            "algorithmic": min(1.0, control / code_lines / cfg["control_per_line_full"]),
            "no_large_literals": max(0.0, 1 - literal_fraction(text, tree) / cfg["literal_fraction_zero"]),
        }

    def score(self, text: str) -> tuple[float, dict[str, float]]:
        weights = self.config["weights"]
        features = self.features(text)
        total = sum(weights.values())
        return round(10 * sum(weights[k] * features[k] for k in weights) / total, 3), features

    def scores(self, texts: list[str]) -> list[float | None]:
        results = [self.score(t) for t in texts]
        self._features = [f for _, f in results]
        self.stats["asked"] += len(texts)
        self.stats["scored"] += len(texts)
        return [s for s, _ in results]

    def details(self) -> list[str | None]:
        """What to keep as each record's annotation: the features behind the score."""
        return [json.dumps({k: round(v, 4) for k, v in f.items()}, sort_keys=True) for f in self._features]


def sample_key(seed: int, record_id: str) -> str:
    """A seeded, order-independent rank: the sample is the records with the smallest keys."""
    return hashlib.sha1(f"{seed}:{record_id}".encode()).hexdigest()


class SampleKeys(PipelineStep):
    """Passes documents on; remembers this task's `n` smallest sample keys and writes them to `folder`."""

    type = "🏷️ - ANNOTATE"
    name = "sample keys"

    def __init__(self, folder: str | os.PathLike, n: int, seed: int = 0):
        super().__init__()
        self.folder, self.n, self.seed = Path(folder), n, seed

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        heap: list[tuple[str, str]] = []  # max-heap by key (negated through the reverse order of hex digits)
        for doc in data:
            key = sample_key(self.seed, doc.id)
            item = (_invert(key), doc.id)
            if len(heap) < self.n:
                heapq.heappush(heap, item)
            elif item > heap[0]:
                heapq.heapreplace(heap, item)
            yield doc
        self.folder.mkdir(parents=True, exist_ok=True)
        keys = sorted((_invert(k), i) for k, i in heap)
        (self.folder / f"{rank:05d}.json").write_text(json.dumps(keys))
        self.stat_update("sampled", value=len(keys))


def _invert(key: str) -> str:
    return key.translate(str.maketrans("0123456789abcdef", "fedcba9876543210"))


class ChooseSample(PipelineStep):
    """One task: the `n` smallest keys over every task's candidates -> `chosen.json` (the ids to annotate)."""

    type = "🏷️ - ANNOTATE"
    name = "choose sample"

    def __init__(self, folder: str | os.PathLike, n: int):
        super().__init__()
        self.folder, self.n = Path(folder), n

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        candidates = [tuple(c) for f in sorted(self.folder.glob("0*.json")) for c in json.loads(f.read_text())]
        chosen = sorted(candidates)[:self.n]
        (self.folder / "chosen.json").write_text(json.dumps([i for _, i in chosen]))
        self.stat_update("chosen", value=len(chosen))
        return iter(())


class Annotate(PipelineStep):
    """Labels the chosen documents with the judge (`judge_url` + `judge_model`) or the heuristic; every document
    passes, with `edu_score` (0-10 or None), `edu_label` (score >= label_threshold, or None) and
    `edu_annotation` (the judge's reply or the heuristic's features), None outside the sample. The labelled
    ones are also written to `labelled` for the classifier's fit. Requests go out `batch` documents at a
    time (the judge's concurrency works within a batch)."""

    type = "🏷️ - ANNOTATE"
    name = "annotate"

    def __init__(self, chosen_file: str | os.PathLike, labelled: str | os.PathLike, label_threshold: float,
                 judge_url: str | None = None, judge_model: str | None = None, cache_dir: str | os.PathLike | None = None,
                 concurrency: int = 8, batch: int = 256):
        super().__init__()
        if judge_url and not judge_model:
            raise ValueError("--judge-model is required with --judge-url (the model name the endpoint serves)")
        self.chosen_file, self.labelled = Path(chosen_file), str(labelled)
        self.label_threshold, self.batch = label_threshold, batch
        self.judge = (judge_url, judge_model, cache_dir, concurrency)

    def annotator(self) -> LLMJudge | HeuristicAnnotator:
        url, model, cache_dir, concurrency = self.judge
        return LLMJudge(url, model, cache_dir=cache_dir, concurrency=concurrency) if url else HeuristicAnnotator()

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from datatrove.utils.batching import batched

        chosen = set(json.loads(self.chosen_file.read_text()))
        annotator = self.annotator()
        with IntermediateWriter(self.labelled) as labelled:
            for batch in batched(data, self.batch):
                picked = [doc for doc in batch if doc.id in chosen]
                scores = annotator.scores([doc.text for doc in picked]) if picked else []
                details = annotator.details() if picked else []
                annotated = {doc.id: (s, d) for doc, s, d in zip(picked, scores, details)}
                for doc in batch:
                    score, detail = annotated.get(doc.id, (None, None))
                    doc.metadata.update(edu_score=score, edu_annotation=detail,
                                        edu_label=None if score is None else bool(score >= self.label_threshold))
                    self.stat_update("annotated" if score is not None else "not_sampled")
                    if score is not None:
                        self.stat_update("positive" if doc.metadata["edu_label"] else "negative")
                        labelled.write(doc, rank)
                    yield doc
        for key, value in annotator.stats.items():
            self.stat_update(f"annotator_{key}", value=value)

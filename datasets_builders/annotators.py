"""Educational-value labels for a sample of code files: an LLM judge, or an offline heuristic.

phi-1 had GPT-4 annotate ~100k files with their "educational value for a student whose goal is to learn
basic coding concepts", and trained a classifier on those labels. `LLMJudge` asks any OpenAI-compatible
endpoint the same question (prompt in data/educational_value.yaml) through `llm_client.OpenAIClient`
(concurrent, retried with backoff, cached by request content, so a rerun resumes) and parses the score
robustly; `HeuristicAnnotator` scores the same 0-10 scale from documented features when no endpoint is given.
`Annotate` is the pipeline step: it labels a seeded sample of the stream and passes every record on.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from .pipeline import Record, Step
from .prefilters import literal_fraction, parse_python

PROMPT_FILE = Path(__file__).parent / "data" / "educational_value.yaml"
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
        from .llm_client import OpenAIClient

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


class Annotate(Step):
    """Labels a seeded sample of `n` records with `annotator`; every record passes, with columns
    `edu_score` (0-10 or None), `edu_label` (score >= label_threshold, or None) and `edu_annotation`
    (the judge's reply or the heuristic's features) -- None outside the sample."""

    name = "annotate"

    def __init__(self, annotator: LLMJudge | HeuristicAnnotator, n: int, seed: int = 0, label_threshold: float = 6):
        super().__init__()
        self.annotator, self.n, self.seed, self.label_threshold = annotator, n, seed, label_threshold

    def run(self, records: Iterable[Record]) -> Iterator[Record]:
        records = list(records)
        chosen = sorted(range(len(records)), key=lambda i: sample_key(self.seed, records[i]["id"]))[:self.n]
        chosen.sort()  # ask in stream order: the same requests in the same order on a rerun
        scores = self.annotator.scores([records[i]["text"] for i in chosen])
        details = self.annotator.details()
        annotated = {i: (s, d) for i, s, d in zip(chosen, scores, details)}
        for i, record in enumerate(records):
            score, detail = annotated.get(i, (None, None))
            record["edu_score"] = score
            record["edu_label"] = None if score is None else bool(score >= self.label_threshold)
            record["edu_annotation"] = detail
            self.stats["in"] += 1
            self.stats["annotated"] += score is not None
            self.stats["positive"] += bool(record["edu_label"])
            yield record
        for key, value in self.annotator.stats.items():
            self.stats[f"annotator:{key}"] = value

"""Where a `phi reproduce` stage spends its wall time: a sampling profiler of the main thread, by sub-step.

A daemon thread looks at the main thread's Python stack every `interval` seconds (`sys._current_frames`,
no tracing hooks, so the stages run at full speed) and gives the time since its previous look to the first
sub-step of `SUB_STEPS` (in that order) that has a frame on the stack: "model / tokenizer load" wins over
"eval loss" and "training steps", which holds the rest of the training loop, and so on. Time in no listed
sub-step is the stage's "other". The result is a sample, accurate to a few intervals per sub-step; the stage's
own wall time is measured exactly by `recipes/reproduce.py`.
"""

from __future__ import annotations

import fnmatch
import sys
import threading
import time
from collections import Counter
from typing import Any

# (sub-step, patterns of "file.py:qualname"; first match wins, so specific sub-steps come before the loops
# that contain them). Patterns are fnmatch globs over the frame's file name and code qualname.
SUB_STEPS: list[tuple[str, tuple[str, ...]]] = [
    ("model / tokenizer load", ("*:*.from_pretrained", "embedder.py:Embedder._load", "transformers.py:load_model",
                                "training.py:build_model")),
    ("checkpoint save", ("checkpoints.py:save_checkpoint", "checkpoints.py:export_model", "training.py:_finish")),
    ("eval loss (held-out blocks)", ("training.py:evaluate",)),
    ("embedding forward", ("embedder.py:Embedder._forward",)),
    ("tokenization", ("multiple_choice.py:encode_pair", "multiple_choice.py:encode_requests",
                      "embedder.py:Embedder._tokenize", "packing.py:tokenize_and_group", "packing.py:_tokenize_*",
                      "tokenizer.py:train_tokenizer")),
    ("data packing", ("packing.py:prepare_packed",)),
    ("training steps", ("training.py:train",)),
    ("generation", ("transformers.py:generate_completions",)),
    ("test execution", ("code_eval.py:score_samples",)),
    ("log-likelihood scoring", ("loglikelihood.py:LoglikelihoodScorer.score",)),
    ("benchmark prompts", ("multiple_choice.py:_prepare_task",)),
    ("AST calibration", ("decontaminate.py:calibrate_ast",)),
    ("benchmark index", ("decontaminate.py:build_detectors",)),
    ("detector scan", ("decontaminate.py:scan",)),
    ("judge labels", ("annotate.py:*", "*:Annotate.run")),
    ("quality classifier", ("classifier.py:*",)),
    ("exact / near dedup", ("exact_dedup.py:*", "minhash.py:*")),
    ("execution checks", ("sandbox.py:*", "execution.py:*", "*:Verify*.filter_batch")),
    ("pre-filters", ("filters.py:*", "*:*Filter.filter")),
    ("write outputs", ("*:*Writer.run", "hub_dataset.py:*", "*:*write*")),
]


class StageProfiler:
    """Sample the main thread while a stage runs; `stop()` returns {sub-step: seconds} (with "other")."""

    def __init__(self, interval: float = 0.02, sub_steps: list[tuple[str, tuple[str, ...]]] | None = None):
        self.interval = interval
        self.rules = [(name, [tuple(p.split(":", 1)) for p in patterns]) for name, patterns in (sub_steps or SUB_STEPS)]
        self.counts: Counter[str] = Counter()
        self._target = threading.main_thread().ident
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._memo: dict[Any, str | None] = {}

    def _classify(self, frame: Any) -> str:
        codes = []
        while frame is not None:
            codes.append(frame.f_code)
            frame = frame.f_back
        best = len(self.rules)
        for code in codes:
            rank = self._memo.get(code)
            if rank is None:
                file = code.co_filename.rsplit("/", 1)[-1]
                qualname = getattr(code, "co_qualname", code.co_name)
                rank = next((i for i, (_, pats) in enumerate(self.rules)
                             if any(fnmatch.fnmatchcase(file, f) and fnmatch.fnmatchcase(qualname, q) for f, q in pats)),
                            len(self.rules))
                self._memo[code] = rank
            best = min(best, rank)
        return self.rules[best][0] if best < len(self.rules) else "other"

    def _loop(self) -> None:
        last = time.perf_counter()
        while not self._stop.wait(self.interval):
            frame = sys._current_frames().get(self._target)
            now = time.perf_counter()
            if frame is not None:
                self.counts[self._classify(frame)] += now - last
            last = now
            del frame

    def start(self) -> StageProfiler:
        self._thread = threading.Thread(target=self._loop, name="stage-profiler", daemon=True)
        self._thread.start()
        return self

    def stop(self, wall: float | None = None) -> dict[str, float]:
        """{sub-step: seconds}, largest first; with `wall` (the stage's measured seconds) the sampled total is
        scaled to it, so the sub-steps add up to the stage."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        sampled = sum(self.counts.values())
        scale = wall / sampled if wall and sampled else 1.0
        return {name: round(seconds * scale, 1) for name, seconds in self.counts.most_common()}

"""The quality classifier of phi-1: a random forest on code embeddings, trained on the judge's labels.

`QualityClassifier.fit` splits the annotated sample (stratified, seeded), fits scikit-learn's
RandomForestClassifier on the training part and reports held-out accuracy, F1 and ROC-AUC (plus a k-fold ROC-AUC over the whole sample); `score` gives
P(educational) for any embeddings. `select` keeps the top `keep_fraction` (ties broken by position, so the
choice is deterministic) or everything at or above `min_score`. The fitted model is saved with joblib next
to the dataset, with its metrics and the embedder it expects.

Blocks: `FitClassifier` (one task, its own small stage between annotate and score: fits on the labelled
sample's embeddings), `QualityScore` (adds `quality_score`, writes the task's scores for the threshold),
`Threshold` (one task: the score that keeps the top `keep_fraction`, ties broken by corpus order) and
`QualityFilter` (a `BaseFilter`: keeps score > threshold, and the tied documents the threshold allots).
"""

from __future__ import annotations

import json
import os
from array import array
from pathlib import Path
from typing import Any

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.writers.disk_base import DiskWriter

from .embed import EMBEDDING

MODEL_FILE = "quality_rf.joblib"
INFO_FILE = "quality_rf.json"
THRESHOLD_FILE = "threshold.json"


class QualityClassifier:
    """RandomForest over embeddings; `fit(X, y)` -> held-out metrics; `score(X)` -> P(label = 1)."""

    def __init__(self, n_estimators: int = 200, seed: int = 0, test_fraction: float = 0.25, n_jobs: int = 1,
                 cv_folds: int = 5):
        from sklearn.ensemble import RandomForestClassifier

        self.seed, self.test_fraction, self.cv_folds = seed, test_fraction, cv_folds
        # class_weight: judges rarely label half the files educational; do not let the majority win by default.
        self.model = RandomForestClassifier(n_estimators=n_estimators, random_state=seed, n_jobs=n_jobs,
                                            class_weight="balanced", min_samples_leaf=2)
        self.metrics: dict[str, Any] = {}

    def fit(self, X: np.ndarray, y: np.ndarray) -> dict[str, Any]:
        from sklearn.base import clone
        from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
        from sklearn.model_selection import StratifiedKFold, cross_val_score, train_test_split

        y = np.asarray(y, dtype=int)
        counts = np.bincount(y, minlength=2)
        if min(counts) < 2:
            raise ValueError(f"the annotated sample has {counts[1]} positive and {counts[0]} negative labels; the "
                             "classifier needs at least 2 of each: annotate more files (--annotate) or change "
                             "--label-threshold")
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=self.test_fraction, random_state=self.seed,
                                                            stratify=y)
        self.model.fit(X_train, y_train)
        proba = self.model.predict_proba(X_test)[:, 1]
        predicted = (proba >= 0.5).astype(int)
        self.metrics = {
            "n_train": int(len(y_train)), "n_test": int(len(y_test)), "positive_rate": round(float(y.mean()), 4),
            "accuracy": round(float(accuracy_score(y_test, predicted)), 4),
            "f1": round(float(f1_score(y_test, predicted, zero_division=0)), 4),
            "roc_auc": round(float(roc_auc_score(y_test, proba)), 4) if len(set(y_test)) == 2 else None,
            "majority_baseline_accuracy": round(float(max(y_test.mean(), 1 - y_test.mean())), 4),
        }
        if min(counts) >= self.cv_folds:
            # One held-out split of a few hundred labels is noisy; k-fold ROC-AUC says how much to trust it.
            folds = StratifiedKFold(self.cv_folds, shuffle=True, random_state=self.seed)
            aucs = cross_val_score(clone(self.model), X, y, cv=folds, scoring="roc_auc")
            self.metrics.update(cv_roc_auc_mean=round(float(aucs.mean()), 4), cv_roc_auc_std=round(float(aucs.std()), 4),
                                cv_folds=self.cv_folds)
        return self.metrics

    def score(self, X: np.ndarray) -> np.ndarray:
        if len(X) == 0:
            return np.zeros(0)
        return self.model.predict_proba(X)[:, 1]

    def save(self, folder: str | os.PathLike, info: dict[str, Any] | None = None) -> Path:
        """joblib model + a JSON with the metrics and `info` (embedder, threshold, ...) in `folder`."""
        import joblib

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        joblib.dump(self.model, folder / MODEL_FILE)
        (folder / INFO_FILE).write_text(json.dumps({"metrics": self.metrics, **(info or {})}, indent=2), encoding="utf-8")
        return folder / MODEL_FILE

    @classmethod
    def load(cls, folder: str | os.PathLike) -> QualityClassifier:
        import joblib

        clf = cls.__new__(cls)
        clf.model = joblib.load(Path(folder) / MODEL_FILE)
        clf.metrics = json.loads((Path(folder) / INFO_FILE).read_text(encoding="utf-8"))["metrics"]
        return clf


def threshold_for(scores: np.ndarray, keep_fraction: float | None = None,
                  min_score: float | None = None) -> tuple[float, int]:
    """(threshold, how many scores equal to it are kept) so that exactly round(keep_fraction * n) are kept
    (or every score >= `min_score`). Ties at the threshold go to the earliest documents."""
    scores = np.asarray(scores, dtype=np.float64)
    if min_score is not None:
        return float(min_score), int(np.sum(scores == min_score))
    if keep_fraction is None or not 0 < keep_fraction <= 1:
        raise ValueError(f"--keep-fraction must be in (0, 1], got {keep_fraction}")
    n_keep = int(round(keep_fraction * len(scores)))
    if not n_keep:
        return float("inf"), 0
    threshold = float(-np.partition(-scores, n_keep - 1)[n_keep - 1])
    return threshold, n_keep - int(np.sum(scores > threshold))


class FitClassifier(PipelineStep):
    """Consumes the labelled documents (with embeddings), fits the forest, saves it to `folder` with its metrics."""

    type = "🌲 - CLASSIFY"
    name = "fit classifier"

    def __init__(self, folder: str | os.PathLike, n_estimators: int = 200, seed: int = 0,
                 info: dict[str, Any] | None = None):
        super().__init__()
        self.folder, self.n_estimators, self.seed, self.info = Path(folder), n_estimators, seed, info or {}

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        X, y = [], []
        for doc in data:
            X.append(doc.metadata.pop(EMBEDDING))
            y.append(bool(doc.metadata["edu_label"]))
        if not X:
            raise ValueError(f"{self.folder}: no annotated document to fit the quality classifier on; annotate more "
                             "files (--annotate) or turn the quality filter off (--no-quality-filter)")
        clf = QualityClassifier(self.n_estimators, self.seed)
        with self.track_time():
            clf.fit(np.stack(X), np.array(y))
        clf.save(self.folder, {**self.info, "n_labelled": len(y), "n_positive": int(sum(y))})
        self.stat_update("labelled", value=len(y))
        return iter(())


class QualityScore(PipelineStep):
    """Adds `quality_score` = P(educational) from the fitted forest (embedding popped); writes the task's
    scores to `scores_dir` for `Threshold`."""

    type = "🌲 - CLASSIFY"
    name = "quality score"

    def __init__(self, classifier_dir: str | os.PathLike, scores_dir: str | os.PathLike, chunk: int = 256):
        super().__init__()
        self.classifier_dir, self.scores_dir, self.chunk = Path(classifier_dir), Path(scores_dir), chunk

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from datatrove.utils.batching import batched

        clf = QualityClassifier.load(self.classifier_dir)
        scores = array("d")  # 8 bytes a document: what the threshold needs, not the documents
        for batch in batched(data, self.chunk):
            batch_scores = clf.score(np.stack([doc.metadata.pop(EMBEDDING) for doc in batch]))
            for doc, score in zip(batch, batch_scores):
                doc.metadata["quality_score"] = round(float(score), 6)
                scores.append(doc.metadata["quality_score"])
                self.stat_update("scored")
                yield doc
        self.scores_dir.mkdir(parents=True, exist_ok=True)
        np.save(self.scores_dir / f"{rank:05d}.npy", np.frombuffer(scores, dtype=np.float64))


class Threshold(PipelineStep):
    """One task: the threshold over every task's scores, and how many tied documents each task keeps."""

    type = "🌲 - CLASSIFY"
    name = "threshold"

    def __init__(self, scores_dir: str | os.PathLike, classifier_dir: str | os.PathLike, tasks: int,
                 keep_fraction: float | None = None, min_score: float | None = None):
        super().__init__()
        self.scores_dir, self.classifier_dir, self.tasks = Path(scores_dir), Path(classifier_dir), tasks
        self.keep_fraction, self.min_score = keep_fraction, min_score

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        per_task = [np.load(f) if (f := self.scores_dir / f"{r:05d}.npy").is_file() else np.zeros(0)
                    for r in range(self.tasks)]
        scores = np.concatenate(per_task)
        threshold, ties = threshold_for(scores, self.keep_fraction, self.min_score)
        allotted = []
        for task_scores in per_task:  # ties go to the earliest tasks, as in a one-task run
            tied = int(np.sum(task_scores == threshold))
            allotted.append(min(tied, ties))
            ties -= allotted[-1]
        kept = int(np.sum(scores > threshold)) + sum(allotted)
        (self.classifier_dir / THRESHOLD_FILE).write_text(json.dumps(
            {"threshold": threshold, "ties_kept": allotted, "scored": len(scores), "kept": kept,
             "keep_fraction": self.keep_fraction, "min_score": self.min_score}))
        self.stat_update("scored", value=len(scores))
        return iter(())


class QualityFilter(BaseFilter):
    """Keeps `quality_score` > threshold, and this task's allotted share of the ties (earliest first)."""

    name = "quality"

    def __init__(self, classifier_dir: str | os.PathLike, exclusion_writer: DiskWriter | None = None):
        super().__init__(exclusion_writer)
        self.classifier_dir = Path(classifier_dir)

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        info = json.loads((self.classifier_dir / THRESHOLD_FILE).read_text())
        self.threshold, self.ties_left = info["threshold"], info["ties_kept"][rank]
        yield from super().run(data, rank, world_size)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        score = doc.metadata["quality_score"]
        if score > self.threshold:
            return True
        if score == self.threshold and self.ties_left > 0:
            self.ties_left -= 1
            return True
        return False, "below_threshold"

"""The quality classifier of phi-1: a random forest on code embeddings, trained on the judge's labels.

`QualityClassifier.fit` splits the annotated sample (stratified, seeded), fits scikit-learn's
RandomForestClassifier on the training part and reports held-out accuracy, F1 and ROC-AUC (plus a k-fold ROC-AUC over the whole sample); `score` gives
P(educational) for any embeddings. `select` keeps the top `keep_fraction` (ties broken by position, so the
choice is deterministic) or everything at or above `min_score`. The fitted model is saved with joblib next
to the dataset, with its metrics and the embedder it expects.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

MODEL_FILE = "quality_rf.joblib"
INFO_FILE = "quality_rf.json"


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


def select(scores: np.ndarray, keep_fraction: float | None = None, min_score: float | None = None) -> tuple[np.ndarray, float]:
    """Boolean keep-mask and the score threshold it amounts to: top `keep_fraction` by score (ties: earlier
    records first), or every score >= `min_score`."""
    scores = np.asarray(scores, dtype=float)
    if min_score is not None:
        return scores >= min_score, float(min_score)
    if keep_fraction is None or not 0 < keep_fraction <= 1:
        raise ValueError(f"--keep-fraction must be in (0, 1], got {keep_fraction}")
    n_keep = int(round(keep_fraction * len(scores)))
    order = np.lexsort((np.arange(len(scores)), -scores))  # by score descending, then position
    mask = np.zeros(len(scores), dtype=bool)
    mask[order[:n_keep]] = True
    threshold = float(scores[order[n_keep - 1]]) if n_keep else float("inf")
    return mask, threshold

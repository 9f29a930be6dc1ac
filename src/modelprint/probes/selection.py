"""Choosing and testing attribution pipelines on precomputed signatures, never on test rows.

All functions take flattened unknown-origin signatures ``(n, M·d)`` (:func:`~modelprint.probes.attribution.
unknown_origin_signatures` reshaped) of the ``candidates`` and labels ``y``:

- :func:`cross_validated_scores`: out-of-fold decision scores of one ``(features, classifier)`` pipeline, from
  stratified, seeded K-fold cross-validation of a development split;
- :func:`select_pipeline`: the pipeline with the best cross-validated accuracy among several;
- :func:`evaluate_cascade`: an early-exit cascade (cheap stage, then the final one) whose margin is chosen on the
  development split's out-of-fold scores (:func:`~modelprint.probes.cascade.choose_margin`), then fitted on the
  development split and tested on the test split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline

from modelprint.evaluation.metrics import bootstrap_ci
from modelprint.probes.attribution import FEATURES, attribution_pipeline, fit_classifier, scores
from modelprint.probes.cascade import choose_margin, score_margin

__all__ = ["COMBINATIONS", "CascadeEvaluation", "CascadeStage", "Selection", "class_scores", "cross_validated_scores",
           "evaluate_cascade", "fit_pipeline", "select_pipeline"]

#: The trained ``(features, classifier)`` pairs a selection chooses among by default.
COMBINATIONS: tuple[tuple[str, str], ...] = tuple((f, c) for f in FEATURES for c in ("prototype", "logreg", "svm"))


def fit_pipeline(X: np.ndarray, y: Sequence[Any], features: str, classifier: str,  # noqa: N803
                 candidates: Sequence[str], seed: int = 0) -> Pipeline:
    """:func:`~modelprint.probes.attribution.attribution_pipeline` fitted on ``(X, y)``."""
    return fit_classifier(attribution_pipeline(features, classifier, candidates, seed=seed), X, np.asarray(y))


def class_scores(pipeline: Pipeline, X: np.ndarray, classes: Sequence[Any]) -> np.ndarray:  # noqa: N803
    """``(n, len(classes))`` decision scores of a fitted pipeline, columns in ``classes`` order."""
    fitted = [str(c) for c in pipeline.classes_]
    return scores(pipeline, X)[:, [fitted.index(str(c)) for c in classes]]


def cross_validated_scores(X: np.ndarray, y: Sequence[Any], features: str, classifier: str,  # noqa: N803
                           candidates: Sequence[str], seed: int = 0, folds: int = 4) -> np.ndarray:
    """Each row's decision scores from the pipeline fitted on the other folds (stratified, shuffled with ``seed``),
    ``(n, n_classes)`` with columns in sorted class order (``np.unique(y)``)."""
    x, labels = np.asarray(X), np.asarray(y)
    classes = np.unique(labels)
    out = np.zeros((len(labels), len(classes)))
    for train, val in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, labels):
        pipeline = fit_pipeline(x[train], labels[train], features, classifier, candidates, seed)
        out[val] = class_scores(pipeline, x[val], classes)
    return out


@dataclass
class Selection:
    """The chosen ``features``/``classifier`` and the cross-validated accuracy of every pair tried
    (``"features/classifier"`` → accuracy)."""

    features: str
    classifier: str
    accuracy: dict[str, float]

    @property
    def name(self) -> str:
        return f"{self.features}/{self.classifier}"


def select_pipeline(X: np.ndarray, y: Sequence[Any], candidates: Sequence[str],  # noqa: N803
                    combinations: Sequence[tuple[str, str]] = COMBINATIONS, seed: int = 0,
                    folds: int = 4) -> Selection:
    """The ``(features, classifier)`` of ``combinations`` with the best cross-validated accuracy on ``(X, y)`` (ties
    go to the earlier, simpler one)."""
    labels = np.asarray(y)
    classes = np.unique(labels)
    accuracy = {}
    for features, classifier in combinations:
        oof = cross_validated_scores(X, labels, features, classifier, candidates, seed, folds)
        accuracy[f"{features}/{classifier}"] = float(np.mean(classes[oof.argmax(axis=1)] == labels))
    features, classifier = max(combinations, key=lambda fc: accuracy[f"{fc[0]}/{fc[1]}"])
    return Selection(features, classifier, accuracy)


@dataclass(frozen=True)
class CascadeStage:
    """One stage of a cascade under evaluation: flattened signatures of the development and test images, its
    pipeline, and its denoiser calls per image per candidate."""

    dev: np.ndarray
    test: np.ndarray
    features: str
    classifier: str
    calls: int


@dataclass
class CascadeEvaluation:
    """Test results of a two-stage cascade: the margin chosen on development scores, the share of test images that
    left at the cheap stage, top-1 accuracy (with its 95% bootstrap interval), calls spent, and each stage alone."""

    margin: float
    exit_early_fraction: float
    top1: float
    top1_ci: tuple[float, float]
    mean_calls: float
    stage_calls: tuple[int, int]
    cheap_top1: float
    final_top1: float

    def to_dict(self) -> dict[str, Any]:
        return {"margin": self.margin, "exit_early_fraction": self.exit_early_fraction, "top1": self.top1,
                "top1_ci": list(self.top1_ci), "mean_calls_per_image_per_candidate": self.mean_calls,
                "stage_calls": list(self.stage_calls), "stage1_alone_top1": self.cheap_top1,
                "stage2_alone_top1": self.final_top1}


def evaluate_cascade(cheap: CascadeStage, final: CascadeStage, y_dev: Sequence[Any], y_test: Sequence[Any],
                     candidates: Sequence[str], seed: int = 0, folds: int = 4) -> CascadeEvaluation:
    """Early exit from ``cheap`` to ``final``: the margin is chosen on out-of-fold development scores, both stages
    are then fitted on the development split and the cascade is tested on the test split."""
    y_dev, y_test = np.asarray(y_dev), np.asarray(y_test)
    classes = np.unique(y_dev)
    dev = [cross_validated_scores(s.dev, y_dev, s.features, s.classifier, candidates, seed, folds)
           for s in (cheap, final)]
    margin = choose_margin(dev[0], dev[1], y_dev, classes)
    test = [class_scores(fit_pipeline(s.dev, y_dev, s.features, s.classifier, candidates, seed), s.test, classes)
            for s in (cheap, final)]
    early = score_margin(test[0]) >= margin
    correct = (classes[np.where(early[:, None], test[0], test[1]).argmax(axis=1)] == y_test).astype(float)
    calls = cheap.calls + (~early) * final.calls
    return CascadeEvaluation(
        margin=margin, exit_early_fraction=float(early.mean()), top1=float(correct.mean()),
        top1_ci=bootstrap_ci(np.mean, correct, n_boot=2000, seed=seed), mean_calls=float(calls.mean()),
        stage_calls=(cheap.calls, cheap.calls + final.calls),
        cheap_top1=float(np.mean(classes[test[0].argmax(axis=1)] == y_test)),
        final_top1=float(np.mean(classes[test[1].argmax(axis=1)] == y_test)))

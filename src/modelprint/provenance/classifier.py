"""Three-way provenance from trajectory features: training member, the model's own generation, or external.

:class:`ProvenanceClassifier` is a calibrated scikit-learn classifier over any class set (usually
:data:`~modelprint.provenance.base.PROVENANCE_CLASSES`): a standardised logistic regression (``linear``: its
weights per feature and timestep can be plotted against ``t``, :meth:`~ProvenanceClassifier.linear_weights`) or
histogram gradient boosting (``boosted``), wrapped in ``CalibratedClassifierCV`` (sigmoid or isotonic, stratified
folds). The logistic regression's ``C`` is fixed, or ``"cv"``: chosen on the fit rows alone by stratified
cross-validated log-loss over :data:`C_GRID` (:func:`choose_C`), then held fixed for the calibration folds.
Below a confidence chosen on validation rows (the lowest top-class probability at which the accepted validation
rows are still ``target_accuracy`` right) the answer is :data:`~modelprint.provenance.base.UNCERTAIN`.
:class:`TrajectoryAttack` is the same classifier as a membership attack (member probability), beside the
baselines; it chooses ``C`` by cross-validation: a few dozen fit rows against ~150 features overfit at ``C = 1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from modelprint.errors import ProbeError
from modelprint.probes.base import ProbeProgress, check_fitted, validated
from modelprint.probes.candidates import DiffusionCandidate
from modelprint.provenance.base import ATTACKS, EXTERNAL, MEMBER, UNCERTAIN, MembershipAttack, fit_rows
from modelprint.provenance.features import TrajectoryExtractor

__all__ = ["C_GRID", "ProvenanceClassifier", "ProvenanceDecisions", "TrajectoryAttack", "choose_C", "choose_confidence"]

MODELS = ("linear", "boosted")
#: The inverse regularisation strengths ``C="cv"`` chooses from: 1e-4 … 1e2, two per decade.
C_GRID = np.logspace(-4, 2, 13)


def choose_C(x: np.ndarray, labels: np.ndarray, seed: int = 0, grid: Sequence[float] = C_GRID) -> float:  # noqa: N802
    """The ``C`` of ``grid`` with the best mean log-loss of a standardised logistic regression over stratified
    folds of ``(x, labels)`` (``min(5, smallest class count)`` folds, shuffled by ``seed``); ties go to the
    smaller ``C`` (the stronger regularisation)."""
    folds = min(5, int(np.unique(labels, return_counts=True)[1].min()))
    if folds < 2:
        raise ProbeError("provenance classifier: choosing C needs at least two rows of every class")
    search = make_pipeline(StandardScaler(), LogisticRegressionCV(
        Cs=list(grid), cv=StratifiedKFold(folds, shuffle=True, random_state=seed), scoring="neg_log_loss",
        l1_ratios=(0,), use_legacy_attributes=False, max_iter=5000))
    return float(search.fit(x, labels)[-1].C_)


def choose_confidence(probabilities: np.ndarray, correct: np.ndarray, target_accuracy: float) -> float:
    """The lowest top-class probability ``c`` such that the rows with ``max p ≥ c`` are at least
    ``target_accuracy`` correct (answering as many rows as possible); above every row if no ``c`` achieves it."""
    top = np.asarray(probabilities, dtype=np.float64).max(axis=1)
    ok = np.asarray(correct, dtype=bool)
    order = np.argsort(-top, kind="stable")
    accuracy = np.cumsum(ok[order]) / np.arange(1, len(order) + 1)
    # a cut can only fall between distinct probabilities: the last row of each run of ties
    last = np.r_[top[order][1:] != top[order][:-1], True]
    good = np.flatnonzero(last & (accuracy >= target_accuracy))
    return float(top[order][good[-1]]) if len(good) else float(np.nextafter(top.max(), np.inf))


@dataclass
class ProvenanceDecisions:
    """Per image: calibrated probabilities over ``classes`` and the decision (a class or ``uncertain``)."""

    classes: list[str]
    probabilities: np.ndarray
    decisions: np.ndarray
    confidence: float

    def to_dict(self, paths: Sequence[str] | None = None) -> dict[str, Any]:
        results = []
        for i, (p, decision) in enumerate(zip(self.probabilities, self.decisions)):
            row: dict[str, Any] = {"decision": str(decision),
                                   "probabilities": {c: float(v) for c, v in zip(self.classes, p)}}
            if paths is not None:
                row = {"path": str(paths[i]), **row}
            results.append(row)
        return {"classes": list(self.classes), "confidence_threshold": self.confidence, "results": results}


class ProvenanceClassifier(ClassifierMixin, BaseEstimator):
    """Calibrated member / generated / external classifier with an explicit ``uncertain`` answer.

    ``fit(X, y, X_val, y_val)``: the model is fitted and calibrated on ``(X, y)``; the confidence below which the
    answer is ``uncertain`` is chosen on ``(X_val, y_val)`` (without them, on a stratified ``validation_fraction``
    of ``(X, y)`` held out of the model fit). ``target_accuracy=None`` never answers ``uncertain``. ``C`` (linear
    only) is the logistic regression's, or ``"cv"`` to choose it on the fit rows (:func:`choose_C`); the ``C`` used
    is ``C_`` (``None`` for ``boosted``).
    """

    def __init__(self, model: Literal["linear", "boosted"] = "linear", C: float | Literal["cv"] = 1.0,  # noqa: N803
                 calibration: Literal["sigmoid", "isotonic"] = "sigmoid", cv: int = 3,
                 target_accuracy: float | None = 0.95, validation_fraction: float = 0.25, seed: int = 0) -> None:
        self.model = model
        self.C = C
        self.calibration = calibration
        self.cv = cv
        self.target_accuracy = target_accuracy
        self.validation_fraction = validation_fraction
        self.seed = seed

    def _base(self) -> Pipeline | HistGradientBoostingClassifier:
        if self.model == "linear":
            return make_pipeline(StandardScaler(), LogisticRegression(C=self.C_, max_iter=5000))
        if self.model == "boosted":
            return HistGradientBoostingClassifier(random_state=self.seed)
        raise ProbeError(f"provenance classifier: unknown model {self.model!r}; known: {', '.join(MODELS)}")

    def fit(self, X: np.ndarray, y: Sequence[Any], X_val: np.ndarray | None = None,  # noqa: N803
            y_val: Sequence[Any] | None = None) -> ProvenanceClassifier:
        x, labels = validated(self, X, y, classes=True, dtype=np.float64)
        if X_val is not None:
            x_val, val_labels = validated(self, X_val, y_val, reset=False, classes=True, dtype=np.float64)
        elif self.target_accuracy is not None:
            try:
                x, x_val, labels, val_labels = train_test_split(x, labels, test_size=self.validation_fraction,
                                                                stratify=labels, random_state=self.seed)
            except ValueError as err:
                raise ProbeError(f"provenance classifier: cannot hold out validation rows ({err})") from None
        names, counts = np.unique(labels, return_counts=True)
        if len(counts) < 2 or counts.min() < int(self.cv):
            got = "one class" if len(counts) < 2 else ", ".join(f"{c}: {k}" for c, k in zip(names, counts))
            raise ProbeError(f"provenance classifier: needs at least two classes with >= {self.cv} fitting "
                             f"images each, got {got}")
        self.C_ = None
        if self.model == "linear":
            self.C_ = choose_C(x, labels, self.seed) if isinstance(self.C, str) and self.C == "cv" else float(self.C)
        folds = StratifiedKFold(int(self.cv), shuffle=True, random_state=self.seed)
        self.calibrated_ = CalibratedClassifierCV(self._base(), method=self.calibration, cv=folds).fit(x, labels)
        self.classes_ = self.calibrated_.classes_
        self.confidence_ = 0.0
        if self.target_accuracy is not None:
            proba = self.calibrated_.predict_proba(x_val)
            correct = self.classes_[proba.argmax(axis=1)] == val_labels
            self.confidence_ = choose_confidence(proba, correct, float(self.target_accuracy))
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        """Calibrated probabilities ``(n, n_classes)`` in ``classes_`` order."""
        check_fitted(self, "calibrated_")
        return self.calibrated_.predict_proba(validated(self, X, reset=False, dtype=np.float64))

    def decide(self, X: np.ndarray) -> ProvenanceDecisions:  # noqa: N803
        """Probabilities and decisions: a class of ``classes_`` (its dtype when every row is sure), or ``uncertain``
        (an object array then) where the top probability is below ``confidence_``."""
        proba = self.predict_proba(X)
        top = self.classes_[proba.argmax(axis=1)]
        sure = proba.max(axis=1) >= self.confidence_
        decisions = top if sure.all() else np.where(sure, top.astype(object), UNCERTAIN)
        return ProvenanceDecisions([str(c) for c in self.classes_], proba, decisions, self.confidence_)

    def predict(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        return self.decide(X).decisions

    def linear_weights(self) -> np.ndarray:
        """The logistic regression's weights per standardised feature, ``(n_classes, n_features)`` (one row for two
        classes: the second class's), averaged over the calibration folds."""
        check_fitted(self, "calibrated_")
        if self.model != "linear":
            raise ProbeError("linear_weights needs model='linear'")
        return np.mean([c.estimator[-1].coef_ for c in self.calibrated_.calibrated_classifiers_], axis=0)


@ATTACKS.register("trajectory")
class TrajectoryAttack(MembershipAttack):
    """Trajectory features (:class:`~modelprint.provenance.features.TrajectoryExtractor`) and a calibrated
    :class:`ProvenanceClassifier` fitted on the auditor's budget; the member score is P(member). ``C`` defaults to
    ``"cv"``: chosen on the fit rows (the chosen one is ``classifier_.C_``)."""

    learned = True

    def __init__(self, extractor: TrajectoryExtractor | None = None,
                 model: Literal["linear", "boosted"] = "linear", seed: int = 0,
                 C: float | Literal["cv"] = "cv") -> None:  # noqa: N803
        self.extractor = extractor
        self.model = model
        self.seed = seed
        self.C = C

    def _extractor(self) -> TrajectoryExtractor:
        return self.extractor if self.extractor is not None else TrajectoryExtractor(seed=self.seed)

    def calls_per_image(self, denoiser: DiffusionCandidate) -> int:
        return self._extractor().calls_per_image(denoiser)

    def backwards_per_image(self, denoiser: DiffusionCandidate) -> int:
        return self._extractor().backwards_per_image(denoiser)

    def settings(self) -> list[Any]:
        return []

    def measure(self, denoiser: DiffusionCandidate, images: np.ndarray, progress: ProbeProgress | None = None
                ) -> np.ndarray:
        return self._extractor().extract(denoiser, images, progress).values

    def fit(self, X: np.ndarray, y: Sequence[bool]) -> TrajectoryAttack:  # noqa: N803
        x, member = fit_rows(self, X, y)
        labels = np.where(member, MEMBER, EXTERNAL)
        self.classifier_ = ProvenanceClassifier(self.model, self.C, target_accuracy=None,
                                                seed=self.seed).fit(x, labels)
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        """P(member) of each row, ``(n,)``."""
        check_fitted(self, "classifier_")
        proba = self.classifier_.predict_proba(validated(self, X, reset=False, dtype=np.float64))
        return proba[:, list(self.classifier_.classes_).index(MEMBER)]

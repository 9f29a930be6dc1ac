"""White-box attribution with a reject option: which of ``K`` candidate diffusion models made (or was trained on)
an image, or none of them.

Input: every image's denoising-loss trajectory through every candidate, ``(n, K, T)``
(:func:`~modelprint.probes.attribution.unknown_origin_signatures` with a
:class:`~modelprint.probes.loss.DenoisingLossProbe`, e.g. the ``loss-trajectory`` preset). Two rules
(:data:`ATTRIBUTORS`), both answering a candidate name or :data:`NONE`:

- ``threshold`` (:class:`RejectAttributor`): a candidate's score is
  :class:`~modelprint.probes.attribution.LowestLoss`'s (minus its log loss averaged over timesteps, ``raw`` or
  ``standardised`` per (candidate, timestep)); one threshold per candidate, calibrated on that candidate's own
  samples (it accepts ``accept`` of them); the best-scoring candidate among those whose threshold the image passes.
  It reads a single loss level, so images of the candidates' training distribution (photos, for photo-trained
  models) pass the thresholds as easily as the models' own samples.
- ``learned`` (:class:`LearnedRejectAttributor`): per candidate, a logistic regression of "made by this candidate"
  on the *shape* of the loss trajectory (through that candidate, or the whole ``(K, T)`` signature), fitted on its
  own samples against the other candidates' samples and external images (label ``none``); or one multinomial
  regression over the ``K + 1`` classes, on the signature or on it *relative* to the image (each candidate's loss
  minus the mean over candidates at that timestep, beside that mean: siblings differ by little against how hard
  an image is to denoise, and standardising the differences brings them out). The most probable candidate, or
  ``none`` below a probability threshold.

:func:`choose_attributor` fits every setting of both rules on fit rows and keeps the one most accurate on
validation rows (own samples and external images), never looking at test rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from modelprint.errors import ProbeError
from modelprint.probes.attribution import NORMALISATIONS, LowestLoss
from modelprint.probes.base import check_fitted, validated
from modelprint.registry import Registry

__all__ = ["ATTRIBUTORS", "NONE", "AttributorChoice", "LearnedRejectAttributor", "RejectAttributor",
           "choose_attributor"]

#: The answer "none of the candidates".
NONE = "none"
ACCEPTS = (0.8, 0.9, 0.95, 0.99)
#: Settings of the learned rule tried by :func:`choose_attributor` (every probability threshold on a grid).
LEARNED_KINDS = ("own", "signature", "multinomial", "relative")
LEARNED_CS = (0.1, 1.0, 10.0, 100.0)
PROBABILITY_THRESHOLDS = tuple(np.round(np.arange(0.05, 0.96, 0.05), 2))

#: Attribution rules with a ``none`` answer, by name.
ATTRIBUTORS: Registry[Any] = Registry("attributor")


def _flat(X: Any) -> Any:  # noqa: N803
    """``(n, K, T)`` trajectories as ``(n, K·T)`` rows (anything else unchanged, for validation to judge)."""
    return X.reshape(len(X), -1) if isinstance(X, np.ndarray) and X.ndim == 3 else X


@ATTRIBUTORS.register("threshold")
class RejectAttributor(ClassifierMixin, BaseEstimator):
    """Lowest-loss attribution among ``candidates`` with per-candidate thresholds and a ``none`` answer.

    ``fit(X, y)``: ``X`` the loss trajectories ``(n, K, T)`` (or flattened ``(n, K·T)``) of the candidates' own
    samples, ``y`` which candidate made each (every candidate needs at least two); rows labelled ``none`` carry no
    threshold and are ignored. ``classes_`` are the sorted candidate names followed by ``none``.
    """

    def __init__(self, candidates: Sequence[str] = (),
                 normalisation: Literal["raw", "standardised"] = "standardised", accept: float = 0.95) -> None:
        self.candidates = candidates
        self.normalisation = normalisation
        self.accept = accept

    def _rows(self, X: Any) -> np.ndarray:  # noqa: N803
        """Fitted-on ``(n, K·T)`` rows from ``X`` (``(n, K, T)`` trajectories are flattened)."""
        check_fitted(self, "thresholds_")
        return validated(self, _flat(X), reset=False, dtype=np.float64)

    def fit(self, X: np.ndarray, y: Sequence[str]) -> RejectAttributor:  # noqa: N803
        if not 0 < float(self.accept) <= 1:
            raise ProbeError(f"reject attribution: accept must be in (0, 1], got {self.accept}")
        x, labels = validated(self, _flat(X), y, classes=True, dtype=np.float64)
        keep = labels.astype(str) != NONE
        x, labels = x[keep], labels[keep]
        self.rule_ = LowestLoss(tuple(self.candidates), normalisation=self.normalisation).fit(x, labels)
        scores = self.rule_.decision_function(x)
        thresholds = []
        for j, name in enumerate(self.rule_.classes_):
            own = scores[labels.astype(str) == name, j]
            if len(own) < 2:
                raise ProbeError(f"reject attribution: candidate {name!r} needs at least two of its own samples "
                                 f"to calibrate its threshold, got {len(own)}")
            thresholds.append(np.quantile(own, 1.0 - float(self.accept), method="lower"))
        self.thresholds_ = np.asarray(thresholds)
        self.classes_ = np.asarray([*self.rule_.classes_, NONE])
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        """``(n, K)`` margins over each candidate's threshold (``≥ 0``: accepted), sorted candidate order."""
        rows = self._rows(X)
        return self.rule_.decision_function(rows) - self.thresholds_

    def predict(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        rows = self._rows(X)
        scores = self.rule_.decision_function(rows)
        accepted = scores >= self.thresholds_
        best = np.argmax(np.where(accepted, scores, -np.inf), axis=1)
        return np.where(accepted.any(axis=1), self.rule_.classes_[best], NONE)




@ATTRIBUTORS.register("learned")
class LearnedRejectAttributor(ClassifierMixin, BaseEstimator):
    """Attribution among ``candidates`` learned from the shape of the loss trajectories, with a ``none`` answer
    below a probability ``threshold``.

    ``fit(X, y)``: ``X`` the loss trajectories ``(n, K, T)`` (``K`` in ``candidates`` order; or flattened), ``y`` a
    candidate name or ``none`` per row (each needs at least two rows: external images are fitted on, not only
    validated on). ``kind``: ``own`` fits, per candidate ``k``, a logistic regression of "made by ``k``" against
    every other row on the trajectory through ``k``; ``signature`` the same on the whole ``(K, T)`` signature;
    ``multinomial`` one regression over the ``K + 1`` classes on the signature; ``relative`` the same on each
    candidate's loss minus the mean over candidates (per timestep) and that mean. Inputs are standardised, ``C`` is the
    inverse L2 penalty; logistic regression minimises log loss, so its probabilities are calibrated on the fit rows.
    ``candidate_proba`` gives ``P(made by k)``; ``predict`` the most probable candidate, or ``none`` when that
    probability is below ``threshold``. ``classes_`` are the sorted candidate names followed by ``none``.
    """

    def __init__(self, candidates: Sequence[str] = (),
                 kind: Literal["own", "signature", "multinomial", "relative"] = "own",
                 C: float = 1.0, threshold: float = 0.5) -> None:  # noqa: N803
        self.candidates = candidates
        self.kind = kind
        self.C = C
        self.threshold = threshold

    def _model(self) -> Pipeline:
        return make_pipeline(StandardScaler(), LogisticRegression(C=float(self.C), max_iter=2000))

    def _inputs(self, cube: np.ndarray, j: int) -> np.ndarray:
        return cube[:, j] if self.kind == "own" else cube.reshape(len(cube), -1)

    def _joint(self, x: np.ndarray) -> np.ndarray:
        """Rows of the one-regression kinds: the signature, or (``relative``) it minus its per-timestep mean over
        candidates, with that mean."""
        if self.kind != "relative":
            return x
        cube = x.reshape(len(x), len(self.candidates), -1)
        mean = cube.mean(axis=1, keepdims=True)
        return np.concatenate([(cube - mean).reshape(len(x), -1), mean[:, 0]], axis=1)

    def fit(self, X: np.ndarray, y: Sequence[str]) -> LearnedRejectAttributor:  # noqa: N803
        if self.kind not in LEARNED_KINDS:
            raise ProbeError(f"learned attribution: kind must be one of {', '.join(LEARNED_KINDS)}, got {self.kind!r}")
        if not 0 <= float(self.threshold) <= 1 or not float(self.C) > 0:
            raise ProbeError(f"learned attribution: threshold must be in [0, 1] and C > 0, got {self.threshold}, "
                             f"{self.C}")
        x, labels = validated(self, _flat(X), y, classes=True, dtype=np.float64)
        labels, names = labels.astype(str), [str(c) for c in self.candidates]
        if not names or x.shape[1] % len(names):
            raise ProbeError(f"learned attribution: {x.shape[1]} columns do not split into the trajectories of "
                             f"{len(names)} candidates")
        unknown = sorted(set(labels) - {*names, NONE})
        if unknown:
            raise ProbeError(f"learned attribution: labels {', '.join(unknown)} are neither candidates nor {NONE!r}")
        for name in [*names, NONE]:
            if np.sum(labels == name) < 2:
                raise ProbeError(f"learned attribution: needs at least two rows labelled {name!r} to fit on, got "
                                 f"{int(np.sum(labels == name))}")
        self.order_ = np.argsort(names, kind="stable")
        self.classes_ = np.asarray([*sorted(names), NONE])
        if self.kind in ("multinomial", "relative"):
            self.models_ = [self._model().fit(self._joint(x), labels)]
        else:
            cube = x.reshape(len(x), len(names), -1)
            self.models_ = [self._model().fit(self._inputs(cube, j), labels == names[j]) for j in self.order_]
        return self

    def candidate_proba(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        """``(n, K)`` probability that each candidate made each image, sorted candidate order."""
        check_fitted(self, "models_")
        x = validated(self, _flat(X), reset=False, dtype=np.float64)
        if self.kind in ("multinomial", "relative"):
            model = self.models_[0]
            columns = [list(model.classes_).index(c) for c in self.classes_[:-1]]
            return model.predict_proba(self._joint(x))[:, columns]
        cube = x.reshape(len(x), len(self.candidates), -1)
        return np.stack([m.predict_proba(self._inputs(cube, j))[:, 1] for m, j in zip(self.models_, self.order_)],
                        axis=1)

    def decision_function(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        """``(n, K)`` margins of each candidate's probability over ``threshold`` (``≥ 0``: accepted)."""
        return self.candidate_proba(X) - float(self.threshold)

    def predict(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        return _answer(self.candidate_proba(X), self.classes_, float(self.threshold))


def _answer(proba: np.ndarray, classes: np.ndarray, threshold: float) -> np.ndarray:
    best = proba.argmax(axis=1)
    return np.where(proba[np.arange(len(proba)), best] >= threshold, classes[best], NONE)


@dataclass
class AttributorChoice:
    """The attributor chosen on validation and the validation scores of every setting tried (for the learned
    rule: each kind and ``C`` at its best probability threshold)."""

    attributor: RejectAttributor | LearnedRejectAttributor
    validation: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**settings(self.attributor), "validation": list(self.validation)}


def settings(attributor: RejectAttributor | LearnedRejectAttributor) -> dict[str, Any]:
    """The rule's registered name and its parameters (all but the candidates), JSON-ready."""
    params = {k: (float(v) if isinstance(v, (int, float, np.floating)) else v)
              for k, v in attributor.get_params().items() if k != "candidates"}
    return {"rule": type(attributor).name, **params}  # type: ignore[attr-defined]


def _scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    outside = truth == NONE
    return {"accuracy": float(np.mean(pred == truth)),
            "accuracy_own_samples": float(np.mean(pred[~outside] == truth[~outside])) if (~outside).any() else None,
            "external_rejected": float(np.mean(pred[outside] == NONE)) if outside.any() else None}


def choose_attributor(X: np.ndarray, y: Sequence[str], X_val: np.ndarray, y_val: Sequence[str],  # noqa: N803
                      candidates: Sequence[str], normalisations: Sequence[str] = NORMALISATIONS,
                      accepts: Sequence[float] = ACCEPTS, kinds: Sequence[str] = LEARNED_KINDS,
                      Cs: Sequence[float] = LEARNED_CS,  # noqa: N803
                      thresholds: Sequence[float] = PROBABILITY_THRESHOLDS) -> AttributorChoice:
    """Fit every setting on ``(X, y)``: the threshold rule (every normalisation and ``accept``) on the candidates'
    own samples, the learned rule (every ``kind`` and ``C``; ``kinds=()`` leaves it out) on those and the external
    images (label ``none``) among them; keep the one most accurate on ``(X_val, y_val)`` (candidate names or
    ``none``), the learned rule's probability threshold chosen there too. Ties go to the earlier setting, the
    threshold rule first."""
    truth = np.asarray(y_val).astype(str)
    best: tuple[float, Any, float | None] | None = None
    table = []
    for normalisation in normalisations:
        for accept in accepts:
            model = RejectAttributor(candidates, normalisation, accept).fit(X, y)  # type: ignore[arg-type]
            row = _scores(model.predict(X_val), truth)
            table.append({**settings(model), **row})
            if best is None or row["accuracy"] > best[0]:
                best = (row["accuracy"], model, None)
    for kind in kinds:
        for c in Cs:
            model = LearnedRejectAttributor(candidates, kind, c).fit(X, y)  # type: ignore[arg-type]
            proba = model.candidate_proba(X_val)
            rows = [(float(t), _scores(_answer(proba, model.classes_, float(t)), truth)) for t in thresholds]
            t, row = max(rows, key=lambda r: r[1]["accuracy"])  # the first of equals
            table.append({**settings(model), "threshold": t, **row})
            if best is None or row["accuracy"] > best[0]:
                best = (row["accuracy"], model, t)
    if best is None:
        raise ProbeError("reject attribution: no setting to choose from")
    _, model, t = best
    if t is not None:
        model.set_params(threshold=t)
    return AttributorChoice(model, table)

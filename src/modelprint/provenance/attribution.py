"""White-box attribution with a reject option: which of ``K`` candidate diffusion models made (or was trained on)
an image, or none of them.

Input: every image's denoising-loss trajectory through every candidate, ``(n, K, T)``
(:func:`~modelprint.probes.attribution.unknown_origin_signatures` with a
:class:`~modelprint.probes.loss.DenoisingLossProbe`, e.g. the ``loss-trajectory`` preset). A candidate's score is
:class:`~modelprint.probes.attribution.LowestLoss`'s: minus its log loss averaged over timesteps, ``raw`` or
``standardised`` per (candidate, timestep). :class:`RejectAttributor` calibrates one threshold per candidate on that
candidate's own samples (it accepts ``accept`` of them) and answers the best-scoring candidate among those whose
threshold the image passes, or :data:`NONE` when it passes none. :func:`choose_attributor` picks the normalisation
and ``accept`` on validation images (which may include external ones, labelled ``none``), never on test images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from modelprint.errors import ProbeError
from modelprint.probes.attribution import NORMALISATIONS, LowestLoss
from modelprint.probes.base import check_fitted, validated

__all__ = ["NONE", "AttributorChoice", "RejectAttributor", "choose_attributor"]

#: The answer "none of the candidates".
NONE = "none"
ACCEPTS = (0.8, 0.9, 0.95, 0.99)


class RejectAttributor(ClassifierMixin, BaseEstimator):
    """Lowest-loss attribution among ``candidates`` with per-candidate thresholds and a ``none`` answer.

    ``fit(X, y)``: ``X`` the loss trajectories ``(n, K, T)`` (or flattened ``(n, K·T)``) of the candidates' own
    samples, ``y`` which candidate made each (every candidate needs at least two). ``classes_`` are the sorted
    candidate names followed by ``none``.
    """

    def __init__(self, candidates: Sequence[str] = (),
                 normalisation: Literal["raw", "standardised"] = "standardised", accept: float = 0.95) -> None:
        self.candidates = candidates
        self.normalisation = normalisation
        self.accept = accept

    def _rows(self, X: Any) -> np.ndarray:  # noqa: N803
        """Fitted-on ``(n, K·T)`` rows from ``X`` (``(n, K, T)`` trajectories are flattened)."""
        check_fitted(self, "thresholds_")
        return validated(self, self._flat(X), reset=False, dtype=np.float64)

    @staticmethod
    def _flat(X: Any) -> Any:  # noqa: N803
        return X.reshape(len(X), -1) if isinstance(X, np.ndarray) and X.ndim == 3 else X

    def fit(self, X: np.ndarray, y: Sequence[str]) -> RejectAttributor:  # noqa: N803
        if not 0 < float(self.accept) <= 1:
            raise ProbeError(f"reject attribution: accept must be in (0, 1], got {self.accept}")
        x, labels = validated(self, self._flat(X), y, classes=True, dtype=np.float64)
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


@dataclass
class AttributorChoice:
    """The attributor chosen on validation and the validation accuracy of every setting tried."""

    attributor: RejectAttributor
    validation: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"normalisation": self.attributor.normalisation, "accept": float(self.attributor.accept),
                "validation": list(self.validation)}


def choose_attributor(X: np.ndarray, y: Sequence[str], X_val: np.ndarray, y_val: Sequence[str],  # noqa: N803
                      candidates: Sequence[str], normalisations: Sequence[str] = NORMALISATIONS,
                      accepts: Sequence[float] = ACCEPTS) -> AttributorChoice:
    """Fit a :class:`RejectAttributor` on the candidates' own samples ``(X, y)`` for every normalisation and
    ``accept``, and keep the one most accurate on ``(X_val, y_val)`` (labels: candidate names or ``none``; ties go
    to the earlier setting)."""
    truth = np.asarray(y_val).astype(str)
    best: tuple[float, RejectAttributor] | None = None
    table = []
    for normalisation in normalisations:
        for accept in accepts:
            model = RejectAttributor(candidates, normalisation, accept).fit(X, y)  # type: ignore[arg-type]
            accuracy = float(np.mean(model.predict(X_val) == truth))
            table.append({"normalisation": normalisation, "accept": float(accept), "accuracy": accuracy})
            if best is None or accuracy > best[0]:
                best = (accuracy, model)
    if best is None:
        raise ProbeError("reject attribution: no normalisation or accept rate to choose from")
    return AttributorChoice(best[1], table)

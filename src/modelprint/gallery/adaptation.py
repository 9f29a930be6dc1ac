"""Gallery-level adaptations: a linear map of the embedding space fit on the enrolled (support) embeddings only.

With a few images per model, the enrolled embeddings tell which directions separate *these* models and which
only vary within a model. An adaptation is a scikit-learn-style estimator: :meth:`~Adaptation.fit` on the
support embeddings and their model labels, :meth:`~Adaptation.transform` any embedding (support and queries
alike) into the adapted space, L2-normalised, where prototypes and cosine scores are computed as before.
``version`` names the rule and its parameters; embeddings adapted differently are not comparable.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from modelprint.registry import Parametrised, Registry
from modelprint.scores import l2_normalize

ADAPTATIONS: Registry[Adaptation] = Registry("adaptation")


class Adaptation(Parametrised, ABC):
    """A linear map fit on support embeddings (see the module docstring)."""

    name: str = "base"

    @property
    @abstractmethod
    def version(self) -> str:
        """The rule and its parameters."""

    @abstractmethod
    def fit(self, x: np.ndarray, labels: Sequence[str] | np.ndarray) -> Adaptation:
        """Fit on L2-normalised support embeddings ``(n, d)`` and their model labels; returns ``self``."""

    @abstractmethod
    def transform(self, x: np.ndarray) -> np.ndarray:
        """``(n, d)`` embeddings → ``(n, d')`` adapted, L2-normalised embeddings."""


def _within_class(x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Global mean and within-class covariance (pooled over models) of ``x``."""
    centred = x.copy()
    for c in np.unique(labels):
        centred[labels == c] -= x[labels == c].mean(axis=0)
    return x.mean(axis=0), centred.T @ centred / max(1, len(x) - len(np.unique(labels)))


@ADAPTATIONS.register("wccn")
class WithinClassWhitening(Adaptation):
    """Within-class covariance whitening: centre on the support mean, then ``S^-1/2`` with
    ``S = (1 − shrinkage)·S_w + shrinkage·(tr S_w / d)·I`` (``S_w``: pooled within-model covariance)."""

    def __init__(self, shrinkage: float = 0.5) -> None:
        if not 0.0 < shrinkage <= 1.0:
            raise ValueError(f"wccn: shrinkage must be in (0, 1], got {shrinkage}")
        self.shrinkage = shrinkage

    @property
    def version(self) -> str:
        return f"wccn-v1-s{self.shrinkage:g}"

    def fit(self, x: np.ndarray, labels: Sequence[str] | np.ndarray) -> WithinClassWhitening:
        x = np.asarray(x, dtype=np.float64)
        self.mean_, sw = _within_class(x, np.asarray(labels))
        s = (1 - self.shrinkage) * sw + self.shrinkage * np.trace(sw) / len(sw) * np.eye(len(sw))
        vals, vecs = np.linalg.eigh(s)
        self.map_ = vecs / np.sqrt(np.maximum(vals, 1e-12 * vals.max()))
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return l2_normalize((np.asarray(x, dtype=np.float64) - self.mean_) @ self.map_)


@ADAPTATIONS.register("lda")
class ShrinkageLDA(Adaptation):
    """Linear discriminant analysis with shrinkage (scikit-learn's ``eigen`` solver): the at most ``models − 1``
    directions that best separate the enrolled models, centred on the support mean."""

    def __init__(self, shrinkage: float = 0.5) -> None:
        if not 0.0 <= shrinkage <= 1.0:
            raise ValueError(f"lda: shrinkage must be in [0, 1], got {shrinkage}")
        self.shrinkage = shrinkage

    @property
    def version(self) -> str:
        return f"lda-v1-s{self.shrinkage:g}"

    def fit(self, x: np.ndarray, labels: Sequence[str] | np.ndarray) -> ShrinkageLDA:
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        self.lda_ = LinearDiscriminantAnalysis(solver="eigen", shrinkage=self.shrinkage).fit(
            np.asarray(x, dtype=np.float64), np.asarray(labels))
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return l2_normalize(self.lda_.transform(np.asarray(x, dtype=np.float64)))

"""Similarity scores and the error rates of thresholding them: the one definition of each.

The gallery (calibration, verification) and the evaluation (protocols, metrics) both use these, so this module
stands on NumPy alone. Conventions: a *score* is a similarity (higher means "more likely positive", e.g. same
model), and a threshold ``t`` decides **positive when** ``score >= t``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

__all__ = ["check_scores", "cosine", "eer", "l2_normalize", "roc"]

_EPS = 1e-12


def l2_normalize(x: ArrayLike, dtype: DTypeLike | None = None) -> NDArray[Any]:
    """Vectors along the last axis of ``x`` scaled to unit L2 norm (all-zero ones stay zero), as ``dtype`` (default:
    the floating type of ``x``, float64 for integers)."""
    arr = np.asarray(x)
    arr = arr.astype(dtype if dtype is not None else np.result_type(arr.dtype, np.float32), copy=False)
    norms = np.linalg.norm(arr, axis=-1, keepdims=True)
    return arr / np.maximum(norms, _EPS)


def cosine(a: ArrayLike, b: ArrayLike) -> float:
    """Cosine similarity of two vectors (float32, as embeddings are stored), clipped to ``[-1, 1]``."""
    va, vb = l2_normalize(a, np.float32).ravel(), l2_normalize(b, np.float32).ravel()
    return float(np.clip(va @ vb, -1.0, 1.0))


def check_scores(scores: ArrayLike, is_positive: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """``(scores, is_positive)`` as flat float64 and bool arrays; ``ValueError`` if they differ in length or a score
    is NaN or infinite."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(is_positive).ravel().astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"scores and is_positive differ in length ({s.size} vs {y.size})")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinite values")
    return s, y


def roc(
    scores: ArrayLike, is_positive: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """``(fpr, tpr, thresholds)`` at every distinct score, by decreasing threshold, after a first point
    ``(0, 0, +inf)`` (nothing accepted): ``sklearn.metrics.roc_curve(..., drop_intermediate=False)``.

    Both positives and negatives must be present (``ValueError`` otherwise).
    """
    s, y = check_scores(scores, is_positive)
    n_pos = int(y.sum())
    if not 0 < n_pos < y.size:
        raise ValueError("a ROC curve needs both positive and negative samples")
    order = np.argsort(s, kind="mergesort")[::-1]
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]  # the last index of each distinct score
    tps = np.cumsum(y, dtype=np.float64)[last]
    fps = 1.0 + last - tps
    tps, fps = np.r_[0.0, tps], np.r_[0.0, fps]
    return fps / fps[-1], tps / tps[-1], np.r_[np.inf, s[last]]


def eer(scores: ArrayLike, is_positive: ArrayLike) -> tuple[float, float]:
    """Equal error rate and the threshold at which it is reached: ``(eer, threshold)``.

    The ROC curve (:func:`roc`) is walked by decreasing threshold; the false-negative rate ``1 - tpr`` falls while
    the false-positive rate rises. The EER is where they cross, found by linear interpolation between the two
    neighbouring ROC points (the threshold is interpolated the same way, so ``score >= threshold`` operates at the
    EER). A perfectly separable set gives ``(0.0, lowest positive score)``. ``(nan, nan)`` when only one class is
    present.
    """
    s, y = check_scores(scores, is_positive)
    if not 0 < int(y.sum()) < y.size:
        return float("nan"), float("nan")
    fpr, tpr, thr = roc(s, y)
    diff = (1.0 - tpr) - fpr  # starts at 1 (thr = +inf), ends at -1, non-increasing
    b = int(np.argmax(diff <= 0))
    if diff[b] == 0 or b == 0:
        return float(fpr[b]), float(thr[b])
    a = b - 1
    frac = diff[a] / (diff[a] - diff[b])
    rate = fpr[a] + frac * (fpr[b] - fpr[a])
    threshold = thr[b] if not np.isfinite(thr[a]) else thr[a] + frac * (thr[b] - thr[a])
    return float(rate), float(threshold)

"""Evaluation metrics: pure functions on NumPy arrays.

Conventions used throughout:

* A *score* is a similarity: higher means "more likely positive" (same model, known model).
* A threshold ``t`` decides **positive when** ``score >= t``.
* The ROC curve and the equal error rate are defined once, in :mod:`modelprint.scores` (the gallery's calibration
  uses them too); :func:`eer` here is that function.
* Metrics that are undefined for the given input (e.g. AUC with only one class present) return ``nan``
  rather than raising, so bootstrap resamples and small datasets degrade gracefully.

scikit-learn is the reference implementation wherever it has the metric. :func:`roc_auc`, :func:`macro_f1` and
:func:`accuracy` are small NumPy re-implementations that give the same numbers (the tests check them against
``roc_auc_score``, ``f1_score`` and ``accuracy_score``) but are ~100x faster, which matters inside
:func:`bootstrap_ci`.

New scalar metrics can be added with one decorated function, and are then reported by
:func:`score_metrics` / :func:`label_metrics` (and therefore by the verification protocol)::

    @metric("tpr_at_0.1pct_fpr", kind="scores")
    def tpr_at_01pct(scores, is_positive):
        return tpr_at_fpr(scores, is_positive, fpr=0.001)

Open-set metrics take three arrays, so they have their own registry, :data:`OPEN_SET_METRICS`, reported by
:func:`open_set_metrics` (for every rejection rule of the open-set protocol).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import rankdata

from modelprint.registry import Registry
from modelprint.scores import check_scores, eer, roc

__all__ = [
    "METRICS",
    "OPEN_SET_METRICS",
    "metric",
    "score_metrics",
    "label_metrics",
    "accuracy",
    "macro_f1",
    "identification_metrics",
    "roc_curve_points",
    "roc_auc",
    "eer",
    "tpr_at_fpr",
    "accuracy_at_threshold",
    "best_threshold",
    "open_set_auroc",
    "oscr",
    "oscr_curve",
    "open_set_metrics",
    "silhouette_cosine",
    "davies_bouldin",
    "bootstrap_ci",
]

MetricKind = Literal["scores", "labels"]

METRICS: Registry[Any] = Registry("metric")
"""Scalar metrics by name. ``kind="scores"`` metrics take ``(scores, is_positive)``; ``kind="labels"`` metrics
take ``(y_true, y_pred)``. Both return a float (``nan`` when undefined)."""

OPEN_SET_METRICS: Registry[Any] = Registry("open-set metric")
"""Open-set metrics by name: each takes ``(correct_known, scores_known, scores_unknown)`` (known queries
classified correctly, and the "known" scores of known and unknown queries) and returns a float (``nan`` when
undefined)."""


def metric(name: str, kind: MetricKind) -> Callable[[Callable[..., float]], Callable[..., float]]:
    """Register a scalar metric function under ``name`` (sets ``fn.name`` and ``fn.kind``)."""
    if kind not in ("scores", "labels"):
        raise ValueError(f"metric kind must be 'scores' or 'labels', not {kind!r}")

    def decorate(fn: Callable[..., float]) -> Callable[..., float]:
        fn.kind = kind  # type: ignore[attr-defined]
        METRICS.register(name)(fn)  # type: ignore[arg-type]
        return fn

    return decorate


def score_metrics(scores: ArrayLike, is_positive: ArrayLike) -> dict[str, float]:
    """Every registered ``kind="scores"`` metric evaluated on ``(scores, is_positive)``."""
    out = {}
    for name in METRICS.names():
        fn = METRICS.get(name)
        if getattr(fn, "kind", None) == "scores":
            out[name] = float(fn(scores, is_positive))
    return out


def label_metrics(y_true: ArrayLike, y_pred: ArrayLike) -> dict[str, float]:
    """Every registered ``kind="labels"`` metric evaluated on ``(y_true, y_pred)``."""
    out = {}
    for name in METRICS.names():
        fn = METRICS.get(name)
        if getattr(fn, "kind", None) == "labels":
            out[name] = float(fn(y_true, y_pred))
    return out


def open_set_metrics(correct_known: ArrayLike, scores_known: ArrayLike, scores_unknown: ArrayLike) -> dict[str, float]:
    """Every :data:`OPEN_SET_METRICS` entry evaluated on ``(correct_known, scores_known, scores_unknown)``."""
    return {name: float(OPEN_SET_METRICS.get(name)(correct_known, scores_known, scores_unknown))
            for name in OPEN_SET_METRICS.names()}


# --------------------------------------------------------------------------------------------------- helpers


def _both_classes(y: NDArray[np.bool_]) -> bool:
    n_pos = int(y.sum())
    return 0 < n_pos < y.size


# ------------------------------------------------------------------------------------------- identification


@metric("accuracy", kind="labels")
def accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Fraction of exact matches (``nan`` for empty input); equals ``sklearn.metrics.accuracy_score``."""
    t, p = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length ({t.size} vs {p.size})")
    return float(np.mean(t == p)) if t.size else float("nan")


def macro_f1(y_true: ArrayLike, y_pred: ArrayLike, labels: Sequence[Any] | None = None) -> float:
    """Unweighted mean over ``labels`` of per-class F1 = 2TP / (2TP + FP + FN), 0 where that is 0/0.

    Equals ``sklearn.metrics.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)``.
    Without ``labels``, the classes are the union of ``y_true`` and ``y_pred``.
    """
    t, p = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length ({t.size} vs {p.size})")
    classes = np.unique(np.concatenate([t, p])) if labels is None else np.asarray(list(labels))
    if classes.size == 0:
        return float("nan")
    cm = _confusion(t, p, classes)
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(axis=0) + cm.sum(axis=1)  # = 2TP + FP + FN
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1.mean())


@metric("macro_f1", kind="labels")
def _macro_f1_metric(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    return macro_f1(y_true, y_pred)


def _confusion(t: NDArray[Any], p: NDArray[Any], classes: NDArray[Any]) -> NDArray[np.int64]:
    """Confusion counts (rows = true, columns = predicted) in ``classes`` order; other values are ignored."""
    k = classes.size
    order = np.argsort(classes, kind="stable")
    sorted_classes = classes[order]

    def codes(v: NDArray[Any]) -> NDArray[np.int64]:
        pos = np.clip(np.searchsorted(sorted_classes, v), 0, k - 1)
        found = sorted_classes[pos] == v
        return np.where(found, order[pos], -1)

    ct, cp = codes(t), codes(p)
    keep = (ct >= 0) & (cp >= 0)
    return np.bincount(ct[keep] * k + cp[keep], minlength=k * k).reshape(k, k)


def identification_metrics(y_true: ArrayLike, y_pred: ArrayLike, labels: Sequence[Any]) -> dict[str, Any]:
    """Closed-set identification metrics (computed with scikit-learn).

    Returns ``accuracy``, ``macro_f1`` (over ``labels``, ``zero_division=0``), ``confusion_matrix`` (list of
    lists of ints, rows = true class, columns = predicted, both in ``labels`` order), ``per_class_accuracy``
    (recall of each class, ``None`` for a class with no samples), ``labels`` and ``n``.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    t, p = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    labels = list(labels)
    if t.size == 0:
        raise ValueError("identification_metrics needs at least one sample")
    cm = confusion_matrix(t, p, labels=labels)
    support = cm.sum(axis=1)
    per_class = [float(cm[i, i] / support[i]) if support[i] else None for i in range(len(labels))]
    return {
        "accuracy": float(accuracy_score(t, p)),
        "macro_f1": float(f1_score(t, p, labels=labels, average="macro", zero_division=0)),
        "confusion_matrix": cm.astype(int).tolist(),
        "per_class_accuracy": dict(zip([str(x) for x in labels], per_class, strict=True)),
        "labels": [str(x) for x in labels],
        "n": int(t.size),
    }


# ------------------------------------------------------------------------------------------------ ROC family


def roc_curve_points(
    scores: ArrayLike, is_positive: ArrayLike, max_points: int | None = None
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """``(fpr, tpr, thresholds)`` of the ROC curve (``sklearn.metrics.roc_curve``, intermediate points dropped).

    ``thresholds[0]`` is ``+inf`` (nothing accepted). With ``max_points``, the curve is thinned to at most that
    many points by keeping evenly spaced indices (always including both end points); thinning a monotone
    polyline this way keeps its shape for plotting. Both classes must be present.
    """
    from sklearn.metrics import roc_curve

    s, y = check_scores(scores, is_positive)
    if not _both_classes(y):
        raise ValueError("a ROC curve needs both positive and negative samples")
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=True)
    if max_points is not None and fpr.size > max_points:
        if max_points < 2:
            raise ValueError("max_points must be at least 2")
        idx = np.unique(np.round(np.linspace(0, fpr.size - 1, max_points)).astype(int))
        fpr, tpr, thr = fpr[idx], tpr[idx], thr[idx]
    return fpr.astype(np.float64), tpr.astype(np.float64), thr.astype(np.float64)


@metric("auc", kind="scores")
def roc_auc(scores: ArrayLike, is_positive: ArrayLike) -> float:
    """Area under the ROC curve = P(score of a random positive > random negative) + ½ P(tie).

    Computed from average ranks (Mann–Whitney U), which equals ``sklearn.metrics.roc_auc_score`` including
    ties; ``nan`` when only one class is present.
    """
    s, y = check_scores(scores, is_positive)
    if not _both_classes(y):
        return float("nan")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    ranks = rankdata(s)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


@metric("eer", kind="scores")
def _eer_metric(scores: ArrayLike, is_positive: ArrayLike) -> float:
    return eer(scores, is_positive)[0]


def tpr_at_fpr(scores: ArrayLike, is_positive: ArrayLike, fpr: float = 0.01) -> float:
    """Highest true-positive rate among operating points whose false-positive rate is ``<= fpr``.

    Conservative (no interpolation between ROC points): it is the TPR of a real threshold that meets the FPR
    budget. ``nan`` when only one class is present.
    """
    if not 0.0 <= fpr <= 1.0:
        raise ValueError(f"fpr must be in [0, 1], got {fpr}")
    s, y = check_scores(scores, is_positive)
    if not _both_classes(y):
        return float("nan")
    f, t, _ = roc(s, y)
    return float(t[f <= fpr + 1e-12].max())


@metric("tpr_at_1pct_fpr", kind="scores")
def _tpr_at_1pct_fpr(scores: ArrayLike, is_positive: ArrayLike) -> float:
    return tpr_at_fpr(scores, is_positive, 0.01)


def accuracy_at_threshold(scores: ArrayLike, is_positive: ArrayLike, threshold: float) -> float:
    """Fraction of samples decided correctly by ``score >= threshold`` (``nan`` for empty input)."""
    s, y = check_scores(scores, is_positive)
    return float(np.mean((s >= threshold) == y)) if s.size else float("nan")


def best_threshold(
    scores: ArrayLike, is_positive: ArrayLike, rule: Literal["accuracy", "eer"] = "accuracy"
) -> float:
    """A decision threshold (decide positive when ``score >= threshold``) chosen on these samples.

    ``rule="accuracy"``: every distinct cut of the sorted scores is tried (candidates are the midpoints between
    consecutive distinct scores, plus "accept all" = the lowest score and "reject all" = just above the highest);
    the candidate with the highest accuracy wins, ties going to the lowest threshold.
    ``rule="eer"``: the threshold of :func:`eer`.

    Only the samples passed in are used — pass validation samples, never test samples.
    """
    s, y = check_scores(scores, is_positive)
    if s.size == 0:
        raise ValueError("best_threshold needs at least one sample")
    if rule == "eer":
        if not _both_classes(y):
            raise ValueError("the EER threshold needs both positive and negative samples")
        return eer(s, y)[1]
    if rule != "accuracy":
        raise ValueError(f"rule must be 'accuracy' or 'eer', not {rule!r}")
    values, inverse = np.unique(s, return_inverse=True)
    pos_at = np.bincount(inverse, weights=y.astype(np.float64), minlength=values.size)
    neg_at = np.bincount(inverse, weights=(~y).astype(np.float64), minlength=values.size)
    # Candidate k (0..K) accepts values[k:]: correct = positives at >= k + negatives at < k.
    pos_ge = np.concatenate([np.cumsum(pos_at[::-1])[::-1], [0.0]])
    neg_lt = np.concatenate([[0.0], np.cumsum(neg_at)])
    k = int(np.argmax(pos_ge + neg_lt))
    if k == 0:
        return float(values[0])
    if k == values.size:
        return float(np.nextafter(values[-1], np.inf))
    mid = 0.5 * (values[k - 1] + values[k])
    return float(mid if values[k - 1] < mid <= values[k] else values[k])


# ------------------------------------------------------------------------------------------------- open set


def open_set_auroc(max_scores_known: ArrayLike, max_scores_unknown: ArrayLike) -> float:
    """AUROC of separating known-class samples (positive) from unknown-class samples by their max score."""
    k = np.asarray(max_scores_known, dtype=np.float64).ravel()
    u = np.asarray(max_scores_unknown, dtype=np.float64).ravel()
    return roc_auc(np.concatenate([k, u]), np.concatenate([np.ones(k.size, bool), np.zeros(u.size, bool)]))


@OPEN_SET_METRICS.register("open_set_auroc")
def _open_set_auroc_metric(correct_known: ArrayLike, scores_known: ArrayLike, scores_unknown: ArrayLike) -> float:
    """:func:`open_set_auroc` of the known and unknown queries' scores (``correct_known`` is not used)."""
    return open_set_auroc(scores_known, scores_unknown)


def oscr_curve(
    correct_known: ArrayLike, scores_known: ArrayLike, scores_unknown: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``(fpr, ccr)`` points of the Open-Set Classification Rate curve (Dhamija et al., NeurIPS 2018).

    For a threshold ``t``: ``ccr(t)`` = fraction of *all* known samples that are classified correctly and have
    ``score >= t``; ``fpr(t)`` = fraction of unknown samples with ``score >= t``. Thresholds sweep all distinct
    scores from high to low, so the curve runs from ``(0, 0)`` to ``(1, closed-set accuracy)``; samples with
    equal scores move together (a diagonal step).
    """
    c = np.asarray(correct_known).ravel().astype(bool)
    sk = np.asarray(scores_known, dtype=np.float64).ravel()
    su = np.asarray(scores_unknown, dtype=np.float64).ravel()
    if c.shape != sk.shape:
        raise ValueError(f"correct_known and scores_known differ in length ({c.size} vs {sk.size})")
    if sk.size == 0 or su.size == 0:
        raise ValueError("OSCR needs at least one known and one unknown sample")
    if not (np.all(np.isfinite(sk)) and np.all(np.isfinite(su))):
        raise ValueError("scores contain NaN or infinite values")
    values, inverse = np.unique(np.concatenate([sk, su]), return_inverse=True)
    inv_k, inv_u = inverse[: sk.size], inverse[sk.size :]
    correct_at = np.bincount(inv_k, weights=c.astype(np.float64), minlength=values.size)
    unknown_at = np.bincount(inv_u, minlength=values.size).astype(np.float64)
    # From the highest value down: cumulative counts of samples accepted.
    ccr = np.concatenate([[0.0], np.cumsum(correct_at[::-1]) / sk.size])
    fpr = np.concatenate([[0.0], np.cumsum(unknown_at[::-1]) / su.size])
    return fpr, ccr


@OPEN_SET_METRICS.register("oscr")
def oscr(correct_known: ArrayLike, scores_known: ArrayLike, scores_unknown: ArrayLike) -> float:
    """Open-Set Classification Rate: area under :func:`oscr_curve` (trapezoidal rule), in [0, 1].

    It is bounded by the closed-set accuracy on the known samples, and equals :func:`open_set_auroc` when every
    known sample is classified correctly. ``nan`` when there are no known or no unknown samples.
    """
    if np.asarray(scores_known).size == 0 or np.asarray(scores_unknown).size == 0:
        return float("nan")
    fpr, ccr = oscr_curve(correct_known, scores_known, scores_unknown)
    return float(np.sum(np.diff(fpr) * (ccr[1:] + ccr[:-1]) / 2.0))


# ----------------------------------------------------------------------------------------------- clustering


def _clusterable(x: NDArray[Any], labels: NDArray[Any]) -> bool:
    n_labels = np.unique(labels).size
    return 2 <= n_labels <= x.shape[0] - 1


def silhouette_cosine(
    embeddings: ArrayLike, labels: ArrayLike, *, sample_size: int | None = 5000, seed: int = 0
) -> float:
    """Mean silhouette coefficient with cosine distance (``sklearn.metrics.silhouette_score``), in [-1, 1].

    Above ``sample_size`` samples a random subset of that size (chosen by ``seed``) is used, since the cost is
    quadratic. ``nan`` unless 2 <= number of labels <= n - 1.
    """
    from sklearn.metrics import silhouette_score

    x = np.asarray(embeddings, dtype=np.float64)
    y = np.asarray(labels).ravel()
    if x.ndim != 2 or x.shape[0] != y.size:
        raise ValueError("embeddings must be (n, d) with one label per row")
    if sample_size is not None and x.shape[0] > sample_size:
        idx = np.sort(np.random.default_rng(seed).choice(x.shape[0], sample_size, replace=False))
        x, y = x[idx], y[idx]
    if not _clusterable(x, y):
        return float("nan")
    return float(silhouette_score(x, y, metric="cosine"))


def davies_bouldin(embeddings: ArrayLike, labels: ArrayLike) -> float:
    """Davies–Bouldin index (``sklearn.metrics.davies_bouldin_score``, Euclidean); lower is better, >= 0.

    Pass L2-normalised embeddings to make it consistent with cosine similarity. ``nan`` unless
    2 <= number of labels <= n - 1.
    """
    from sklearn.metrics import davies_bouldin_score

    x = np.asarray(embeddings, dtype=np.float64)
    y = np.asarray(labels).ravel()
    if x.ndim != 2 or x.shape[0] != y.size:
        raise ValueError("embeddings must be (n, d) with one label per row")
    if not _clusterable(x, y):
        return float("nan")
    return float(davies_bouldin_score(x, y))


# ------------------------------------------------------------------------------------------------ bootstrap


def bootstrap_ci(
    statistic_fn: Callable[..., float],
    *arrays: ArrayLike,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    strata: ArrayLike | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap ``(1 - alpha)`` confidence interval of ``statistic_fn(*arrays)``.

    Rows (samples — for pair metrics, pairs) are resampled with replacement, the same rows from every array.
    With ``strata`` (one value per row), rows are resampled within each stratum, so every resample keeps the
    stratum sizes (e.g. the number of positive and negative pairs, or of queries per class). Resamples on which
    the statistic is not finite are skipped; ``(nan, nan)`` if none is finite or ``n_boot == 0``.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one array")
    arrs = [np.asarray(a) for a in arrays]
    n = arrs[0].shape[0] if arrs[0].ndim else 0
    if any(a.ndim == 0 or a.shape[0] != n for a in arrs):
        raise ValueError("all arrays must have the same number of rows")
    if n == 0 or n_boot == 0:
        return float("nan"), float("nan")
    if strata is None:
        order, start, size = np.arange(n), np.zeros(n, np.int64), np.full(n, n, np.int64)
    else:
        st = np.asarray(strata).ravel()
        if st.size != n:
            raise ValueError("strata must have one value per row")
        _, codes = np.unique(st, return_inverse=True)
        order = np.argsort(codes, kind="stable")  # rows grouped by stratum
        counts = np.bincount(codes)
        size = np.repeat(counts, counts)  # for each position in `order`: its stratum's size ...
        start = np.repeat(np.cumsum(counts) - counts, counts)  # ... and where that stratum starts
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot)
    for b in range(n_boot):
        idx = order[start + rng.integers(0, size)]
        stats[b] = statistic_fn(*(a[idx] for a in arrs))
    stats = stats[np.isfinite(stats)]
    if stats.size == 0:
        return float("nan"), float("nan")
    low, high = np.quantile(stats, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)

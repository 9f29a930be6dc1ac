"""Calibration of a gallery's thresholds from its own embeddings: prototypes, pair scores, the two thresholds.

Pure NumPy on L2-normalised embeddings grouped by model (``x[starts[m]:starts[m] + counts[m]]`` are model ``m``'s);
the store (:mod:`modelprint.gallery.store`) calls :func:`calibrate` in the transaction of every write, and
evaluation calls it to report the open-set operating point ``modelprint identify`` would use.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from modelprint.errors import GalleryError
from modelprint.scores import eer, l2_normalize

DEFAULT_TARGET_TPR = 0.95
MAX_PAIRS = 100_000
"""At most this many same-model (and as many different-model) pairs feed the verification threshold."""
CHUNK = 8192
"""Rows scored at a time, to bound memory."""


def _rowdot(x: np.ndarray, ii: np.ndarray, jj: np.ndarray) -> np.ndarray:
    out = np.empty(len(ii), dtype=np.float64)
    for s in range(0, len(ii), CHUNK):
        out[s : s + CHUNK] = np.einsum("ij,ij->i", x[ii[s : s + CHUNK]], x[jj[s : s + CHUNK]])
    return out


def _pair_scores(
    x: np.ndarray, starts: np.ndarray, counts: np.ndarray, max_pairs: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Cosine scores of same-model and different-model pairs of the (normalised, grouped) rows of ``x``.

    Exhaustive when a kind has at most ``max_pairs`` pairs, otherwise ``max_pairs`` pairs drawn uniformly
    (with replacement) from that kind with ``rng``. Returns ``(same, diff, sampled)``.
    """
    n = len(x)
    same_total = int(np.sum(counts * (counts - 1) // 2))
    diff_total = n * (n - 1) // 2 - same_total
    sampled = False
    if same_total <= max_pairs:
        parts = []
        for s, c in zip(starts, counts, strict=True):
            if c >= 2:
                g = x[s : s + c]
                parts.append((g @ g.T)[np.triu_indices(c, 1)])
        same = np.concatenate(parts).astype(np.float64) if parts else np.empty(0)
    else:
        sampled = True
        w = (counts * (counts - 1)).astype(np.float64)
        g = rng.choice(len(counts), size=max_pairs, p=w / w.sum())
        i = rng.integers(0, counts[g])
        j = rng.integers(0, counts[g] - 1)
        j = j + (j >= i)
        same = _rowdot(x, starts[g] + i, starts[g] + j)
    if diff_total <= max_pairs:
        parts = []
        for s, c in zip(starts, counts, strict=True):
            if s + c < n:  # rows are grouped by model, so every later row belongs to another model
                parts.append((x[s : s + c] @ x[s + c :].T).ravel())
        diff = np.concatenate(parts).astype(np.float64) if parts else np.empty(0)
    else:
        sampled = True
        w = (counts * (n - counts)).astype(np.float64)
        g = rng.choice(len(counts), size=max_pairs, p=w / w.sum())
        i = starts[g] + rng.integers(0, counts[g])
        r = rng.integers(0, n - counts[g])
        j = np.where(r < starts[g], r, r + counts[g])
        diff = _rowdot(x, i, j)
    return same, diff, sampled


def group_stats(x: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-model sums (float64) and prototypes (normalised sums, float32) of normalised grouped rows."""
    sums = np.add.reduceat(x, starts, axis=0, dtype=np.float64)
    return sums, l2_normalize(sums).astype(np.float32)


def accept_threshold(genuine: np.ndarray, target_tpr: float) -> tuple[float, int]:
    """The largest ``t`` with ``mean(genuine >= t) >= target_tpr``, and ``k``: ``t`` is the ``k``-th smallest
    genuine score (0-based), ``k = floor(n * (1 - target_tpr))``."""
    g = np.sort(np.asarray(genuine, dtype=np.float64))
    k = min(int(math.floor(len(g) * (1.0 - target_tpr) + 1e-9)), len(g) - 1)
    return float(g[k]), k


def calibrate(
    x: np.ndarray,
    starts: np.ndarray,
    counts: np.ndarray,
    target_tpr: float = DEFAULT_TARGET_TPR,
    max_pairs: int = MAX_PAIRS,
    seed: int = 0,
) -> dict[str, Any] | None:
    """Thresholds for L2-normalised embeddings ``x`` grouped by model (``x[starts[m]:starts[m]+counts[m]]``).

    Needs at least 2 models and at least one model with 2 embeddings; returns ``None`` otherwise.

    * Genuine scores (leave-one-out): each embedding of a model with ≥2 embeddings against its own model's
      prototype recomputed without it. Impostor scores: each embedding against the best prototype of
      another model.
    * ``unknown_threshold`` is the largest ``t`` with ``mean(genuine >= t) >= target_tpr``, i.e. the
      ``k = floor(n_genuine * (1 - target_tpr))``-th smallest genuine score (the (1 - target_tpr) quantile).
    * ``verify_threshold`` is the equal-error-rate threshold (:func:`modelprint.scores.eer`) between same-model
      and different-model pairs of enrolled embeddings (all pairs, or ``max_pairs`` pairs of each kind drawn with
      ``default_rng(seed)``).
    """
    counts = np.asarray(counts, dtype=np.int64)
    starts = np.asarray(starts, dtype=np.int64)
    if len(counts) < 2 or counts.max(initial=0) < 2:
        return None
    if not 0.0 < target_tpr <= 1.0:
        raise GalleryError(f"target_tpr must be in (0, 1], got {target_tpr}")
    sums, protos = group_stats(x, starts, counts)

    genuine_parts = []
    for m, (s, c) in enumerate(zip(starts, counts, strict=True)):
        if c < 2:
            continue
        xg = x[s : s + c].astype(np.float64)
        dots = xg @ sums[m]  # x . S
        xsq = np.sum(xg * xg, axis=1)  # |x|^2 (= 1 up to rounding)
        loo_norm_sq = float(sums[m] @ sums[m]) - 2.0 * dots + xsq  # |S - x|^2
        ok = loo_norm_sq > 1e-12
        genuine_parts.append((dots[ok] - xsq[ok]) / np.sqrt(loo_norm_sq[ok]))  # x . (S - x) / |S - x|
    genuine = np.clip(np.concatenate(genuine_parts), -1.0, 1.0)
    if not len(genuine):
        return None

    labels = np.repeat(np.arange(len(counts)), counts)
    impostor = np.empty(len(x), dtype=np.float64)
    for s in range(0, len(x), CHUNK):
        sc = x[s : s + CHUNK] @ protos.T
        sc[np.arange(len(sc)), labels[s : s + CHUNK]] = -np.inf
        impostor[s : s + CHUNK] = sc.max(axis=1)
    impostor = np.clip(impostor, -1.0, 1.0)

    g = np.sort(genuine)
    unknown_t, k = accept_threshold(g, target_tpr)

    same, diff, sampled = _pair_scores(x, starts, counts, max_pairs, np.random.default_rng(seed))
    equal_error, verify_t = eer(np.concatenate([same, diff]), np.arange(len(same) + len(diff)) < len(same))
    how = f"sampled {max_pairs} of each kind with default_rng({seed})" if sampled else "all pairs"
    rule = (
        f"unknown: largest t accepting >= {target_tpr:g} of {len(g)} leave-one-out genuine scores "
        f"(embedding vs own model's prototype without it; {k}-th smallest, 0-based); "
        f"verify: equal-error-rate threshold (ROC crossing of false-accept and false-reject rates, interpolated) "
        f"between {len(same)} same-model and {len(diff)} different-model pairs of enrolled embeddings ({how}); "
        "cosine similarity, accept if score >= t"
    )
    return {
        "unknown_threshold": unknown_t,
        "verify_threshold": verify_t,
        "target_tpr": float(target_tpr),
        "rule": rule,
        "n_models": int(len(counts)),
        "n_embeddings": int(len(x)),
        "n_genuine": int(len(g)),
        "n_impostor": int(len(impostor)),
        "n_same_pairs": int(len(same)),
        "n_diff_pairs": int(len(diff)),
        "genuine_accept_rate": float(np.mean(genuine >= unknown_t)),
        "impostor_reject_rate": float(np.mean(impostor < unknown_t)),
        "eer": equal_error,
    }

"""Rejection rules for open-set identification: how "known" a query looks, given the enrolled (support) embeddings.

A rule is fit on the support embeddings of the enrolled models (:meth:`~RejectionRule.fit`), then scores queries
from their cosine similarities to the prototypes and their embeddings (:meth:`~RejectionRule.score`): higher
means "more likely one of the enrolled models"; the predicted model is always the most similar prototype. The
open-set protocol (:func:`modelprint.evaluation.evaluate_open_set`) reports AUROC and OSCR for every rule.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
from numpy.typing import NDArray

from modelprint.evaluation import metrics as M
from modelprint.evaluation.results import OpenSetResult, SupportSplit, num
from modelprint.gallery import calibrate
from modelprint.registry import Parametrised, Registry
from modelprint.scores import l2_normalize

REJECTION_RULES: Registry[RejectionRule] = Registry("rejection rule")


class RejectionRule(Parametrised, ABC):
    """Scores queries by how much they look like an enrolled model (see the module docstring)."""

    name: str = "base"

    def fit(self, support: np.ndarray, codes: np.ndarray) -> RejectionRule:
        """Fit on normalised support embeddings ``(n, d)`` and their model codes ``0 … k−1``; returns ``self``."""
        self.support_, self.codes_ = np.asarray(support, dtype=np.float64), np.asarray(codes)
        self.prototypes_ = l2_normalize(np.stack([self.support_[self.codes_ == c].mean(0)
                                                  for c in range(int(self.codes_.max()) + 1)]))
        return self

    @abstractmethod
    def score(self, sims: np.ndarray, x: np.ndarray) -> np.ndarray:
        """``(n,)`` scores of queries with cosine ``sims`` ``(n, k)`` to the prototypes and embeddings ``x``."""


@REJECTION_RULES.register("max_cosine")
class MaxCosine(RejectionRule):
    """Cosine similarity to the most similar prototype (what ``modelprint identify`` thresholds)."""

    def score(self, sims: np.ndarray, x: np.ndarray) -> np.ndarray:
        return sims.max(axis=1)


@REJECTION_RULES.register("margin")
class Margin(RejectionRule):
    """Best minus second-best prototype similarity: an unknown model tends to look alike several known ones."""

    def score(self, sims: np.ndarray, x: np.ndarray) -> np.ndarray:
        top = np.sort(sims, axis=1)
        return top[:, -1] - top[:, -2]


@REJECTION_RULES.register("calibrated")
class Calibrated(RejectionRule):
    """Per-model score calibration: the best prototype similarity as a z-score of that model's leave-one-out
    genuine scores (support image vs its prototype without it); each model's spread is shrunk towards the
    pooled one with ``prior`` pseudo-images, since a model has only a few support images."""

    def __init__(self, prior: float = 5.0) -> None:
        self.prior = prior

    def fit(self, support: np.ndarray, codes: np.ndarray) -> Calibrated:
        super().fit(support, codes)
        k = len(self.prototypes_)
        genuine = [[] for _ in range(k)]
        for c in range(k):
            rows = self.support_[self.codes_ == c]
            total = rows.sum(0)
            for r in rows:
                rest = total - r
                n = np.linalg.norm(rest)
                if n > 1e-12:
                    genuine[c].append(float(r @ rest / n))
        pooled = np.concatenate([np.asarray(g) - np.mean(g) for g in genuine if len(g) > 1] or [np.zeros(2)])
        sd_pool = max(float(np.sqrt(np.mean(pooled**2))), 1e-6)
        self.mu_ = np.array([np.mean(g) if g else 1.0 for g in genuine])
        var = np.array([np.var(g) if len(g) > 1 else 0.0 for g in genuine])
        n = np.array([len(g) for g in genuine], dtype=np.float64)
        self.sd_ = np.sqrt((n * var + self.prior * sd_pool**2) / (n + self.prior))
        return self

    def score(self, sims: np.ndarray, x: np.ndarray) -> np.ndarray:
        best = sims.argmax(axis=1)
        return (sims[np.arange(len(sims)), best] - self.mu_[best]) / self.sd_[best]


@REJECTION_RULES.register("znorm")
class ZNorm(RejectionRule):
    """Per-model impostor normalisation (Z-norm): the best similarity as a z-score of the similarities of the
    *other* models' support images to that model's prototype (how high an impostor scores there)."""

    def fit(self, support: np.ndarray, codes: np.ndarray) -> ZNorm:
        super().fit(support, codes)
        sims = self.support_ @ self.prototypes_.T
        impostor = [sims[self.codes_ != c, c] for c in range(len(self.prototypes_))]
        self.mu_ = np.array([i.mean() for i in impostor])
        self.sd_ = np.array([max(float(i.std()), 1e-6) for i in impostor])
        return self

    def score(self, sims: np.ndarray, x: np.ndarray) -> np.ndarray:
        z = (sims - self.mu_) / self.sd_
        return z.max(axis=1)


@REJECTION_RULES.register("tnorm")
class TNorm(RejectionRule):
    """Query normalisation (T-norm): the best similarity as a z-score of the query's similarities to the other
    prototypes, so a query that resembles every model a little scores low."""

    def score(self, sims: np.ndarray, x: np.ndarray) -> np.ndarray:
        top = np.sort(sims, axis=1)
        rest = top[:, :-1]
        return (top[:, -1] - rest.mean(axis=1)) / np.maximum(rest.std(axis=1), 1e-6)


@REJECTION_RULES.register("knn")
class NearestEnrolled(RejectionRule):
    """Density of the enrolled images: mean cosine similarity to the ``k`` most similar support images."""

    def __init__(self, k: int = 1) -> None:
        self.k = k

    def score(self, sims: np.ndarray, x: np.ndarray) -> np.ndarray:
        s = np.asarray(x, dtype=np.float64) @ self.support_.T
        k = min(self.k, s.shape[1])
        return np.sort(s, axis=1)[:, -k:].mean(axis=1)


def evaluate_open_set(
    x: NDArray[np.float64], split: SupportSplit, *, open_set_fraction: float, seed: np.random.SeedSequence,
    xq: NDArray[np.float64] | None = None,
) -> OpenSetResult:
    """Known-vs-unknown detection with ``open_set_fraction`` of the classes held out as unknown (their images
    scored with their rows of ``xq``, default ``x``), the operating point of ``modelprint identify`` (the
    gallery's "unknown" threshold calibrated on the known support images), and every rejection rule's metrics."""
    xq = x if xq is None else xq
    k = len(split.classes)
    if k < 3:
        return OpenSetResult(skipped=f"open-set evaluation needs at least 3 models, got {k}")
    n_unknown = min(max(1, int(round(open_set_fraction * k))), k - 2)
    unknown = np.sort(np.random.default_rng(seed).choice(k, size=n_unknown, replace=False))
    known = np.setdiff1d(np.arange(k), unknown)
    is_known_query = np.isin(split.query_classes, known)
    known_scores_all = split.query_scores[is_known_query][:, known]
    known_true = split.query_classes[is_known_query]
    known_pred = known[np.argmax(known_scores_all, axis=1)]
    known_max = known_scores_all.max(axis=1)
    unknown_rows = np.flatnonzero(np.isin(split.codes, unknown))  # all their images: none was used for anything
    unknown_sims = xq[unknown_rows] @ split.prototypes[known].T
    unknown_max = unknown_sims.max(axis=1)
    correct = known_pred == known_true
    enrolled = [split.support_rows[c] for c in known]
    support_codes = np.repeat(np.arange(len(known)), [len(r) for r in enrolled])
    known_x = xq[split.queries[is_known_query]]
    rules = {}
    for name in REJECTION_RULES.names():
        rule = REJECTION_RULES.create(name).fit(x[np.concatenate(enrolled)], support_codes)
        rules[name] = {k: num(v) for k, v in M.open_set_metrics(
            correct, rule.score(known_scores_all, known_x), rule.score(unknown_sims, xq[unknown_rows])).items()}
    calib = calibrate(x[np.concatenate(enrolled)], np.cumsum([0] + [len(r) for r in enrolled[:-1]]),
                      np.array([len(r) for r in enrolled]))
    t = None if calib is None else calib["unknown_threshold"]
    return OpenSetResult(
        auroc=num(M.open_set_auroc(known_max, unknown_max)),
        oscr=num(M.oscr(correct, known_max, unknown_max)),
        closed_set_accuracy=num(correct.mean()),
        known_classes=[split.classes[c] for c in known],
        unknown_classes=[split.classes[c] for c in unknown],
        n_known=int(known_max.size),
        n_unknown=int(unknown_max.size),
        unknown_threshold=num(t),
        threshold_rule=(calib["rule"] if calib is not None else
                        "none: calibration needs at least 2 support images per model; identify never answers "
                        "unknown without a threshold"),
        known_accepted=None if t is None else num(np.mean(known_max >= t)),
        known_correct=None if t is None else num(np.mean(correct & (known_max >= t))),
        unknown_rejected=None if t is None else num(np.mean(unknown_max < t)),
        rules=rules,
    )

"""Does a fingerprint carry the model or the content? Measurements on fingerprints labelled ``(model, content)``.

Every function takes fingerprints ``X`` ``(n, d)`` with a model label and a content id per row (a
:class:`~modelprint.causal.pairs.PairSet` gives a full grid) and returns a plain dict that dumps to JSON:

- :func:`distances`: mean cosine distance between fingerprints of one model over different contents, and of one
  content over different models, and their ratio (< 1: a model's images are closer to each other across contents
  than one content is to itself across models, which is what a fingerprint should do);
- :func:`content_leakage`: how well a fresh logistic regression reads the content id from the fingerprint.
  Design: leave one model out; the classifier trains on every other model's images and predicts the content of
  the held-out model's images, so every test content was seen in training, but only as drawn by other models.
  Chance is ``1 / contents``;
- :func:`identification`: model accuracy (logistic regression, and nearest model prototype as the gallery does)
  under grouped cross-validation by content, so no test content was seen in training; chance ``1 / models``. It
  shows a decoupler that drops everything, model identity included;
- :func:`decoupling_study`: contents split in two, a decoupler fitted on one part only, and the three measurements
  before and after decoupling on the other part.

Intervals are 95% percentile bootstraps that resample *contents* (a content's images stay together), since images
of one content are not independent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from modelprint.causal.decoupler import CausalDecoupler
from modelprint.errors import ModelprintError

__all__ = ["content_leakage", "decoupling_study", "distances", "identification", "invariance_report",
           "split_contents"]


def _check(X: np.ndarray, models: np.ndarray, contents: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # noqa: N803
    X = np.asarray(X, dtype=np.float64)  # noqa: N806
    models, contents = np.asarray(models).astype(str), np.asarray(contents)
    if X.ndim != 2 or not len(X) == len(models) == len(contents) or not np.isfinite(X).all():
        raise ModelprintError(f"invariance: need finite fingerprints (n, d) with n model and content labels, got "
                              f"{X.shape}, {len(models)}, {len(contents)}")
    if len(np.unique(models)) < 2 or len(np.unique(contents)) < 2:
        raise ModelprintError("invariance: need at least 2 models and 2 contents")
    return X, models, contents


def _unit(X: np.ndarray) -> np.ndarray:  # noqa: N803
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def _by_content(stat: Callable[[np.ndarray], float], contents: np.ndarray, n_boot: int, seed: int) -> list[float]:
    """95% bootstrap interval of ``stat(rows)`` resampling contents with replacement."""
    uniq = np.unique(contents)
    rows = [np.flatnonzero(contents == c) for c in uniq]
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        value = stat(np.concatenate([rows[i] for i in rng.integers(0, len(uniq), len(uniq))]))
        if np.isfinite(value):
            draws.append(value)
    return [float(v) for v in np.percentile(draws, [2.5, 97.5])] if draws else [float("nan")] * 2


def _summary(values: np.ndarray, contents: np.ndarray, n_boot: int, seed: int) -> dict[str, Any]:
    """Mean of per-row ``values`` (nan rows left out) with its content-bootstrap interval."""
    def mean(idx: np.ndarray) -> float:
        v = values[idx]
        v = v[np.isfinite(v)]
        return float(v.mean()) if v.size else float("nan")

    return {"mean": mean(np.arange(len(values))), "ci95": _by_content(mean, contents, n_boot, seed)}


def distances(X: np.ndarray, models: np.ndarray, contents: np.ndarray, *, n_boot: int = 1000,  # noqa: N803
              seed: int = 0) -> dict[str, Any]:
    """Cosine distances: fixed model / varied content vs fixed content / varied model, and their ratio."""
    X, models, contents = _check(X, models, contents)  # noqa: N806
    z = _unit(X)
    d = 1.0 - z @ z.T
    same_m, same_c = models[:, None] == models[None], contents[:, None] == contents[None]
    masks = {"fixed_model_varied_content": same_m & ~same_c, "fixed_content_varied_model": same_c & ~same_m}
    per_row = {k: np.array([d[i, m[i]].mean() if m[i].any() else np.nan for i in range(len(d))])
               for k, m in masks.items()}
    a, b = per_row.values()

    def ratio(idx: np.ndarray) -> float:
        return float(np.nanmean(a[idx]) / np.nanmean(b[idx]))

    out: dict[str, Any] = {k: {**_summary(v, contents, n_boot, seed), "pairs": int(masks[k].sum() // 2)}
                           for k, v in per_row.items()}
    out["ratio"] = {"mean": ratio(np.arange(len(d))), "ci95": _by_content(ratio, contents, n_boot, seed)}
    out["reading"] = ("ratio = fixed-model distance / fixed-content distance; below 1 the fingerprint follows the "
                      "model more than the content")
    return out


def _logreg(seed: int) -> Any:
    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=3000, random_state=seed))


def content_leakage(X: np.ndarray, models: np.ndarray, contents: np.ndarray, *, n_boot: int = 1000,  # noqa: N803
                    seed: int = 0) -> dict[str, Any]:
    """Content read by logistic regression trained on the other models' images (leave one model out)."""
    X, models, contents = _check(X, models, contents)  # noqa: N806
    hits = np.full(len(X), np.nan)
    per_model = {}
    for m in np.unique(models):
        test, train = models == m, models != m
        seen = np.isin(contents, contents[train]) & test
        if len(np.unique(contents[train])) < 2 or not seen.any():
            continue
        clf = _logreg(seed).fit(X[train], contents[train])
        hits[seen] = clf.predict(X[seen]) == contents[seen]
        per_model[str(m)] = float(hits[seen].mean())
    scored = np.isfinite(hits)
    return {"accuracy": _summary(hits, contents, n_boot, seed) | {"images": int(scored.sum())},
            "chance": 1.0 / len(np.unique(contents)), "per_model": per_model,
            "design": "leave one model out: logistic regression trained on the other models' images predicts the "
                      "content id of the held-out model's images; every test content was seen in training, only "
                      "through other models"}


def identification(X: np.ndarray, models: np.ndarray, contents: np.ndarray, *, n_boot: int = 1000,  # noqa: N803
                   seed: int = 0) -> dict[str, Any]:
    """Model accuracy (logistic regression and nearest prototype) under grouped cross-validation by content."""
    X, models, contents = _check(X, models, contents)  # noqa: N806
    z = _unit(X)
    folds = GroupKFold(n_splits=min(5, len(np.unique(contents))))
    logreg, proto = np.zeros(len(X)), np.zeros(len(X))
    for train, test in folds.split(X, models, groups=contents):
        logreg[test] = _logreg(seed).fit(X[train], models[train]).predict(X[test]) == models[test]
        classes = np.unique(models[train])
        protos = _unit(np.stack([z[train][models[train] == c].mean(0) for c in classes]))
        proto[test] = classes[np.argmax(z[test] @ protos.T, axis=1)] == models[test]
    return {"logreg": _summary(logreg, contents, n_boot, seed), "prototype": _summary(proto, contents, n_boot, seed),
            "chance": 1.0 / len(np.unique(models)), "folds": folds.get_n_splits(),
            "design": "grouped k-fold by content: no test content was seen in training"}


def invariance_report(X: np.ndarray, models: np.ndarray, contents: np.ndarray, *, n_boot: int = 1000,  # noqa: N803
                      seed: int = 0) -> dict[str, Any]:
    """:func:`distances`, :func:`content_leakage` and :func:`identification` of one set of fingerprints."""
    X, models, contents = _check(X, models, contents)  # noqa: N806
    return {"images": len(X), "models": len(np.unique(models)), "contents": len(np.unique(contents)),
            "dim": int(X.shape[1]), "distances": distances(X, models, contents, n_boot=n_boot, seed=seed),
            "leakage": content_leakage(X, models, contents, n_boot=n_boot, seed=seed),
            "identification": identification(X, models, contents, n_boot=n_boot, seed=seed)}


def split_contents(contents: np.ndarray, test_fraction: float, seed: int = 0) -> np.ndarray:
    """The test contents: a seeded ``test_fraction`` of the content ids (at least 2, leaving at least 2)."""
    uniq = np.unique(np.asarray(contents))
    n_test = max(2, int(round(test_fraction * len(uniq))))
    if not 0.0 < test_fraction < 1.0 or len(uniq) - n_test < 2:
        raise ModelprintError(f"invariance: cannot hold out {test_fraction} of {len(uniq)} contents "
                              "(need at least 2 on each side)")
    return np.sort(np.random.default_rng(seed).permutation(uniq)[:n_test])


def decoupling_study(X: np.ndarray, models: np.ndarray, contents: np.ndarray, decoupler: CausalDecoupler | None = None,  # noqa: N803
                     *, test_fraction: float = 0.5, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Fit a clone of ``decoupler`` on the contents outside a seeded test part, then measure the test part's
    fingerprints before and after decoupling. The fit never sees a test row."""
    X, models, contents = _check(X, models, contents)  # noqa: N806
    test = np.isin(contents, split_contents(contents, test_fraction, seed))
    start = time.perf_counter()
    fitted = clone(decoupler or CausalDecoupler(seed=seed)).fit(X[~test], models[~test], contents[~test])
    fit_seconds = time.perf_counter() - start
    before = invariance_report(X[test], models[test], contents[test], n_boot=n_boot, seed=seed)
    after = invariance_report(fitted.transform(X[test]), models[test], contents[test], n_boot=n_boot, seed=seed)
    return {"design": "contents split in two; the decoupler is fitted (and selects its epoch on contents held out "
                      "inside its own part) on one part; every figure is measured on the other part",
            "fit_contents": len(np.unique(contents[~test])), "test_contents": np.unique(contents[test]).tolist(),
            "fit_seconds": round(fit_seconds, 3), "best_epoch": fitted.best_epoch_,
            "decoupler": fitted.get_params(), "before": before, "after": after}

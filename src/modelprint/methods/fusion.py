"""Learned fusion weights for the ``fused`` method, chosen on a validation split, and their file.

**Rule.** The weights ``w`` (on the simplex, a grid of step ``resolution``) maximise the leave-one-out
nearest-prototype identification accuracy of the fused embedding on the labelled validation images: each image is
compared by cosine with every model's prototype (the normalised mean of that model's other images), exactly the rule
a gallery identifies with, so the weights optimise the number identification reports. Ties go to the larger mean
margin (own prototype minus the best other), then to the weights nearest equal. Why this and not a logistic model
of same/different pairs on per-view cosines: that optimises verification, not identification, and can give
negative weights, which a cosine fusion cannot use; the grid is exhaustive at its resolution, deterministic, has no
learning rate or regularisation to tune, and with a handful of views costs milliseconds from the per-view cosine
matrices. A view given weight 0 is dropped.

**File.** :func:`save_fusion` writes an ``.npz`` (the views, their parameters and weights, and the fit's figures in
its ``meta``) with a ``.json`` sidecar holding its sha256 (:mod:`modelprint.artefacts`), atomically;
``load_method("fused", weights="fusion.npz")`` (``--method fused -p weights=fusion.npz``) uses it.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelprint.artefacts import meta_array, read_arrays, read_meta, write_arrays
from modelprint.errors import CheckpointError, DatasetError

FORMAT = "modelprint-fusion-1"


@dataclass
class FusionFit:
    """Chosen weights (one per view, on the simplex) and the validation figures behind them."""

    weights: tuple[float, ...]
    accuracy: float
    margin: float
    equal_accuracy: float
    queries: int
    candidates: int

    def to_dict(self) -> dict[str, Any]:
        return {"weights": list(self.weights), "loo_accuracy": self.accuracy, "loo_margin": self.margin,
                "equal_weights_loo_accuracy": self.equal_accuracy, "queries": self.queries,
                "weight_grid_points": self.candidates}


def simplex_grid(n_views: int, resolution: float) -> np.ndarray:
    """Every weight vector with entries multiples of ``resolution`` summing to 1: ``(points, n_views)``."""
    steps = round(1 / resolution)
    if steps < 1 or abs(steps * resolution - 1) > 1e-9:
        raise ValueError(f"resolution must divide 1, got {resolution}")
    points = [c for c in itertools.product(range(steps + 1), repeat=n_views - 1) if sum(c) <= steps]
    return np.array([[*c, steps - sum(c)] for c in points], dtype=np.float64) / steps


def fit_weights(view_embeddings: Sequence[np.ndarray], labels: Sequence[str], resolution: float = 0.1) -> FusionFit:
    """The fusion weights of ``view_embeddings`` (one ``(n, d_v)`` array per view, rows in the order of
    ``labels``) by leave-one-out nearest-prototype accuracy (see the module). Needs 2 models, and images of models
    with 2 or more images are the queries."""
    labels = np.asarray(labels)
    classes, y = np.unique(labels, return_inverse=True)
    counts = np.bincount(y)
    queries = counts[y] >= 2
    if len(classes) < 2 or not queries.any():
        raise DatasetError("fusion weights need at least 2 models, one of them with 2 or more validation images")
    one_hot = np.eye(len(classes))[y]
    dots, norms = [], []
    for e in view_embeddings:
        e = np.asarray(e, dtype=np.float64)
        if len(e) != len(labels):
            raise ValueError(f"a view has {len(e)} embeddings for {len(labels)} labels")
        e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        gram = e @ e.T
        dots.append(gram @ one_hot)  # (n, C): image · sum of class c
        norms.append(np.einsum("ic,ij,jc->c", one_hot, gram, one_hot))  # |sum of class c|²
    dots_v, norms_v = np.stack(dots), np.stack(norms)
    rows = np.flatnonzero(queries)
    grid = simplex_grid(len(view_embeddings), resolution)
    best, best_key = None, None
    equal = np.full(len(view_embeddings), 1 / len(view_embeddings))
    for w in [*grid, equal]:
        acc, margin = _loo(w, dots_v, norms_v, y, rows)
        key = (acc, round(margin, 9), -float(np.abs(w - equal).sum()))
        if best_key is None or key > best_key:
            best, best_key = w, key
    equal_acc, _ = _loo(equal, dots_v, norms_v, y, rows)
    acc, margin = _loo(best, dots_v, norms_v, y, rows)
    return FusionFit(tuple(round(float(v), 6) for v in best), acc, margin, equal_acc, len(rows), len(grid))


def _loo(w: np.ndarray, dots_v: np.ndarray, norms_v: np.ndarray, y: np.ndarray, rows: np.ndarray
         ) -> tuple[float, float]:
    """Leave-one-out nearest-prototype accuracy and mean margin of the fusion with weights ``w``."""
    dots = np.tensordot(w, dots_v, axes=1)[rows]  # (q, C)
    norms = np.tensordot(w, norms_v, axes=1)  # (C,)
    own = y[rows]
    sq = np.tile(norms, (len(rows), 1))
    idx = np.arange(len(rows))
    sq[idx, own] = norms[own] - 2 * dots[idx, own] + 1.0  # the class's sum without the query (unit norm)
    dots[idx, own] -= 1.0
    sims = dots / np.sqrt(np.maximum(sq, 1e-12))
    pred = np.argmax(sims, axis=1)
    others = sims.copy()
    others[idx, own] = -np.inf
    return float((pred == own).mean()), float((sims[idx, own] - others.max(axis=1)).mean())


def save_fusion(path: str | Path, views: Sequence[tuple[str, float]], params: Mapping[str, Mapping[str, Any]],
                fit: Mapping[str, Any]) -> str:
    """Write a fusion file (see the module) atomically; returns its sha256."""
    path = Path(path)
    if path.suffix != ".npz":
        raise CheckpointError(f"{path}: a fusion file is written as .npz")
    meta = {"format": FORMAT, "views": [[n, float(w)] for n, w in views],
            "params": {k: dict(v) for k, v in params.items()}, "fit": dict(fit)}
    return write_arrays(path, {"meta": meta_array(meta)}, {"format": FORMAT, "views": meta["views"]})


def load_fusion(path: str | Path) -> dict[str, Any]:
    """The ``views``, ``params`` and ``fit`` of a fusion file, checked against its sidecar's sha256;
    :class:`~modelprint.errors.CheckpointError` naming the file otherwise."""
    meta = read_meta(read_arrays(path, "fusion file"), path, "fusion file", FORMAT)
    views = meta.get("views")
    if not isinstance(views, list) or not views or not all(
            isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) for v in views):
        raise CheckpointError(f"{path}: fusion file has no valid views")
    return {"views": [(str(n), float(w)) for n, w in views], "params": dict(meta.get("params") or {}),
            "fit": dict(meta.get("fit") or {})}


def fit_fusion_dataset(fused: Any, dataset: Any, split: str | None = "val") -> FusionFit:
    """Fit ``fused`` (a :class:`~modelprint.methods.fused.FusedMethod`) on the images of ``dataset`` (a
    :class:`~modelprint.io.Dataset` or its path) in ``split`` (``None``: all of them; a folder dataset has no
    splits); no other image is read. Unreadable images are a :class:`~modelprint.errors.ImageError`."""
    from modelprint.io import Dataset
    from modelprint.io.images import load_image_file

    ds = dataset if isinstance(dataset, Dataset) else Dataset.from_path(dataset)
    rows = [s for s in ds if split is None or s.split == split]
    if not rows:
        raise DatasetError(f"{ds.source}: no images in split {split!r} (an index needs a split column with it)")
    images = [load_image_file(s.path).pixels for s in rows]
    return fused.fit_embeddings(fused.view_embeddings(images), [s.label for s in rows])

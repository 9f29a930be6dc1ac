"""The decoupler's recipe as one function on paths: pairs from a zoo, embedded by a base method, fitted, saved."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from modelprint.causal.decoupler import CausalDecoupler
from modelprint.causal.invariance import invariance_report, split_contents
from modelprint.causal.pairs import build_pairs
from modelprint.methods import load_method

__all__ = ["train_decoupler"]


def train_decoupler(
    zoo: str | Path,
    models: list[str],
    out: str | Path,
    *,
    base: str = "learned",
    base_params: Mapping[str, Any] | None = None,
    decoupler: CausalDecoupler | None = None,
    holdout: float = 0.25,
    pairs_cache: str | Path | None = None,
    pair_settings: Mapping[str, Any] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    command: str = "",
) -> dict[str, Any]:
    """Build the pairs of ``models`` (:func:`~modelprint.causal.pairs.build_pairs` with ``pair_settings``), embed
    them with the ``base`` method, hold out a seeded ``holdout`` share of the contents (0: none), fit
    ``decoupler`` on the rest, write it to ``out`` (recording the base method, the pairs and the study) and return
    a summary with the invariance study of the held-out contents before and after decoupling."""
    start = time.perf_counter()
    pairs = build_pairs(zoo, models, seed=seed, cache=pairs_cache, **dict(pair_settings or {}))
    method = load_method(base, **dict(base_params or {}))
    t0 = time.perf_counter()
    features = method.embed(pairs.float_images())
    embed_seconds = (time.perf_counter() - t0) / len(features)
    test = (np.isin(pairs.contents, split_contents(pairs.contents, holdout, seed)) if holdout > 0
            else np.zeros(len(features), dtype=bool))
    t0 = time.perf_counter()
    fitted = (decoupler or CausalDecoupler(seed=seed)).fit(features[~test], pairs.models[~test],
                                                           pairs.contents[~test])
    fit_seconds = time.perf_counter() - t0
    study: dict[str, Any] = {}
    if test.any():
        args = (pairs.models[test], pairs.contents[test])
        study = {"test_contents": np.unique(pairs.contents[test]).tolist(),
                 "before": invariance_report(features[test], *args, n_boot=n_boot, seed=seed),
                 "after": invariance_report(fitted.transform(features[test]), *args, n_boot=n_boot, seed=seed)}
    info = {"base": {"name": method.name, "params": method.get_params(), "version": method.version},
            "pairs": {**pairs.meta, "images": len(pairs.images)}, "holdout": holdout, "seed": seed,
            "command": command, "study": study}
    sha = fitted.save(out, info)
    return {"out": str(out), "sha256": sha, "base": method.tag, "images": len(features),
            "models": sorted(set(pairs.models.tolist())), "contents": int(len(np.unique(pairs.contents))),
            "best_epoch": fitted.best_epoch_, "seconds": {"total": round(time.perf_counter() - start, 2),
                                                          "embed_per_image": round(embed_seconds, 4),
                                                          "fit": round(fit_seconds, 2)},
            "study": study}

"""Fallback "unknown" thresholds, for galleries too small to calibrate their own.

A gallery calibrates its unknown threshold on its own models (:func:`modelprint.gallery.calibrate`); with one model,
or one image per model, it cannot. Identification then uses a threshold measured for its method on held-out
classes with the gallery's rule (accept ``target_tpr`` of the genuine scores: an image against its own class's
prototype), by :mod:`modelprint.evaluation.fallback`, and shipped beside the weights in :data:`FALLBACK_FILE`. The file
is keyed by method tag (``name@version``), so changed weights find no stale value, and it leaves the weights' hash
alone. It holds one threshold per prototype size ``k`` (images per class); a gallery takes the one measured for the
largest ``k`` not above its smallest model's image count, as prototypes of fewer images give lower genuine scores.
"""

from __future__ import annotations

import functools
import sqlite3
from pathlib import Path
from typing import Any

from modelprint.artefacts import read_json, shipped_path
from modelprint.errors import CheckpointError
from modelprint.gallery.results import OpenSetThreshold
from modelprint.gallery.tables import load_calibration
from modelprint.gallery.tables import tag as method_tag

FALLBACK_FILE = shipped_path("unknown_thresholds.json")
FORMAT = "modelprint-unknown-thresholds/1"


@functools.lru_cache(maxsize=4)
def load_fallbacks(path: Path = FALLBACK_FILE) -> dict[str, Any]:
    """The parsed fallback file; :class:`~modelprint.errors.CheckpointError` if it is missing or malformed."""
    doc = read_json(path, "fallback unknown thresholds")
    if doc.get("format") != FORMAT or not isinstance(doc.get("methods"), dict):
        raise CheckpointError(f"{path}: not a {FORMAT} file")
    return doc


def fallback_threshold(tag: str, fewest: int, path: Path = FALLBACK_FILE) -> tuple[float, str] | None:
    """``(threshold, how it was measured)`` for method ``tag`` and prototypes of ``fewest`` images, or ``None``."""
    doc = load_fallbacks(path)
    entry = doc["methods"].get(tag)
    if entry is None:
        return None
    try:
        by_k = {int(k): float(v["threshold"]) for k, v in entry["by_support"].items()}
        n_classes = int(doc["data"]["classes"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{path}: malformed entry for {tag}") from None
    k = max((s for s in by_k if s <= fewest), default=min(by_k))
    name = tag.split("@", 1)[0]
    return by_k[k], (
        f"measured for {name} on {n_classes} held-out classes with {k}-image prototypes "
        f"({path.parent.name}/{path.name})"
    )


def open_set_threshold(conn: sqlite3.Connection, method: str, version: str) -> OpenSetThreshold:
    """The threshold identification uses for ``method@version`` by default: calibrated on the gallery's models,
    else this fallback, else none (inside the caller's transaction)."""
    cal = load_calibration(conn, method, version)
    if cal is not None:
        return OpenSetThreshold(
            cal.unknown_threshold, "calibrated",
            f"calibrated on the gallery's {cal.n_models} models ({cal.n_embeddings} images)",
        )
    n_models, fewest = conn.execute(
        "SELECT count(*), min(n) FROM prototypes WHERE method = ? AND version = ?", (method, version)
    ).fetchone()
    why = (
        f"the gallery cannot calibrate 'unknown' ({n_models} model{'s' * (n_models != 1)}, "
        f"{'' if n_models == 1 else 'each with '}{fewest} image{'s' * (fewest != 1)}; "
        "calibrating needs 2 models and one of them with 2 images)"
    )
    name = method_tag(method, version)
    fallback = fallback_threshold(name, int(fewest))
    if fallback is None:
        return OpenSetThreshold(
            None, "none", f"{why}, and no threshold was measured for {name}: identification never answers 'unknown'",
        )
    value, measured = fallback
    return OpenSetThreshold(value, "fallback", f"{why}, so 'unknown' is below {value:.4f}, {measured}")

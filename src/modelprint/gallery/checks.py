"""Checks of what callers hand the gallery: embedding matrices, names, and the one verification rule."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from modelprint.errors import GalleryError
from modelprint.gallery.results import UNKNOWN, Verification
from modelprint.scores import cosine

#: A hex sha256 digest.
SHA256 = re.compile(r"[0-9a-f]{64}")


def as_matrix(vectors: Any, what: str) -> np.ndarray:
    """``vectors`` as a C-contiguous ``(n, d)`` float32 array of finite, non-zero rows (not normalised)."""
    try:
        arr = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise GalleryError(f"{what}: not a numeric array ({exc})") from None
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise GalleryError(f"{what}: expected an (n, d) array of embeddings, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.all(np.isfinite(arr), axis=1))[0])
        raise GalleryError(f"{what}: embedding {bad} contains NaN or infinity")
    norms = np.linalg.norm(arr, axis=1)
    if arr.shape[0] and np.any(norms == 0):
        raise GalleryError(f"{what}: embedding {int(np.flatnonzero(norms == 0)[0])} is all zeros")
    return np.ascontiguousarray(arr, dtype=np.float32)


def pair(a: Any, b: Any, threshold: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Two single embeddings as ``(1, d)`` arrays, after checking them and ``threshold``."""
    va, vb = as_matrix(a, "embedding a"), as_matrix(b, "embedding b")
    if va.shape[0] != 1 or vb.shape[0] != 1:
        raise GalleryError(f"verify compares two single embeddings, got {va.shape[0]} and {vb.shape[0]} rows")
    if threshold is not None and not math.isfinite(float(threshold)):
        raise GalleryError(f"threshold must be a finite number, got {threshold}")
    return va, vb


def verify(a: Any, b: Any, threshold: float | None = None) -> Verification:
    """Cosine similarity of two single embeddings and whether it reaches ``threshold`` (``None``: no decision).

    The one verification rule: :meth:`Gallery.verify_embeddings` applies it with the gallery's threshold.
    """
    va, vb = pair(a, b, threshold)
    sim = cosine(va, vb)
    thr = None if threshold is None else float(threshold)
    return Verification(similarity=sim, same_model=None if thr is None else sim >= thr, threshold=thr)


def check_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise GalleryError(f"{what} must be a non-empty string, got {name!r}")
    if name != name.strip() or any(ord(c) < 32 for c in name):
        raise GalleryError(f"{what} {name!r} has leading/trailing spaces or control characters")
    return name


def check_model_name(name: Any) -> str:
    name = check_name(name, "model name")
    if name == UNKNOWN:
        raise GalleryError(f"model name {UNKNOWN!r} is reserved for open-set rejections")
    return name

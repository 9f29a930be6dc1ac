"""Training images for zoo models, drawn deterministically from the real-image pool.

Subsets:

- ``photos``: random multi-scale crops of the pool's training photos (:class:`~modelprint.io.pool.RealPool`);
- ``photos-a`` / ``photos-b``: the same from two disjoint halves of those photos (alternate files by name), so a
  fine-tuned child can train on data its parent never saw;
- ``faces`` / ``faces-holdout``: the ``members`` / ``holdout`` halves of scikit-image's 200 LFW faces (25² grey,
  resized to ``size`` and repeated over RGB). The split (a seeded permutation) is :func:`face_split`; the held-out
  half is what membership tests (trajectory provenance) compare against.
"""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image

from modelprint.errors import DatasetError
from modelprint.zoo.base import DataSpec

SUBSETS = ("photos", "photos-a", "photos-b", "faces", "faces-holdout")
FACE_SPLIT_SEED = 0


def face_split(seed: int = FACE_SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Indices into ``skimage.data.lfw_subset()`` of the 100 member and 100 held-out faces."""
    order = np.random.default_rng(seed).permutation(200)
    return np.sort(order[:100]), np.sort(order[100:])


def faces(size: int, split: str = "members") -> np.ndarray:
    """LFW faces of one split as uint8 RGB ``(100, size, size, 3)``."""
    from skimage import data as skdata

    grey = skdata.lfw_subset()
    members, holdout = face_split()
    idx = members if split == "members" else holdout
    out = np.empty((len(idx), size, size, 3), dtype=np.uint8)
    for k, i in enumerate(idx):
        im = Image.fromarray(np.round(grey[i] * 255).astype(np.uint8)).resize((size, size), Image.Resampling.LANCZOS)
        out[k] = np.asarray(im)[..., None]
    return out


def images_digest(images: np.ndarray) -> str:
    """sha256 of a uint8 image batch (its shape and bytes), to record and check which images a split holds."""
    h = hashlib.sha256(repr(tuple(images.shape)).encode())
    h.update(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
    return h.hexdigest()


def training_images(spec: DataSpec) -> np.ndarray:
    """The images a recipe trains on: uint8 ``(n, size, size, 3)`` (faces: all 100 of the split)."""
    from modelprint.io.pool import RealPool

    if spec.subset not in SUBSETS:
        raise DatasetError(f"unknown zoo data subset {spec.subset!r}; known: {', '.join(SUBSETS)}")
    if spec.subset.startswith("faces"):
        return faces(spec.size, "holdout" if spec.subset == "faces-holdout" else "members")
    pool = RealPool()
    if spec.subset == "photos":
        return pool.crops(spec.n, size=spec.size, seed=spec.seed, split="train")
    photos = pool.sources("train")
    half = photos[0::2] if spec.subset == "photos-a" else photos[1::2]
    return RealPool(folders=tuple(half), include_packages=False).crops(spec.n, size=spec.size, seed=spec.seed, split="all")

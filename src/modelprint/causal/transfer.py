"""Does an anonymization transfer to fingerprints it did not attack, and what undoes it?

The attributors are anything with scikit-learn's ``predict(X)`` on uint8 images ``(n, H, W, 3)``: a gallery with
any fingerprint method (:class:`GalleryAttributor`: ``spectral``, an extractor trained with another seed, …) or a
fitted white-box :class:`~modelprint.probes.ProbeAttributor`. Each measure is the share of images attributed to
their source (the lower, the better hidden):

- :func:`transfer_rates`: every attributor on the originals and on the anonymized images;
- :func:`jpeg_defence`: the anonymized images re-encoded as JPEG at each quality, then attributed;
- :func:`refit_defence`: a copy of the gallery re-enrolled with some anonymized images under their source's
  name, then asked about the others.
"""

from __future__ import annotations

import hashlib
import io
import sqlite3
import tempfile
from collections.abc import Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from modelprint.gallery import Gallery
from modelprint.methods import FingerprintMethod


class Attributor(Protocol):
    """Anything that names the model of each uint8 image (scikit-learn's ``predict``)."""

    def predict(self, X: Any) -> Any:  # noqa: N803
        """Model names of ``(n, H, W, 3)`` uint8 images (or a sequence of them, for galleries)."""


class GalleryAttributor:
    """A gallery's identification (``"unknown"`` included) with ``method``, as an :class:`Attributor`."""

    def __init__(self, gallery: Gallery, method: FingerprintMethod, threshold: float | None = None) -> None:
        self.gallery = gallery
        self.method = method
        self.threshold = threshold

    def predict(self, X: Any) -> np.ndarray:  # noqa: N803
        vectors = np.concatenate([self.method.embed([np.asarray(x, dtype=np.float32) / 255.0]) for x in X])
        found = self.gallery.identify_embeddings(vectors, self.method.name, self.method.version, top_k=1,
                                                 threshold=self.threshold)
        return np.asarray([d.model for d in found])


def source_rate(attributor: Attributor, images: Sequence[np.ndarray], sources: Sequence[str]) -> float:
    """Share of ``images`` (uint8) that ``attributor`` attributes to their source."""
    predicted = attributor.predict(_stack(images))
    return float(np.mean(np.asarray(predicted) == np.asarray(sources)))


def transfer_rates(attributors: Mapping[str, Attributor], originals: Sequence[np.ndarray],
                   anonymized: Sequence[np.ndarray], sources: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per attributor, the source rate on the originals (``before``) and on the anonymized images (``after``)."""
    return {name: {"before": source_rate(a, originals, sources), "after": source_rate(a, anonymized, sources)}
            for name, a in attributors.items()}


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """``image`` (uint8 RGB) encoded as a baseline JPEG at ``quality`` and decoded again."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image, "RGB").save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("RGB"))


def jpeg_defence(attributor: Attributor, anonymized: Sequence[np.ndarray], sources: Sequence[str],
                 qualities: Sequence[int] = (95, 75, 50)) -> dict[int, float]:
    """Per JPEG quality, the source rate of the re-encoded anonymized images."""
    return {int(q): source_rate(attributor, [jpeg(x, q) for x in anonymized], sources) for q in qualities}


def refit_defence(gallery: Gallery, method: FingerprintMethod, anonymized: Sequence[np.ndarray],
                  sources: Sequence[str], fit: Sequence[int], threshold: float | None = None) -> dict[str, float]:
    """Enroll the anonymized images at indices ``fit`` under their sources' names in a temporary copy of
    ``gallery`` (recalibrated as enrolment does; ``gallery`` itself is not written), and give the source rate of
    the other anonymized images before (``before``) and after (``after``) the re-fit."""
    held = [i for i in range(len(anonymized)) if i not in set(fit)]
    rest, rest_sources = [anonymized[i] for i in held], [sources[i] for i in held]
    before = source_rate(GalleryAttributor(gallery, method, threshold), rest, rest_sources)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "refit.sqlite"
        source_uri = Path(gallery.path).resolve().as_uri() + "?mode=ro"
        with closing(sqlite3.connect(source_uri, uri=True)) as src, closing(sqlite3.connect(copy)) as dst:
            src.backup(dst)
        with Gallery(copy) as g:
            for model in sorted({sources[i] for i in fit}):
                chosen = [anonymized[i] for i in fit if sources[i] == model]
                vectors = method.embed([x.astype(np.float32) / 255.0 for x in chosen])
                digests = [hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest() for x in chosen]
                g.add_embeddings(model, vectors, digests, [f"anonymized:{d[:12]}" for d in digests], method.name,
                                 method.version)
            after = source_rate(GalleryAttributor(g, method, threshold), rest, rest_sources)
    return {"before": before, "after": after, "refit_images": len(fit), "tested_images": len(held)}


def _stack(images: Sequence[np.ndarray]) -> Any:
    """One array when the images share a size (probe attributors need it), else the list (galleries take it)."""
    shapes = {np.shape(x) for x in images}
    return np.stack(images) if len(shapes) == 1 else list(images)

"""``fused``: several fingerprint views in one embedding, ``F = Σ_s √w_s · φ_s / ‖φ_s‖``.

Each view (a registered method) is L2-normalised and scaled by the square root of its weight, then the views are
concatenated; the cosine similarity of two fused embeddings is therefore the weighted mean of the views' cosine
similarities. This is the weighted multi-view fingerprint of the Causal Fingerprints paper, with views modelprint
computes itself: by default the learned zero-shot extractor and the handcrafted residual spectrum, equally weighted
(fixed a priori, not tuned on any test set).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from modelprint.methods.base import METHODS, FingerprintMethod


@METHODS.register("fused")
class FusedMethod(FingerprintMethod):
    """Weighted fusion of fingerprint methods.

    Parameters
    ----------
    views:
        ``(method name, weight)`` pairs; weights must be positive (they are normalised to sum to 1).
    params:
        Optional constructor parameters per view name, e.g. ``{"learned": {"windows_per_side": 1}}``.
    """

    def __init__(
        self,
        views: Sequence[tuple[str, float]] = (("learned", 1.0), ("spectral", 1.0)),
        params: Mapping[str, Mapping[str, object]] | None = None,
    ) -> None:
        if not views or any(w <= 0 for _, w in views):
            raise ValueError(f"fused: views need positive weights, got {list(views)}")
        if len({n for n, _ in views}) != len(views):
            raise ValueError(f"fused: each view may appear once, got {[n for n, _ in views]}")
        self.views = tuple((str(n), float(w)) for n, w in views)
        self.params = {k: dict(v) for k, v in (params or {}).items()}
        total = sum(w for _, w in self.views)
        self._scales = [np.sqrt(w / total) for _, w in self.views]
        self._methods = [METHODS.create(n, **self.params.get(n, {})) for n, _ in self.views]

    @property
    def version(self) -> str:
        return "1-" + "+".join(f"{w:g}*{m.tag}" for (_, w), m in zip(self.views, self._methods))

    def combine(self, view_embeddings: Sequence[np.ndarray]) -> np.ndarray:
        """Fuse embeddings already computed by each view (in the order of ``views``)."""
        parts = []
        for scale, e in zip(self._scales, view_embeddings, strict=True):
            e = np.asarray(e, dtype=np.float32)
            parts.append(scale * e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12))
        return np.concatenate(parts, axis=1).astype(np.float32)

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return self.combine([method.embed(images) for method in self._methods])

    def embed_with_spectra(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """The fused embeddings, and the spectra of the first view that computes some."""
        views = [method.embed_with_spectra(images) for method in self._methods]
        return self.combine([e for e, _ in views]), next((s for _, s in views if s is not None), None)

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

    def embed_torch(self, x, fixed: Mapping[str, np.ndarray] | None = None):  # noqa: ANN001, ANN201
        """:meth:`embed` as a differentiable torch function of ``(n, 3, H, W)`` pixels (see
        :mod:`modelprint.methods.differentiable`).

        ``fixed`` maps view names to ``(n, d_s)`` embeddings used as constants instead of that view's own
        (e.g. a view without a differentiable path, held at the original images' embedding); any other view
        without ``embed_torch`` is an :class:`~modelprint.errors.AttackError` naming it.
        """
        import torch
        import torch.nn.functional as F

        from modelprint.errors import AttackError
        from modelprint.methods.differentiable import why_not_differentiable

        fixed = fixed or {}
        reasons = [why_not_differentiable(m) for (n, _), m in zip(self.views, self._methods) if n not in fixed]
        if any(reasons):
            raise AttackError("fused: " + "; ".join(r for r in reasons if r))
        parts = []
        for (name, _), scale, method in zip(self.views, self._scales, self._methods):
            e = torch.as_tensor(np.asarray(fixed[name], dtype=np.float32)) if name in fixed else method.embed_torch(x)
            parts.append(float(scale) * F.normalize(e, dim=1, eps=1e-12))
        return torch.cat(parts, dim=1)

    def view_method(self, name: str) -> FingerprintMethod:
        """The method of view ``name``."""
        return self._methods[[n for n, _ in self.views].index(name)]

    def embed_with_spectra(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """The fused embeddings, and the spectra of the first view that computes some."""
        views = [method.embed_with_spectra(images) for method in self._methods]
        return self.combine([e for e, _ in views]), next((s for _, s in views if s is not None), None)

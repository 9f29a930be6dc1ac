"""``fused``: several fingerprint views in one embedding, ``F = Σ_s √w_s · φ_s / ‖φ_s‖``.

Each view (a registered method) is L2-normalised and scaled by the square root of its weight, then the views are
concatenated; the cosine similarity of two fused embeddings is therefore the weighted mean of the views' cosine
similarities. This is the weighted multi-view fingerprint of the Causal Fingerprints paper, with views modelprint
computes itself: by default the learned zero-shot extractor and the handcrafted residual spectrum, equally weighted.
Weights learned on a validation split (:meth:`FusedMethod.fit`, rule in :mod:`modelprint.methods.fusion`) replace
the given ones; they are parameters (``views``), so they are in the version and a gallery stores them, and a fusion
file (``modelprint fusion fit``) carries them to ``weights=``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from modelprint.methods.base import METHODS, FingerprintMethod
from modelprint.methods.fusion import FusionFit, fit_weights, load_fusion


@METHODS.register("fused")
class FusedMethod(FingerprintMethod):
    """Weighted fusion of fingerprint methods.

    Parameters
    ----------
    views:
        ``(method name, weight)`` pairs; weights must be positive (they are normalised to sum to 1).
    params:
        Optional constructor parameters per view name, e.g. ``{"learned": {"windows_per_side": 1}}``.
    weights:
        A fusion file (``.npz`` of :func:`~modelprint.methods.fusion.save_fusion`) whose views, parameters and
        learned weights replace ``views`` and ``params``.
    resolution:
        Step of the weight grid :meth:`fit` searches (not part of the embedding).
    """

    def __init__(
        self,
        views: Sequence[tuple[str, float]] = (("learned", 1.0), ("spectral", 1.0)),
        params: Mapping[str, Mapping[str, object]] | None = None,
        weights: str | None = None,
        resolution: float = 0.1,
    ) -> None:
        if weights is not None:
            stored = load_fusion(weights)
            views, params = stored["views"], stored["params"]
        if not views or any(w <= 0 for _, w in views):
            raise ValueError(f"fused: views need positive weights, got {list(views)}")
        if len({n for n, _ in views}) != len(views):
            raise ValueError(f"fused: each view may appear once, got {[n for n, _ in views]}")
        self.views = tuple((str(n), float(w)) for n, w in views)
        self.params = {k: dict(v) for k, v in (params or {}).items()}
        self.weights = weights
        self.resolution = resolution
        self._methods = [METHODS.create(n, **self.params.get(n, {})) for n, _ in self.views]
        self._reweigh()

    def _reweigh(self) -> None:
        total = sum(w for _, w in self.views)
        self._scales = [np.sqrt(w / total) for _, w in self.views]

    @property
    def version(self) -> str:
        return "1-" + "+".join(f"{w:g}*{m.tag}" for (_, w), m in zip(self.views, self._methods))

    def view_embeddings(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Each view's embeddings of ``images`` (in the order of ``views``)."""
        return [method.embed(images) for method in self._methods]

    def combine(self, view_embeddings: Sequence[np.ndarray]) -> np.ndarray:
        """Fuse embeddings already computed by each view (in the order of ``views``)."""
        parts = []
        for scale, e in zip(self._scales, view_embeddings, strict=True):
            e = np.asarray(e, dtype=np.float32)
            parts.append(scale * e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12))
        return np.concatenate(parts, axis=1).astype(np.float32)

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return self.combine(self.view_embeddings(images))

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

    def fit(self, images: Sequence[np.ndarray], labels: Sequence[str] | None = None) -> FusedMethod:
        """Learn the weights on labelled validation ``images`` (see :mod:`modelprint.methods.fusion`)."""
        if labels is None:
            raise ValueError("fused: fit needs the images' labels")
        self.fit_embeddings(self.view_embeddings(images), labels)
        return self

    def fit_embeddings(self, view_embeddings: Sequence[np.ndarray], labels: Sequence[str]) -> FusionFit:
        """Learn the weights from each view's embeddings of labelled validation images; views weighted 0 are
        dropped. Returns the fit's figures."""
        fit = fit_weights(view_embeddings, labels, float(self.resolution))
        keep = [i for i, w in enumerate(fit.weights) if w > 0]
        self.views = tuple((self.views[i][0], fit.weights[i]) for i in keep)
        self._methods = [self._methods[i] for i in keep]
        self.params = {k: v for k, v in self.params.items() if k in {n for n, _ in self.views}}
        self.weights = None
        self._reweigh()
        return fit

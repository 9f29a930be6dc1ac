"""Counterfactual contrast: a fingerprint minus the mean fingerprint of the same image redrawn by reference generators.

An image made by model ``M`` from content ``c`` has a fingerprint that mixes what ``M`` adds and what ``c`` shows:
``φ(x) ≈ f_M + a(c)``. Redrawing ``x`` by reference generators ``G_1 … G_K`` (autoencoders modelprint trained on
real photos: the synthetic pool's generators) keeps the content and replaces much of ``M``'s trace by ``G_k``'s:
``φ(G_k(x)) ≈ f_{G_k} + a(c) + ρ_k(M)``. The contrast ``φ(x) − mean_k φ(G_k(x))`` cancels the content part ``a(c)``
they share, to first order, and keeps ``f_M`` against a fixed reference offset, with no training on content labels.
It is a counterfactual in the seed's sense: the same content, drawn by other models. What it leaves of content is
measured (:func:`~modelprint.causal.invariance.content_leakage`), not assumed: benchmarks/bench_decouplers.py.

The ``contrast`` method is the :class:`~modelprint.methods.fused.FusedMethod` of each view's contrast: every view's
contrast is L2-normalised, scaled by √weight and concatenated, and :meth:`~ContrastMethod.fit` learns the weights
on labelled validation images as ``fused`` does. Its references default to the four generators shipped in
``weights/contrast_references`` (model card ``CONTRAST_REFERENCES_MODEL_CARD.md``); ``references`` and ``ids``
name another pool folder and its models. A redraw is 8-bit quantised like a saved image, so the method has no
gradient path (anonymization attacks the views it fuses).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from modelprint.errors import AttackError, ModelprintError
from modelprint.methods.base import METHODS
from modelprint.methods.fused import FusedMethod

__all__ = ["SHIPPED_REFERENCES", "ContrastMethod", "ReferenceRedrawers", "contrast"]

#: The reference generators shipped with modelprint (a synthetic pool folder).
SHIPPED_REFERENCES = Path(__file__).resolve().parents[1] / "weights" / "contrast_references"


class ReferenceRedrawers:
    """Synthetic pool generators ``ids`` of the pool folder ``pool`` as content-keeping redrawers of any image.

    A generator takes sides that are multiples of ``2**blocks``; other sizes are reflect-padded up to the next
    multiple and the output cropped back, so the redraw has the input's size.
    """

    def __init__(self, pool: str | Path, ids: Sequence[str]) -> None:
        from modelprint.synthesis import load_synthetic
        from modelprint.synthesis.pool import read_manifest

        if not ids:
            raise ModelprintError(f"{pool}: no reference generators named")
        self.pool, self.ids = Path(pool), list(ids)
        self._models = [load_synthetic(self.pool, i) for i in self.ids]
        records = read_manifest(self.pool)
        self.digest = hashlib.sha256("".join(records[i]["sha256"] for i in self.ids).encode()).hexdigest()[:12]

    def __len__(self) -> int:
        return len(self._models)

    def redraw(self, k: int, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Images (uint8 ``(h, w, 3)``) redrawn by reference ``k``, uint8 like a saved PNG, same sizes."""
        from modelprint.synthesis.train import apply_generator

        model = self._models[k]
        mult = 2 ** model.arch.blocks
        out = []
        with torch.no_grad():
            for x in images:
                if x.dtype != np.uint8 or x.ndim != 3 or x.shape[2] != 3:
                    raise ModelprintError(f"redraw takes uint8 RGB images, got {x.dtype} {x.shape}")
                h, w = x.shape[:2]
                ph, pw = -h % mult, -w % mult
                xp = np.pad(x, ((0, ph), (0, pw), (0, 0)), mode="reflect") if ph or pw else x
                out.append(np.ascontiguousarray(apply_generator(model, xp[None])[0, :h, :w]))
        return out


def contrast(embeddings: np.ndarray, redrawn: Sequence[np.ndarray]) -> np.ndarray:
    """``embeddings − mean(redrawn)``: each ``(n, d)`` array of ``redrawn`` embeds the same images redrawn."""
    if not len(redrawn):
        raise ModelprintError("contrast needs at least one redrawn set")
    if any(r.shape != embeddings.shape for r in redrawn):
        raise ModelprintError(f"contrast: redrawn embeddings {[r.shape for r in redrawn]} do not match "
                              f"{embeddings.shape}")
    return (embeddings - np.mean(np.stack(redrawn), axis=0)).astype(np.float32)


@METHODS.register("contrast")
class ContrastMethod(FusedMethod):
    """Counterfactual contrast of each view (its embedding minus that of the image redrawn by reference
    generators), fused.

    Parameters
    ----------
    views, params, weights, resolution:
        As for ``fused``: the views (method name, positive weight), their constructor parameters, a fusion file,
        the weight grid of :meth:`fit`.
    references:
        A synthetic pool folder holding the reference generators; ``None``: the shipped ones.
    ids:
        Model ids of ``references`` to use; ``None``: every model of its manifest.
    """

    def __init__(
        self,
        views: Sequence[tuple[str, float]] = (("spectral", 1.0),),
        params: Mapping[str, Mapping[str, object]] | None = None,
        weights: str | None = None,
        resolution: float = 0.1,
        references: str | None = None,
        ids: Sequence[str] | None = None,
    ) -> None:
        from modelprint.synthesis.pool import read_manifest

        super().__init__(views, params, weights, resolution)
        self.references = references
        self.ids = None if ids is None else list(ids)
        pool = SHIPPED_REFERENCES if references is None else Path(references)
        self._refs = ReferenceRedrawers(pool, self.ids if self.ids is not None else sorted(read_manifest(pool)))

    @property
    def version(self) -> str:
        return f"1-r{self._refs.digest}-{super().version}"

    def view_embeddings(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Each view's contrast of ``images`` (float RGB in ``[0, 1]``), in the order of ``views``."""
        if not len(images):
            return super().view_embeddings(images)
        pixels = [np.clip(np.rint(np.asarray(x, dtype=np.float32) * 255), 0, 255).astype(np.uint8) for x in images]
        own = super().view_embeddings(images)
        redrawn = [super(ContrastMethod, self).view_embeddings(
            [r.astype(np.float32) / 255 for r in self._refs.redraw(k, pixels)]) for k in range(len(self._refs))]
        return [contrast(e, [r[v] for r in redrawn]) for v, e in enumerate(own)]

    def embed_with_spectra(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, None]:
        return self.embed(images), None

    def embed_torch(self, x, fixed=None):  # noqa: ANN001, ANN201
        raise AttackError("contrast: its reference redraws are 8-bit quantised, so it has no gradient path; attack "
                          "the views it fuses (fused)")

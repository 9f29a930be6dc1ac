"""A method wrapper that keeps the residual spectra a method computes while embedding (for reports and the page)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from modelprint.methods.base import FingerprintMethod


class SpectraTap(FingerprintMethod):
    """Embeds with ``method`` and sums the residual log-spectra it computes on the way (for reports); with
    ``keep``, also keeps each image's."""

    def __init__(self, method: FingerprintMethod, keep: bool = False) -> None:
        self.method = method
        self.name = method.name
        self._sum: np.ndarray | None = None
        self._n = 0
        self._each: list[np.ndarray] | None = [] if keep else None

    @property
    def version(self) -> str:
        return self.method.version

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        vectors, spectra = self.method.embed_with_spectra(images)
        if spectra is not None and len(spectra):
            total = spectra.sum(axis=0, dtype=np.float64)
            self._sum = total if self._sum is None else self._sum + total
            self._n += len(spectra)
            if self._each is not None:
                self._each.extend(np.asarray(s, dtype=np.float32) for s in spectra)
        return vectors

    def pop_mean(self) -> np.ndarray | None:
        """Mean spectrum of the images embedded since the last call (``None`` if the method computed none)."""
        mean = None if self._sum is None else (self._sum / self._n).astype(np.float32)
        self._sum, self._n = None, 0
        return mean

    def pop_each(self, n: int) -> np.ndarray | None:
        """The ``(n, side, side)`` spectra of the ``n`` images embedded (with ``keep``), or ``None`` if the method
        computed none for some of them."""
        each, self._each = self._each or [], []
        return np.stack(each) if each and len(each) == n else None

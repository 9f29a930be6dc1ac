"""The interface every fingerprint method implements, and the registry of methods."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from modelprint.registry import Parametrised, Registry


class FingerprintMethod(Parametrised, ABC):
    """Maps images to fixed-length fingerprint embeddings.

    Follows scikit-learn's conventions: parameters in ``__init__`` (``get_params``/``set_params``, see
    :class:`~modelprint.registry.Parametrised`), optional learning in :meth:`fit`,
    :meth:`embed` (alias :meth:`transform`) returns an ``(n, d)`` float32 array. Embeddings are compared by
    cosine similarity; two embeddings are comparable only if ``name`` and ``version`` agree.
    """

    name: str = "base"

    @property
    @abstractmethod
    def version(self) -> str:
        """Identifies everything that changes the embedding (code revision, parameters, weights hash)."""

    @property
    def tag(self) -> str:
        return f"{self.name}@{self.version}"

    def json_params(self) -> dict[str, Any] | None:
        """:meth:`get_params` as JSON data (paths as strings), which a gallery stores to recreate the method, or
        ``None`` if the method has none to give or a value is not JSON (numbers, strings, lists, objects)."""
        def plain(value: Any) -> Any:
            if isinstance(value, os.PathLike):
                return os.fspath(value)
            if isinstance(value, dict):
                return {str(k): plain(v) for k, v in value.items()}
            if isinstance(value, list | tuple):
                return [plain(v) for v in value]
            if value is None or isinstance(value, bool | int | float | str):
                return value
            raise TypeError(type(value).__name__)

        try:
            return {k: plain(v) for k, v in self.get_params().items()}
        except (AttributeError, TypeError):
            return None

    def fit(self, images: Sequence[np.ndarray], labels: Sequence[str] | None = None) -> FingerprintMethod:
        """Learn from images (optional); returns ``self``."""
        return self

    @abstractmethod
    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Embed (H, W, 3) float32 RGB images in [0, 1] (any size ≥ 32 px) into an ``(n, d)`` float32 array."""

    def transform(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return self.embed(images)

    def embed_with_spectra(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`embed`, plus each image's centred residual log-spectrum ``(n, T, T)`` when the method computes
        one on the way (reports reuse it instead of computing it again), else ``None``."""
        return self.embed(images), None


METHODS: Registry[FingerprintMethod] = Registry("fingerprint method")

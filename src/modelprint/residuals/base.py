"""The residual-extractor interface and its registry.

A *residual* is the high-frequency part of an image where a generator's fingerprint lives: the image minus a
smooth (denoised) estimate of its content. Every extractor maps an ``(H, W, 3)`` float32 RGB image in ``[0, 1]``
to an ``(H, W, 3)`` float32 residual of the same size, for any ``H, W >= 32`` (smaller sizes work too).

Extractors are registered by name in :data:`RESIDUALS` and built with :func:`get_residual`::

    from modelprint.residuals import get_residual

    res = get_residual("highpass", sigma=1.0)
    r = res(image)                    # (H, W, 3) float32
    rs = res.batch([im1, im2, im3])   # list of residuals

Two residuals are interchangeable only when ``name`` and ``version`` agree: ``version`` changes whenever the
output would change (parameters, and for learned extractors a prefix of the weights' sha256).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from modelprint.registry import Parametrised, Registry


def as_image(image: np.ndarray) -> np.ndarray:
    """Validate an ``(H, W, 3)`` image and return it as C-contiguous float32 (no copy when already so)."""
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"image has an empty side: shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / np.float32(255.0)
    return np.ascontiguousarray(arr, dtype=np.float32)


class Residual(Parametrised, ABC):
    """Maps an RGB image to its noise residual (same size, float32).

    Parameters are ``__init__`` arguments kept under their own names (:class:`~modelprint.registry.Parametrised`:
    ``get_params``/``set_params``)."""

    name: str = "base"  # set by the registry decorator

    @property
    @abstractmethod
    def version(self) -> str:
        """Identifies everything that changes the output (parameters; weights' sha256[:12] if learned)."""

    @property
    def tag(self) -> str:
        """``name@version``: residuals with equal tags give equal outputs."""
        return f"{self.name}@{self.version}"

    @abstractmethod
    def __call__(self, image: np.ndarray) -> np.ndarray:
        """``(H, W, 3)`` float32 in [0, 1] → ``(H, W, 3)`` float32 residual of the same size."""

    def batch(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Residuals of several images (default: one at a time; learned extractors batch same-size images)."""
        return [self(im) for im in images]


RESIDUALS: Registry[Residual] = Registry("residual")


def get_residual(name: str = "dncnn", **params: Any) -> Residual:
    """Build the residual extractor registered as ``name`` (default: modelprint's DnCNN) with ``params``.

    An unknown name raises :class:`~modelprint.errors.RegistryError` listing the known ones.
    """
    import modelprint.residuals  # noqa: F401  (make sure the built-in extractors are registered)

    return RESIDUALS.create(name, **params)

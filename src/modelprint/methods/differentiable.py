"""Fingerprint methods whose embedding is a differentiable torch function of the pixels.

A method that has one implements ``embed_torch(x)``: ``x`` a float tensor ``(n, 3, H, W)`` in [0, 1], the result
the ``(n, d)`` tensor that :meth:`~modelprint.methods.FingerprintMethod.embed` returns for the same images (to
float rounding), with gradients flowing back to ``x``. Attacks (:mod:`modelprint.causal.anonymize`) need it.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from modelprint.errors import AttackError


@runtime_checkable
class DifferentiableMethod(Protocol):
    """A fingerprint method with a differentiable torch path (see the module docstring)."""

    name: str

    def embed_torch(self, x: Any) -> Any:
        """``(n, 3, H, W)`` float tensor in [0, 1] → ``(n, d)`` embeddings, differentiable with respect to ``x``."""


def why_not_differentiable(method: Any) -> str | None:
    """``None`` when ``method`` has a differentiable path, else why not, in one line naming it.

    A method has one when it implements ``embed_torch``, its residual extractor (if it has one) has a
    ``residual_torch``, and so do all the views of a fused method.
    """
    if not hasattr(method, "embed_torch"):
        return f"{method.name} has no differentiable path (embed_torch)"
    residual = getattr(method, "residual_extractor", None)
    if residual is not None and not hasattr(residual, "residual_torch"):
        return f"{method.name}'s residual {residual.name!r} has no differentiable form (only dncnn has one)"
    views = [method.view_method(n) for n, _ in getattr(method, "views", ())]
    reasons = [r for r in map(why_not_differentiable, views) if r]
    return "; ".join(reasons) or None


def torch_residual(method_name: str, residual: Any) -> Any:
    """The differentiable form (``residual_torch``) of a method's residual extractor, or an :class:`AttackError`
    naming both when the extractor has none."""
    run = getattr(residual, "residual_torch", None)
    if run is None:
        raise AttackError(f"{method_name}: its residual {residual.name!r} has no differentiable form "
                          "(only dncnn has one); use a method built on dncnn")
    return run


def images_tensor(images: Any) -> Any:
    """``(H, W, 3)`` float images of one size as a ``(n, 3, H, W)`` float32 tensor."""
    import numpy as np
    import torch

    return torch.from_numpy(np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2), dtype=np.float32))

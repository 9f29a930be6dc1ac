"""Black-box fingerprint methods, registered by name."""

from modelprint.methods.base import METHODS, FingerprintMethod
from modelprint.methods import fused as _fused  # noqa: F401  (registers "fused")
from modelprint.methods import learned as _learned  # noqa: F401  (registers "learned")
from modelprint.methods import spectral as _spectral  # noqa: F401  (registers "spectral")


DEFAULT_METHOD = "learned"
"""The method used when none is named: the zero-shot extractor trained on synthetic models, with the shipped
weights (``weights/EXTRACTOR_MODEL_CARD.md``); it beats the handcrafted ``spectral`` baseline on the real-world
benchmark (``benchmarks/README.md``)."""


def load_method(name: str = DEFAULT_METHOD, **params: object) -> FingerprintMethod:
    """Create the fingerprint method registered as ``name`` with ``params``."""
    return METHODS.create(name, **params)


__all__ = ["DEFAULT_METHOD", "METHODS", "FingerprintMethod", "load_method"]

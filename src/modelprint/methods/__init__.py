"""Black-box fingerprint methods, registered by name."""

from modelprint.methods.base import METHODS, FingerprintMethod
from modelprint.methods import fused as _fused  # noqa: F401  (registers "fused")
from modelprint.methods import learned as _learned  # noqa: F401  (registers "learned")
from modelprint.methods import spectral as _spectral  # noqa: F401  (registers "spectral")


DEFAULT_METHOD = "spectral"
"""The method used when none is named. It becomes ``learned`` (the zero-shot extractor trained on synthetic
models) once shipped weights beat the handcrafted ``spectral`` baseline on the real-world benchmark."""


def load_method(name: str = DEFAULT_METHOD, **params: object) -> FingerprintMethod:
    """Create the fingerprint method registered as ``name`` with ``params``."""
    return METHODS.create(name, **params)


__all__ = ["DEFAULT_METHOD", "METHODS", "FingerprintMethod", "load_method"]

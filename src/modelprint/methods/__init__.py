"""Black-box fingerprint methods, registered by name."""

from modelprint.methods.base import METHODS, FingerprintMethod
from modelprint.methods import learned as _learned  # noqa: F401  (registers "learned")
from modelprint.methods import spectral as _spectral  # noqa: F401  (registers "spectral")


def load_method(name: str = "spectral", **params: object) -> FingerprintMethod:
    """Create the fingerprint method registered as ``name`` with ``params``."""
    return METHODS.create(name, **params)


__all__ = ["METHODS", "FingerprintMethod", "load_method"]

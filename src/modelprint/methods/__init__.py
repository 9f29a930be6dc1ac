"""Black-box fingerprint methods, registered by name."""

from typing import Any

from modelprint.errors import RegistryError
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


def resolve_method(method: FingerprintMethod | str | None, params: dict[str, Any] | None = None) -> FingerprintMethod:
    """``method`` itself, or the method registered under that name (default :data:`DEFAULT_METHOD`) made with
    ``params``; parameters it does not take, or refuses, are a one-line :class:`~modelprint.errors.RegistryError`."""
    if isinstance(method, FingerprintMethod):
        if params:
            raise RegistryError(f"method {method.name}: parameters go to a method name, not to a method object")
        return method
    name = method or DEFAULT_METHOD
    try:
        return load_method(name, **(params or {}))
    except (TypeError, ValueError) as exc:  # an unknown keyword of the method's __init__, or a refused value
        raise RegistryError(f"method {name}: {' '.join(str(exc).split()) or 'invalid parameters'}") from None


__all__ = ["DEFAULT_METHOD", "METHODS", "FingerprintMethod", "load_method", "resolve_method"]

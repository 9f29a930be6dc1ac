"""Black-box fingerprint methods, registered by name."""

from modelprint.methods.base import METHODS, FingerprintMethod

__all__ = ["METHODS", "FingerprintMethod"]

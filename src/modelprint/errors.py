"""Exceptions that carry a one-line, user-facing message.

Every error raised at modelprint's boundary (bad image, missing model, mismatched checkpoint, incompatible
gallery) derives from :class:`ModelprintError`, so the CLI can print ``str(err)`` on one line and exit cleanly.
"""

from __future__ import annotations

from pathlib import Path


class ModelprintError(Exception):
    """Base class of all errors modelprint reports to users."""


class ImageError(ModelprintError):
    """An input image could not be used; the message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ImageTooLargeError(ImageError):
    """An input image is over the pixel limit (read from its header: a possible decompression bomb) or its file is
    larger than any image within that limit can be."""


class DatasetError(ModelprintError):
    """A dataset folder or index file is malformed."""


class CheckpointError(ModelprintError):
    """A weights file is missing, corrupt, or does not match the model it is loaded into."""


class GalleryError(ModelprintError):
    """A gallery operation is impossible (unknown model, incompatible method, empty gallery)."""


class RegistryError(ModelprintError):
    """A name was looked up in a registry that does not hold it."""


class ProbeError(ModelprintError, ValueError):
    """A white-box probe, candidate model or attribution/provenance estimator cannot use what it was given.

    Also a ``ValueError``, as scikit-learn expects of an estimator refusing its input."""


class AttackError(ModelprintError):
    """An anonymization attack cannot run with what it was given: a fingerprint method without a differentiable
    path, a target model the gallery does not hold, a budget it cannot use."""

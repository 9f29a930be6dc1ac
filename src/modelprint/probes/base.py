"""What every white-box probe is: a scikit-learn style estimator that turns images seen through one candidate
denoiser into a fixed-length signature, and a registry of the probe kinds with their named settings (presets).

Also here: what every estimator of probes and provenance shares, :func:`validated` input and
:func:`check_fitted` (scikit-learn's checks, refusing with a one-line :class:`~modelprint.errors.ProbeError`).

A new probe is one decorated class::

    @PROBES.register("mine")
    class MyProbe(Probe):
        presets = {"mine-fast": {...}}
        ...

:func:`probe_from_preset` finds a preset among all registered kinds, so the CLI's ``--preset`` names any of them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from modelprint.errors import ProbeError
from modelprint.probes.candidates import DiffusionCandidate
from modelprint.registry import Registry

__all__ = ["PROBES", "NotFittedProbeError", "Probe", "ProbeProgress", "check_fitted", "check_timesteps",
           "preset_names", "probe_from_preset", "validated"]

#: Called as ``progress(done, total)`` with counts of forward images.
ProbeProgress = Callable[[int, int], None]


def check_timesteps(denoiser: DiffusionCandidate, timesteps: Sequence[int], what: str) -> list[int]:
    """``timesteps`` as ints; ProbeError naming the candidate if any is outside its schedule."""
    steps = [int(t) for t in timesteps]
    if not steps:
        raise ProbeError(f"{what}: needs at least one timestep")
    bad = [t for t in steps if not 0 <= t < denoiser.num_timesteps]
    if bad:
        raise ProbeError(f"candidate {denoiser.name!r}: {what} timesteps {bad} are outside its schedule "
                         f"[0, {denoiser.num_timesteps - 1}]")
    return steps


class NotFittedProbeError(NotFittedError, ProbeError):
    """An estimator was used before ``fit`` (scikit-learn's ``NotFittedError``, with a one-line message)."""


def check_fitted(estimator: BaseEstimator, attribute: str | None = None) -> None:
    """:class:`NotFittedProbeError` unless ``estimator`` is fitted (has ``attribute``, or any ``name_`` attribute)."""
    try:
        check_is_fitted(estimator, attribute)
    except NotFittedError:
        raise NotFittedProbeError(f"this {type(estimator).__name__} is not fitted yet; call fit() first") from None


def validated(estimator: BaseEstimator, X: Any, y: Any = "no_validation", reset: bool = True,  # noqa: N803
              classes: bool = False, **check: Any) -> Any:
    """scikit-learn's ``validate_data``: a finite, numeric, non-empty 2-D ``X`` (and ``y`` of its length, class
    labels with ``classes``), setting (``reset``) or checking ``n_features_in_``; returns ``X`` or ``(X, y)``. Bad
    values are a one-line :class:`ProbeError` naming the estimator."""
    try:
        out = validate_data(estimator, X, y, reset=reset, **check)
        if classes:
            check_classification_targets(out[1])
        return out
    except ValueError as err:  # a TypeError (sparse or object input) is the caller's bug and stays one
        raise ProbeError(f"{type(estimator).__name__}: {' '.join(str(err).split())}") from None


class Probe(BaseEstimator, ABC):
    """Signature of images through one candidate denoiser: ``signature(denoiser, images)`` → ``(n, n_features)``.

    Subclasses hold their settings as ``__init__`` parameters (so ``get_params`` round-trips them), list named
    settings in ``presets``, and draw every noise from ``seed`` so that the same seed gives the same signature.
    """

    name: ClassVar[str]
    presets: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> Probe:
        """The named setting of :attr:`presets`, with ``overrides`` (e.g. ``seed``, ``batch_size``)."""
        if name not in cls.presets:
            raise ProbeError(f"unknown {cls.name} probe preset {name!r}; known: {', '.join(cls.presets)}")
        return cls(**{**cls.presets[name], **overrides})

    @property
    @abstractmethod
    def calls_per_image(self) -> int:
        """Denoiser calls (forward images) per probed image."""

    @property
    @abstractmethod
    def n_features(self) -> int:
        """Length of the signature vector."""

    @abstractmethod
    def signature(self, denoiser: DiffusionCandidate, images: np.ndarray, progress: ProbeProgress | None = None
                  ) -> np.ndarray:
        """float64 ``(n, n_features)`` signatures of uint8 ``images`` ``(n, H, W, 3)`` through ``denoiser``."""


PROBES: Registry[Probe] = Registry("probe")


def preset_names() -> list[str]:
    """Every preset of every registered probe kind."""
    return [p for kind in PROBES for p in PROBES.get(kind).presets]


def probe_from_preset(name: str, **overrides: Any) -> Probe:
    """The probe of whichever registered kind defines preset ``name``."""
    for kind in PROBES:
        cls = PROBES.get(kind)
        if name in cls.presets:
            return cls.preset(name, **overrides)
    raise ProbeError(f"unknown probe preset {name!r}; known: {', '.join(preset_names())}")

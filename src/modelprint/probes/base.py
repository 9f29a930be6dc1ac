"""What every white-box probe is: a scikit-learn style estimator that turns images seen through one candidate
denoiser into a fixed-length signature, and a registry of the probe kinds with their named settings (presets).

A new probe is one decorated class::

    @PROBES.register("mine")
    class MyProbe(Probe):
        presets = {"mine-fast": {...}}
        ...

:func:`probe_from_preset` finds a preset among all registered kinds, so the CLI's ``--preset`` names any of them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator

from modelprint.errors import ModelprintError
from modelprint.probes.candidates import DiffusionCandidate
from modelprint.registry import Registry

__all__ = ["PROBES", "Probe", "ProbeProgress", "probe_from_preset", "preset_names"]

#: Called as ``progress(done, total)`` with counts of forward images.
ProbeProgress = Callable[[int, int], None]


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
            raise ModelprintError(f"unknown {cls.name} probe preset {name!r}; known: {', '.join(cls.presets)}")
        return cls(**{**cls.presets[name], **overrides})

    @property
    @abstractmethod
    def calls_per_image(self) -> int:
        """DiffusionCandidate calls (forward images) per probed image."""

    @property
    @abstractmethod
    def n_features(self) -> int:
        """Length of the signature vector."""

    @abstractmethod
    def signature(self, denoiser: DiffusionCandidate, images: np.ndarray, progress: ProbeProgress | None = None
                  ) -> np.ndarray:
        """float64 ``(n, n_features)`` signatures of uint8 ``images`` ``(n, H, W, 3)`` through ``denoiser``."""

    def _check_timesteps(self, denoiser: DiffusionCandidate, timesteps: Any) -> None:
        if not len(timesteps):
            raise ModelprintError(f"{self.name} probe: needs at least one timestep")
        bad = [t for t in timesteps if not 0 <= int(t) < denoiser.num_timesteps]
        if bad:
            raise ModelprintError(f"candidate {denoiser.name!r}: timesteps {bad} are outside its schedule "
                                  f"[0, {denoiser.num_timesteps - 1}]")


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
    raise ModelprintError(f"unknown probe preset {name!r}; known: {', '.join(preset_names())}")

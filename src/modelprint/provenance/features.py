"""Trajectory features: how one denoiser responds to an image at timesteps spread over the whole diffusion
trajectory, not at one "Goldilocks" timestep.

At each timestep ``t`` of :attr:`TrajectoryExtractor.timesteps` (by default fractions of the schedule from 0.5% to
90%), all as logs:

- ``loss``: the denoising loss ``mean (ε̂(x_t, t) − ε)²`` averaged over ``repeats`` noises
  (:class:`~modelprint.probes.loss.DenoisingLossProbe`, so the noises are the loss probe's common random numbers);
- ``pia``: PIA's proximal-initialisation error; ``sima``: SimA's ``mean ε̂(x₀, t)⁴`` on the clean image;
- ``secmi``: SecMI's t-error of one DDIM step up by ``secmi_k`` and back, at ``x_t`` reached by a deterministic
  DDIM inversion along the trajectory's own timesteps;
- ``grad_input``: ``‖∂L/∂x_t‖`` and ``grad_params``: per parameter group ``‖∂L/∂θ_g‖`` (GSA-style), for the loss
  ``L`` with the first repeat's noise.

Cost per image (``T`` timesteps, ``R`` repeats): ``T·R`` + ``1 + T`` + ``T`` + ``3·T`` forward images, and, for the
gradient kinds, ``T`` forward and ``T`` backward images (:meth:`TrajectoryExtractor.calls_per_image`). The same
seed gives the same features.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from sklearn.base import BaseEstimator

from modelprint.errors import ProbeError
from modelprint.probes.base import ProbeProgress, check_timesteps
from modelprint.probes.candidates import DiffusionCandidate
from modelprint.probes.loss import DenoisingLossProbe
from modelprint.provenance.base import CallMeter, log_positive
from modelprint.provenance.measures import clean_norms, gradient_norms, parameter_groups, proximal_errors, t_errors

__all__ = ["DEFAULT_FRACTIONS", "KINDS", "Trajectory", "TrajectoryExtractor", "trajectory_timesteps"]

#: Feature kinds, in the order their columns appear.
KINDS = ("loss", "pia", "sima", "secmi", "grad_input", "grad_params")
#: Default timesteps as fractions of the schedule: dense early (where memorisation shows), spread to the end.
DEFAULT_FRACTIONS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)


def trajectory_timesteps(num_timesteps: int, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> tuple[int, ...]:
    """Distinct integer timesteps at ``fractions`` of a ``num_timesteps`` schedule (at least 1)."""
    return tuple(sorted({max(1, min(num_timesteps - 1, round(f * num_timesteps))) for f in fractions}))


@dataclass
class Trajectory:
    """Features of ``n`` images through one denoiser: ``values`` ``(n, d)`` with one name per column
    (``kind@t=T`` or ``grad_params[group]@t=T``), and what they cost per image."""

    values: np.ndarray
    names: list[str]
    timesteps: tuple[int, ...]
    denoiser: str
    calls_per_image: float
    backwards_per_image: float
    seconds_per_image: float
    settings: dict[str, Any] = field(default_factory=dict)

    def columns(self, kind: str) -> np.ndarray:
        """Indices of the columns of one kind (e.g. ``loss``), in timestep order."""
        cols = [j for j, name in enumerate(self.names) if name.split("@")[0].split("[")[0] == kind]
        if not cols:
            raise ProbeError(f"trajectory features hold no {kind!r} columns; they hold "
                             f"{', '.join(dict.fromkeys(n.split('@')[0].split('[')[0] for n in self.names))}")
        return np.asarray(cols)

    def kind(self, kind: str) -> np.ndarray:
        """The ``(n, k)`` columns of one kind (``(n, T)`` for all but ``grad_params``)."""
        return self.values[:, self.columns(kind)]

    def to_dict(self) -> dict[str, Any]:
        """Everything but the values: names, timesteps, costs, settings."""
        return {"denoiser": self.denoiser, "n_images": int(len(self.values)), "names": list(self.names),
                "timesteps": list(self.timesteps), "calls_per_image": self.calls_per_image,
                "backwards_per_image": self.backwards_per_image, "seconds_per_image": self.seconds_per_image,
                "settings": dict(self.settings)}


class TrajectoryExtractor(BaseEstimator):
    """Trajectory features of images through a :class:`~modelprint.probes.candidates.DiffusionCandidate` (any adapter).

    ``timesteps`` (default :func:`trajectory_timesteps` of the denoiser's schedule), ``repeats`` noises for the
    loss, ``seed`` for every noise, ``kinds`` (a subset of :data:`KINDS`), ``secmi_k`` the SecMI step,
    ``grad_grouping`` how parameter gradients are pooled (``block`` or ``tensor``), ``batch_size`` forward images
    per network call. ``extract(denoiser, images)`` → :class:`Trajectory`.
    """

    def __init__(self, timesteps: Sequence[int] | None = None, repeats: int = 4, seed: int = 0,
                 kinds: Sequence[str] = KINDS, secmi_k: int = 10,
                 grad_grouping: Literal["tensor", "block"] = "block", batch_size: int = 64) -> None:
        self.timesteps = timesteps
        self.repeats = repeats
        self.seed = seed
        self.kinds = kinds
        self.secmi_k = secmi_k
        self.grad_grouping = grad_grouping
        self.batch_size = batch_size

    def steps(self, denoiser: DiffusionCandidate) -> list[int]:
        """The timesteps used for ``denoiser``, checked against its schedule."""
        steps = self.timesteps if self.timesteps is not None else trajectory_timesteps(denoiser.num_timesteps)
        return check_timesteps(denoiser, steps, "trajectory")

    def _kinds(self) -> list[str]:
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown or not len(self.kinds) or int(self.repeats) < 1:
            raise ProbeError(f"trajectory features: unknown kinds {unknown} (known: {', '.join(KINDS)}) or no "
                             f"kinds or repeats < 1 (got {self.repeats})")
        return [k for k in KINDS if k in self.kinds]

    def calls_per_image(self, denoiser: DiffusionCandidate) -> int:
        """Denoiser calls (forward images) per image."""
        t, kinds = len(self.steps(denoiser)), self._kinds()
        calls = {"loss": t * int(self.repeats), "pia": 1 + t, "sima": t, "secmi": 3 * t}
        grads = t if {"grad_input", "grad_params"} & set(kinds) else 0
        return sum(calls.get(k, 0) for k in kinds) + grads

    def backwards_per_image(self, denoiser: DiffusionCandidate) -> int:
        """Backward passes (images) per image."""
        return len(self.steps(denoiser)) if {"grad_input", "grad_params"} & set(self._kinds()) else 0

    def group_names(self, denoiser: DiffusionCandidate) -> list[str]:
        """The parameter groups of ``grad_params`` features for ``denoiser``."""
        names = [name for name, _ in denoiser.named_parameters()]
        return list(dict.fromkeys(parameter_groups(names, self.grad_grouping))) if names else []

    def extract(self, denoiser: DiffusionCandidate, images: np.ndarray, progress: ProbeProgress | None = None
                ) -> Trajectory:
        """Trajectory features of uint8 ``images`` ``(n, H, W, 3)``; ``progress(done, total)`` counts forward images."""
        kinds, steps = self._kinds(), self.steps(denoiser)
        bs = int(self.batch_size)
        start, before = time.perf_counter(), denoiser.n_forward
        z0 = denoiser.to_model_space(images)
        n = len(z0)
        meter = CallMeter(n * self.calls_per_image(denoiser), progress)
        blocks: list[np.ndarray] = []
        names: list[str] = []

        def add(kind: str, values: torch.Tensor | np.ndarray) -> None:
            blocks.append(log_positive(values))
            names.extend(f"{kind}@t={t}" for t in steps)

        if "loss" in kinds:
            probe = DenoisingLossProbe(timesteps=steps, repeats=self.repeats, seed=self.seed, batch_size=bs)
            add("loss", probe.repeat_losses(denoiser, images, meter.offset(0)).mean(axis=2))
            meter.forward += n * probe.calls_per_image
        if "pia" in kinds:
            add("pia", proximal_errors(denoiser, z0, steps, meter, batch_size=bs))
        if "sima" in kinds:
            add("sima", clean_norms(denoiser, z0, steps, meter, batch_size=bs))
        if "secmi" in kinds:
            add("secmi", t_errors(denoiser, z0, steps, steps, int(self.secmi_k), meter, batch_size=bs))
        if {"grad_input", "grad_params"} & set(kinds):
            noise = DenoisingLossProbe(repeats=1, seed=self.seed).noise(tuple(z0.shape[1:]))[0]
            grouping = self.grad_grouping if "grad_params" in kinds else None
            inputs, params, groups = gradient_norms(denoiser, z0, steps, noise, meter, grouping, batch_size=bs)
            if "grad_input" in kinds:
                add("grad_input", inputs)
            if "grad_params" in kinds:
                blocks.append(log_positive(params.reshape(n, -1)))
                names.extend(f"grad_params[{g}]@t={t}" for t in steps for g in groups)
        seconds = time.perf_counter() - start
        settings = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.get_params().items()}
        settings.update(timesteps=list(steps), kinds=list(kinds))
        return Trajectory(values=np.concatenate(blocks, axis=1), names=names, timesteps=tuple(steps),
                          denoiser=denoiser.name, calls_per_image=(denoiser.n_forward - before) / n,
                          backwards_per_image=meter.backward / n, seconds_per_image=seconds / n, settings=settings)

"""The plain denoising loss as a probe: how well a candidate predicts the noise added to an image.

For an image ``x_0`` in the denoiser's model space, a timestep ``t`` and a repeat ``r`` with white noise ``ε_r``:
``x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε_r`` goes through the denoiser and the loss is ``mean (ε̂(x_t, t) − ε_r)²``. The
signature is ``log`` of the loss averaged over repeats, one value per timestep (``T`` values, ``T·R`` calls).

A model predicts the noise in its own samples (and its training images) better than in anybody else's, so the
candidate with the lowest loss is a training-free attribution (:class:`~modelprint.probes.attribution.LowestLoss`),
and the baseline any signature must beat at an equal number of calls (method notes §2). The per-timestep losses
are also the raw material of trajectory features (loss along the whole diffusion trajectory).

Noise is drawn once per repeat from ``seed`` and shared by every image and timestep (common random numbers), as in
:class:`~modelprint.probes.sds.SpectralProbe`: the same seed gives bit-identical signatures, and a setting with a
subset of the timesteps and fewer repeats is cut exactly from a larger grid (:meth:`DenoisingLossProbe.losses_within`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from modelprint.errors import ProbeError
from modelprint.probes.base import PROBES, Probe, ProbeProgress, check_timesteps
from modelprint.probes.candidates import DiffusionCandidate

__all__ = ["DenoisingLossProbe", "LOSS_PRESETS"]

#: ``loss-fast``: 4 small timesteps × 4 repeats = 16 calls, the budget of the SDS ``fast`` preset (at large t the
#: loss hardly depends on the model); ``loss-trajectory``: the loss along the whole trajectory. Which timesteps
#: separate best depends on the candidates: on the tiny zoo models t ≤ 21 did, on the nine standard-zoo diffusion
#: models the dev split chose t = 51, 201 with logistic regression (``benchmarks/README.md``); choose on a
#: validation split.
LOSS_PRESETS = {
    "loss-fast": {"timesteps": (1, 6, 11, 21), "repeats": 4},
    "loss-trajectory": {"timesteps": (1, 51, 101, 201, 301, 401, 501, 601, 701, 801, 901), "repeats": 4},
}


@PROBES.register("loss")
class DenoisingLossProbe(Probe):
    """Log noise-prediction loss at each of ``timesteps`` (averaged over ``repeats`` noises):
    ``signature(denoiser, images)`` → ``(n, len(timesteps))``; see the module docstring."""

    presets = LOSS_PRESETS

    def __init__(self, timesteps: Sequence[int] = (1, 6, 11, 21), repeats: int = 4, seed: int = 0,
                 batch_size: int = 64) -> None:
        self.timesteps = timesteps
        self.repeats = repeats
        self.seed = seed
        self.batch_size = batch_size

    @property
    def calls_per_image(self) -> int:
        return len(self.timesteps) * int(self.repeats)

    @property
    def n_features(self) -> int:
        return len(self.timesteps)

    def noise(self, shape: tuple[int, int, int]) -> torch.Tensor:
        """The repeats' white noises for model-space ``shape``: float32 ``(R, C, h, w)``."""
        generator = torch.Generator().manual_seed(int(self.seed))
        return torch.randn((int(self.repeats), *shape), generator=generator, dtype=torch.float64).float()

    def repeat_losses(self, denoiser: DiffusionCandidate, images: np.ndarray, progress: ProbeProgress | None = None
                      ) -> np.ndarray:
        """Loss of every (image, timestep, repeat): float64 ``(n, T, R)``."""
        if int(self.repeats) < 1 or int(self.batch_size) < 1:
            raise ProbeError(f"loss probe: repeats and batch_size must be >= 1, got {self.repeats}, "
                             f"{self.batch_size}")
        check_timesteps(denoiser, self.timesteps, f"{self.name} probe")
        z0 = denoiser.to_model_space(images)
        n = z0.shape[0]
        eps = self.noise(tuple(z0.shape[1:]))
        r = eps.shape[0]
        steps = [int(t) for t in self.timesteps]
        out = torch.zeros(n, len(steps), r, dtype=torch.float64)
        total, done, bs = n * r * len(steps), 0, int(self.batch_size)
        for ti, t in enumerate(steps):
            a = float(denoiser.alphas_cumprod[t])
            for start in range(0, n * r, bs):
                flat = torch.arange(start, min(start + bs, n * r))
                img, rep = flat // r, flat % r
                x_t = math.sqrt(a) * z0[img] + math.sqrt(1.0 - a) * eps[rep]
                err = (denoiser.predict_noise(x_t, t) - eps[rep]).square().flatten(1).mean(1)
                out[img, ti, rep] = err.double()
                done += len(flat)
                if progress is not None:
                    progress(done, total)
        return out.numpy()

    def losses_within(self, grid: DenoisingLossProbe, repeat_losses: np.ndarray) -> np.ndarray:
        """This setting's repeat-averaged losses ``(n, T)`` cut from a larger ``grid``'s :meth:`repeat_losses`
        (same seed, a superset of the timesteps, at least as many repeats): equal to probing with this setting."""
        grid_steps = [int(t) for t in grid.timesteps]
        missing = [int(t) for t in self.timesteps if int(t) not in grid_steps]
        if int(grid.seed) != int(self.seed) or missing or int(self.repeats) > int(grid.repeats):
            raise ProbeError(f"loss probe: setting (timesteps {tuple(self.timesteps)}, {self.repeats} repeats, "
                             f"seed {self.seed}) is not within the grid's ({tuple(grid.timesteps)}, "
                             f"{grid.repeats}, seed {grid.seed})")
        index = [grid_steps.index(int(t)) for t in self.timesteps]
        return np.asarray(repeat_losses)[:, index, : int(self.repeats)].mean(axis=2)

    def signature(self, denoiser: DiffusionCandidate, images: np.ndarray, progress: ProbeProgress | None = None
                  ) -> np.ndarray:
        return np.log(self.repeat_losses(denoiser, images, progress).mean(axis=2))

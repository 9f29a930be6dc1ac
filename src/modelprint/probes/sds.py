"""Spectral Denoising Signatures (SDS): how a denoiser moves band-limited noise energy across frequency rings.

For an image ``x_0`` in the denoiser's model space (``C × h × w``), a scale ``s``, a timestep ``t`` and an input ring
``k`` (one of ``K`` equal-width bands of the radius ``√(f_y² + f_x²)/√2`` on the ``[-1, 1]`` frequency grid):

1. ``η_k``: white noise ε filtered to ring ``k`` in the FFT domain and rescaled to ε's standard deviation;
   the probe noise is ``s · η_k``;
2. ``x_t = √ᾱ_t x_0 + √(1−ᾱ_t) s η_k`` goes through the denoiser (one call per probe);
3. the residual ``r = ε̂(x_t, t) − s η_k``; ``E[k, j]`` is the mean of ``|FFT(r)|²`` over output ring ``j`` (and
   channels; orthonormal FFT), averaged over ``R`` repeats of ε.

Each row of ``E`` is L1-normalised into a ``K × K`` coupling matrix per ``(s, t)``; the signature is the flattened
``(S, T, K, K)`` stack (length ``S·T·K²``: 192 for the 1-step, 960 for the 5-step reference setting) in that order.

Choices where the reference leaves room (see ``docs/method-notes.md`` §2):

- Rings use the exact FFT frequencies (``2·fftfreq``, Nyquist at 1), so every mask is Hermitian-symmetric and the
  band-limited noise is exactly real; the reference builds them on ``linspace(-1, 1)``, which is off by up to one
  frequency bin.
- One ε per repeat is drawn from ``seed`` and shared by every image, ring, scale and timestep (common random
  numbers): two images, or one image through two candidates, see identical probes. The same seed, settings and
  images give bit-identical signatures; another ``batch_size`` or batch composition changes them only by float32
  rounding in the network (about 1e-7).
- ``log_energy=True`` appends ``log Σ_j E[k, j]`` (``S·T·K`` values) after the coupling entries. Row normalisation
  discards the residual's absolute energy, which is the strongest single cue that an image came from a model (a
  model predicts the noise in its own samples best); with it, the signature keeps all of ``E``.

Cost: ``S·T·K·R`` denoiser calls (forward images) per image (:attr:`SpectralProbe.calls_per_image`) plus, for latent
models, one VAE encoding. All probes of an image batch go through the network together in chunks of ``batch_size``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from modelprint.errors import ProbeError
from modelprint.probes.base import PROBES, Probe, ProbeProgress, check_timesteps
from modelprint.probes.candidates import DiffusionCandidate

__all__ = ["SpectralProbe", "PRESETS", "ring_masks", "coupling", "TIMESTEPS_1", "TIMESTEPS_5"]

#: The reference "1 step": index 25 of a 50-step DDIM grid (leading spacing, offset 1) over 1000 timesteps.
TIMESTEPS_1: tuple[int, ...] = (481,)
#: The reference "5 steps" on the same grid.
TIMESTEPS_5: tuple[int, ...] = (781, 601, 401, 201, 1)
_SCALES = (1.0, 1.25, 1.5)

#: Named settings. ``reference-1``/``reference-5`` are the seed paper's (144 and 720 calls per image); ``fast``
#: probes 4 rings at two small timesteps with one scale and two repeats (16 calls) and keeps the residual energy. On
#: the nine standard-zoo diffusion models (unknown origin, 8 references each) ``fast`` scored 0.611 against the
#: 5-step setting's 0.704 at 1/45 of its calls (``benchmarks/README.md``); choose the setting for your candidates
#: on a validation split.
PRESETS: dict[str, dict[str, Any]] = {
    "reference-1": {"rings": 8, "timesteps": TIMESTEPS_1, "noise_scales": _SCALES, "repeats": 6},
    "reference-5": {"rings": 8, "timesteps": TIMESTEPS_5, "noise_scales": _SCALES, "repeats": 6},
    "fast": {"rings": 4, "timesteps": (201, 1), "noise_scales": (1.0,), "repeats": 2, "log_energy": True},
}

def ring_masks(height: int, width: int, rings: int) -> torch.Tensor:
    """Boolean ``(rings, height, width)`` masks (unshifted FFT layout) of equal-width bands of
    ``√(f_y² + f_x²)/√2`` with ``f`` on the ``[-1, 1]`` grid; the corner frequency falls in the last ring."""
    fy = torch.fft.fftfreq(height, dtype=torch.float64) * 2
    fx = torch.fft.fftfreq(width, dtype=torch.float64) * 2
    radius = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2) / math.sqrt(2)
    index = torch.clamp((radius * rings).floor().long(), max=rings - 1)
    return index[None] == torch.arange(rings)[:, None, None]


def coupling(energies: np.ndarray) -> np.ndarray:
    """Row-L1-normalised coupling matrices from ring energies ``(..., K, K)`` (rows: input ring)."""
    return energies / energies.sum(axis=-1, keepdims=True)


@PROBES.register("sds")
class SpectralProbe(Probe):
    """The SDS probe: ``signature(denoiser, images)`` → ``(n, d)``; see the module docstring for the definition.

    ``timesteps`` are integer training timesteps of the candidate's schedule; ``noise_scales`` multiply the
    band-limited noise; ``repeats`` fresh noises are averaged; ``batch_size`` forward images go through the network
    per call. ``SpectralProbe.preset("fast")`` builds a named setting from :data:`PRESETS`.
    """

    presets = PRESETS

    def __init__(self, rings: int = 8, timesteps: Sequence[int] = TIMESTEPS_1,
                 noise_scales: Sequence[float] = _SCALES, repeats: int = 6, seed: int = 0, batch_size: int = 64,
                 log_energy: bool = False) -> None:
        self.rings = rings
        self.timesteps = timesteps
        self.noise_scales = noise_scales
        self.repeats = repeats
        self.seed = seed
        self.batch_size = batch_size
        self.log_energy = log_energy

    @property
    def calls_per_image(self) -> int:
        """Denoiser calls (forward images) per probed image: scales × timesteps × rings × repeats."""
        return len(self.noise_scales) * len(self.timesteps) * int(self.rings) * int(self.repeats)

    @property
    def n_features(self) -> int:
        """Length of the signature vector."""
        s, t, k = len(self.noise_scales), len(self.timesteps), int(self.rings)
        return s * t * k * (k + int(bool(self.log_energy)))

    def _validate(self, denoiser: DiffusionCandidate) -> None:
        if int(self.rings) < 1 or int(self.repeats) < 1 or int(self.batch_size) < 1:
            raise ProbeError(f"probe: rings, repeats and batch_size must be >= 1, got {self.rings}, "
                             f"{self.repeats}, {self.batch_size}")
        if not len(self.noise_scales):
            raise ProbeError("probe: needs at least one noise scale")
        if any(float(s) <= 0 for s in self.noise_scales):
            raise ProbeError(f"probe: noise scales must be positive, got {tuple(self.noise_scales)}")
        check_timesteps(denoiser, self.timesteps, f"{self.name} probe")

    def probe_noise(self, shape: tuple[int, int, int]) -> torch.Tensor:
        """The probe noises ``s · η_k`` for model-space ``shape`` ``(C, h, w)``: float32 ``(S, K, R, C, h, w)``."""
        k, r = int(self.rings), int(self.repeats)
        generator = torch.Generator().manual_seed(int(self.seed))
        eps = torch.randn((r, *shape), generator=generator, dtype=torch.float64)
        masks = ring_masks(shape[1], shape[2], k)
        band = torch.fft.ifft2(torch.fft.fft2(eps)[None] * masks[:, None, None]).real  # (K, R, C, h, w)
        band = band * (eps.std(dim=(1, 2, 3))[None, :, None, None, None]
                       / band.std(dim=(2, 3, 4), keepdim=True))
        scales = torch.tensor([float(s) for s in self.noise_scales], dtype=torch.float64)
        return (scales.view(-1, 1, 1, 1, 1, 1) * band[None]).float()

    def repeat_energies(self, denoiser: DiffusionCandidate, images: np.ndarray, progress: ProbeProgress | None = None
                        ) -> np.ndarray:
        """Mean residual energy per (input ring, output ring) for every repeat: float64 ``(n, S, T, K, R, K)``."""
        self._validate(denoiser)
        z0 = denoiser.to_model_space(images)
        n, c, h, w = z0.shape
        k = int(self.rings)
        masks = ring_masks(h, w, k)
        counts = masks.flatten(1).sum(1)
        if bool((counts == 0).any()):
            raise ProbeError(f"candidate {denoiser.name!r}: its {h}x{w} model space is too small for "
                             f"{k} frequency rings (ring {int(torch.nonzero(counts == 0)[0])} is empty)")
        weights = (masks.flatten(1).double() / counts[:, None]).T  # (h·w, K): mean over each output ring
        noise = self.probe_noise((c, h, w)).reshape(-1, c, h, w)
        q = noise.shape[0]
        steps = [int(t) for t in self.timesteps]
        out = torch.zeros(n, len(steps), q, k, dtype=torch.float64)
        total, done = n * q * len(steps), 0
        bs = int(self.batch_size)
        for ti, t in enumerate(steps):
            a = float(denoiser.alphas_cumprod[t])
            signal, sigma = math.sqrt(a), math.sqrt(1.0 - a)
            for start in range(0, n * q, bs):
                flat = torch.arange(start, min(start + bs, n * q))
                img, probe = flat // q, flat % q
                x_t = signal * z0[img] + sigma * noise[probe]
                residual = denoiser.predict_noise(x_t, t) - noise[probe]
                power = torch.fft.fft2(residual, norm="ortho").abs().square().mean(1).flatten(1)
                out[img, ti, probe] = power.double() @ weights
                done += len(flat)
                if progress is not None:
                    progress(done, total)
        s, r = len(self.noise_scales), int(self.repeats)
        return out.reshape(n, len(steps), s, k, r, k).permute(0, 2, 1, 3, 4, 5).numpy()

    def energies(self, denoiser: DiffusionCandidate, images: np.ndarray, progress: ProbeProgress | None = None
                 ) -> np.ndarray:
        """Mean residual energy per (input ring, output ring): float64 ``(n, S, T, K, K)``, averaged over repeats."""
        return self.repeat_energies(denoiser, images, progress).mean(axis=4)

    def energies_within(self, grid: SpectralProbe, repeat_energies: np.ndarray) -> np.ndarray:
        """This setting's :meth:`energies`, cut without a denoiser call from the :meth:`repeat_energies` ``(n, S, T,
        K, R, K)`` of a larger setting ``grid``: same rings and seed, a superset of the timesteps and noise scales,
        at least as many repeats. Because all settings draw the same noises from the seed (repeat ``r`` of a larger
        setting is repeat ``r`` of a smaller one), the cut equals probing with this setting; one expensive probe
        thus evaluates many cheaper ones."""
        if int(grid.rings) != int(self.rings) or int(grid.seed) != int(self.seed):
            raise ProbeError(f"probe: rings/seed {self.rings}/{self.seed} differ from the grid's "
                             f"{grid.rings}/{grid.seed}; cheaper rings need their own probing")
        t_index = [list(map(int, grid.timesteps)).index(int(t)) if int(t) in map(int, grid.timesteps) else -1
                   for t in self.timesteps]
        s_index = [list(map(float, grid.noise_scales)).index(float(s)) if float(s) in map(float, grid.noise_scales)
                   else -1 for s in self.noise_scales]
        if -1 in t_index or -1 in s_index or int(self.repeats) > int(grid.repeats):
            raise ProbeError(f"probe: setting (timesteps {tuple(self.timesteps)}, scales "
                             f"{tuple(self.noise_scales)}, {self.repeats} repeats) is not within the grid's "
                             f"({tuple(grid.timesteps)}, {tuple(grid.noise_scales)}, {grid.repeats})")
        e = np.asarray(repeat_energies)[:, s_index][:, :, t_index][:, :, :, :, : int(self.repeats)]
        return e.mean(axis=4)

    def signature(self, denoiser: DiffusionCandidate, images: np.ndarray, progress: ProbeProgress | None = None
                  ) -> np.ndarray:
        """The SDS signature of each image through ``denoiser``: float64 ``(n, n_features)``."""
        return self.signature_from_energies(self.energies(denoiser, images, progress))

    def signature_from_energies(self, energies: np.ndarray) -> np.ndarray:
        """Flattened coupling matrices (and, with ``log_energy``, log row energies) from :meth:`energies`."""
        n = energies.shape[0]
        parts = [coupling(energies).reshape(n, -1)]
        if self.log_energy:
            parts.append(np.log(energies.sum(axis=-1)).reshape(n, -1))
        return np.concatenate(parts, axis=1)

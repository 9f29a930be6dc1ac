"""Reconstruction residuals: how far an image moves when a generative model rebuilds it.

A model rebuilds its own images more faithfully than others', so the residual ``r = |x − x̂|`` carries the
fingerprint of the model that made ``x`` (DIRE, LaRE², AEROBLADE). Three registered kinds
(:data:`RECONSTRUCTIONS`), all scikit-learn-style (parameters in ``__init__``) and deterministic:

- ``dire`` (:class:`DireReconstruction`): deterministic DDIM inversion of ``x₀`` up to the last timestep in
  ``steps`` steps and DDIM back down (the DDIM step of :func:`~modelprint.provenance.measures.ddim_move`);
  ``2 · steps`` denoiser calls per tile;
- ``one-step`` (:class:`OneStepReconstruction`): noise ``x₀`` to one timestep with a seeded ε and denoise once
  (LaRE²-style); 1 call per tile;
- ``autoencoder`` (:class:`AutoencoderReconstruction`): encode and decode through a diffusers ``AutoencoderKL``
  (AEROBLADE-style, training-free; pixel distance, since LPIPS's VGG weights are not available here); no denoiser
  calls, one encoder and one decoder pass per tile.

Latent candidates are inverted in their latent space and decoded through their own VAE, so for them the residual
includes the autoencoder's error, as in DIRE on latent models. Residuals are float32 ``(n, H, W, 3)`` in
``[0, 1]`` (half the ``[-1, 1]`` distance). An image larger than the model's size is cut into non-overlapping tiles
of that size (the remainder padded by reflection, the result cropped back); a smaller one, or a size the model's
downsampling cannot take, is a one-line :class:`~modelprint.errors.ProbeError`.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator

from modelprint.errors import ProbeError
from modelprint.probes.candidates import DiffusionCandidate, VaeEncoder, check_uint8_images
from modelprint.provenance.base import CallMeter
from modelprint.provenance.measures import ddim_move
from modelprint.registry import Registry
from modelprint.zoo.base import to_unit

__all__ = ["RECONSTRUCTIONS", "AutoencoderReconstruction", "DireReconstruction", "OneStepReconstruction",
           "Reconstruction", "Reconstructor", "tile_grid"]

#: Reconstruction residual kinds by name.
RECONSTRUCTIONS: Registry[Reconstructor] = Registry("reconstruction")


@dataclass
class Reconstruction:
    """Residuals ``(n, H, W, 3)`` float32 in ``[0, 1]`` of ``n`` images through one model, with what they cost."""

    residuals: np.ndarray
    model: str
    kind: str
    tiles_per_image: float
    calls_per_image: float
    seconds_per_image: float
    settings: dict[str, Any] = field(default_factory=dict)

    def distances(self) -> np.ndarray:
        """Mean residual per image, float64 ``(n,)`` (the reconstruction distance)."""
        return self.residuals.reshape(len(self.residuals), -1).mean(axis=1, dtype=np.float64)


def tile_grid(height: int, width: int, tile: tuple[int, int], name: str) -> tuple[int, int]:
    """Rows and columns of ``tile``-sized tiles covering a ``height × width`` image; ProbeError if it is smaller."""
    th, tw = tile
    if height < th or width < tw:
        raise ProbeError(f"model {name!r}: image size {height}x{width} is smaller than the {th}x{tw} it "
                         "reconstructs (upscale the image or use a model of that size)")
    return math.ceil(height / th), math.ceil(width / tw)


def _to_tiles(images: np.ndarray, tile: tuple[int, int], name: str) -> np.ndarray:
    """uint8 ``(n, H, W, 3)`` → ``(n · rows · cols, th, tw, 3)``, the remainder padded by reflection."""
    n, h, w, _ = images.shape
    (th, tw), (rows, cols) = tile, tile_grid(h, w, tile, name)
    padded = np.pad(images, ((0, 0), (0, rows * th - h), (0, cols * tw - w), (0, 0)), mode="reflect")
    return padded.reshape(n, rows, th, cols, tw, 3).transpose(0, 1, 3, 2, 4, 5).reshape(-1, th, tw, 3)


def _from_tiles(tiles: np.ndarray, n: int, height: int, width: int) -> np.ndarray:
    """Inverse of :func:`_to_tiles`: ``(n · rows · cols, th, tw, 3)`` → ``(n, height, width, 3)``."""
    _, th, tw, c = tiles.shape
    rows, cols = math.ceil(height / th), math.ceil(width / tw)
    full = tiles.reshape(n, rows, cols, th, tw, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, rows * th, cols * tw, c)
    return np.ascontiguousarray(full[:, :height, :width])


def _decode(candidate: DiffusionCandidate, z: torch.Tensor) -> torch.Tensor:
    """Model-space ``z`` → pixels in ``[-1, 1]`` (through the candidate's VAE for latent candidates)."""
    encoder = getattr(candidate, "encoder", None)
    return z if encoder is None else encoder.decode(z)


class Reconstructor(BaseEstimator, ABC):
    """Rebuilds images through a model and returns the residuals (:meth:`residuals`).

    ``tile`` is the tile size in pixels; ``None`` takes the model's own size (the whole image when the model takes
    any size). ``batch_size`` bounds the tiles per network call.
    """

    name: str

    @abstractmethod
    def _model_name(self, model: Any) -> str:
        """The model's name in messages and results."""

    @abstractmethod
    def _native_tile(self, model: Any) -> tuple[int, int] | None:
        """The pixel size the model must be given, or ``None`` for any size."""

    @abstractmethod
    def _reconstruct(self, model: Any, tiles: np.ndarray, meter: CallMeter) -> torch.Tensor:
        """uint8 tiles ``(m, th, tw, 3)`` → reconstructions ``(m, 3, th, tw)`` in ``[-1, 1]``."""

    @abstractmethod
    def calls_per_tile(self) -> int:
        """Denoiser calls (forward images) per tile."""

    def _check(self, model: Any) -> None:
        """ProbeError if the parameters do not suit ``model``."""
        if int(self.batch_size) < 1:
            raise ProbeError(f"{self.name} reconstruction: batch_size must be >= 1, got {self.batch_size}")

    def tile_size(self, model: Any, height: int, width: int) -> tuple[int, int]:
        """The tile size used for a ``height × width`` image through ``model``."""
        if self.tile is not None:
            return int(self.tile), int(self.tile)
        native = self._native_tile(model)
        return (height, width) if native is None else native

    def rebuilt(self, model: Any, tiles: np.ndarray, meter: CallMeter | None = None) -> torch.Tensor:
        """Reconstructions ``(m, 3, t, t)`` in ``[-1, 1]`` of uint8 ``tiles`` ``(m, t, t, 3)`` already of the
        model's tile size (no gradient): what :meth:`residuals` subtracts."""
        name = self._model_name(model)
        check_uint8_images(tiles, name)
        self._check(model)
        meter, bs = meter or CallMeter(len(tiles) * self.calls_per_tile()), int(self.batch_size)
        with torch.no_grad():
            return torch.cat([self._reconstruct(model, tiles[i:i + bs], meter)
                              for i in range(0, len(tiles), bs)]).float().clamp(-1, 1)

    def residuals(self, model: Any, images: np.ndarray) -> Reconstruction:
        """Residuals ``|x − x̂|`` of uint8 ``images`` ``(n, H, W, 3)`` through ``model``."""
        name = self._model_name(model)
        check_uint8_images(images, name)
        self._check(model)
        start = time.perf_counter()
        n, h, w, _ = images.shape
        tiles = _to_tiles(images, self.tile_size(model, h, w), name)
        meter = CallMeter(len(tiles) * self.calls_per_tile())
        diff = ((to_unit(tiles) - self.rebuilt(model, tiles, meter)).abs() / 2).permute(0, 2, 3, 1).numpy()
        settings = {k: v for k, v in self.get_params().items()}
        return Reconstruction(residuals=_from_tiles(diff.astype(np.float32), n, h, w), model=name, kind=self.name,
                              tiles_per_image=len(tiles) / n, calls_per_image=meter.forward / n,
                              seconds_per_image=(time.perf_counter() - start) / n, settings=settings)


class _DiffusionReconstructor(Reconstructor):
    """A reconstruction through a :class:`~modelprint.probes.candidates.DiffusionCandidate`."""

    def _model_name(self, model: Any) -> str:
        if not isinstance(model, DiffusionCandidate):
            raise ProbeError(f"{self.name} reconstruction: needs a diffusion candidate (e.g. DiffusersCandidate), "
                             f"got a {type(model).__name__}")
        return model.name

    def _native_tile(self, model: DiffusionCandidate) -> tuple[int, int] | None:
        if model.sample_size is None:
            return None
        return model.sample_size[0] * model.factor, model.sample_size[1] * model.factor

    def _reconstruct(self, model: DiffusionCandidate, tiles: np.ndarray, meter: CallMeter) -> torch.Tensor:
        return _decode(model, self._rebuild(model, model.to_model_space(tiles), meter))

    @abstractmethod
    def _rebuild(self, model: DiffusionCandidate, z0: torch.Tensor, meter: CallMeter) -> torch.Tensor:
        """Model-space ``z0`` → its reconstruction in model space."""


@RECONSTRUCTIONS.register("dire")
class DireReconstruction(_DiffusionReconstructor):
    """DIRE: deterministic DDIM inversion to the last timestep in ``steps`` steps and back; ``2 · steps`` calls."""

    def __init__(self, steps: int = 20, tile: int | None = None, batch_size: int = 64) -> None:
        self.steps = steps
        self.tile = tile
        self.batch_size = batch_size

    def chain(self, model: DiffusionCandidate) -> list[int]:
        """The timesteps visited on the way up, from 0 to the last one (``steps + 1`` of them)."""
        last = model.num_timesteps - 1
        if not 1 <= int(self.steps) <= last:
            raise ProbeError(f"candidate {model.name!r}: DIRE steps must be in [1, {last}], got {self.steps}")
        return [round(i * last / int(self.steps)) for i in range(int(self.steps) + 1)]

    def _check(self, model: DiffusionCandidate) -> None:
        super()._check(model)
        self.chain(model)

    def calls_per_tile(self) -> int:
        return 2 * int(self.steps)

    def _rebuild(self, model: DiffusionCandidate, z0: torch.Tensor, meter: CallMeter) -> torch.Tensor:
        chain, x = self.chain(model), z0
        for s, s_next in zip(chain, chain[1:]):
            x = ddim_move(model, x, s, s_next, meter)
        for s, s_next in zip(chain[::-1], chain[-2::-1]):
            x = ddim_move(model, x, s, s_next, meter)
        return x


@RECONSTRUCTIONS.register("one-step")
class OneStepReconstruction(_DiffusionReconstructor):
    """LaRE²-style: noise to the timestep at ``fraction`` of the schedule with a noise seeded by ``seed`` (the same
    for every tile) and denoise in one step; 1 call."""

    def __init__(self, fraction: float = 0.1, seed: int = 0, tile: int | None = None, batch_size: int = 64) -> None:
        self.fraction = fraction
        self.seed = seed
        self.tile = tile
        self.batch_size = batch_size

    def timestep(self, model: DiffusionCandidate) -> int:
        """The integer timestep noised to, at least 1."""
        if not 0.0 < float(self.fraction) < 1.0:
            raise ProbeError(f"one-step reconstruction: fraction must be in (0, 1), got {self.fraction}")
        return max(1, min(model.num_timesteps - 1, round(float(self.fraction) * model.num_timesteps)))

    def _check(self, model: DiffusionCandidate) -> None:
        super()._check(model)
        self.timestep(model)

    def calls_per_tile(self) -> int:
        return 1

    def _rebuild(self, model: DiffusionCandidate, z0: torch.Tensor, meter: CallMeter) -> torch.Tensor:
        t = self.timestep(model)
        a = float(model.alphas_cumprod[t])
        generator = torch.Generator().manual_seed(int(self.seed))
        noise = torch.randn(tuple(z0.shape[1:]), generator=generator, dtype=torch.float64).float()
        x_t = math.sqrt(a) * z0 + math.sqrt(1.0 - a) * noise
        return (x_t - math.sqrt(1.0 - a) * meter.eps(model, x_t, t)) / math.sqrt(a)


@RECONSTRUCTIONS.register("autoencoder")
class AutoencoderReconstruction(Reconstructor):
    """AEROBLADE-style: encode to the latent mean and decode through a diffusers ``AutoencoderKL`` (or the VAE of a
    latent candidate); no denoiser calls. Any size its downsampling divides unless ``tile`` is set."""

    def __init__(self, tile: int | None = None, batch_size: int = 64) -> None:
        self.tile = tile
        self.batch_size = batch_size

    @staticmethod
    def _vae(model: Any) -> VaeEncoder:
        encoder = getattr(model, "encoder", None)
        if isinstance(model, DiffusionCandidate):
            if encoder is None:
                raise ProbeError(f"autoencoder reconstruction: candidate {model.name!r} is a pixel-space model "
                                 "with no VAE")
            return encoder
        if not (hasattr(model, "encode") and hasattr(model, "decode") and hasattr(model, "config")):
            raise ProbeError("autoencoder reconstruction: needs a diffusers AutoencoderKL or a latent candidate, "
                             f"got a {type(model).__name__}")
        return VaeEncoder(model)

    def _model_name(self, model: Any) -> str:
        self._vae(model)
        return model.name if isinstance(model, DiffusionCandidate) else type(model).__name__

    def _native_tile(self, model: Any) -> tuple[int, int] | None:
        return None

    def calls_per_tile(self) -> int:
        return 0

    def _reconstruct(self, model: Any, tiles: np.ndarray, meter: CallMeter) -> torch.Tensor:
        vae = self._vae(model)
        th, tw = tiles.shape[1:3]
        if th % vae.factor or tw % vae.factor:
            raise ProbeError(f"autoencoder reconstruction: tile size {th}x{tw} is not divisible by the VAE's "
                             f"downsampling factor {vae.factor}")
        return vae.decode(vae(tiles))

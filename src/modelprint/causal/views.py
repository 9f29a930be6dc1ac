"""DIRE feature views: fingerprint methods on the reconstruction residual ``r = |x − x̂|`` of an image rebuilt by a
diffusion model (:class:`~modelprint.causal.reconstruction.DireReconstruction`), registered in
:data:`modelprint.methods.METHODS` so galleries, ``evaluate`` and ``fused`` take them by name:

- ``dire-stats`` (:class:`DireStatsView`): reconstruction-error statistics: per channel mean, std and quantiles of
  the DIRE and one-step (LaRE²-style) residuals, the two distances, their ratio and their spread over tiles;
- ``dire-fourier`` (:class:`DireFourierView`): quantised Fourier statistics: band energies of the residual's
  log-power spectrum (``radial × angular`` bands per channel), rounded to a ``quantum`` in log units;
- ``dire-cnn`` (:class:`DireCnnView`, :mod:`modelprint.causal.dire_cnn`): a small CNN trained here on the
  residuals' log-spectra of synthetic generators' images (zero-shot, like ``learned``).

The seed paper's other views, ImageNet-pretrained and DINO self-supervised embeddings of the residual, need
pretrained weights that cannot be downloaded here; modelprint has only views it can train itself.

Every view rebuilds an image through ``model`` (``None``: the shipped 32² DDPM, :mod:`modelprint.causal.reference`;
else a zoo model name with ``zoo``, a diffusers folder or a UNet checkpoint) tile by tile: a deterministic grid of
at most ``max_tiles`` tiles of the model's size, evenly spread over the image (so a 4096² image costs what a 256²
one does), with ``steps`` DDIM steps each way. Any image at least the model's size (32 px for the shipped one)
works; a smaller one is a one-line :class:`~modelprint.errors.ProbeError`. ``dire-stats`` and ``dire-fourier`` are
standardised per feature against real photos (held-out crops of the real-image pool, reconstructed when the view
is built); the reference's hash is in the version. Residuals are cached per process by image and model, so a
fused method of several DIRE views reconstructs each image once; so are the differentiable path's reconstructions.

Every DIRE view also has a differentiable path (``embed_torch``, for attacks such as
:mod:`modelprint.causal.anonymize`): pixels rounded to 8 bits in the forward pass as a saved image is, the
reconstruction held constant in the backward pass (BPDA, Athalye et al., 2018), so the gradient is that of the
residual's statistics; the rounding of ``dire-fourier`` passes it straight through.
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch

from modelprint.causal.reconstruction import DireReconstruction, OneStepReconstruction, Reconstructor
from modelprint.causal.reference import load_reconstructor, reconstructor_digest
from modelprint.errors import ProbeError
from modelprint.methods.base import METHODS, FingerprintMethod
from modelprint.probes.candidates import DiffusionCandidate

#: Loaded reconstruction models by ``(model, zoo)``, and residuals by (model, reconstruction, image tiles).
_MODELS: dict[tuple[str | None, str | None], tuple[DiffusionCandidate, str]] = {}
_RESIDUALS: OrderedDict[tuple[str, str, str], np.ndarray] = OrderedDict()
#: Reconstructions of the differentiable path by (model, reconstruction, image tiles): the views of a fused method
#: attacked together rebuild each PGD iterate once.
_REBUILT: OrderedDict[tuple[str, str, str], torch.Tensor] = OrderedDict()
_CACHED_IMAGES = 256
#: Real photo crops the statistics views are standardised against.
REFERENCE_CROPS = 96


def tile_corners(height: int, width: int, tile: int, max_tiles: int) -> list[tuple[int, int]]:
    """Top-left corners of at most ``max_tiles`` ``tile``² tiles in an evenly spread grid over the image (rows ×
    columns, the rows at most ⌊√max_tiles⌋)."""
    rows = max(1, min(height // tile, math.isqrt(max_tiles)))
    cols = max(1, min(width // tile, max_tiles // rows))
    ys = np.linspace(0, height - tile, rows).round().astype(int)
    xs = np.linspace(0, width - tile, cols).round().astype(int)
    return [(int(y), int(x)) for y in ys for x in xs]


def check_fits(height: int, width: int, tile: int, name: str) -> None:
    """One-line :class:`ProbeError` when a ``height × width`` image is smaller than model ``name``'s tile."""
    if height < tile or width < tile:
        raise ProbeError(f"model {name!r}: image size {height}x{width} is smaller than the {tile}x{tile} it "
                         "reconstructs")


def image_tiles(image: np.ndarray, tile: int, max_tiles: int, name: str) -> np.ndarray:
    """uint8 tiles ``(k, tile, tile, 3)`` of an ``(H, W, 3)`` float image in [0, 1] (see :func:`tile_corners`)."""
    h, w = image.shape[:2]
    check_fits(h, w, tile, name)
    pixels = np.clip(np.round(np.asarray(image, dtype=np.float32) * 255), 0, 255).astype(np.uint8)
    return np.stack([pixels[y:y + tile, x:x + tile] for y, x in tile_corners(h, w, tile, max_tiles)])


def _model(model: str | None, zoo: str | None) -> tuple[DiffusionCandidate, str]:
    key = (None if model is None else str(model), None if zoo is None else str(zoo))
    if key not in _MODELS:
        _MODELS[key] = (load_reconstructor(model, zoo), reconstructor_digest(model, zoo))
    return _MODELS[key]


def _tiles_key(digest: str, recon: Reconstructor, tiles: np.ndarray) -> tuple[str, str, str]:
    setting = f"{recon.name}:{sorted(recon.get_params().items())}"
    return digest, setting, hashlib.sha1(tiles.tobytes() + repr(tiles.shape).encode()).hexdigest()


def _evict(cache: OrderedDict) -> None:
    while len(cache) > _CACHED_IMAGES:
        cache.popitem(last=False)


def rebuilt_tiles(candidate: DiffusionCandidate, digest: str, recon: Reconstructor, tiles: np.ndarray) -> torch.Tensor:
    """Reconstruction ``(k, 3, t, t)`` in ``[-1, 1]`` of one image's uint8 tiles ``(k, t, t, 3)`` through
    ``candidate``, kept in the process's cache."""
    key = _tiles_key(digest, recon, tiles)
    if key in _REBUILT:
        _REBUILT.move_to_end(key)
    else:
        _REBUILT[key] = recon.rebuilt(candidate, tiles)
        _evict(_REBUILT)
    return _REBUILT[key]


def reconstruction_residuals(candidate: DiffusionCandidate, digest: str, recon: Reconstructor,
                             tiles: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Residuals ``(k, t, t, 3)`` float32 of each image's uint8 tiles through ``candidate`` (an image's tiles are one
    network batch), kept in the process's cache."""
    keys = [_tiles_key(digest, recon, t) for t in tiles]
    found = {i: _RESIDUALS[k] for i, k in enumerate(keys) if k in _RESIDUALS}
    for i in found:
        _RESIDUALS.move_to_end(keys[i])
    todo = [i for i in range(len(keys)) if i not in found]
    for i in todo:  # one image per call: the same network batch whatever else is embedded, so the same numbers
        found[i] = _RESIDUALS[keys[i]] = recon.residuals(candidate, tiles[i]).residuals
    _evict(_RESIDUALS)
    return [found[i] for i in range(len(keys))]


class DireView(FingerprintMethod):
    """What every DIRE view shares: the reconstruction model, the tiles, the DIRE residuals (see the module)."""

    version_tag = "1"

    def _setup(self, model: str | None, zoo: str | None, steps: int, max_tiles: int, batch_size: int) -> None:
        if int(max_tiles) < 1:
            raise ValueError(f"{self.name}: max_tiles must be >= 1, got {max_tiles}")
        self.candidate, self.digest = _model(model, zoo)
        size = self.candidate.sample_size
        self.tile = 32 if size is None else int(size[0] * self.candidate.factor)
        self.dire = DireReconstruction(steps=int(steps), tile=self.tile, batch_size=int(batch_size))
        self.dire.chain(self.candidate)  # steps out of range: one-line ProbeError now

    def _tiles(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [image_tiles(im, self.tile, int(self.max_tiles), self.candidate.name) for im in images]

    def residuals(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Each image's DIRE residual tiles ``(k, t, t, 3)`` float32 in [0, 1]."""
        return reconstruction_residuals(self.candidate, self.digest, self.dire, self._tiles(images))

    def _base_version(self) -> str:
        return f"{self.version_tag}-{self.digest}-s{self.steps}-n{self.max_tiles}"

    def _torch_tiles(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each image's tiles ``(k, 3, t, t)`` of pixels ``x`` ``(n, 3, H, W)`` (those of :func:`image_tiles`)."""
        h, w = int(x.shape[2]), int(x.shape[3])
        check_fits(h, w, self.tile, self.candidate.name)
        corners = tile_corners(h, w, self.tile, int(self.max_tiles))
        return [torch.stack([xi[:, y:y + self.tile, c:c + self.tile] for y, c in corners]) for xi in x]

    def _torch_residuals(self, recon: Reconstructor, tiles: torch.Tensor) -> torch.Tensor:
        """``|x − x̂| / 2`` of tiles ``(k, 3, t, t)`` in [0, 1], ``(k, t, t, 3)``: ``x`` rounded to 8 bits as a saved
        image is (a DIRE residual is small enough that sub-level changes would fool an attack that skipped this),
        ``x̂`` rebuilt from it and held constant in the backward pass (BPDA), so the gradient is that of the
        residual's statistics, not of the reconstruction."""
        levels = (tiles.detach() * 255).round().clamp(0, 255)
        tiles = tiles + (levels / 255 - tiles).detach()  # 8-bit in the forward pass, as saved; identity backward
        pixels = levels.to(torch.uint8).permute(0, 2, 3, 1).numpy()
        rebuilt = rebuilt_tiles(self.candidate, self.digest, recon, np.ascontiguousarray(pixels))
        return ((tiles * 2 - 1) - rebuilt).abs().permute(0, 2, 3, 1) / 2


class StandardisedView(DireView, ABC):
    """A DIRE view whose handcrafted features are standardised against real photos."""

    @abstractmethod
    def features(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Unstandardised features ``(n, d)`` float64."""

    def _standardise(self, feats: np.ndarray) -> np.ndarray:
        return ((feats - self._mean) / self._std).astype(np.float32)

    def _fit_reference(self) -> None:
        """Per-feature mean and std over held-out real photo crops (the statistics views' reference)."""
        from modelprint.io.pool import RealPool

        crops = RealPool().crops(REFERENCE_CROPS, size=self.tile, seed=0, split="holdout")
        feats = self.features([c.astype(np.float32) / 255 for c in crops])
        self._mean = feats.mean(axis=0)
        self._std = np.maximum(feats.std(axis=0), 1e-3)
        digest = hashlib.sha256(np.round(np.concatenate([self._mean, self._std]), 4).tobytes()).hexdigest()
        self._ref = digest[:8]

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        if not len(images):
            return np.zeros((0, len(self._mean)), np.float32)
        return self._standardise(self.features(images))

    @abstractmethod
    def _torch_features(self, tiles: torch.Tensor) -> torch.Tensor:
        """:meth:`features` of one image's tiles ``(k, 3, t, t)`` as a float64 torch function (BPDA residuals)."""

    def embed_torch(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`embed` as a torch function of pixels ``(n, 3, H, W)`` in [0, 1], differentiable through the
        residual's statistics with each reconstruction held constant (BPDA; see :meth:`_torch_residuals`)."""
        feats = torch.stack([self._torch_features(t) for t in self._torch_tiles(x)])
        mean, std = torch.from_numpy(self._mean), torch.from_numpy(self._std)
        return ((feats - mean) / std).float()


def _quantiles(r: np.ndarray, qs: Sequence[float]) -> np.ndarray:
    """Per-channel quantiles of residual tiles ``(k, t, t, 3)``: ``(len(qs) · 3,)``."""
    return np.quantile(r.reshape(-1, 3), qs, axis=0).ravel()


@METHODS.register("dire-stats")
class DireStatsView(StandardisedView):
    """Reconstruction-error statistics of the DIRE and one-step residuals, standardised against real photos.

    Per image (over its tiles), of log residuals: per channel mean, std and the 50/90/99% quantiles of the DIRE
    residual and of the one-step residual (noised to ``fraction`` of the schedule with a fixed seed), the two mean
    distances, their log ratio, and the spread of the per-tile DIRE distance: 34 features.
    """

    def __init__(self, model: str | None = None, zoo: str | None = None, steps: int = 5, max_tiles: int = 16,
                 fraction: float = 0.1, batch_size: int = 64) -> None:
        self.model, self.zoo, self.steps, self.max_tiles = model, zoo, steps, max_tiles
        self.fraction, self.batch_size = fraction, batch_size
        self._setup(model, zoo, steps, max_tiles, batch_size)
        self.one_step = OneStepReconstruction(fraction=float(fraction), seed=0, tile=self.tile,
                                              batch_size=int(batch_size))
        self.one_step.timestep(self.candidate)
        self._fit_reference()

    @property
    def version(self) -> str:
        return f"{self._base_version()}-f{self.fraction:g}-ref:{self._ref}"

    def features(self, images: Sequence[np.ndarray]) -> np.ndarray:
        tiles = self._tiles(images)
        dire = reconstruction_residuals(self.candidate, self.digest, self.dire, tiles)
        one = reconstruction_residuals(self.candidate, self.digest, self.one_step, tiles)
        rows = []
        for r, r1 in zip(dire, one, strict=True):
            parts = []
            for res in (r, r1):
                flat = np.log(res.reshape(-1, 3).astype(np.float64) + 1e-3)
                parts += [flat.mean(0), flat.std(0), _quantiles(np.exp(flat), (0.5, 0.9, 0.99))]
            d, d1 = float(r.mean()), float(r1.mean())
            per_tile = r.reshape(len(r), -1).mean(1)
            parts.append(np.log(np.array([d + 1e-6, d1 + 1e-6, (d + 1e-6) / (d1 + 1e-6), per_tile.std() + 1e-6])))
            rows.append(np.concatenate(parts))
        return np.stack(rows)

    def _torch_features(self, tiles: torch.Tensor) -> torch.Tensor:
        qs = torch.tensor([0.5, 0.9, 0.99], dtype=torch.float64)
        r = self._torch_residuals(self.dire, tiles).double()
        r1 = self._torch_residuals(self.one_step, tiles).double()
        parts = []
        for res in (r, r1):
            flat = torch.log(res.reshape(-1, 3) + 1e-3)
            parts += [flat.mean(0), flat.std(0, correction=0), torch.quantile(flat.exp(), qs, dim=0).ravel()]
        d, d1 = r.mean() + 1e-6, r1.mean() + 1e-6
        per_tile = r.reshape(len(r), -1).mean(1)
        spread = (per_tile.std(correction=0) if len(r) > 1 else per_tile.new_zeros(())) + 1e-6  # one tile: no grad
        parts.append(torch.log(torch.stack([d, d1, d / d1, spread])))
        return torch.cat(parts)


@METHODS.register("dire-fourier")
class DireFourierView(StandardisedView):
    """Quantised Fourier statistics of the DIRE residual, standardised against real photos.

    Per channel, the log-power spectrum of the residual tiles (averaged over tiles) is summed in ``radial``
    frequency rings × ``angular`` orientation sectors (DC left out), and each band's log energy is rounded to a
    multiple of ``quantum``: ``3 · radial · angular`` features.
    """

    def __init__(self, model: str | None = None, zoo: str | None = None, steps: int = 5, max_tiles: int = 16,
                 radial: int = 8, angular: int = 4, quantum: float = 0.05, batch_size: int = 64) -> None:
        self.model, self.zoo, self.steps, self.max_tiles = model, zoo, steps, max_tiles
        self.radial, self.angular, self.quantum, self.batch_size = radial, angular, quantum, batch_size
        if int(radial) < 1 or int(angular) < 1 or float(quantum) <= 0:
            raise ValueError(f"dire-fourier: radial and angular must be >= 1 and quantum > 0, got {radial}, "
                             f"{angular}, {quantum}")
        self._setup(model, zoo, steps, max_tiles, batch_size)
        self._bands = self._band_index()
        self._fit_reference()

    @property
    def version(self) -> str:
        return f"{self._base_version()}-b{self.radial}x{self.angular}q{self.quantum:g}-ref:{self._ref}"

    def _band_index(self) -> np.ndarray:
        """Band number of every ``rfft2`` bin of a tile (``-1``: DC)."""
        fy = np.fft.fftfreq(self.tile)[:, None]
        fx = np.fft.rfftfreq(self.tile)[None, :]
        radius = np.sqrt(fy**2 + fx**2) / np.sqrt(0.5)
        ring = np.minimum((radius * int(self.radial)).astype(int), int(self.radial) - 1)
        angle = np.mod(np.arctan2(fy, fx), np.pi) / np.pi  # orientations in [0, 1)
        sector = np.minimum((angle * int(self.angular)).astype(int), int(self.angular) - 1)
        band = ring * int(self.angular) + sector
        band[0, 0] = -1
        return band

    def features(self, images: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        n_bands = int(self.radial) * int(self.angular)
        rows = []
        for r in self.residuals(images):
            x = torch.from_numpy(np.ascontiguousarray(r.transpose(0, 3, 1, 2), dtype=np.float32))
            power = (torch.fft.rfft2(x - x.mean(dim=(2, 3), keepdim=True)).abs() ** 2).mean(0).numpy()  # (3, t, t/2+1)
            keep = self._bands >= 0
            energy = np.stack([np.bincount(self._bands[keep], weights=c[keep], minlength=n_bands) for c in power])
            rows.append(np.round(np.log(energy.ravel() + 1e-8) / float(self.quantum)) * float(self.quantum))
        return np.stack(rows)

    def _torch_features(self, tiles: torch.Tensor) -> torch.Tensor:
        """The quantisation passes the gradient straight through."""
        x = self._torch_residuals(self.dire, tiles).permute(0, 3, 1, 2)
        power = (torch.fft.rfft2(x - x.mean(dim=(2, 3), keepdim=True)).abs() ** 2).mean(0).double()
        keep = torch.from_numpy(self._bands >= 0)
        index = torch.from_numpy(self._bands[self._bands >= 0])
        energy = torch.zeros(3, int(self.radial) * int(self.angular), dtype=torch.float64).index_add(1, index,
                                                                                                   power[:, keep])
        e = torch.log(energy.ravel() + 1e-8)
        q = float(self.quantum)
        return e + (torch.round(e / q) * q - e).detach()

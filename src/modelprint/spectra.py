"""Spectra of noise residuals, and the Fréchet Frequency Distance (FFD).

All functions take NumPy arrays and use torch's FFT internally (about 20× faster than NumPy's here).
Frequencies are normalised: a spectrum of a ``T``-pixel tile has bins ``k/T`` cycles per pixel.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg

_EPS = 1e-12


def _as_hwc(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x[..., None] if x.ndim == 2 else x


def log_spectrum_2d(x: np.ndarray, centred: bool = True) -> np.ndarray:
    """Log power spectrum ``log(|FFT2|² / (H·W))`` of an (H, W) or (H, W, C) array, averaged over channels.

    With ``centred`` the zero frequency is moved to the middle (``fftshift``), as plotted in papers.
    """
    import torch

    t = torch.from_numpy(np.ascontiguousarray(_as_hwc(x).transpose(2, 0, 1)))
    power = torch.fft.fft2(t).abs().pow(2).mean(0) / (t.shape[1] * t.shape[2])
    if centred:
        power = torch.fft.fftshift(power)
    return torch.log(power + _EPS).numpy()


def radial_profile(power: np.ndarray, n_bins: int | None = None) -> np.ndarray:
    """Azimuthal mean of a *centred* 2-D spectrum over rings of normalised radius 0 … √2·½ (corner)."""
    h, w = power.shape
    fy = np.fft.fftshift(np.fft.fftfreq(h))
    fx = np.fft.fftshift(np.fft.fftfreq(w))
    radius = np.hypot(fy[:, None], fx[None, :])  # cycles / pixel, max ≈ 0.707
    n_bins = n_bins or min(h, w) // 2
    edges = np.linspace(0.0, 0.5, n_bins + 1)  # rings up to Nyquist on the axes
    idx = np.clip(np.digitize(radius, edges) - 1, 0, n_bins - 1)
    inside = radius <= 0.5
    sums = np.bincount(idx[inside], weights=power[inside], minlength=n_bins)
    counts = np.bincount(idx[inside], minlength=n_bins)
    return (sums / np.maximum(counts, 1)).astype(np.float32)


def radial_power_spectrum(x: np.ndarray, n_bins: int | None = None) -> np.ndarray:
    """Azimuthally integrated 1-D power spectrum (mean power per ring, channels averaged), DC to Nyquist."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(_as_hwc(x).transpose(2, 0, 1)))
    power = torch.fft.fftshift(torch.fft.fft2(t).abs().pow(2).mean(0) / (t.shape[1] * t.shape[2])).numpy()
    return radial_profile(power, n_bins)


def tile_grid(length: int, tile: int) -> list[int]:
    """Start offsets of tiles with 50% overlap covering ``length`` (the last tile is flush with the end)."""
    if length <= tile:
        return [0]
    stride = max(1, tile // 2)
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def welch_power(x: np.ndarray, tile: int = 64, max_tiles: int = 256) -> np.ndarray:
    """Welch estimate of the power spectrum: Hann-windowed ``tile``² tiles (50% overlap), periodograms averaged.

    Returns a centred (tile, tile) array of mean power (channels averaged). Images smaller than ``tile`` use a
    tile of their own size, and the result is resampled onto the ``tile`` grid of normalised frequencies, so
    images of every size ≥ 32 px give spectra of one shape. At most ``max_tiles`` tiles, evenly spaced, are used.
    """
    import torch

    arr = _as_hwc(x)
    img = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32))
    return welch_power_torch(img, tile, max_tiles).numpy().astype(np.float32)


def welch_power_torch(x, tile: int = 64, max_tiles: int = 256):  # noqa: ANN001, ANN201
    """:func:`welch_power` of a torch ``(C, H, W)`` tensor, differentiable: ``(tile, tile)``, channels averaged."""
    import torch.nn.functional as F

    power = welch_power_per_channel(x, tile, max_tiles).mean(dim=0)
    if power.shape[-1] != tile:
        power = F.interpolate(power[None, None], size=(tile, tile), mode="bilinear", align_corners=False)[0, 0]
    return power


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between two Gaussians: ‖μ₁−μ₂‖² + Tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^½)."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(max(0.0, diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean)))


def ffd(model_spectra_a: np.ndarray, model_spectra_b: np.ndarray) -> float:
    """Fréchet Frequency Distance between two *sets of models*.

    Each row is one model's 1-D spectrum (the mean over ≥ 50 images of the azimuthally integrated power spectrum
    of their residuals, as in the Model Synthesis paper); the Gaussians are fitted across models.
    """
    a = np.asarray(model_spectra_a, dtype=np.float64)
    b = np.asarray(model_spectra_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"FFD needs two (models, bins) arrays with equal bins; got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("FFD needs at least two models on each side to estimate a covariance")
    return frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def welch_power_per_channel(regions, tile: int | None = None, max_tiles: int = 256):  # noqa: ANN001, ANN201
    """Per-channel centred Welch power spectra of regions (torch ``(..., C, H, W)`` → ``(..., C, t, t)``).

    Each region is cut into ``tile``² sub-tiles with 50% overlap (one tile of ``min(H, W)`` when ``tile`` is
    ``None`` or larger; at most ``max_tiles``, evenly spaced); every sub-tile's mean is removed and a 2-D Hann
    window applied before the FFT; periodograms are averaged and normalised by the window's energy, so white noise
    of variance v has a flat spectrum at v. ``t = min(tile, H, W)``.
    """
    import torch

    h, w = regions.shape[-2:]
    t = min(h, w) if tile is None else min(tile, h, w)
    coords = [(y, x) for y in tile_grid(h, t) for x in tile_grid(w, t)]
    if len(coords) > max_tiles:
        coords = [coords[i] for i in np.linspace(0, len(coords) - 1, max_tiles).round().astype(int)]
    hann = torch.hann_window(t, periodic=False, dtype=regions.dtype, device=regions.device)
    window = hann[:, None] * hann[None, :]
    power = torch.zeros(*regions.shape[:-2], t, t, dtype=regions.dtype, device=regions.device)
    for y, x in coords:  # accumulate: a large region never holds all its tiles' spectra at once
        tile_ = regions[..., y : y + t, x : x + t]
        power += torch.fft.fft2((tile_ - tile_.mean(dim=(-2, -1), keepdim=True)) * window).abs().pow(2)
    power /= len(coords) * window.pow(2).sum()
    return torch.fft.fftshift(power, dim=(-2, -1))


def window_log_spectra(regions, tile: int | None = None, max_tiles: int = 256, eps: float = 1e-10):  # noqa: ANN001, ANN201
    """``log`` of :func:`welch_power_per_channel`: white noise of variance v is flat at ``log v``."""
    import torch

    return torch.log(welch_power_per_channel(regions, tile, max_tiles) + eps)


def blocks_log_spectrum(blocks, tile: int, eps: float = 1e-10):  # noqa: ANN001, ANN201
    """Welch log-spectrum ``(1, C, t, t)`` of equal torch blocks ``(N, C, H, W)`` taken together: the Hann-windowed
    periodograms of every ``tile``² sub-tile of every block averaged (as :func:`window_log_spectra` averages one
    region's), differentiable."""
    import torch

    return torch.log(welch_power_per_channel(blocks, tile).mean(dim=0, keepdim=True) + eps)


def grid_starts(length: int, tile: int, n: int) -> list[int]:
    """``n`` evenly spaced window starts covering ``length`` (one start when the window fills it)."""
    if length <= tile:
        return [0]
    return sorted({round(v) for v in np.linspace(0, length - tile, n)})

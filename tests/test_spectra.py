"""Spectra on analytic signals, and the Fréchet (Frequency) Distance."""

from __future__ import annotations

import numpy as np
import pytest

from modelprint.spectra import ffd, frechet_distance, log_spectrum_2d, radial_power_spectrum, tile_grid, welch_power


def _cosine_image(n: int, ky: int, kx: int) -> np.ndarray:
    y, x = np.mgrid[0:n, 0:n]
    return np.cos(2 * np.pi * (ky * y + kx * x) / n).astype(np.float32)


def test_log_spectrum_peaks_at_the_cosine_frequency() -> None:
    n, ky, kx = 64, 5, 12
    spec = log_spectrum_2d(_cosine_image(n, ky, kx))
    peaks = set(zip(*np.unravel_index(np.argsort(spec.ravel())[-2:], spec.shape)))
    c = n // 2
    assert peaks == {(c + ky, c + kx), (c - ky, c - kx)}


def test_parseval_mean_power_equals_mean_square() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 48, 3)).astype(np.float32)
    power = np.exp(log_spectrum_2d(x, centred=False))
    assert power.mean() == pytest.approx((x**2).mean(), rel=1e-4)


def test_radial_spectrum_of_white_noise_is_flat_and_of_a_ring_peaks_at_its_radius() -> None:
    rng = np.random.default_rng(1)
    flat = radial_power_spectrum(rng.normal(size=(128, 128)), n_bins=16)
    assert flat.std() / flat.mean() < 0.1 and flat.mean() == pytest.approx(1.0, rel=0.05)
    ring = radial_power_spectrum(_cosine_image(128, 0, 32), n_bins=16)  # 0.25 cycles/pixel
    assert int(np.argmax(ring)) == 8  # bin [0.25, 0.28125)


def test_welch_power_fixed_shape_for_every_size_and_finds_a_peak() -> None:
    for h, w in ((32, 32), (37, 53), (64, 64), (200, 130)):
        assert welch_power(np.random.default_rng(0).random((h, w, 3), dtype=np.float32), tile=64).shape == (64, 64)
    spec = welch_power(_cosine_image(256, 0, 64)[..., None].repeat(3, 2), tile=64)  # 0.25 cycles/pixel
    assert np.unravel_index(np.argmax(spec), spec.shape) in {(32, 48), (32, 16)}


def test_tile_grid_covers_the_whole_length() -> None:
    assert tile_grid(64, 64) == [0]
    assert tile_grid(100, 64) == [0, 32, 36]
    assert tile_grid(50, 64) == [0]


def test_frechet_distance_closed_forms() -> None:
    rng = np.random.default_rng(2)
    a = rng.normal(size=(200, 4))
    cov = np.cov(a, rowvar=False)
    assert frechet_distance(a.mean(0), cov, a.mean(0), cov) == pytest.approx(0.0, abs=1e-6)
    shift = np.array([1.0, 2.0, 0.0, -2.0])
    assert frechet_distance(np.zeros(4), cov, shift, cov) == pytest.approx(9.0, rel=1e-6)
    # 1-D: (μ1-μ2)² + (σ1-σ2)²
    assert frechet_distance(np.array([0.0]), np.array([[4.0]]), np.array([1.0]), np.array([[1.0]])) == pytest.approx(2.0)


def test_ffd_between_sets_of_models() -> None:
    rng = np.random.default_rng(3)
    real = rng.normal(size=(20, 8))
    same = rng.normal(size=(20, 8))
    far = rng.normal(loc=3.0, size=(20, 8))
    assert ffd(real, same) < ffd(real, far)
    with pytest.raises(ValueError, match="equal bins"):
        ffd(real, far[:, :4])


def test_window_log_spectra_is_flat_for_white_noise_and_averaging_lowers_variance() -> None:
    import torch

    from modelprint.spectra import window_log_spectra

    g = torch.Generator().manual_seed(0)
    regions = 2.0 * torch.randn(16, 3, 128, 128, generator=g)  # variance 4
    single = window_log_spectra(regions[..., :64, :64])
    welch = window_log_spectra(regions, 64)
    assert single.shape == welch.shape == (16, 3, 64, 64)
    # flat at log(4) (log of a mean of exponentials is biased low for one periodogram: E[log] = log v − γ)
    assert float(welch.mean()) == pytest.approx(np.log(4.0), abs=0.2)
    assert float(welch.std()) < 0.6 * float(single.std())  # 9 averaged periodograms are much less noisy

"""Reconstruction residuals: DIRE, one-step and autoencoder reconstructions on a tiny zoo latent diffusion model
and on an exact point-mass denoiser, determinism, tiling, call counts and one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from modelprint.causal import (
    RECONSTRUCTIONS,
    AutoencoderReconstruction,
    DireReconstruction,
    OneStepReconstruction,
    tile_grid,
)
from modelprint.errors import ModelprintError
from modelprint.probes import CallableCandidate, DiffusersCandidate
from modelprint.zoo.build import build_zoo
from modelprint.zoo.store import load_generator

pytestmark = pytest.mark.slow
torch.set_num_threads(1)

MODEL = "tiny-ldm"
ALPHAS = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    root: Path = tmp_path_factory.mktemp("zoo")
    build_zoo(root, tier="tiny", only=[MODEL], n_samples=4)
    return load_generator(MODEL, zoo=root)


@pytest.fixture(scope="module")
def candidate(model) -> DiffusersCandidate:  # noqa: ANN001
    return DiffusersCandidate(model, name=MODEL)


def noise_images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def point_mass(target: np.ndarray) -> CallableCandidate:
    """The exact ε of a model whose only image is ``target``: its DDIM trajectories conserve ε, so inverting any
    image and coming back returns it (up to ᾱ₀ < 1)."""
    x_star = torch.from_numpy(target).permute(2, 0, 1).float()[None] / 127.5 - 1

    def eps(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = ALPHAS[t].float().view(-1, 1, 1, 1)
        return (x_t - a.sqrt() * x_star) / (1 - a).sqrt()

    return CallableCandidate(eps, ALPHAS, name="point-mass", sample_size=(32, 32))


def test_dire_inverts_and_rebuilds_exactly_through_an_exact_model() -> None:
    images = noise_images(3, seed=5)
    dire = DireReconstruction(steps=5)
    result = dire.residuals(point_mass(images[0]), images)
    assert result.distances().max() < 1e-3 and result.residuals.shape == images.shape
    assert result.calls_per_image == dire.calls_per_tile() == 10 and result.kind == "dire"
    assert dire.chain(point_mass(images[0])) == [0, 200, 400, 599, 799, 999]


def test_every_residual_is_smaller_on_the_models_own_samples_than_on_noise(model, candidate) -> None:  # noqa: ANN001
    own, noise = model.sample(4, seed=1, steps=10), noise_images(4)
    for reconstructor in (DireReconstruction(steps=4), OneStepReconstruction(), AutoencoderReconstruction()):
        a, b = reconstructor.residuals(candidate, own), reconstructor.residuals(candidate, noise)
        assert a.residuals.shape == own.shape and a.residuals.dtype == np.float32
        assert 0 <= a.residuals.min() and a.residuals.max() <= 1
        assert a.distances().max() < b.distances().min(), reconstructor.name


def test_call_counts_are_as_stated(candidate) -> None:  # noqa: ANN001
    images = noise_images(2)
    for reconstructor, calls in ((DireReconstruction(steps=3), 6), (OneStepReconstruction(), 1),
                                 (AutoencoderReconstruction(), 0)):
        before = candidate.n_forward
        result = reconstructor.residuals(candidate, images)
        assert reconstructor.calls_per_tile() == calls == result.calls_per_image
        assert candidate.n_forward - before == 2 * calls


def test_the_same_seed_gives_the_same_residual_and_another_seed_another(candidate) -> None:  # noqa: ANN001
    images = noise_images(2)
    first = OneStepReconstruction(seed=3).residuals(candidate, images).residuals
    np.testing.assert_array_equal(first, OneStepReconstruction(seed=3).residuals(candidate, images).residuals)
    assert not np.array_equal(first, OneStepReconstruction(seed=4).residuals(candidate, images).residuals)
    dire = DireReconstruction(steps=2)
    np.testing.assert_array_equal(dire.residuals(candidate, images).residuals,
                                  dire.residuals(candidate, images).residuals)


def test_larger_images_are_tiled_and_keep_their_size(candidate) -> None:  # noqa: ANN001
    images = noise_images(2, size=72)[:, :, :40]  # 72x40: 3x2 tiles of 32, remainders padded by reflection
    assert tile_grid(72, 40, (32, 32), "m") == (3, 2)
    result = OneStepReconstruction().residuals(candidate, np.ascontiguousarray(images))
    assert result.residuals.shape == (2, 72, 40, 3) and result.tiles_per_image == 6
    assert result.calls_per_image == 6
    for rows, cols in ((slice(0, 32), slice(0, 32)), (slice(32, 64), slice(0, 32)), (slice(0, 32), slice(8, 40))):
        alone = OneStepReconstruction(tile=32).residuals(candidate, np.ascontiguousarray(images[:, rows, cols]))
        if cols.start == 0:  # a whole tile is reconstructed as it is alone, in its place
            np.testing.assert_allclose(result.residuals[:, rows, cols], alone.residuals, atol=1e-5)
        else:  # a window across two tiles is not
            assert not np.allclose(result.residuals[:, rows, cols], alone.residuals, atol=1e-5)


@pytest.mark.parametrize("name", RECONSTRUCTIONS.names())
def test_a_too_small_image_is_a_one_line_error(candidate, name: str) -> None:  # noqa: ANN001
    reconstructor = RECONSTRUCTIONS.create(name, tile=32)
    with pytest.raises(ModelprintError, match=r"image size 16x40 is smaller than the 32x32") as err:
        reconstructor.residuals(candidate, noise_images(1, size=40)[:, :16])
    assert "\n" not in str(err.value)


def test_bad_inputs_are_one_line_errors(candidate) -> None:  # noqa: ANN001
    pixel = point_mass(noise_images(1)[0])
    cases = [
        (DireReconstruction(steps=0), candidate, noise_images(1), "DIRE steps must be in"),
        (OneStepReconstruction(fraction=1.5), candidate, noise_images(1), "fraction must be in"),
        (AutoencoderReconstruction(), pixel, noise_images(1), "pixel-space model with no VAE"),
        (DireReconstruction(), object(), noise_images(1), "needs a diffusion candidate"),
        (DireReconstruction(), candidate, noise_images(1).astype(np.float32), "expected uint8 RGB images"),
        (AutoencoderReconstruction(tile=33), candidate, noise_images(1, size=40), "not divisible"),
    ]
    for reconstructor, model, images, message in cases:
        with pytest.raises(ModelprintError, match=message) as err:
            reconstructor.residuals(model, images)
        assert "\n" not in str(err.value)

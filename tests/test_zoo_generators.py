"""The GAN, VAE and flow zoo families: tiny real trainings on photo crops, checkpoints, determinism."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from modelprint.atomic import sha256_file
from modelprint.errors import CheckpointError
from modelprint.zoo.base import FAMILIES, DataSpec, Recipe, ZooModel
from modelprint.zoo.families.flow import Flow
from modelprint.zoo.families.gan import GAN
from modelprint.zoo.families.vae import VAE

DATA = DataSpec(subset="photos", n=256, size=32, seed=0)
TINY = {
    "gan": Recipe("tiny-gan", "gan", {"width": 8, "d_width": 8, "z_dim": 16}, DATA, steps=40, batch_size=32, lr=2e-3),
    "vae": Recipe("tiny-vae", "vae", {"width": 8, "latent": 16}, DATA, steps=40, batch_size=32, lr=2e-3),
    "flow": Recipe("tiny-flow", "flow", {"levels": 2, "depth": 2, "hidden": 16}, DATA, steps=40, batch_size=32, lr=2e-3),
}
CLASSES: dict[str, type[ZooModel]] = {"gan": GAN, "vae": VAE, "flow": Flow}


@pytest.fixture(scope="module", autouse=True)
def _threads() -> None:
    from modelprint.seeding import configure_torch_threads

    configure_torch_threads()


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    from modelprint.zoo.data import training_images

    return training_images(DATA)


@pytest.fixture(scope="module")
def trained(photos: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[ZooModel, Path]]:
    """Each tiny recipe trained once and saved: family → (model, folder)."""
    out = {}
    for family, recipe in TINY.items():
        calls: list[tuple[int, int, float]] = []
        model = CLASSES[family](recipe).fit(photos, progress=lambda *a: calls.append(a))  # noqa: B023
        assert calls[-1][:2] == (recipe.steps, recipe.steps)
        assert np.isfinite(model.final_loss)
        folder = tmp_path_factory.mktemp(family)
        model.save(folder)
        out[family] = (model, folder)
    return out


def colour_stats_distance(samples: np.ndarray, data: np.ndarray) -> float:
    """Mean absolute difference (0–255 scale) of the per-channel means and standard deviations."""
    def stats(x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float64)
        return np.concatenate([x.mean(axis=(0, 1, 2)), x.std(axis=(0, 1, 2))])

    return float(np.abs(stats(samples) - stats(data)).mean())


def test_registered() -> None:
    assert {"gan", "vae", "flow"} <= set(FAMILIES.names())
    assert [FAMILIES.get(f).kind for f in ("gan", "vae", "flow")] == ["gan", "vae", "flow"]


@pytest.mark.parametrize(
    ("family", "params"),
    [("gan", {"upsample": "bicubic"}), ("gan", {"loss": "wgan"}), ("vae", {"depth": 3}), ("flow", {"hidden": 0})],
)
def test_bad_params_raise(family: str, params: dict) -> None:
    with pytest.raises(ValueError, match=family):
        CLASSES[family](Recipe("bad", family, params, DATA))


@pytest.mark.parametrize("upsample", ["transposed", "nearest", "bilinear"])
@pytest.mark.parametrize("size", [16, 32])
def test_gan_shapes(upsample: str, size: int) -> None:
    model = GAN(Recipe("g", "gan", {"upsample": upsample, "width": 4, "d_width": 4}, replace(DATA, size=size)))
    out = model.sample(3, seed=0)
    assert out.shape == (3, size, size, 3) and out.dtype == np.uint8
    assert np.array_equal(out, model.sample(3, seed=0)) and not np.array_equal(out, model.sample(3, seed=1))
    assert model.num_parameters() > 0 and model.modules() == [model.generator]


def test_untrained_flow_sampling_leaves_actnorm_for_training() -> None:
    from normflows.flows import ActNorm

    model = Flow(TINY["flow"])
    first = model.sample(4, seed=0)
    assert np.array_equal(first, model.sample(4, seed=0))
    assert all(float(m.data_dep_init_done) == 0.0 for m in model.flow.modules() if isinstance(m, ActNorm))


@pytest.mark.slow
@pytest.mark.parametrize("family", list(TINY))
def test_training_moves_samples_towards_data(family: str, photos: np.ndarray, trained: dict) -> None:
    model, _ = trained[family]
    untrained = CLASSES[family](TINY[family]).sample(256, seed=1)
    samples = model.sample(256, seed=1)
    assert samples.shape == (256, 32, 32, 3) and samples.dtype == np.uint8
    assert not np.array_equal(samples, untrained)
    before, after = colour_stats_distance(untrained, photos), colour_stats_distance(samples, photos)
    assert before > 20.0, f"untrained {family} is already close to the data ({before:.1f})"
    assert after < 0.85 * before, f"{family}: distance {before:.1f} untrained → {after:.1f} trained"


@pytest.mark.slow
@pytest.mark.parametrize("family", list(TINY))
def test_save_load_roundtrip(family: str, trained: dict) -> None:
    model, folder = trained[family]
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config == {"family": family, "params": model.params, "size": 32}
    loaded = CLASSES[family].load(folder, TINY[family])
    assert np.array_equal(loaded.sample(20, seed=5), model.sample(20, seed=5))
    assert not np.array_equal(model.sample(20, seed=5), model.sample(20, seed=6))


@pytest.mark.slow
@pytest.mark.parametrize("family", list(TINY))
def test_same_seed_same_weights(family: str, photos: np.ndarray, tmp_path: Path) -> None:
    recipe = replace(TINY[family], steps=6)
    shas = []
    for seed in (0, 0, 1):
        folder = tmp_path / f"run{len(shas)}"
        CLASSES[family](replace(recipe, seed=seed)).fit(photos).save(folder)
        shas.append(sha256_file(folder / "model.safetensors"))
    assert shas[0] == shas[1] != shas[2]


def _truncate(folder: Path) -> None:
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100])


def _drop_tensor(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    tensors.pop(sorted(tensors)[0])
    save_file(tensors, folder / "model.safetensors")


def _reshape_tensor(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    key = next(k for k, v in sorted(tensors.items()) if v.ndim == 4)
    tensors[key] = tensors[key][:1].contiguous()
    save_file(tensors, folder / "model.safetensors")


def _delete_weights(folder: Path) -> None:
    (folder / "model.safetensors").unlink()


@pytest.mark.parametrize("family", list(TINY))
@pytest.mark.parametrize(
    ("corrupt", "file", "message"),
    [
        (_truncate, "model.safetensors", "not a readable safetensors"),
        (_drop_tensor, "model.safetensors", "missing 1 tensor"),
        (_reshape_tensor, "model.safetensors", "shape mismatch"),
        (_delete_weights, "model.safetensors", "file not found"),
    ],
)
def test_corrupt_checkpoint_raises(family: str, corrupt, file: str, message: str, tmp_path: Path) -> None:  # noqa: ANN001
    CLASSES[family](TINY[family]).save(tmp_path)
    corrupt(tmp_path)
    with pytest.raises(CheckpointError, match=message) as err:
        CLASSES[family].load(tmp_path, TINY[family])
    assert str(err.value).startswith(str(tmp_path / file))


def test_mismatched_checkpoint_raises(tmp_path: Path) -> None:
    GAN(TINY["gan"]).save(tmp_path)
    with pytest.raises(CheckpointError, match="family is 'gan'") as err:
        VAE.load(tmp_path, replace(TINY["vae"], params={"width": 8, "latent": 16}))
    assert str(tmp_path / "config.json") in str(err.value)
    with pytest.raises(CheckpointError, match="params"):
        GAN.load(tmp_path, replace(TINY["gan"], params={**TINY["gan"].params, "width": 16}))
    with pytest.raises(CheckpointError, match="size"):
        GAN.load(tmp_path, replace(TINY["gan"], data=replace(DATA, size=16)))

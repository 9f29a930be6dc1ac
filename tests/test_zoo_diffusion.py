"""Diffusion zoo families: training moves models toward their data, diffusers folders round-trip, lineage children."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from modelprint.atomic import sha256_file
from modelprint.errors import CheckpointError, ModelprintError
from modelprint.seeding import configure_torch_threads
from modelprint.zoo.base import FAMILIES, DataSpec, Recipe, ZooModel
from modelprint.zoo.diffusion_model import DiffusionModel
from modelprint.zoo.families import diffusion as _diffusion  # noqa: F401  (registers the families)
from modelprint.zoo.families import lineage as _lineage  # noqa: F401

pytestmark = pytest.mark.slow
configure_torch_threads()

SIZE = 16
DATA = DataSpec(subset="photos", n=256, size=SIZE)
UNET = {"widths": [8, 16], "attention": True, "sample_steps": 4}
UNET_FILE = "unet/diffusion_pytorch_model.safetensors"


def smooth_images(n: int, tint: int, seed: int) -> np.ndarray:
    """Bilinearly upsampled 4×4 colour fields with channel ``tint`` raised: structured, easy to learn."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand((n, 3, 4, 4), generator=g) * 0.5
    coarse[:, tint] += 0.5
    x = torch.nn.functional.interpolate(coarse, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    return (x.permute(0, 2, 3, 1) * 255).round().clamp(0, 255).to(torch.uint8).numpy()


RED, RED_HELD = smooth_images(256, 0, 1), smooth_images(64, 0, 2)
BLUE, BLUE_HELD = smooth_images(256, 2, 3), smooth_images(64, 2, 4)


def recipe(name: str, family: str, params: dict, steps: int = 60, lr: float = 3e-3, parent: str | None = None
           ) -> Recipe:
    return Recipe(name, family, params, DATA, seed=0, steps=steps, batch_size=16, lr=lr, parent=parent)


def eps_mse(model: DiffusionModel, images: np.ndarray) -> float:
    """ε-prediction MSE on ``images`` noised at fixed random timesteps (about 1 for an untrained UNet)."""
    x0 = model.to_model_space(images).repeat(4, 1, 1, 1)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x0.shape, generator=g)
    t = torch.randint(0, model.scheduler.config.num_train_timesteps, (len(x0),), generator=g)
    return float(((model.predict_noise(model.scheduler.add_noise(x0, noise, t), t) - noise) ** 2).mean())


def states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def ddpm() -> ZooModel:
    return FAMILIES.get("ddpm")(recipe("ddpm", "ddpm", UNET)).fit(RED)


@pytest.fixture(scope="module")
def autoencoder() -> ZooModel:
    return FAMILIES.get("autoencoder")(recipe("ae", "autoencoder", {"widths": [8, 16]}, steps=80)).fit(RED)


@pytest.fixture(scope="module")
def ldm(autoencoder: ZooModel) -> ZooModel:
    r = recipe("ldm", "ldm", UNET, parent="ae")
    return FAMILIES.get("ldm")(r, autoencoder).fit(RED)


@pytest.fixture(scope="module")
def finetune(ddpm: ZooModel) -> ZooModel:
    return FAMILIES.get("ddpm-finetune")(recipe("ft", "ddpm-finetune", {}, steps=40, parent="ddpm"), ddpm).fit(BLUE)


@pytest.fixture(scope="module")
def lora(ddpm: ZooModel) -> ZooModel:
    r = recipe("lora", "ddpm-lora", {"rank": 4}, steps=40, lr=1e-2, parent="ddpm")
    return FAMILIES.get("ddpm-lora")(r, ddpm).fit(BLUE)


def untrained(name: str, request: pytest.FixtureRequest) -> tuple[ZooModel, np.ndarray]:
    """The model before training and the held-out data of its training distribution."""
    if name == "ddpm":
        return FAMILIES.get("ddpm")(recipe("ddpm", "ddpm", UNET)), RED_HELD
    if name == "ldm":
        return FAMILIES.get("ldm")(recipe("ldm", "ldm", UNET), request.getfixturevalue("autoencoder")), RED_HELD
    return request.getfixturevalue("ddpm"), BLUE_HELD  # children start from the parent, trained on red


@pytest.mark.parametrize("name", ["ddpm", "ldm", "finetune", "lora"])
def test_training_moves_model_toward_its_data(name: str, request: pytest.FixtureRequest) -> None:
    trained = request.getfixturevalue(name)
    before, held_out = untrained(name, request)
    mse_before, mse_after = eps_mse(before.diffusion, held_out), eps_mse(trained.diffusion, held_out)
    samples, samples_before = trained.sample(16, seed=0), before.sample(16, seed=0)
    assert samples.shape == (16, SIZE, SIZE, 3) and samples.dtype == np.uint8
    assert np.abs(samples.astype(int) - samples_before).mean() > 2
    assert np.isfinite(trained.final_loss) and trained.final_loss < 0.8
    if name in ("ddpm", "ldm"):
        assert mse_before > 0.9 and mse_after < 0.5 * mse_before, (mse_before, mse_after)
    else:  # a child of the red-trained parent, trained on blue: better on blue, bluer samples
        assert mse_after < 0.92 * mse_before, (mse_before, mse_after)
        blueness = [float(np.mean(s[..., 2].astype(float) - s[..., 0])) for s in (samples_before, samples)]
        assert blueness[1] > blueness[0] + 2, blueness


@pytest.mark.parametrize("name", ["ddpm", "ldm", "finetune", "lora"])
def test_save_load_roundtrip(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    model = request.getfixturevalue(name)
    model.save(tmp_path)
    loaded = DiffusionModel.from_folder(tmp_path, {UNET_FILE: sha256_file(tmp_path / UNET_FILE)})
    x = torch.randn((3, *loaded.sample_shape), generator=torch.Generator().manual_seed(5))
    t = torch.tensor([10, 500, 990])
    assert torch.equal(loaded.predict_noise(x, t), model.diffusion.predict_noise(x, t))
    assert np.array_equal(loaded.sample(3, seed=2, steps=4), model.sample(3, seed=2))
    assert (loaded.vae is not None) == (name == "ldm")
    reloaded = type(model).load(tmp_path, model.recipe, model.parent)
    assert np.array_equal(reloaded.sample(3, seed=2), model.sample(3, seed=2))


def test_ldm_keeps_a_frozen_copy_of_the_shared_autoencoder(ldm: ZooModel, autoencoder: ZooModel, tmp_path: Path
                                                           ) -> None:
    assert ldm.diffusion.vae is not autoencoder.vae and states_equal(ldm.diffusion.vae, autoencoder.vae)
    unet_params = sum(p.numel() for p in ldm.diffusion.unet.parameters())
    assert ldm.diffusion.scaling_factor > 0 and ldm.num_parameters() > unet_params
    ldm.save(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["vae"] == ["diffusers", "AutoencoderKL"]
    loaded = DiffusionModel.from_folder(tmp_path)
    assert loaded.scaling_factor == pytest.approx(ldm.diffusion.scaling_factor)


def test_autoencoder_reconstructs_and_roundtrips(autoencoder: ZooModel, tmp_path: Path) -> None:
    fresh = FAMILIES.get("autoencoder")(autoencoder.recipe)
    err = np.abs(autoencoder.reconstruct(RED_HELD).astype(int) - RED_HELD).mean()
    err_before = np.abs(fresh.reconstruct(RED_HELD).astype(int) - RED_HELD).mean()
    assert err < 0.5 * err_before, (err, err_before)
    autoencoder.save(tmp_path)
    loaded = FAMILIES.get("autoencoder").load(tmp_path, autoencoder.recipe)
    assert np.array_equal(loaded.sample(4, seed=1), autoencoder.sample(4, seed=1))


def test_user_ddpm_pipeline_folder_loads(ddpm: ZooModel, tmp_path: Path) -> None:
    from diffusers import DDIMScheduler, DDPMPipeline, UNet2DModel

    unet = UNet2DModel(sample_size=SIZE, block_out_channels=(8, 16), norm_num_groups=8, layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))
    scheduler = DDIMScheduler(beta_schedule="squaredcos_cap_v2")
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(tmp_path / "user")
    model = DiffusionModel.from_folder(tmp_path / "user")
    assert model.vae is None and model.scheduler.config.beta_schedule == "squaredcos_cap_v2"
    x = torch.randn((2, 3, SIZE, SIZE))
    with torch.no_grad():
        assert torch.equal(model.predict_noise(x, 100), unet(x, torch.tensor([100, 100])).sample)
    assert model.sample(2, seed=0, steps=3).shape == (2, SIZE, SIZE, 3)
    ddpm.save(tmp_path / "ours")  # and our pixel folders load with diffusers' own pipeline
    assert isinstance(DDPMPipeline.from_pretrained(tmp_path / "ours").unet, UNet2DModel)


def test_checkpoint_errors(ddpm: ZooModel, lora: ZooModel, autoencoder: ZooModel, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not a folder"):
        DiffusionModel.from_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no unet/"):
        DiffusionModel.from_folder(tmp_path / "empty")
    good = tmp_path / "good"
    ddpm.save(good)
    with pytest.raises(CheckpointError, match="sha256 of unet/"):
        DiffusionModel.from_folder(good, {UNET_FILE: "0" * 64})
    with pytest.raises(CheckpointError, match="recipe gives"):
        FAMILIES.get("ddpm").load(good, recipe("ddpm", "ddpm", {**UNET, "widths": [8, 8]}))
    autoencoder.save(tmp_path / "ae")
    (tmp_path / "ae" / "vae").rename(tmp_path / "ae" / "unet")
    with pytest.raises(CheckpointError, match="holds a AutoencoderKL"):
        DiffusionModel.from_folder(tmp_path / "ae")
    (good / UNET_FILE).write_bytes((good / UNET_FILE).read_bytes()[:500])
    with pytest.raises(CheckpointError, match="cannot load unet/"):
        DiffusionModel.from_folder(good)
    other = FAMILIES.get("ddpm")(recipe("other", "ddpm", UNET))  # an untrained model is the wrong parent
    lora.save(tmp_path / "lora")
    with pytest.raises(CheckpointError, match="wrong parent"):
        FAMILIES.get("ddpm-lora").load(tmp_path / "lora", lora.recipe, other)


def test_lora_trains_only_the_adapter(lora: ZooModel, ddpm: ZooModel) -> None:
    base = {k.replace("base_layer.", ""): v for k, v in lora.lora_unet.state_dict().items() if "lora_" not in k}
    parent = ddpm.diffusion.unet.state_dict()
    assert base.keys() == parent.keys() and all(torch.equal(base[k], parent[k]) for k in parent)
    assert not states_equal(lora.diffusion.unet, ddpm.diffusion.unet)
    assert 0 < lora.num_adapter_parameters() < 0.3 * ddpm.num_parameters()  # rank 4 of 8–16 channels
    assert lora.num_parameters() == ddpm.num_parameters()


def test_finetune_starts_from_parent_then_moves(finetune: ZooModel, ddpm: ZooModel) -> None:
    fresh = FAMILIES.get("ddpm-finetune")(finetune.recipe, ddpm)
    assert states_equal(fresh.diffusion.unet, ddpm.diffusion.unet)
    assert fresh.diffusion.unet is not ddpm.diffusion.unet
    assert not states_equal(finetune.diffusion.unet, ddpm.diffusion.unet)


def test_training_is_deterministic_and_reports_progress() -> None:
    calls: list[tuple[int, int, float]] = []
    r = recipe("det", "ddpm", {"widths": [8, 16]}, steps=10)
    a = FAMILIES.get("ddpm")(r).fit(RED, lambda *args: calls.append(args))
    b = FAMILIES.get("ddpm")(r).fit(RED)
    assert states_equal(a.diffusion.unet, b.diffusion.unet) and a.final_loss == b.final_loss
    assert [c[0] for c in calls] == list(range(1, 11)) and all(c[1] == 10 for c in calls)
    assert a.final_loss == calls[-1][2]  # the last 10% of 10 steps is the last step
    with pytest.raises(ValueError, match="unknown ddpm params"):
        FAMILIES.get("ddpm")(recipe("bad", "ddpm", {"width": [8]}))


def test_predict_noise_converts_v_prediction() -> None:
    from types import SimpleNamespace

    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(prediction_type="v_prediction")
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn((4, 3, 8, 8), generator=g), torch.randn((4, 3, 8, 8), generator=g)
    t = torch.tensor([0, 300, 700, 999])
    x_t = scheduler.add_noise(x0, eps, t)
    v = scheduler.get_velocity(x0, eps, t)
    oracle = DiffusionModel(unet=lambda x, timesteps: SimpleNamespace(sample=v), scheduler=scheduler)
    assert torch.allclose(oracle.predict_noise(x_t, t), eps, atol=1e-4)


def test_sdedit_keeps_the_input_at_low_strength_and_redraws_it_at_full(ddpm: ZooModel) -> None:
    model = ddpm.diffusion  # trained on red fields; the inputs are blue
    source = BLUE_HELD[:16]
    light, full = model.edit(source, strength=0.2, seed=0, steps=20), model.edit(source, strength=1.0, seed=0, steps=20)
    assert light.shape == source.shape and light.dtype == np.uint8
    distance = [float(np.abs(x.astype(int) - source).mean()) for x in (light, full)]
    assert distance[0] < 0.5 * distance[1], distance
    redness = [float(np.mean(x[..., 0].astype(float) - x[..., 2])) for x in (light, full)]
    assert redness[1] > redness[0] + 10, redness
    np.testing.assert_array_equal(light, model.edit(source, strength=0.2, seed=0, steps=20))
    with pytest.raises(ModelprintError, match="strength must be in"):
        model.edit(source, strength=0.0)

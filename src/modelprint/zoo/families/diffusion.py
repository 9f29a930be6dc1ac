"""Diffusion zoo families: pixel DDPM (``ddpm``), the KL autoencoder latent models share (``autoencoder``) and
latent diffusion on its frozen latents (``ldm``).

Every diffusion family exposes ``.diffusion`` (a :class:`~modelprint.zoo.diffusion_model.DiffusionModel`) and saves a
standard diffusers folder. UNets are ``UNet2DModel`` with one ``DownBlock2D``/``UpBlock2D`` per entry of ``widths``
(attention blocks at the lowest resolution and in the mid block when ``attention`` is set), trained with the ε-MSE
objective on uniformly drawn timesteps and sampled with deterministic DDIM.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from modelprint.errors import CheckpointError
from modelprint.zoo.base import FAMILIES, Recipe, TrainProgress, ZooModel, batches, to_uint8, to_unit
from modelprint.zoo.diffusion_model import DiffusionModel, load_component

#: Hyper-parameters of a UNet family (``ddpm``, ``ldm``) and their defaults.
UNET_DEFAULTS: dict[str, Any] = {
    "widths": [32, 64, 64],
    "layers_per_block": 1,
    "attention": False,
    "schedule": "linear",
    "train_timesteps": 1000,
    "sample_steps": 50,
}
#: Hyper-parameters of the ``autoencoder`` family and their defaults.
AUTOENCODER_DEFAULTS: dict[str, Any] = {
    "widths": [32, 64],
    "layers_per_block": 1,
    "latent_channels": 4,
    "kl_weight": 1e-6,
    "attention": False,
}
SCHEDULES = ("linear", "squaredcos_cap_v2")
_CHUNK = 64


def merged_params(recipe: Recipe, defaults: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` updated with ``recipe.params``; unknown names are an error (they are usually typos)."""
    unknown = sorted(set(recipe.params) - set(defaults))
    if unknown:
        raise ValueError(f"{recipe.name}: unknown {recipe.family} params {unknown}; known: {sorted(defaults)}")
    return {**defaults, **recipe.params}


def _groups(widths: list[int]) -> int:
    """GroupNorm groups dividing every width (at most 32, the diffusers default)."""
    return math.gcd(32, *widths)


def unet_config(params: dict[str, Any], size: int, channels: int) -> dict[str, Any]:
    """``UNet2DModel`` keyword arguments for UNet family ``params`` at ``size``² with ``channels`` channels."""
    widths = [int(w) for w in params["widths"]]
    attention = bool(params["attention"])
    down = ["DownBlock2D"] * len(widths)
    up = ["UpBlock2D"] * len(widths)
    if attention:
        down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
    return {
        "sample_size": size,
        "in_channels": channels,
        "out_channels": channels,
        "block_out_channels": widths,
        "down_block_types": down,
        "up_block_types": up,
        "layers_per_block": int(params["layers_per_block"]),
        "add_attention": attention,
        "attention_head_dim": 8,
        "norm_num_groups": _groups(widths),
    }


def noise_scheduler(params: dict[str, Any], clip_sample: bool) -> Any:
    """The ε-prediction ``DDPMScheduler`` of UNet family ``params`` (``clip_sample`` only for [-1, 1] pixels)."""
    from diffusers import DDPMScheduler

    if params["schedule"] not in SCHEDULES:
        raise ValueError(f"unknown noise schedule {params['schedule']!r}; known: {', '.join(SCHEDULES)}")
    return DDPMScheduler(
        num_train_timesteps=int(params["train_timesteps"]),
        beta_schedule=params["schedule"],
        prediction_type="epsilon",
        clip_sample=clip_sample,
    )


def fit_loop(
    params: list[torch.nn.Parameter],
    loss_fn: Callable[[np.ndarray, torch.Generator], torch.Tensor],
    n_items: int,
    recipe: Recipe,
    progress: TrainProgress | None,
) -> float:
    """AdamW over ``recipe.steps`` batches of indices; returns the mean loss over the last 10% of steps.

    ``loss_fn(indices, generator)`` draws its noise from ``generator`` (seeded by ``recipe.seed``), so training is
    deterministic for a given thread count. ``progress`` is called about 50 times.
    """
    optimizer = torch.optim.AdamW(params, lr=recipe.lr)
    generator = torch.Generator().manual_seed(recipe.seed)
    every = max(1, recipe.steps // 50)
    losses: list[float] = []
    for step, idx in enumerate(batches(n_items, recipe.batch_size, recipe.steps, recipe.seed), start=1):
        loss = loss_fn(idx, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if progress is not None and (step % every == 0 or step == recipe.steps):
            progress(step, recipe.steps, losses[-1])
    return float(np.mean(losses[-max(1, recipe.steps // 10) :]))


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value))


def check_same_config(folder: Path, part: str, saved: Any, expected: Any) -> None:
    """CheckpointError if the saved module's config differs from the one the recipe builds."""
    for key, want in expected.config.items():
        if key.startswith("_") or key == "scaling_factor":
            continue
        got = saved.config.get(key)
        if _plain(got) != _plain(want):
            raise CheckpointError(f"{folder}: saved {part} has {key}={got!r} but the recipe gives {want!r}")


def check_same_model(folder: Path, saved: DiffusionModel, expected: DiffusionModel) -> None:
    """CheckpointError unless ``saved`` has the recipe's UNet, schedule and (identical, frozen) VAE."""
    check_same_config(folder, "unet", saved.unet, expected.unet)
    check_same_config(folder, "scheduler", saved.scheduler, expected.scheduler)
    if (saved.vae is None) != (expected.vae is None):
        raise CheckpointError(f"{folder}: {'has' if saved.vae is not None else 'lacks'} a vae/ the recipe does not")
    if expected.vae is not None:
        check_same_config(folder, "vae", saved.vae, expected.vae)
        want = expected.vae.state_dict()
        if any(not torch.equal(v, want[k]) for k, v in saved.vae.state_dict().items()):
            raise CheckpointError(f"{folder}: vae/ weights differ from the parent autoencoder's")


class DiffusionFamily(ZooModel):
    """Shared behaviour of the UNet families: DDIM sampling, diffusers folders, ε-MSE training."""

    kind = "diffusion"
    diffusion: DiffusionModel
    sample_steps: int

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        return self.diffusion.sample(n, seed, steps=self.sample_steps)

    def save(self, folder: Path) -> None:
        self.diffusion.save(folder)

    def modules(self) -> list[Any]:
        return [m for m in (self.diffusion.unet, self.diffusion.vae) if m is not None]

    def _train_unet(
        self, model: DiffusionModel, x0: torch.Tensor, params: list[torch.nn.Parameter], progress: TrainProgress | None
    ) -> None:
        """ε-MSE training of ``params`` of ``model.unet`` on model-space data ``x0``; sets ``final_loss``."""
        scheduler = model.scheduler
        n_steps = scheduler.config.num_train_timesteps

        def loss_fn(idx: np.ndarray, generator: torch.Generator) -> torch.Tensor:
            x = x0[torch.from_numpy(idx)]
            noise = torch.randn(x.shape, generator=generator)
            t = torch.randint(0, n_steps, (len(idx),), generator=generator)
            return F.mse_loss(model.predict_noise(scheduler.add_noise(x, noise, t), t, grad=True), noise)

        model.unet.train()
        self.final_loss = fit_loop(params, loss_fn, len(x0), self.recipe, progress)
        model.unet.eval()

    @classmethod
    def load(cls, folder: Path, recipe: Recipe, parent: ZooModel | None = None) -> DiffusionFamily:
        model = cls(recipe, parent)
        saved = DiffusionModel.from_folder(folder)
        check_same_model(Path(folder), saved, model.diffusion)
        model.diffusion = saved
        return model


@FAMILIES.register("ddpm")
class PixelDDPM(DiffusionFamily):
    """Pixel-space DDPM on ``recipe.data.size``² RGB; params :data:`UNET_DEFAULTS`."""

    def __init__(self, recipe: Recipe, parent: ZooModel | None = None) -> None:
        from diffusers import UNet2DModel

        super().__init__(recipe, parent)
        params = merged_params(recipe, UNET_DEFAULTS)
        self.sample_steps = int(params["sample_steps"])
        torch.manual_seed(recipe.seed)
        unet = UNet2DModel(**unet_config(params, recipe.data.size, 3)).eval()
        self.diffusion = DiffusionModel(unet, noise_scheduler(params, clip_sample=True))

    def fit(self, images: np.ndarray, progress: TrainProgress | None = None) -> PixelDDPM:
        model = self.diffusion
        self._train_unet(model, model.to_model_space(images), list(model.unet.parameters()), progress)
        return self


@FAMILIES.register("autoencoder")
class Autoencoder(ZooModel):
    """A small ``AutoencoderKL``: the shared, frozen parent of latent diffusion models; params
    :data:`AUTOENCODER_DEFAULTS`.

    Trained on L1 reconstruction plus ``kl_weight`` × KL (tiny, as in latent diffusion), so its latents are not a
    standard normal: :meth:`sample` decodes Gaussian latents with the training latents' scale and gives blurry
    textures, not meaningful images. ``vae.config.scaling_factor`` holds 1 / std of the training latent means.
    """

    kind = "autoencoder"

    def __init__(self, recipe: Recipe, parent: ZooModel | None = None) -> None:
        from diffusers import AutoencoderKL

        super().__init__(recipe, parent)
        params = merged_params(recipe, AUTOENCODER_DEFAULTS)
        widths = [int(w) for w in params["widths"]]
        self.kl_weight = float(params["kl_weight"])
        torch.manual_seed(recipe.seed)
        self.vae = AutoencoderKL(
            down_block_types=["DownEncoderBlock2D"] * len(widths),
            up_block_types=["UpDecoderBlock2D"] * len(widths),
            block_out_channels=widths,
            layers_per_block=int(params["layers_per_block"]),
            latent_channels=int(params["latent_channels"]),
            norm_num_groups=_groups(widths),
            sample_size=recipe.data.size,
            scaling_factor=1.0,
            mid_block_add_attention=bool(params["attention"]),
        ).eval()

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` of the latents of one ``recipe.data.size``² image."""
        cfg = self.vae.config
        side = self.recipe.data.size // 2 ** (len(cfg.block_out_channels) - 1)
        return int(cfg.latent_channels), side, side

    def fit(self, images: np.ndarray, progress: TrainProgress | None = None) -> Autoencoder:
        x = to_unit(images)

        def loss_fn(idx: np.ndarray, generator: torch.Generator) -> torch.Tensor:
            batch = x[torch.from_numpy(idx)]
            posterior = self.vae.encode(batch).latent_dist
            recon = self.vae.decode(posterior.sample(generator)).sample
            return F.l1_loss(recon, batch) + self.kl_weight * posterior.kl().mean()

        self.vae.train()
        self.final_loss = fit_loop(list(self.vae.parameters()), loss_fn, len(x), self.recipe, progress)
        self.vae.eval()
        with torch.no_grad():
            z = torch.cat([self.vae.encode(c).latent_dist.mean for c in x[:1024].split(_CHUNK)])
        self.vae.register_to_config(scaling_factor=float(1.0 / z.std()))
        return self

    def reconstruct(self, images: np.ndarray) -> np.ndarray:
        """Decode the latent means of ``images`` (uint8 in, uint8 out)."""
        with torch.no_grad():
            out = [self.vae.decode(self.vae.encode(c).latent_dist.mean).sample for c in to_unit(images).split(_CHUNK)]
        return to_uint8(torch.cat(out))

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        generator = torch.Generator().manual_seed(seed)
        z = torch.randn((n, *self.latent_shape), generator=generator) / self.vae.config.scaling_factor
        with torch.no_grad():
            return to_uint8(torch.cat([self.vae.decode(c).sample for c in z.split(_CHUNK)]))

    def save(self, folder: Path) -> None:
        self.vae.save_pretrained(Path(folder) / "vae", safe_serialization=True)

    @classmethod
    def load(cls, folder: Path, recipe: Recipe, parent: ZooModel | None = None) -> Autoencoder:
        from diffusers import AutoencoderKL

        folder = Path(folder)
        if not folder.is_dir():
            raise CheckpointError(f"{folder}: not a folder (expected a folder with vae/)")
        model = cls(recipe, parent)
        saved = load_component(AutoencoderKL, folder, "vae")
        check_same_config(folder, "vae", saved, model.vae)
        model.vae = saved
        return model

    def modules(self) -> list[Any]:
        return [self.vae]


@FAMILIES.register("ldm")
class LatentDiffusion(DiffusionFamily):
    """Latent diffusion on the frozen latents of an ``autoencoder`` parent; params :data:`UNET_DEFAULTS`.

    The VAE is copied from the parent (several LDMs share one autoencoder) and saved in ``vae/`` so the folder loads
    on its own; ``fit`` sets the scaling factor to 1 / std of the training latents.
    """

    def __init__(self, recipe: Recipe, parent: ZooModel | None = None) -> None:
        from diffusers import UNet2DModel

        if not isinstance(parent, Autoencoder):
            raise ValueError(f"{recipe.name}: an ldm needs an autoencoder parent, got {type(parent).__name__}")
        super().__init__(recipe, parent)
        params = merged_params(recipe, UNET_DEFAULTS)
        self.sample_steps = int(params["sample_steps"])
        vae = copy.deepcopy(parent.vae).requires_grad_(False).eval()
        channels, side, _ = parent.latent_shape
        torch.manual_seed(recipe.seed)
        unet = UNet2DModel(**unet_config(params, side, channels)).eval()
        scaling = float(vae.config.scaling_factor)
        self.diffusion = DiffusionModel(unet, noise_scheduler(params, clip_sample=False), vae, scaling)

    def fit(self, images: np.ndarray, progress: TrainProgress | None = None) -> LatentDiffusion:
        model = self.diffusion
        z = model.to_model_space(images)
        std = float(z.std())
        model.scaling_factor /= std
        self._train_unet(model, z / std, list(model.unet.parameters()), progress)
        return self

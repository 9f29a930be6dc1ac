"""The runtime of a diffusion model: a UNet, its training noise schedule and (for latent models) an autoencoder.

Following diffusers, networks, schedulers and sampling stay separate. :class:`DiffusionModel` holds the
``UNet2DModel`` that predicts noise, the ``DDPMScheduler`` that defines the forward (noising) process, and optionally
the ``AutoencoderKL`` whose scaled latents the UNet denoises. It reads and writes the standard diffusers folder layout
(``unet/``, ``scheduler/``, ``vae/``, ``model_index.json``), so a folder saved by ``DDPMPipeline.save_pretrained``
loads as-is and a pixel model saved here loads with ``DDPMPipeline.from_pretrained``. A single UNet checkpoint
(``.safetensors`` or ``.pth`` state dict) loads with :meth:`DiffusionModel.from_checkpoint` given its UNet
``config.json`` (and ideally its ``scheduler_config.json``: the weights alone do not say which noise schedule they
were trained with).

White-box probes call :meth:`DiffusionModel.predict_noise` (always an ε prediction, whatever the UNet's
``prediction_type``); :meth:`DiffusionModel.sample` runs deterministic DDIM.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modelprint.artefacts import file_sha256, read_json, read_tensors, verify_files
from modelprint.atomic import write_text
from modelprint.errors import CheckpointError, ModelprintError
from modelprint.zoo.base import to_uint8, to_unit

#: ε-prediction parameterisations :meth:`DiffusionModel.predict_noise` can convert from.
PREDICTION_TYPES = ("epsilon", "v_prediction")
_CHUNK = 64


def load_component(cls: type, folder: Path, subfolder: str) -> Any:
    """``cls.from_pretrained(folder, subfolder=...)`` from local files, with every failure as a CheckpointError.

    Unlike plain ``from_pretrained``, missing or mismatched weights are an error rather than a warning.
    """
    sub = folder / subfolder
    if not sub.is_dir():
        raise CheckpointError(f"{folder}: no {subfolder}/ folder")
    config_name = "scheduler_config.json" if subfolder == "scheduler" else "config.json"
    config = read_json(sub / config_name, f"{subfolder} config")
    if subfolder != "scheduler" and config.get("_class_name") != cls.__name__:
        found = config.get("_class_name")
        raise CheckpointError(f"{folder}: {subfolder}/ holds a {found}, expected a {cls.__name__}")
    try:
        if subfolder == "scheduler":
            return cls.from_pretrained(folder, subfolder=subfolder, local_files_only=True)
        model, info = cls.from_pretrained(folder, subfolder=subfolder, local_files_only=True, output_loading_info=True)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as err:
        raise CheckpointError(f"{folder}: cannot load {subfolder}/: {str(err).strip()[:300]}") from None
    bad = info["missing_keys"] + [str(k[0]) if isinstance(k, tuple) else str(k) for k in info["mismatched_keys"]]
    if bad:
        raise CheckpointError(f"{folder}: {subfolder}/ weights are missing or mismatched for {', '.join(bad[:5])}")
    # from_pretrained records the path it read; a lineage child saves its copy of this config, and its files must
    # not depend on where the zoo lies, so only the model's folder name is kept
    model.register_to_config(_name_or_path=folder.name)
    return model.eval()


@dataclass
class DiffusionModel:
    """A UNet ε-model with its training noise schedule; ``vae`` set for latent diffusion.

    ``scaling_factor`` multiplies the VAE's latent means to give the UNet's input space (1 for pixel models).
    """

    unet: Any  # diffusers.UNet2DModel
    scheduler: Any  # diffusers.DDPMScheduler
    vae: Any | None = None  # diffusers.AutoencoderKL
    scaling_factor: float = 1.0

    def __post_init__(self) -> None:
        ptype = self.scheduler.config.prediction_type
        if ptype not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type {ptype!r} is not supported; expected one of {PREDICTION_TYPES}")

    @classmethod
    def from_folder(cls, path: str | Path, expected_sha256: dict[str, str] | None = None) -> DiffusionModel:
        """Load a diffusers folder (``unet/``, ``scheduler/``, optional ``vae/``) from local files only.

        ``expected_sha256`` maps paths relative to the folder (e.g. ``unet/diffusion_pytorch_model.safetensors``)
        to hex digests checked before loading. Every problem raises :class:`~modelprint.errors.CheckpointError`.
        """
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DModel

        folder = Path(path)
        if not folder.is_dir():
            raise CheckpointError(f"{folder}: not a folder (expected a diffusers folder with unet/ and scheduler/)")
        if expected_sha256:
            verify_files(folder, expected_sha256)
        unet = load_component(UNet2DModel, folder, "unet")
        scheduler = load_component(DDPMScheduler, folder, "scheduler")
        vae = load_component(AutoencoderKL, folder, "vae") if (folder / "vae").is_dir() else None
        scaling = float(vae.config.scaling_factor) if vae is not None else 1.0
        try:
            return cls(unet=unet, scheduler=scheduler, vae=vae, scaling_factor=scaling)
        except ValueError as err:
            raise CheckpointError(f"{folder}: {err}") from None

    @classmethod
    def from_checkpoint(
        cls,
        weights: str | Path,
        unet_config: str | Path | None = None,
        scheduler_config: str | Path | None = None,
        sha256: str | None = None,
    ) -> DiffusionModel:
        """A pixel diffusion model from a single UNet state dict (``.safetensors``, ``.pth``/``.pt``).

        ``unet_config`` (default: ``config.json`` beside the weights) is a diffusers ``UNet2DModel`` config;
        ``scheduler_config`` (default: ``scheduler_config.json`` beside them, else diffusers' default linear
        1000-step DDPM schedule) the noise schedule. ``sha256`` is checked before anything is read.
        """
        from diffusers import DDPMScheduler, UNet2DModel

        path = Path(weights)
        if not path.is_file():
            raise CheckpointError(f"{path}: no such checkpoint file")
        if sha256 and (actual := file_sha256(path)) != sha256.lower():
            raise CheckpointError(f"{path}: sha256 is {actual}, expected {sha256}")
        config_path = Path(unet_config) if unet_config else path.with_name("config.json")
        config = read_json(config_path, "UNet config")
        try:
            unet = UNet2DModel.from_config(config)
        except (ValueError, TypeError) as err:
            raise CheckpointError(f"{config_path}: invalid UNet config ({err})") from None
        state, _ = read_tensors(path)
        try:
            unet.load_state_dict(state, strict=True)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0][:200]
            raise CheckpointError(f"{path}: weights do not match {config_path.name} ({first})") from None
        sched_path = Path(scheduler_config) if scheduler_config else path.with_name("scheduler_config.json")
        try:
            scheduler = (DDPMScheduler.from_config(read_json(sched_path, "scheduler config")) if sched_path.is_file()
                         else DDPMScheduler())
        except ValueError as err:
            raise CheckpointError(f"{sched_path}: not a scheduler config ({err})") from None
        try:
            return cls(unet=unet.eval(), scheduler=scheduler)
        except ValueError as err:
            raise CheckpointError(f"{path}: {err}") from None

    def save(self, folder: str | Path) -> None:
        """Write the diffusers layout with safetensors weights; a pixel model loads with ``DDPMPipeline``."""
        import diffusers

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.unet.save_pretrained(folder / "unet", safe_serialization=True)
        self.scheduler.save_pretrained(folder / "scheduler")
        index: dict[str, Any] = {
            "_class_name": "DDPMPipeline" if self.vae is None else "modelprint.LatentDiffusion",
            "_diffusers_version": diffusers.__version__,
            "scheduler": ["diffusers", type(self.scheduler).__name__],
            "unet": ["diffusers", type(self.unet).__name__],
        }
        if self.vae is not None:
            self.vae.register_to_config(scaling_factor=float(self.scaling_factor))
            self.vae.save_pretrained(folder / "vae", safe_serialization=True)
            index["vae"] = ["diffusers", type(self.vae).__name__]
        write_text(folder / "model_index.json", json.dumps(index, indent=2) + "\n")

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` of the space the UNet denoises."""
        size = self.unet.config.sample_size
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        return int(self.unet.config.in_channels), int(h), int(w)

    def to_model_space(self, images: np.ndarray) -> torch.Tensor:
        """uint8 ``(n, H, W, 3)`` → the UNet's input space: [-1, 1] pixels or scaled VAE latent means."""
        x = to_unit(images)
        if self.vae is None:
            return x
        with torch.no_grad():
            z = [self.vae.encode(chunk).latent_dist.mean for chunk in x.split(_CHUNK)]
        return torch.cat(z) * self.scaling_factor

    def to_pixels(self, x0: torch.Tensor) -> np.ndarray:
        """Model-space samples → uint8 ``(n, H, W, 3)`` (decoded through the VAE for latent models)."""
        if self.vae is None:
            return to_uint8(x0)
        with torch.no_grad():
            x = [self.vae.decode(chunk / self.scaling_factor).sample for chunk in x0.split(_CHUNK)]
        return to_uint8(torch.cat(x))

    def predict_noise(self, x_t: torch.Tensor, t: int | torch.Tensor, *, grad: bool = False) -> torch.Tensor:
        """The UNet's ε prediction for noisy ``x_t`` at integer timesteps ``t`` (scalar or one per example)."""
        t = torch.as_tensor(t, dtype=torch.long).expand(x_t.shape[0])
        with torch.set_grad_enabled(grad):
            out = self.unet(x_t, t).sample
            if self.scheduler.config.prediction_type == "epsilon":
                return out
            alpha_bar = self.scheduler.alphas_cumprod[t].to(x_t.dtype).view(-1, 1, 1, 1)
            return alpha_bar.sqrt() * out + (1 - alpha_bar).sqrt() * x_t  # ε from v = √ᾱ ε − √(1−ᾱ) x0

    def _ddim(self, steps: int) -> Any:
        from diffusers import DDIMScheduler

        ddim = DDIMScheduler.from_config(self.scheduler.config, prediction_type="epsilon")
        ddim.set_timesteps(steps)
        return ddim

    def _denoise(self, x: torch.Tensor, ddim: Any, timesteps: torch.Tensor) -> np.ndarray:
        out = []
        for chunk in x.split(_CHUNK):
            for t in timesteps:
                chunk = ddim.step(self.predict_noise(chunk, t), t, chunk).prev_sample
            out.append(chunk)
        return self.to_pixels(torch.cat(out))

    def sample(self, n: int, seed: int = 0, steps: int = 50) -> np.ndarray:
        """``n`` images by deterministic DDIM (η = 0) with ``steps`` steps; uint8 ``(n, H, W, 3)``."""
        ddim = self._ddim(steps)
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn((n, *self.sample_shape), generator=generator) * ddim.init_noise_sigma
        return self._denoise(x, ddim, ddim.timesteps)

    def edit(self, images: np.ndarray, strength: float = 0.6, seed: int = 0, steps: int = 50) -> np.ndarray:
        """SDEdit: noise uint8 ``images`` to the timestep at ``strength`` (0–1 of the schedule) and denoise them with
        DDIM; the model redraws the image while the layout and colours of ``images`` remain (image-to-image)."""
        if not 0.0 < strength <= 1.0:
            raise ModelprintError(f"edit strength must be in (0, 1], got {strength}")
        ddim = self._ddim(steps)
        timesteps = ddim.timesteps[steps - max(1, round(steps * strength)):]
        z0 = self.to_model_space(images)
        noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(seed))
        x = ddim.add_noise(z0, noise, timesteps[:1].expand(len(z0)))
        return self._denoise(x, ddim, timesteps)

"""One interface to every candidate diffusion model a white-box probe calls: ε prediction plus its noise schedule.

(Candidates, not "denoisers": that name belongs to the DnCNN of :mod:`modelprint.residuals`.) A
:class:`DiffusionCandidate` maps uint8 images into the space its network denoises (``[-1, 1]`` pixels or scaled VAE
latents), predicts the noise ε in a noisy ``x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε`` at integer timesteps ``t``, and exposes
``alphas_cumprod`` (ᾱ for every training timestep). Three adapters:

- :class:`DiffusersCandidate`: modelprint's :class:`~modelprint.zoo.diffusion_model.DiffusionModel` (a diffusers
  ``UNet2DModel``, pixel or latent with its VAE), e.g. any zoo diffusion model or ``DDPMPipeline`` folder;
- :class:`ConditionalUNetCandidate`: a text-conditional ``UNet2DConditionModel`` (Stable Diffusion style) run with a
  fixed empty-prompt embedding and no guidance, on the latents of its own VAE or of one shared VAE;
- :class:`CallableCandidate`: any callable ``eps(x_t, t)`` with its ᾱ schedule. A plain PyTorch DDPM checkpoint
  takes a few lines::

      net = MyEpsNet(); net.load_state_dict(torch.load("ddpm.pth")); net.eval()
      betas = torch.linspace(1e-4, 0.02, 1000)
      candidate = CallableCandidate(net, torch.cumprod(1 - betas, 0), name="my-ddpm")

Every image-size problem (size not divisible by the network's or VAE's downsampling, a VAE whose latents do not fit
the UNet, a size other than the one the network was trained at) is a :class:`~modelprint.errors.ProbeError`
naming the candidate.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, Literal

import numpy as np
import torch

from modelprint.errors import ProbeError
from modelprint.zoo.base import to_unit

__all__ = ["DiffusionCandidate", "DiffusersCandidate", "ConditionalUNetCandidate", "CallableCandidate", "VaeEncoder"]

_CHUNK = 64


def check_uint8_images(images: np.ndarray, name: str) -> None:
    """ProbeError unless ``images`` is uint8 ``(n, H, W, 3)`` with n ≥ 1."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        desc = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        raise ProbeError(f"candidate {name!r}: expected uint8 RGB images of shape (n, H, W, 3), got {desc}")
    if len(images) == 0:
        raise ProbeError(f"candidate {name!r}: no images to probe")


class VaeEncoder:
    """Encodes uint8 images to the scaled latent means ``(mean − shift) · scaling_factor`` of a diffusers
    ``AutoencoderKL`` (``scaling_factor``/``shift_factor`` default to the VAE's config)."""

    def __init__(self, vae: Any, scaling_factor: float | None = None, shift_factor: float | None = None) -> None:
        self.vae = vae.eval()
        config = vae.config
        self.scaling_factor = float(config.scaling_factor if scaling_factor is None else scaling_factor)
        shift = config.get("shift_factor") if shift_factor is None else shift_factor
        self.shift_factor = float(shift or 0.0)
        self.factor = 2 ** (len(config.block_out_channels) - 1)
        self.latent_channels = int(config.latent_channels)

    def __call__(self, images: np.ndarray) -> torch.Tensor:
        x = to_unit(images)
        with torch.no_grad():
            z = torch.cat([self.vae.encode(chunk).latent_dist.mean for chunk in x.split(_CHUNK)])
        return (z - self.shift_factor) * self.scaling_factor

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latents ``(n, C, h, w)`` → decoded pixels ``(n, 3, H, W)`` in about ``[-1, 1]`` (no gradient)."""
        with torch.no_grad():
            return torch.cat([self.vae.decode(chunk / self.scaling_factor + self.shift_factor).sample
                              for chunk in z.split(_CHUNK)])


class DiffusionCandidate(ABC):
    """A candidate diffusion model as a white-box probe sees it.

    Subclasses set ``name``, ``alphas_cumprod`` (float64 ``(T,)``), ``channels`` (of the model space), ``factor``
    (pixels per model-space position: 1 in pixel space, the VAE's downsampling for latents), ``multiple`` (the
    model-space size must be a multiple of it) and ``sample_size`` (the model-space ``(h, w)`` the network must be
    given, or ``None`` for any size), and implement :meth:`_encode` and :meth:`_eps`.
    ``n_forward`` counts the images pushed through the network so far.
    """

    name: str
    alphas_cumprod: torch.Tensor
    channels: int
    factor: int = 1
    multiple: int = 1
    sample_size: tuple[int, int] | None = None
    n_forward: int = 0

    @abstractmethod
    def _encode(self, images: np.ndarray) -> torch.Tensor:
        """uint8 ``(n, H, W, 3)`` → model space ``(n, C, h, w)``."""

    @abstractmethod
    def _eps(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """ε prediction for ``x_t`` at long timesteps ``t`` ``(n,)``."""

    @property
    def num_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    def input_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """The model-space ``(C, h, w)`` of an ``height × width`` image; ProbeError if it cannot go through."""
        f = self.factor
        if height % f or width % f:
            raise ProbeError(f"candidate {self.name!r}: image size {height}x{width} is not divisible by its "
                             f"VAE's downsampling factor {f}")
        h, w = height // f, width // f
        if h % self.multiple or w % self.multiple:
            where = "latent" if f > 1 else "image"
            raise ProbeError(f"candidate {self.name!r}: {where} size {h}x{w} is not divisible by {self.multiple}, "
                             f"which its network's downsampling needs")
        if self.sample_size is not None and (h, w) != tuple(self.sample_size):
            sh, sw = self.sample_size
            raise ProbeError(f"candidate {self.name!r}: takes {sh * f}x{sw * f} images, got {height}x{width} "
                             "(resize or crop the images, or build the adapter with strict_size=False)")
        return self.channels, h, w

    def to_model_space(self, images: np.ndarray) -> torch.Tensor:
        """uint8 ``(n, H, W, 3)`` → the network's input space ``(n, C, h, w)`` (float32, no gradient)."""
        check_uint8_images(images, self.name)
        shape = self.input_shape(images.shape[1], images.shape[2])
        with torch.no_grad():
            z = self._encode(images).float()
        if tuple(z.shape[1:]) != shape:
            raise ProbeError(f"candidate {self.name!r}: encoding gives {tuple(z.shape[1:])}, expected {shape}")
        return z

    def predict_noise(self, x_t: torch.Tensor, t: int | torch.Tensor, *, grad: bool = False) -> torch.Tensor:
        """ε prediction for ``x_t`` ``(n, C, h, w)`` at integer timesteps ``t`` (scalar or ``(n,)``).

        Without gradient by default; with ``grad`` the prediction is differentiable with respect to ``x_t`` and to
        :meth:`named_parameters` (gradient features of trajectory provenance)."""
        if x_t.ndim != 4 or x_t.shape[1] != self.channels:
            raise ProbeError(f"candidate {self.name!r}: expects (n, {self.channels}, h, w) inputs, "
                             f"got {tuple(x_t.shape)}")
        t = torch.as_tensor(t, dtype=torch.long).reshape(-1).expand(x_t.shape[0])
        if int(t.min()) < 0 or int(t.max()) >= self.num_timesteps:
            raise ProbeError(f"candidate {self.name!r}: timesteps must be in [0, {self.num_timesteps - 1}], "
                             f"got {int(t.min())}..{int(t.max())}")
        with torch.set_grad_enabled(grad):
            eps = self._eps(x_t, t)
        if eps.shape != x_t.shape:
            raise ProbeError(f"candidate {self.name!r}: predicted noise has shape {tuple(eps.shape)}, "
                             f"expected {tuple(x_t.shape)}")
        self.n_forward += int(x_t.shape[0])
        return eps.float()

    def named_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        """The ε network's parameters by name (what gradient features differentiate); empty when unknown."""
        return []

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _check_prediction_type(prediction_type: str, name: str) -> str:
    if prediction_type not in ("epsilon", "v_prediction"):
        raise ProbeError(f"candidate {name!r}: prediction_type {prediction_type!r} is not supported "
                         "(expected epsilon or v_prediction)")
    return prediction_type


def _eps_from_output(out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor,
                     prediction_type: str) -> torch.Tensor:
    """ε from an ``epsilon`` or ``v_prediction`` network output."""
    if prediction_type == "epsilon":
        return out
    a = alphas_cumprod[t].to(x_t.dtype).view(-1, 1, 1, 1)
    return a.sqrt() * out + (1 - a).sqrt() * x_t  # v = √ᾱ ε − √(1−ᾱ) x0


def _unet_multiple(unet: Any) -> int:
    return 2 ** (len(unet.config.block_out_channels) - 1)


def _sample_size(unet: Any) -> tuple[int, int]:
    size = unet.config.sample_size
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _attach_vae(denoiser: DiffusionCandidate, vae: Any, scaling_factor: float | None, unet_channels: int) -> VaeEncoder:
    encoder = VaeEncoder(vae, scaling_factor)
    if encoder.latent_channels != unet_channels:
        raise ProbeError(f"candidate {denoiser.name!r}: its VAE gives {encoder.latent_channels}-channel latents "
                         f"but the UNet takes {unet_channels} channels")
    denoiser.factor = encoder.factor
    return encoder


class DiffusersCandidate(DiffusionCandidate):
    """A modelprint :class:`~modelprint.zoo.diffusion_model.DiffusionModel` (``UNet2DModel`` + DDPM schedule, with its
    VAE for latent models; ``vae`` replaces that VAE, e.g. by one shared across candidates).

    With ``strict_size`` (default) images must have the size the UNet was built for (``unet.config.sample_size``);
    otherwise any size its downsampling allows.
    """

    def __init__(self, model: Any, name: str = "diffusion", vae: Any | None = None, strict_size: bool = True) -> None:
        self.model = model
        self.name = name
        unet = model.unet
        self.alphas_cumprod = model.scheduler.alphas_cumprod.double()
        self.channels = int(unet.config.in_channels)
        self.multiple = _unet_multiple(unet)
        self.sample_size = _sample_size(unet) if strict_size else None
        vae = vae if vae is not None else model.vae
        scaling = model.scaling_factor if vae is model.vae else None
        self.encoder = _attach_vae(self, vae, scaling, self.channels) if vae is not None else None
        if self.encoder is None and self.channels != 3:
            raise ProbeError(f"candidate {name!r}: its UNet takes {self.channels} channels but it has no VAE")

    @classmethod
    def load(cls, name_or_path: str, zoo: str | None = None, name: str | None = None, **kwargs: Any
             ) -> DiffusersCandidate:
        """Load a zoo model by name (with ``zoo``), a diffusers folder or a UNet checkpoint, via ``load_generator``."""
        from modelprint.zoo.diffusion_model import DiffusionModel
        from modelprint.zoo.store import load_generator

        model = load_generator(name_or_path, zoo=zoo)
        if not isinstance(model, DiffusionModel):
            raise ProbeError(f"candidate {name_or_path!r}: is a {type(model).__name__}, not a diffusion model")
        return cls(model, name=name or str(name_or_path), **kwargs)

    def _encode(self, images: np.ndarray) -> torch.Tensor:
        return to_unit(images) if self.encoder is None else self.encoder(images)

    def _eps(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.model.predict_noise(x_t, t, grad=torch.is_grad_enabled())

    def named_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        return list(self.model.unet.named_parameters())


class ConditionalUNetCandidate(DiffusionCandidate):
    """A diffusers ``UNet2DConditionModel`` run unconditionally: every call gets the same prompt embedding.

    ``encoder_hidden_states`` ``(1, L, D)`` is the precomputed embedding of the empty prompt (compute it once with
    the model's text encoder); without one, zeros ``(1, 77, cross_attention_dim)`` are used — not what the model
    saw for an empty prompt, but the same for every image, which is what a probe needs. ``added_cond_kwargs``
    (e.g. SDXL's ``text_embeds``/``time_ids``, batch size 1) are expanded to the batch. ``scheduler`` is any
    diffusers scheduler with ``alphas_cumprod`` (its ``prediction_type`` decides ε or v). ``vae`` is the model's
    own or a shared ``AutoencoderKL``; ``scaling_factor`` defaults to the VAE's.
    """

    def __init__(self, unet: Any, scheduler: Any, vae: Any, name: str = "conditional-unet",
                 encoder_hidden_states: torch.Tensor | None = None,
                 added_cond_kwargs: Mapping[str, torch.Tensor] | None = None,
                 scaling_factor: float | None = None, strict_size: bool = True) -> None:
        self.unet = unet.eval()
        self.name = name
        self.alphas_cumprod = scheduler.alphas_cumprod.double()
        self.prediction_type = _check_prediction_type(str(scheduler.config.prediction_type), name)
        self.channels = int(unet.config.in_channels)
        self.sample_size = _sample_size(unet) if strict_size else None
        dim = unet.config.cross_attention_dim
        dim = int(dim if isinstance(dim, int) else dim[0])
        if encoder_hidden_states is None:
            encoder_hidden_states = torch.zeros(1, 77, dim)
        if encoder_hidden_states.ndim != 3 or encoder_hidden_states.shape[0] != 1 or \
                encoder_hidden_states.shape[2] != dim:
            raise ProbeError(f"candidate {name!r}: encoder_hidden_states must be (1, L, {dim}), "
                             f"got {tuple(encoder_hidden_states.shape)}")
        self.encoder_hidden_states = encoder_hidden_states.float()
        self.added_cond_kwargs = dict(added_cond_kwargs or {})
        if unet.config.addition_embed_type is not None and not self.added_cond_kwargs:
            raise ProbeError(f"candidate {name!r}: its UNet needs added_cond_kwargs "
                             f"({unet.config.addition_embed_type!r} conditioning)")
        self.encoder = _attach_vae(self, vae, scaling_factor, self.channels)

    def _encode(self, images: np.ndarray) -> torch.Tensor:
        return self.encoder(images)

    def named_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        return list(self.unet.named_parameters())

    def _eps(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        n = x_t.shape[0]
        added = {k: v.expand(n, *v.shape[1:]) for k, v in self.added_cond_kwargs.items()}
        out = self.unet(x_t, t, encoder_hidden_states=self.encoder_hidden_states.expand(n, -1, -1),
                        added_cond_kwargs=added or None).sample
        return _eps_from_output(out, x_t, t, self.alphas_cumprod, self.prediction_type)


class CallableCandidate(DiffusionCandidate):
    """Any ε-prediction callable ``eps_fn(x_t, t)`` (``x_t`` float32 ``(n, C, h, w)``, ``t`` long ``(n,)``).

    ``alphas_cumprod`` is ᾱ for every training timestep. With ``space="pixel"`` the model sees RGB in ``[-1, 1]``;
    with ``space="latent"`` it sees the scaled latents of ``vae``. ``multiple`` and ``sample_size`` (model-space
    ``(h, w)``) describe the sizes the network accepts; ``prediction_type`` may be ``v_prediction``.
    """

    def __init__(self, eps_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 alphas_cumprod: torch.Tensor | np.ndarray, name: str = "callable",
                 space: Literal["pixel", "latent"] = "pixel", vae: Any | None = None,
                 scaling_factor: float | None = None, channels: int | None = None, multiple: int = 1,
                 sample_size: tuple[int, int] | None = None, prediction_type: str = "epsilon") -> None:
        self.eps_fn = eps_fn
        self.name = name
        a = torch.as_tensor(np.asarray(alphas_cumprod), dtype=torch.float64).reshape(-1)
        if a.numel() == 0 or not bool(((a > 0) & (a <= 1)).all()):
            raise ProbeError(f"candidate {name!r}: alphas_cumprod must be a non-empty sequence in (0, 1]")
        self.alphas_cumprod = a
        self.multiple = int(multiple)
        self.sample_size = None if sample_size is None else (int(sample_size[0]), int(sample_size[1]))
        self.prediction_type = _check_prediction_type(prediction_type, name)
        if space == "pixel":
            if vae is not None:
                raise ProbeError(f"candidate {name!r}: a VAE was given for a pixel-space model; "
                                      "use space='latent'")
            self.channels = 3 if channels is None else int(channels)
            self.encoder = None
        elif space == "latent":
            if vae is None:
                raise ProbeError(f"candidate {name!r}: space='latent' needs a vae")
            latent = int(vae.config.latent_channels)
            self.channels = latent if channels is None else int(channels)
            self.encoder = _attach_vae(self, vae, scaling_factor, self.channels)
        else:
            raise ProbeError(f"candidate {name!r}: space must be 'pixel' or 'latent', not {space!r}")
        if self.encoder is None and self.channels != 3:
            raise ProbeError(f"candidate {name!r}: a pixel-space model takes 3 channels, not {self.channels}")

    def _encode(self, images: np.ndarray) -> torch.Tensor:
        return to_unit(images) if self.encoder is None else self.encoder(images)

    def _eps(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = self.eps_fn(x_t, t)
        if not isinstance(out, torch.Tensor):
            raise ProbeError(f"candidate {self.name!r}: eps_fn returned a {type(out).__name__}, not a tensor")
        return _eps_from_output(out, x_t, t, self.alphas_cumprod, self.prediction_type)

    def named_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        """The parameters of ``eps_fn`` when it is a ``torch.nn.Module``, else none."""
        return list(self.eps_fn.named_parameters()) if isinstance(self.eps_fn, torch.nn.Module) else []

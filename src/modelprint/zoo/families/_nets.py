"""Shared pieces of the GAN, VAE and flow families: seeding, hyper-parameters, the DCGAN-style networks, the
training loop's bookkeeping and strict safetensors checkpoints (``model.safetensors`` + ``config.json``)."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelprint.artefacts import read_json, read_tensors, write_tensors
from modelprint.atomic import write_text
from modelprint.errors import CheckpointError
from modelprint.zoo.base import Recipe, TrainProgress, ZooModel

if TYPE_CHECKING:
    import torch
    from torch import nn

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


# ------------------------------------------------------------------------------------------------ seeding
@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with torch's global RNG seeded by ``seed``, restoring the caller's RNG state afterwards.

    Module constructors (and ``normflows``' samplers) draw from the global RNG, so this is how they become
    deterministic without disturbing anyone else's random stream.
    """
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def noise_generator(seed: int) -> torch.Generator:
    """The CPU ``torch.Generator`` of a recipe's training noise: set by ``seed``, independent of the weight init."""
    import torch

    state = np.random.SeedSequence([seed, 1]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


# ------------------------------------------------------------------------------------------ hyper-parameters
def resolve_params(family: str, given: dict[str, Any], defaults: dict[str, Any],
                   choices: dict[str, tuple[str, ...]] | None = None) -> dict[str, Any]:
    """``defaults`` updated by ``given``. Values must have their default's type (an int may stand for a float);
    numbers must be positive, strings one of ``choices[name]``; anything else raises ``ValueError``."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"{family}: unknown param(s) {', '.join(unknown)}; known: {', '.join(sorted(defaults))}")
    params: dict[str, Any] = {}
    for key, default in defaults.items():
        value = given.get(key, default)
        kind = (int, float) if isinstance(default, float) else (type(default),)
        if isinstance(value, bool) or not isinstance(value, kind):
            raise ValueError(f"{family}: param {key}={value!r} is not a {type(default).__name__}")
        allowed = (choices or {}).get(key)
        if isinstance(value, str):
            if allowed is not None and value not in allowed:
                raise ValueError(f"{family}: param {key}={value!r} must be one of {', '.join(allowed)}")
        elif value <= 0:
            raise ValueError(f"{family}: param {key}={value!r} must be positive")
        params[key] = type(default)(value)
    return params


def check_size(family: str, size: int) -> int:
    """The number of ×2 stages between a 4×4 base and ``size`` (a power of two ≥ 16)."""
    if size < 16 or size & (size - 1):
        raise ValueError(f"{family}: image size must be a power of two >= 16, got {size}")
    return int(math.log2(size)) - 2


def check_images(family: str, images: np.ndarray, size: int) -> None:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (size, size, 3) or len(images) == 0:
        raise ValueError(
            f"{family}: expected uint8 images of shape (n, {size}, {size}, 3), got {images.dtype} {images.shape}"
        )


# ------------------------------------------------------------------------------------------------ networks
def up_generator(in_dim: int, size: int, width: int, upsample: str, batch_norm: bool) -> nn.Module:
    """DCGAN generator ``(n, in_dim) → (n, 3, size, size)`` in [-1, 1].

    A 4×4 base (a 4×4 transposed conv of the latent) with ``width·2^(stages-1)`` channels, then ``stages``
    ×2 upsamplings halving the channels down to ``width`` before the last one, which outputs RGB then tanh.
    ``upsample``: ``transposed`` (ConvTranspose2d k4 s2, Radford et al. 2016), ``nearest`` or ``bilinear``
    (Upsample ×2 then a 3×3 conv, Odena et al. 2016). ReLU, with batch norm after every hidden layer if asked.
    """
    from torch import nn

    stages = check_size("generator", size)
    chans = [width * 2 ** (stages - 1 - k) for k in range(stages)] + [3]

    def up(c_in: int, c_out: int) -> list[nn.Module]:
        if upsample == "transposed":
            return [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=not batch_norm or c_out == 3)]
        align = {"align_corners": False} if upsample == "bilinear" else {}
        return [nn.Upsample(scale_factor=2, mode=upsample, **align),
                nn.Conv2d(c_in, c_out, 3, 1, 1, bias=not batch_norm or c_out == 3)]

    def act(c: int) -> list[nn.Module]:
        return [nn.BatchNorm2d(c), nn.ReLU(True)] if batch_norm else [nn.ReLU(True)]

    layers: list[nn.Module] = [nn.Unflatten(1, (in_dim, 1, 1)),
                               nn.ConvTranspose2d(in_dim, chans[0], 4, 1, 0, bias=not batch_norm), *act(chans[0])]
    for c_in, c_out in zip(chans[:-1], chans[1:], strict=True):
        layers += up(c_in, c_out) + (act(c_out) if c_out != 3 else [nn.Tanh()])
    return nn.Sequential(*layers)


def down_encoder(size: int, width: int, out_dim: int, spectral: bool) -> nn.Module:
    """DCGAN discriminator body ``(n, 3, size, size) → (n, out_dim)``: strided 4×4 convs (s2) doubling the
    channels from ``width`` down to 4×4, LeakyReLU 0.2, then a 4×4 valid conv to ``out_dim``; spectral norm
    (Miyato et al. 2018) on every conv if asked, no batch norm."""
    from torch import nn

    stages = check_size("encoder", size)
    chans = [3] + [width * 2**k for k in range(stages)]
    wrap = nn.utils.parametrizations.spectral_norm if spectral else (lambda m: m)
    layers: list[nn.Module] = []
    for c_in, c_out in zip(chans[:-1], chans[1:], strict=True):
        layers += [wrap(nn.Conv2d(c_in, c_out, 4, 2, 1)), nn.LeakyReLU(0.2, True)]
    layers += [wrap(nn.Conv2d(chans[-1], out_dim, 4, 1, 0)), nn.Flatten()]
    return nn.Sequential(*layers)


def dcgan_init(module: nn.Module) -> None:
    """DCGAN weight init: conv weights ~ N(0, 0.02), batch-norm scales ~ N(1, 0.02), biases 0."""
    from torch import nn

    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


# ------------------------------------------------------------------------------------------------ training
class LossLog:
    """Reports progress every ~``steps/50`` steps and keeps the mean loss over the last 10% of steps."""

    def __init__(self, steps: int, progress: TrainProgress | None) -> None:
        self.steps = steps
        self.progress = progress
        self.every = max(1, steps // 50)
        self.tail_from = steps - max(1, steps // 10)
        self.tail: list[float] = []

    def log(self, step: int, loss: float) -> None:
        """Record the loss of 0-based ``step``."""
        if step >= self.tail_from:
            self.tail.append(loss)
        done = step + 1
        if self.progress is not None and (done % self.every == 0 or done == self.steps):
            self.progress(done, self.steps, loss)

    @property
    def final(self) -> float:
        return float(np.mean(self.tail)) if self.tail else float("nan")


def in_batches(n: int, size: int, make: Callable[[slice], np.ndarray], batch: int = 256) -> np.ndarray:
    """Concatenate ``make(s)`` (uint8 ``(len(s), size, size, 3)``) over slices of at most ``batch`` of ``range(n)``."""
    parts = [make(slice(start, min(n, start + batch))) for start in range(0, n, batch)]
    return np.concatenate(parts) if parts else np.zeros((0, size, size, 3), np.uint8)


# --------------------------------------------------------------------------------------------- checkpoints
def save_checkpoint(folder: Path, family: str, params: dict[str, Any], size: int,
                    modules: dict[str, nn.Module]) -> None:
    """Write ``model.safetensors`` (every module's state dict under ``<name>.``) and ``config.json``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_tensors(folder / WEIGHTS, {f"{name}.{k}": v.detach().contiguous().clone()
                                     for name, module in modules.items() for k, v in module.state_dict().items()})
    config = {"family": family, "params": params, "size": size}
    write_text(folder / CONFIG, json.dumps(config, indent=2, sort_keys=True) + "\n")


def load_checkpoint(folder: Path, family: str, params: dict[str, Any], size: int,
                    modules: dict[str, nn.Module]) -> None:
    """Load a :func:`save_checkpoint` folder into ``modules``; :class:`CheckpointError` naming the file if the
    folder is incomplete or unreadable, or was written for another family, size, params or architecture."""
    import torch

    folder = Path(folder)
    cfg_path, weights_path = folder / CONFIG, folder / WEIGHTS
    for path in (cfg_path, weights_path):
        if not path.is_file():
            raise CheckpointError(f"{path}: file not found")
    config = read_json(cfg_path, "config")
    want = {"family": family, "params": params, "size": size}
    for key, value in want.items():
        if config.get(key) != value:
            raise CheckpointError(f"{cfg_path}: {key} is {config.get(key)!r}, the recipe needs {value!r}")
    tensors, _ = read_tensors(weights_path)
    expected = {f"{name}.{k}": v for name, module in modules.items() for k, v in module.state_dict().items()}
    problems = []
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing:
        problems.append(f"missing {len(missing)} tensor(s) ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
    if extra:
        problems.append(f"unexpected {len(extra)} tensor(s) ({', '.join(extra[:3])}{', ...' if len(extra) > 3 else ''})")
    bad = [k for k in expected if k in tensors and tensors[k].shape != expected[k].shape]
    if bad:
        k = bad[0]
        problems.append(f"{len(bad)} shape mismatch(es), e.g. {k} is {list(tensors[k].shape)}, "
                        f"expected {list(expected[k].shape)}")
    nonfinite = [k for k in expected if k in tensors and tensors[k].is_floating_point()
                 and not bool(torch.isfinite(tensors[k]).all())]
    if nonfinite:
        problems.append(f"non-finite values in {', '.join(nonfinite[:3])}")
    if problems:
        raise CheckpointError(f"{weights_path}: does not match the {family} recipe's networks: " + "; ".join(problems))
    for name, module in modules.items():
        prefix = f"{name}."
        module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}, strict=True)


class SingleFileGenerator(ZooModel):
    """Plumbing shared by the GAN, VAE and flow families: resolved ``params``, the image ``size``, and one
    ``model.safetensors`` + ``config.json`` holding every network of :meth:`networks`."""

    defaults: dict[str, Any] = {}
    choices: dict[str, tuple] | None = None

    def __init__(self, recipe: Recipe, parent: ZooModel | None = None) -> None:
        super().__init__(recipe, parent)
        self.params = resolve_params(self.name, recipe.params, self.defaults, self.choices)
        self.size = recipe.data.size
        check_size(self.name, self.size)

    def networks(self) -> dict[str, nn.Module]:
        """The networks saved in the checkpoint, by key prefix."""
        raise NotImplementedError

    def save(self, folder: Path) -> None:
        save_checkpoint(folder, self.name, self.params, self.size, self.networks())

    @classmethod
    def load(cls, folder: Path, recipe: Recipe, parent: ZooModel | None = None) -> SingleFileGenerator:
        model = cls(recipe, parent)
        load_checkpoint(folder, cls.name, model.params, model.size, model.networks())
        return model

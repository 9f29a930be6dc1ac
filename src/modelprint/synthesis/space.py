"""The synthetic architecture space of Model Synthesis (Yang et al.): six choices, 288 architectures.

An architecture id reads like ``b2-c1-post-up_transposed-act_relu-norm_instance``. Components live in
registries (:data:`UPSAMPLERS`, :data:`ACTIVATIONS`, :data:`NORMS`, each a :class:`~modelprint.registry.Registry`),
so a new one is one decorated factory ``factory(channels, groups=1) -> nn.Module``, built with
``UPSAMPLERS.create(name, channels, groups)``. ``groups`` is the number of independent models packed side by side
along the channel axis (see :mod:`modelprint.synthesis.grouped`): a factory must build a layer that acts on each
block of ``channels`` channels separately (grouped convolutions, per-channel or within-block norms).

Two spaces are defined:

* :data:`PAPER_SPACE`: the paper's 2·2·2·3·4·3 = 288 architectures;
* :data:`EXTENDED_SPACE`: adds pixel-shuffle upsampling, LeakyReLU / GELU / SiLU, group norm and a third block
  (3·2·2·4·7·4 = 1344 architectures; the paper space is a subset).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelprint.errors import ModelprintError
from modelprint.registry import Registry

ORDERS = ("post", "pre")
FACTORS = ("blocks", "convs", "order", "upsampling", "activation", "norm")


#: Component factories ``factory(channels, groups=1) -> torch.nn.Module`` (torch is imported by the factories).
UPSAMPLERS: Registry[Any] = Registry("synthesis upsampling")
ACTIVATIONS: Registry[Any] = Registry("synthesis activation")
NORMS: Registry[Any] = Registry("synthesis normalisation")


# --- upsampling (2x) ---------------------------------------------------------------------------------------------
@UPSAMPLERS.register("bilinear")
def _bilinear(channels: int, groups: int = 1):
    import torch.nn as nn

    return nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)


@UPSAMPLERS.register("nearest")
def _nearest(channels: int, groups: int = 1):
    import torch.nn as nn

    return nn.Upsample(scale_factor=2, mode="nearest")


@UPSAMPLERS.register("transposed")
def _transposed(channels: int, groups: int = 1):
    import torch.nn as nn

    c = channels * groups
    return nn.ConvTranspose2d(c, c, kernel_size=2, stride=2, groups=groups)


@UPSAMPLERS.register("pixelshuffle")
def _pixelshuffle(channels: int, groups: int = 1):
    """Sub-pixel convolution (ESPCN): 3×3 conv to 4× channels, then PixelShuffle(2).

    PixelShuffle maps output channel ``j`` from input channels ``4j … 4j+3``, so model ``g``'s output channels
    come from its own conv outputs: grouping stays exact.
    """
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv2d(channels * groups, 4 * channels * groups, 3, padding=1, groups=groups), nn.PixelShuffle(2)
    )


# --- activations -------------------------------------------------------------------------------------------------
@ACTIVATIONS.register("none")
def _identity_act(channels: int, groups: int = 1):
    import torch.nn as nn

    return nn.Identity()


@ACTIVATIONS.register("relu")
def _relu(channels: int, groups: int = 1):
    import torch.nn as nn

    return nn.ReLU()


@ACTIVATIONS.register("sigmoid")
def _sigmoid(channels: int, groups: int = 1):
    import torch.nn as nn

    return nn.Sigmoid()


@ACTIVATIONS.register("tanh")
def _tanh(channels: int, groups: int = 1):
    import torch.nn as nn

    return nn.Tanh()


@ACTIVATIONS.register("leakyrelu")
def _leaky_relu(channels: int, groups: int = 1):
    import torch.nn as nn

    return nn.LeakyReLU(0.2)


@ACTIVATIONS.register("gelu")
def _gelu(channels: int, groups: int = 1):
    import torch.nn as nn

    return nn.GELU()


@ACTIVATIONS.register("silu")
def _silu(channels: int, groups: int = 1):
    import torch.nn as nn

    return nn.SiLU()


# --- normalisations ----------------------------------------------------------------------------------------------
@NORMS.register("none")
def _no_norm(channels: int, groups: int = 1):
    import torch.nn as nn

    return nn.Identity()


@NORMS.register("batch")
def _batch_norm(channels: int, groups: int = 1):
    import torch.nn as nn

    return nn.BatchNorm2d(channels * groups)


@NORMS.register("instance")
def _instance_norm(channels: int, groups: int = 1):
    import torch.nn as nn

    return nn.InstanceNorm2d(channels * groups, affine=True)


def group_norm_groups(channels: int) -> int:
    """Groups of the group norm over ``channels``: gcd(8, channels) (8 for 32/64/128 channels, 1 for RGB)."""
    return math.gcd(8, channels)


@NORMS.register("group")
def _group_norm(channels: int, groups: int = 1):
    import torch.nn as nn

    # Groups are contiguous channel blocks, so each model's channels form group_norm_groups(channels) groups.
    return nn.GroupNorm(group_norm_groups(channels) * groups, channels * groups)


PAPER_SPACE: dict[str, tuple] = {
    "blocks": (1, 2),
    "convs": (1, 2),
    "order": ORDERS,
    "upsampling": ("bilinear", "nearest", "transposed"),
    "activation": ("none", "relu", "sigmoid", "tanh"),
    "norm": ("none", "batch", "instance"),
}

EXTENDED_SPACE: dict[str, tuple] = {
    "blocks": (1, 2, 3),
    "convs": (1, 2),
    "order": ORDERS,
    "upsampling": ("bilinear", "nearest", "transposed", "pixelshuffle"),
    "activation": ("none", "relu", "sigmoid", "tanh", "leakyrelu", "gelu", "silu"),
    "norm": ("none", "batch", "instance", "group"),
}

SPACES: dict[str, dict[str, tuple]] = {"paper": PAPER_SPACE, "extended": EXTENDED_SPACE}

MAX_BLOCKS = 3


@dataclass(frozen=True, order=True)
class Architecture:
    """One point of the synthetic space."""

    blocks: int
    convs: int
    order: str
    upsampling: str
    activation: str
    norm: str

    @property
    def id(self) -> str:
        return f"b{self.blocks}-c{self.convs}-{self.order}-up_{self.upsampling}-act_{self.activation}-norm_{self.norm}"

    @classmethod
    def parse(cls, arch_id: str) -> Architecture:
        try:
            b, c, order, up, act, norm = arch_id.split("-")
            if not (b[:1] == "b" and c[:1] == "c" and up.startswith("up_") and act.startswith("act_")
                    and norm.startswith("norm_")):
                raise ValueError
            arch = cls(int(b[1:]), int(c[1:]), order, up.removeprefix("up_"), act.removeprefix("act_"),
                       norm.removeprefix("norm_"))
        except ValueError:
            raise ModelprintError(f"malformed architecture id {arch_id!r}; expected e.g. {all_architectures()[0].id}") from None
        arch.validate()
        return arch

    def validate(self) -> None:
        if not 1 <= self.blocks <= MAX_BLOCKS or self.convs not in (1, 2) or self.order not in ORDERS:
            raise ModelprintError(f"invalid architecture {self}: blocks 1–{MAX_BLOCKS}, convs 1–2, order post/pre")
        UPSAMPLERS.get(self.upsampling)
        ACTIVATIONS.get(self.activation)
        NORMS.get(self.norm)

    def get(self, factor: str):
        return getattr(self, factor)


def resolve_space(space: Mapping[str, tuple] | str | None) -> dict[str, tuple]:
    """A space given by name (``"paper"``, ``"extended"``), as a dict, or ``None`` (the paper's)."""
    if space is None:
        return dict(PAPER_SPACE)
    if isinstance(space, str):
        if space not in SPACES:
            raise ModelprintError(f"unknown architecture space {space!r}; known: {', '.join(SPACES)}")
        return dict(SPACES[space])
    missing = [k for k in FACTORS if k not in space]
    if missing:
        raise ModelprintError(f"architecture space lacks factor(s) {', '.join(missing)}")
    return {k: tuple(space[k]) for k in FACTORS}


def all_architectures(space: Mapping[str, tuple] | str | None = None) -> list[Architecture]:
    """Every architecture of ``space`` (the paper's 288 by default; ``"extended"``: 1344), in a stable order."""
    s = resolve_space(space)
    archs = [Architecture(*combo) for combo in itertools.product(*(s[k] for k in FACTORS))]
    for a in archs:
        a.validate()
    return archs


def list_architectures(space: Mapping[str, tuple] | str | None = "paper") -> list[str]:
    """Architecture ids of ``space`` (``"paper"``: 288, ``"extended"``: 1344), for ``modelprint synthesize --list``."""
    return [a.id for a in all_architectures(space)]


def restrict(space: Mapping[str, tuple] | str | None, **fixed) -> dict[str, tuple]:
    """``space`` with some factors pinned, e.g. ``restrict(PAPER_SPACE, upsampling="bilinear")``."""
    s = resolve_space(space)
    for k, v in fixed.items():
        if k not in FACTORS:
            raise ModelprintError(f"unknown factor {k!r}; factors: {', '.join(FACTORS)}")
        s[k] = tuple(v) if isinstance(v, (tuple, list)) else (v,)
    return s


def model_id(arch: Architecture | str, seed: int) -> str:
    """The id of one synthetic model: ``<architecture id>-s<seed>``."""
    aid = arch.id if isinstance(arch, Architecture) else arch
    return f"{aid}-s{int(seed)}"


def parse_model_id(mid: str) -> tuple[Architecture, int]:
    """Inverse of :func:`model_id`."""
    head, sep, seed = mid.rpartition("-s")
    if not sep or not seed.isdigit():
        raise ModelprintError(f"malformed synthetic model id {mid!r}; expected <architecture id>-s<seed>")
    return Architecture.parse(head), int(seed)


def model_seed(arch: Architecture | str, seed: int) -> int:
    """The torch seed that initialises (and draws the batches of) model ``(arch, seed)``.

    Derived from the architecture id too, so that seed 0 of two architectures does not share initial weights in
    their common layers.
    """
    import hashlib

    return int(hashlib.sha256(model_id(arch, seed).encode()).hexdigest()[:15], 16)

"""The synthetic architecture space of Model Synthesis (Yang et al.): six choices, 288 architectures.

An architecture id reads like ``b2-c1-post-up_transposed-act_relu-norm_instance``. Components live in
registries (:data:`UPSAMPLERS`, :data:`ACTIVATIONS`, :data:`NORMS`), so a new one is one decorated factory.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

from modelprint.errors import ModelprintError

ORDERS = ("post", "pre")


class _ComponentRegistry:
    """name → factory(channels) -> torch.nn.Module (imported lazily by the factories)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.factories: dict[str, Callable] = {}

    def register(self, name: str) -> Callable[[Callable], Callable]:
        def decorate(fn: Callable) -> Callable:
            self.factories[name] = fn
            return fn

        return decorate

    def build(self, name: str, *args: int):
        if name not in self.factories:
            raise ModelprintError(f"unknown {self.kind} {name!r}; known: {', '.join(self.factories)}")
        return self.factories[name](*args)

    def names(self) -> tuple[str, ...]:
        return tuple(self.factories)


UPSAMPLERS = _ComponentRegistry("upsampling")
ACTIVATIONS = _ComponentRegistry("activation")
NORMS = _ComponentRegistry("normalisation")


@UPSAMPLERS.register("bilinear")
def _bilinear(channels: int):
    import torch.nn as nn

    return nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)


@UPSAMPLERS.register("nearest")
def _nearest(channels: int):
    import torch.nn as nn

    return nn.Upsample(scale_factor=2, mode="nearest")


@UPSAMPLERS.register("transposed")
def _transposed(channels: int):
    import torch.nn as nn

    return nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2)


@ACTIVATIONS.register("none")
def _identity_act(channels: int):
    import torch.nn as nn

    return nn.Identity()


@ACTIVATIONS.register("relu")
def _relu(channels: int):
    import torch.nn as nn

    return nn.ReLU()


@ACTIVATIONS.register("sigmoid")
def _sigmoid(channels: int):
    import torch.nn as nn

    return nn.Sigmoid()


@ACTIVATIONS.register("tanh")
def _tanh(channels: int):
    import torch.nn as nn

    return nn.Tanh()


@NORMS.register("none")
def _no_norm(channels: int):
    import torch.nn as nn

    return nn.Identity()


@NORMS.register("batch")
def _batch_norm(channels: int):
    import torch.nn as nn

    return nn.BatchNorm2d(channels)


@NORMS.register("instance")
def _instance_norm(channels: int):
    import torch.nn as nn

    return nn.InstanceNorm2d(channels, affine=True)


PAPER_SPACE = {
    "blocks": (1, 2),
    "convs": (1, 2),
    "order": ORDERS,
    "upsampling": ("bilinear", "nearest", "transposed"),
    "activation": ("none", "relu", "sigmoid", "tanh"),
    "norm": ("none", "batch", "instance"),
}


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
            arch = cls(int(b[1:]), int(c[1:]), order, up.removeprefix("up_"), act.removeprefix("act_"), norm.removeprefix("norm_"))
        except ValueError:
            raise ModelprintError(f"malformed architecture id {arch_id!r}; expected e.g. {all_architectures()[0].id}") from None
        arch.validate()
        return arch

    def validate(self) -> None:
        if self.blocks < 1 or self.convs < 1 or self.order not in ORDERS:
            raise ModelprintError(f"invalid architecture {self}")
        UPSAMPLERS.build(self.upsampling, 3)
        ACTIVATIONS.build(self.activation, 3)
        NORMS.build(self.norm, 3)


def all_architectures(space: dict | None = None) -> list[Architecture]:
    """Every architecture of ``space`` (the paper's 288 by default), in a stable order."""
    s = space or PAPER_SPACE
    keys = ("blocks", "convs", "order", "upsampling", "activation", "norm")
    return [Architecture(*combo) for combo in itertools.product(*(s[k] for k in keys))]

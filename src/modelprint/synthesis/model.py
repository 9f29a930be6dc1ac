"""The synthetic generator network for an :class:`~modelprint.synthesis.space.Architecture`.

An auto-encoder: ``blocks`` down-blocks (2× average pool, conv, BN, ReLU, conv, BN) then as many up-blocks built
from the architecture's choices. Widths 32 (and 64 for a second block), kernel 3. In ``post`` order an up-block is
upsample → conv(s) → norm → activation, and the last 3-channel layer is normalised and activated too; in ``pre``
order it is norm → activation → upsample → conv(s).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from modelprint.synthesis.space import ACTIVATIONS, NORMS, UPSAMPLERS, Architecture


def _down_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.AvgPool2d(2),
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.BatchNorm2d(cout),
    )


def _convs(cin: int, cout: int, n: int) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i in range(n):
        layers.append(nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1))
    return layers


def _up_block(arch: Architecture, cin: int, cout: int) -> nn.Sequential:
    if arch.order == "post":
        layers = [UPSAMPLERS.build(arch.upsampling, cin), *_convs(cin, cout, arch.convs)]
        layers += [NORMS.build(arch.norm, cout), ACTIVATIONS.build(arch.activation, cout)]
    else:
        layers = [NORMS.build(arch.norm, cin), ACTIVATIONS.build(arch.activation, cin)]
        layers += [UPSAMPLERS.build(arch.upsampling, cin), *_convs(cin, cout, arch.convs)]
    return nn.Sequential(*layers)


class SyntheticGenerator(nn.Module):
    """Maps an image in [-1, 1] to an image of the same size, leaving the architecture's fingerprint."""

    def __init__(self, arch: Architecture, width: int = 32) -> None:
        super().__init__()
        self.arch = arch
        widths = [width * 2**i for i in range(arch.blocks)]  # 32, 64, ...
        downs, cin = [], 3
        for w in widths:
            downs.append(_down_block(cin, w))
            cin = w
        ups = []
        for i in reversed(range(arch.blocks)):
            cout = 3 if i == 0 else widths[i - 1]
            ups.append(_up_block(arch, widths[i], cout))
        self.down = nn.Sequential(*downs)
        self.up = nn.Sequential(*ups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))

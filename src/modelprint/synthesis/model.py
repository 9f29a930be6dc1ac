"""The synthetic generator network for an :class:`~modelprint.synthesis.space.Architecture`.

An auto-encoder: ``blocks`` down-blocks (2× average pool, conv, BN, ReLU, conv, BN) then as many up-blocks built
from the architecture's choices. Widths 32, 64, 128 for blocks 1, 2, 3; kernel 3. In ``post`` order an up-block is
upsample → conv(s) → norm → activation, and (as in the reference) the last 3-channel layer is normalised and
activated too; in ``pre`` order it is norm → activation → upsample → conv(s).

A consequence of the reference's ``post`` order: the output passes through the activation, so ReLU outputs are
≥ 0 and sigmoid outputs lie in (0, 1), while targets are in [-1, 1]; such models cannot reconstruct the darker half
of the range and stop at a large residual (see ``benchmarks/README.md`` for the measured losses per activation).
We keep that behaviour: it is part of the space the paper sampled.

``groups=G`` builds G independent models of the same architecture side by side: every layer is grouped
(``groups=G`` convolutions and transposed convolutions; norms are per channel or within each model's channel
block), model ``g`` owns channels ``[g·C, (g+1)·C)`` of every layer, and its input/output are channels
``3g … 3g+2``. Every parameter and buffer of the grouped network is the concatenation along dim 0 of the G
models' tensors (see :mod:`modelprint.synthesis.grouped`).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from modelprint.synthesis.space import ACTIVATIONS, NORMS, UPSAMPLERS, Architecture


def _conv(cin: int, cout: int, groups: int) -> nn.Conv2d:
    return nn.Conv2d(cin * groups, cout * groups, 3, padding=1, groups=groups)


def _down_block(cin: int, cout: int, groups: int) -> nn.Sequential:
    return nn.Sequential(
        nn.AvgPool2d(2),
        _conv(cin, cout, groups),
        nn.BatchNorm2d(cout * groups),
        nn.ReLU(),
        _conv(cout, cout, groups),
        nn.BatchNorm2d(cout * groups),
    )


def _convs(cin: int, cout: int, n: int, groups: int) -> list[nn.Module]:
    return [_conv(cin if i == 0 else cout, cout, groups) for i in range(n)]


def _up_block(arch: Architecture, cin: int, cout: int, groups: int) -> nn.Sequential:
    if arch.order == "post":
        layers = [UPSAMPLERS.create(arch.upsampling, cin, groups), *_convs(cin, cout, arch.convs, groups)]
        layers += [NORMS.create(arch.norm, cout, groups), ACTIVATIONS.create(arch.activation, cout, groups)]
    else:
        layers = [NORMS.create(arch.norm, cin, groups), ACTIVATIONS.create(arch.activation, cin, groups)]
        layers += [UPSAMPLERS.create(arch.upsampling, cin, groups), *_convs(cin, cout, arch.convs, groups)]
    return nn.Sequential(*layers)


class SyntheticGenerator(nn.Module):
    """Maps an image in [-1, 1] to an image of the same size, leaving the architecture's fingerprint.

    With ``groups=G`` the input is ``(B, 3G, H, W)``: G models applied to their own 3 channels each.
    Input sides must be multiples of ``2**blocks``.
    """

    def __init__(self, arch: Architecture, width: int = 32, groups: int = 1) -> None:
        super().__init__()
        self.arch = arch
        self.groups = groups
        widths = [width * 2**i for i in range(arch.blocks)]  # 32, 64, 128
        downs, cin = [], 3
        for w in widths:
            downs.append(_down_block(cin, w, groups))
            cin = w
        ups = []
        for i in reversed(range(arch.blocks)):
            cout = 3 if i == 0 else widths[i - 1]
            ups.append(_up_block(arch, widths[i], cout, groups))
        self.down = nn.Sequential(*downs)
        self.up = nn.Sequential(*ups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))

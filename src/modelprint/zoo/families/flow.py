"""Glow (Kingma & Dhariwal, 2018) on RealNVP's multi-scale architecture (Dinh et al., 2017): the ``flow`` family.

Built with ``normflows`` as in its Glow example (``examples/glow_colab.ipynb``), minus the class conditioning:
``levels`` levels of ``depth`` :class:`normflows.flows.GlowBlock` (affine coupling with a ``hidden``-channel
3×3/1×1/3×3 conv net, invertible 1×1 conv with LU parametrization, ActNorm), a squeeze per level, half of the
channels factored out after each level except the last, and a learned diagonal Gaussian base
(:class:`normflows.distributions.GlowBase`) per level. Data as in the example: ``x = (pixel + u) / 256`` with
``u ~ U[0, 1)`` (its ``Scale(255/256)`` and ``Jitter(1/256)``, no logit transform). The objective is the negative
log-likelihood in bits per dimension of the 8-bit images (``forward_kld / (D ln 2) + 8``), with Adam(``recipe.lr``),
gradient-norm clipping at :data:`CLIP` and steps whose loss is not finite skipped (as in the example).
Sampling draws from the base at ``temperature`` (Glow's reduced-temperature sampling), clamps to [0, 1] (NaN → 0.5)
and quantizes with ``floor(256 x)``, the inverse of the dequantization.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelprint.zoo.base import FAMILIES, Recipe, TrainProgress, ZooModel, batches
from modelprint.zoo.families._nets import (
    SingleFileGenerator,
    LossLog,
    check_images,
    in_batches,
    noise_generator,
    seeded,
)

if TYPE_CHECKING:
    from normflows import MultiscaleFlow
    from torch import nn

DEFAULTS: dict[str, Any] = {"levels": 2, "depth": 4, "hidden": 64, "temperature": 0.7}
#: Maximum gradient norm (of the bits-per-dimension loss).
CLIP = 50.0


def build_glow(size: int, levels: int, depth: int, hidden: int) -> MultiscaleFlow:
    """An unconditional ``normflows`` multi-scale Glow for ``(3, size, size)`` images."""
    import normflows as nf

    q0, flows, merges = [], [], []
    for i in range(levels):
        with warnings.catch_warnings():  # normflows' LU-parametrized 1x1 conv calls the deprecated Tensor.lu
            warnings.filterwarnings("ignore", message="torch.lu is deprecated", category=UserWarning)
            blocks = [nf.flows.GlowBlock(3 * 2 ** (levels + 1 - i), hidden, split_mode="channel", scale=True)
                      for _ in range(depth)]
        flows.append([*blocks, nf.flows.Squeeze()])
        if i > 0:
            merges.append(nf.flows.Merge())
            side = size // 2 ** (levels - i)
            q0.append(nf.distributions.GlowBase((3 * 2 ** (levels - i), side, side)))
        else:
            side = size // 2**levels
            q0.append(nf.distributions.GlowBase((3 * 2 ** (levels + 1), side, side)))
    return nf.MultiscaleFlow(q0, flows, merges, class_cond=False)


@contextlib.contextmanager
def _actnorm_ready(flow: MultiscaleFlow) -> Iterator[None]:
    """Mark not-yet-initialized ActNorm layers (an untrained flow) as initialized while the block runs.

    ActNorm initializes itself from the first batch it sees; that must be the first training batch, not a batch of
    samples. Uninitialized ActNorm layers are identities, so this samples the untrained flow and leaves it untouched.
    """
    import torch
    from normflows.flows import ActNorm

    pending = [m for m in flow.modules() if isinstance(m, ActNorm) and not m.data_dep_init_done > 0]
    for m in pending:
        m.data_dep_init_done = torch.tensor(1.0)
    try:
        yield
    finally:
        for m in pending:
            m.data_dep_init_done = torch.tensor(0.0)


@FAMILIES.register("flow")
class Flow(SingleFileGenerator):
    """A multi-scale Glow; ``recipe.params`` as in :data:`DEFAULTS`."""

    kind = "flow"
    defaults = DEFAULTS

    def __init__(self, recipe: Recipe, parent: ZooModel | None = None) -> None:
        super().__init__(recipe, parent)
        p = self.params
        if 2 ** p["levels"] > self.size // 2:
            raise ValueError(f"{self.name}: {p['levels']} levels need images of at least {2 ** (p['levels'] + 1)}²")
        with seeded(recipe.seed):
            self.flow = build_glow(self.size, p["levels"], p["depth"], p["hidden"])
        self.flow.eval()

    def fit(self, images: np.ndarray, progress: TrainProgress | None = None) -> Flow:
        """Train for ``recipe.steps`` steps; ``final_loss`` is the mean bits per dimension over the last 10%."""
        import torch

        check_images(self.name, images, self.size)
        r = self.recipe
        data = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
        to_bpd = 1.0 / (math.log(2.0) * data[0].numel())
        g = noise_generator(r.seed)
        self.flow.train()
        opt = torch.optim.Adam(self.flow.parameters(), lr=r.lr)
        log = LossLog(r.steps, progress)
        for step, idx in enumerate(batches(len(data), r.batch_size, r.steps, r.seed)):
            x = data[torch.from_numpy(idx)]
            x = (x + torch.rand(x.shape, generator=g)) / 256.0
            loss = self.flow.forward_kld(x) * to_bpd + 8.0
            opt.zero_grad(set_to_none=True)
            if torch.isfinite(loss):
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.flow.parameters(), CLIP)
                opt.step()
            log.log(step, loss.item())
        self.flow.eval()
        self.final_loss = log.final
        return self

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` images at the configured temperature; the base draws from torch's RNG seeded by ``seed`` (and
        restored afterwards), since ``normflows`` samplers take no generator."""
        import torch

        def make(s: slice) -> np.ndarray:
            x, _ = self.flow.sample(s.stop - s.start, temperature=self.params["temperature"])
            x = torch.nan_to_num(x, nan=0.5, posinf=1.0, neginf=0.0).clamp(0.0, 1.0)
            return (x * 256.0).floor().clamp(max=255.0).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()

        self.flow.eval()
        with seeded(seed), torch.no_grad(), _actnorm_ready(self.flow):
            return in_batches(n, self.size, make)

    def networks(self) -> dict[str, nn.Module]:
        return {"flow": self.flow}

    def modules(self) -> list[Any]:
        return [self.flow]

"""DCGAN (Radford et al., 2016) trained from scratch: the ``gan`` zoo family.

Generator: a 4×4 base from ``z ~ N(0, I)`` (``z_dim``), ×2 upsampling stages with batch norm and ReLU up to the
image size, tanh output; ``upsample`` picks transposed 4×4 convs (``transposed``, the DCGAN original, with its
checkerboard artifacts) or resize-convolution (``nearest`` / ``bilinear`` ×2 then a 3×3 conv, Odena et al.,
2016). ``width`` is the channel count entering the last upsampling stage, doubled per stage towards the base.
Discriminator: the DCGAN one (strided 4×4 convs, LeakyReLU 0.2, ``d_width`` channels doubled per stage) with
spectral norm on every conv instead of batch norm (Miyato et al., 2018), which keeps it stable for both losses.
Losses: ``ns`` (the non-saturating BCE-with-logits loss of Goodfellow et al., 2014) or ``hinge`` (Lim & Ye,
2017; Miyato et al., 2018). Adam(``recipe.lr``, betas (0.5, 0.999)) for both networks, one discriminator step per
generator step on the same fake batch, as in PyTorch's DCGAN example.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelprint.zoo.base import FAMILIES, Recipe, TrainProgress, ZooModel, batches, to_uint8, to_unit
from modelprint.zoo.families._nets import (
    SingleFileGenerator,
    LossLog,
    check_images,
    dcgan_init,
    down_encoder,
    in_batches,
    noise_generator,
    seeded,
    up_generator,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

DEFAULTS: dict[str, Any] = {"upsample": "transposed", "loss": "ns", "z_dim": 64, "width": 32, "d_width": 32}
CHOICES = {"upsample": ("transposed", "nearest", "bilinear"), "loss": ("ns", "hinge")}


@FAMILIES.register("gan")
class GAN(SingleFileGenerator):
    """A DCGAN generator/discriminator pair; ``recipe.params`` as in :data:`DEFAULTS` / :data:`CHOICES`."""

    kind = "gan"
    defaults = DEFAULTS
    choices = CHOICES

    def __init__(self, recipe: Recipe, parent: ZooModel | None = None) -> None:
        super().__init__(recipe, parent)
        p = self.params
        with seeded(recipe.seed):
            self.generator = up_generator(p["z_dim"], self.size, p["width"], p["upsample"], batch_norm=True)
            self.discriminator = down_encoder(self.size, p["d_width"], 1, spectral=True)
            dcgan_init(self.generator)
            dcgan_init(self.discriminator)
        self.generator.eval()
        self.discriminator.eval()

    def _d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F  # noqa: N812

        if self.params["loss"] == "hinge":
            return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()

    def _g_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F  # noqa: N812

        return -fake_logits.mean() if self.params["loss"] == "hinge" else F.softplus(-fake_logits).mean()

    def fit(self, images: np.ndarray, progress: TrainProgress | None = None) -> GAN:
        """Train for ``recipe.steps`` generator steps (one discriminator step each); ``final_loss`` is the
        generator's mean loss over the last 10% of steps."""
        import torch

        check_images(self.name, images, self.size)
        r = self.recipe
        data = to_unit(images)
        g = noise_generator(r.seed)
        G, D = self.generator.train(), self.discriminator.train()  # noqa: N806
        opt_g = torch.optim.Adam(G.parameters(), lr=r.lr, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(D.parameters(), lr=r.lr, betas=(0.5, 0.999))
        log = LossLog(r.steps, progress)
        for step, idx in enumerate(batches(len(data), r.batch_size, r.steps, r.seed)):
            real = data[torch.from_numpy(idx)]
            fake = G(torch.randn(len(idx), self.params["z_dim"], generator=g))
            d_loss = self._d_loss(D(real), D(fake.detach()))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            g_loss = self._g_loss(D(fake))
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            log.log(step, g_loss.item())
        G.eval()
        D.eval()
        self.final_loss = log.final
        return self

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` images from ``z ~ N(0, I)`` drawn with a generator seeded by ``seed`` (batch norm in eval mode)."""
        import torch

        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.params["z_dim"], generator=g)
        self.generator.eval()
        with torch.no_grad():
            return in_batches(n, self.size, lambda s: to_uint8(self.generator(z[s])))

    def networks(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "discriminator": self.discriminator}

    def modules(self) -> list[Any]:
        return [self.generator]

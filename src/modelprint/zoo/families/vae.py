"""Convolutional VAE (Kingma & Welling, 2014) and β-VAE (Higgins et al., 2017): the ``vae`` zoo family.

Encoder: DCGAN-style strided 4×4 convs (LeakyReLU 0.2, ``width`` channels doubled per stage down to 4×4) and a
4×4 conv to the mean and log-variance of a diagonal Gaussian posterior over ``latent`` dimensions. Decoder: the
mirror image, a 4×4 base then transposed 4×4 convs (ReLU, no normalization) and a tanh mean in [-1, 1].
Loss per image: the squared error summed over pixels of [-1, 1] images (a Gaussian likelihood with fixed variance
1/2, up to a constant) plus ``beta`` times the KL divergence to N(0, I); ``beta`` = 1 is the vanilla VAE,
4 the β-VAE. Adam(``recipe.lr``). Samples are the decoder means of ``z ~ N(0, I)``.
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
    down_encoder,
    in_batches,
    noise_generator,
    seeded,
    up_generator,
)

if TYPE_CHECKING:
    from torch import nn

DEFAULTS: dict[str, Any] = {"beta": 1.0, "latent": 64, "width": 32}


@FAMILIES.register("vae")
class VAE(SingleFileGenerator):
    """A convolutional (β-)VAE; ``recipe.params`` as in :data:`DEFAULTS`."""

    kind = "vae"
    defaults = DEFAULTS

    def __init__(self, recipe: Recipe, parent: ZooModel | None = None) -> None:
        super().__init__(recipe, parent)
        p = self.params
        with seeded(recipe.seed):
            self.encoder = down_encoder(self.size, p["width"], 2 * p["latent"], spectral=False)
            self.decoder = up_generator(p["latent"], self.size, p["width"], "transposed", batch_norm=False)

    def fit(self, images: np.ndarray, progress: TrainProgress | None = None) -> VAE:
        """Train for ``recipe.steps`` steps; ``final_loss`` is the mean per-image loss (squared error + β·KL)
        over the last 10% of steps."""
        import torch

        check_images(self.name, images, self.size)
        r = self.recipe
        data = to_unit(images)
        g = noise_generator(r.seed)
        params = [*self.encoder.parameters(), *self.decoder.parameters()]
        opt = torch.optim.Adam(params, lr=r.lr)
        log = LossLog(r.steps, progress)
        for step, idx in enumerate(batches(len(data), r.batch_size, r.steps, r.seed)):
            x = data[torch.from_numpy(idx)]
            mu, logvar = self.encoder(x).chunk(2, dim=1)
            z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=g)
            recon = (self.decoder(z) - x).pow(2).flatten(1).sum(1)
            kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)
            loss = (recon + self.params["beta"] * kl).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            log.log(step, loss.item())
        self.final_loss = log.final
        return self

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """Decoder means of ``n`` latents ``z ~ N(0, I)`` drawn with a generator seeded by ``seed``."""
        import torch

        z = torch.randn(n, self.params["latent"], generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            return in_batches(n, self.size, lambda s: to_uint8(self.decoder(z[s])))

    def networks(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "decoder": self.decoder}

    def modules(self) -> list[Any]:
        return [self.decoder, self.encoder]

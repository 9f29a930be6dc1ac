"""modelprint's zoo: small real generative models (GANs, VAEs, a flow, pixel and latent diffusion, lineage
children) trained by modelprint on the real-image pool, as test beds for attribution.

>>> from modelprint.zoo import build_zoo, Zoo
>>> build_zoo("out/zoo", tier="tiny")                        # doctest: +SKIP
>>> Zoo("out/zoo").load("tiny-gan").sample(4, seed=0).shape  # doctest: +SKIP
(4, 32, 32, 3)
"""

from modelprint.zoo.base import FAMILIES, DataSpec, Recipe, ZooModel
from modelprint.zoo.build import build_zoo
from modelprint.zoo.recipes import TIERS, tier_recipes
from modelprint.zoo.store import Zoo, load_generator, load_model

__all__ = ["FAMILIES", "TIERS", "DataSpec", "Recipe", "Zoo", "ZooModel", "build_zoo", "load_generator", "load_model",
           "tier_recipes"]

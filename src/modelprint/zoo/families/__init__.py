"""Zoo families: importing this package registers every family in :data:`modelprint.zoo.base.FAMILIES`."""

from modelprint.zoo.families import diffusion, flow, gan, lineage, vae  # noqa: F401

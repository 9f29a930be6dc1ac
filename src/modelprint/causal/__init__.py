"""Causal fingerprints (issue 14): reconstruction residuals through diffusion models and autoencoders."""

from modelprint.causal.reconstruction import (
    RECONSTRUCTIONS,
    AutoencoderReconstruction,
    DireReconstruction,
    OneStepReconstruction,
    Reconstruction,
    Reconstructor,
    tile_grid,
)

__all__ = ["RECONSTRUCTIONS", "AutoencoderReconstruction", "DireReconstruction", "OneStepReconstruction",
           "Reconstruction", "Reconstructor", "tile_grid"]

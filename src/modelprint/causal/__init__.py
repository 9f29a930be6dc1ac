"""Causal fingerprints (issue 14): reconstruction residuals through diffusion models and autoencoders, and the DIRE
feature views (fingerprint methods on those residuals)."""

from modelprint.causal.dire_cnn import DireCnnView
from modelprint.causal.reconstruction import (
    RECONSTRUCTIONS,
    AutoencoderReconstruction,
    DireReconstruction,
    OneStepReconstruction,
    Reconstruction,
    Reconstructor,
    tile_grid,
)
from modelprint.causal.views import DireFourierView, DireStatsView, DireView

__all__ = ["RECONSTRUCTIONS", "AutoencoderReconstruction", "DireCnnView", "DireFourierView", "DireReconstruction",
           "DireStatsView", "DireView", "OneStepReconstruction", "Reconstruction", "Reconstructor", "tile_grid"]

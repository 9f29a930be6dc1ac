"""Causal fingerprints (issue 14): reconstruction residuals through diffusion models and autoencoders, and
counterfactual anonymization against a gallery's fingerprint."""

from modelprint.causal.anonymize import Anonymizer, AttackResult, GalleryJudge
from modelprint.causal.reconstruction import (
    RECONSTRUCTIONS,
    AutoencoderReconstruction,
    DireReconstruction,
    OneStepReconstruction,
    Reconstruction,
    Reconstructor,
    tile_grid,
)

__all__ = ["Anonymizer", "AttackResult", "GalleryJudge",
           "RECONSTRUCTIONS", "AutoencoderReconstruction", "DireReconstruction", "OneStepReconstruction",
           "Reconstruction", "Reconstructor", "tile_grid"]

"""Causal fingerprints (issue 14): reconstruction residuals through diffusion models and autoencoders, paired data
redrawn by zoo models, the content decoupler (registered as the ``decoupled`` method), the invariance study,
counterfactual anonymization against a gallery's fingerprint, the counterfactual contrast of a fingerprint against
reference redraws (the ``contrast`` method), and the DIRE feature views (fingerprint methods
on those residuals)."""

from modelprint.causal.anonymize import Anonymizer, AttackResult, GalleryJudge
from modelprint.causal.contrast import ContrastMethod, ReferenceRedrawers
from modelprint.causal.decoupler import CausalDecoupler
from modelprint.causal.dire_cnn import DireCnnView
from modelprint.causal.invariance import (
    content_leakage,
    decoupling_study,
    distances,
    identification,
    invariance_report,
    split_contents,
)
from modelprint.causal.method import DecoupledMethod
from modelprint.causal.pairs import PairSet, build_pairs, content_images, redraw
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

__all__ = ["RECONSTRUCTIONS", "Anonymizer", "AttackResult", "AutoencoderReconstruction", "CausalDecoupler",
           "ContrastMethod", "DecoupledMethod", "DireCnnView", "DireFourierView", "DireReconstruction",
           "DireStatsView", "DireView", "GalleryJudge", "OneStepReconstruction", "PairSet", "Reconstruction",
           "Reconstructor", "ReferenceRedrawers", "build_pairs", "content_images", "content_leakage",
           "decoupling_study", "distances", "identification", "invariance_report", "redraw", "split_contents",
           "tile_grid"]

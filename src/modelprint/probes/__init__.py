"""White-box attribution probes for diffusion models: Spectral Denoising Signatures through candidate models.

- :mod:`~modelprint.probes.candidates`: one :class:`DiffusionCandidate` interface (ε prediction + ᾱ schedule + model
  space) for diffusers UNets, conditional UNets with an empty prompt, and any user callable.
- :mod:`~modelprint.probes.base`: the :class:`Probe` interface, the registry of probe kinds and their presets.
- :mod:`~modelprint.probes.sds`: the :class:`SpectralProbe` that turns a denoiser's response to band-limited noise
  into a signature vector.
- :mod:`~modelprint.probes.cascade`: early exit, a cheap probe first and an expensive one only where it is unsure.
- :mod:`~modelprint.probes.loss`: the :class:`DenoisingLossProbe` (plain noise-prediction loss per timestep), the
  training-free baseline and the raw material of trajectory features.
- :mod:`~modelprint.probes.attribution`: the true-model and unknown-origin protocols, classifiers, ranking metrics
  and the persistent :class:`ProbeAttributor`.
"""

from modelprint.probes.attribution import (
    CLASSIFIERS,
    FEATURES,
    NORMALISATIONS,
    CandidatePrototypeSimilarity,
    LowestLoss,
    NearestPrototype,
    ProbeAttributor,
    fit_classifier,
    make_classifier,
    ranking_metrics,
    true_model_signatures,
    unknown_origin_signatures,
)
from modelprint.probes.base import PROBES, Probe, preset_names, probe_from_preset
from modelprint.probes.cascade import CascadeAttributor, CascadeDecision, choose_margin, score_margin
from modelprint.probes.candidates import (
    CallableCandidate,
    ConditionalUNetCandidate,
    DiffusionCandidate,
    DiffusersCandidate,
    VaeEncoder,
)
from modelprint.probes.loss import LOSS_PRESETS, DenoisingLossProbe
from modelprint.probes.sds import PRESETS, TIMESTEPS_1, TIMESTEPS_5, SpectralProbe, coupling, ring_masks

__all__ = [
    "CLASSIFIERS",
    "FEATURES",
    "LOSS_PRESETS",
    "NORMALISATIONS",
    "PRESETS",
    "PROBES",
    "TIMESTEPS_1",
    "TIMESTEPS_5",
    "CallableCandidate",
    "CascadeAttributor",
    "CascadeDecision",
    "CandidatePrototypeSimilarity",
    "ConditionalUNetCandidate",
    "DenoisingLossProbe",
    "DiffusionCandidate",
    "LowestLoss",
    "DiffusersCandidate",
    "NearestPrototype",
    "Probe",
    "ProbeAttributor",
    "SpectralProbe",
    "VaeEncoder",
    "choose_margin",
    "coupling",
    "fit_classifier",
    "make_classifier",
    "preset_names",
    "probe_from_preset",
    "ranking_metrics",
    "ring_masks",
    "score_margin",
    "true_model_signatures",
    "unknown_origin_signatures",
]

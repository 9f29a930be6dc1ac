"""White-box attribution probes for diffusion models: Spectral Denoising Signatures through candidate models.

- :mod:`~modelprint.probes.candidates`: one :class:`DiffusionCandidate` interface (ε prediction + ᾱ schedule + model
  space) for diffusers UNets, conditional UNets with an empty prompt, and any user callable.
- :mod:`~modelprint.probes.base`: the :class:`Probe` interface, the registry of probe kinds and their presets.
- :mod:`~modelprint.probes.sds`: the :class:`SpectralProbe` that turns a denoiser's response to band-limited noise
  into a signature vector.
- :mod:`~modelprint.probes.cascade`: early exit, a cheap probe first and an expensive one only where it is unsure.
- :mod:`~modelprint.probes.loss`: the :class:`DenoisingLossProbe` (plain noise-prediction loss per timestep), the
  training-free baseline and the raw material of trajectory features.
- :mod:`~modelprint.probes.attribution`: the true-model and unknown-origin protocols, the registry of classifiers,
  ranking metrics and the persistent :class:`ProbeAttributor`.
- :mod:`~modelprint.probes.selection`: choosing a pipeline by cross-validation, out-of-fold scores, and testing an
  early-exit cascade, on precomputed signatures.
- :mod:`~modelprint.probes.workflow`: the file-level workflows of ``modelprint probe`` (typed :class:`ProbeReport`).
"""

from modelprint.probes.attribution import (
    CLASSIFIERS,
    FEATURES,
    NORMALISATIONS,
    CandidatePrototypeSimilarity,
    LowestLoss,
    NearestPrototype,
    ProbeAttributor,
    attribution_pipeline,
    fit_classifier,
    make_classifier,
    ranking_metrics,
    true_model_signatures,
    unknown_origin_signatures,
)
from modelprint.probes.base import PROBES, NotFittedProbeError, Probe, preset_names, probe_from_preset
from modelprint.probes.candidates import (
    CallableCandidate,
    ConditionalUNetCandidate,
    DiffusersCandidate,
    DiffusionCandidate,
    VaeEncoder,
)
from modelprint.probes.cascade import CascadeAttributor, CascadeDecision, choose_margin, score_margin
from modelprint.probes.loss import LOSS_PRESETS, DenoisingLossProbe
from modelprint.probes.sds import PRESETS, TIMESTEPS_1, TIMESTEPS_5, SpectralProbe, coupling, ring_masks
from modelprint.probes.selection import (
    COMBINATIONS,
    CascadeEvaluation,
    CascadeStage,
    Selection,
    class_scores,
    cross_validated_scores,
    evaluate_cascade,
    fit_pipeline,
    select_pipeline,
)
from modelprint.probes.workflow import ProbeAttribution, ProbeReport, RankedCandidate

__all__ = [
    "CLASSIFIERS",
    "COMBINATIONS",
    "FEATURES",
    "LOSS_PRESETS",
    "NORMALISATIONS",
    "PRESETS",
    "PROBES",
    "TIMESTEPS_1",
    "TIMESTEPS_5",
    "CallableCandidate",
    "CandidatePrototypeSimilarity",
    "CascadeAttributor",
    "CascadeDecision",
    "CascadeEvaluation",
    "CascadeStage",
    "ConditionalUNetCandidate",
    "DenoisingLossProbe",
    "DiffusersCandidate",
    "DiffusionCandidate",
    "LowestLoss",
    "NearestPrototype",
    "NotFittedProbeError",
    "Probe",
    "ProbeAttribution",
    "ProbeAttributor",
    "ProbeReport",
    "RankedCandidate",
    "Selection",
    "SpectralProbe",
    "VaeEncoder",
    "attribution_pipeline",
    "choose_margin",
    "class_scores",
    "coupling",
    "cross_validated_scores",
    "evaluate_cascade",
    "fit_classifier",
    "fit_pipeline",
    "make_classifier",
    "preset_names",
    "probe_from_preset",
    "ranking_metrics",
    "ring_masks",
    "score_margin",
    "select_pipeline",
    "true_model_signatures",
    "unknown_origin_signatures",
]

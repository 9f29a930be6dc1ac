"""White-box attribution probes for diffusion models: Spectral Denoising Signatures through candidate denoisers.

- :mod:`~modelprint.probes.denoisers`: one :class:`Denoiser` interface (ε prediction + ᾱ schedule + model space)
  for diffusers UNets, conditional UNets with an empty prompt, and any user callable.
- :mod:`~modelprint.probes.sds`: the :class:`SpectralProbe` that turns a denoiser's response to band-limited noise
  into a signature vector.
- :mod:`~modelprint.probes.attribution`: the true-model and unknown-origin protocols, classifiers, ranking metrics
  and the persistent :class:`ProbeAttributor`.
"""

from modelprint.probes.attribution import (
    CLASSIFIERS,
    FEATURES,
    CandidatePrototypeSimilarity,
    NearestPrototype,
    ProbeAttributor,
    fit_classifier,
    make_classifier,
    ranking_metrics,
    true_model_signatures,
    unknown_origin_signatures,
)
from modelprint.probes.denoisers import (
    CallableDenoiser,
    ConditionalUNetDenoiser,
    Denoiser,
    DiffusersDenoiser,
    VaeEncoder,
)
from modelprint.probes.sds import PRESETS, TIMESTEPS_1, TIMESTEPS_5, SpectralProbe, coupling, ring_masks

__all__ = [
    "CLASSIFIERS",
    "FEATURES",
    "PRESETS",
    "TIMESTEPS_1",
    "TIMESTEPS_5",
    "CallableDenoiser",
    "CandidatePrototypeSimilarity",
    "ConditionalUNetDenoiser",
    "Denoiser",
    "DiffusersDenoiser",
    "NearestPrototype",
    "ProbeAttributor",
    "SpectralProbe",
    "VaeEncoder",
    "coupling",
    "fit_classifier",
    "make_classifier",
    "ranking_metrics",
    "ring_masks",
    "true_model_signatures",
    "unknown_origin_signatures",
]

"""Synthetic generators: the architecture space of Model Synthesis, the networks, and their training."""

from modelprint.synthesis.space import ACTIVATIONS, NORMS, PAPER_SPACE, UPSAMPLERS, Architecture, all_architectures

__all__ = ["ACTIVATIONS", "NORMS", "PAPER_SPACE", "UPSAMPLERS", "Architecture", "all_architectures"]

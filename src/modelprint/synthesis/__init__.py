"""Synthetic generators: the architecture space of Model Synthesis, the networks, their (grouped) training, a
resumable pool on disk, and its fidelity (FFD) against real generators.

Importing this package does not import torch; ``synthesize_pool``, ``load_synthetic``, ``fidelity`` … load on use.
"""

from modelprint.synthesis.space import (
    ACTIVATIONS,
    EXTENDED_SPACE,
    NORMS,
    PAPER_SPACE,
    SPACES,
    UPSAMPLERS,
    Architecture,
    all_architectures,
    list_architectures,
    model_id,
    parse_model_id,
    restrict,
)

_LAZY = {
    "synthesize_pool": "modelprint.synthesis.pool",
    "load_synthetic": "modelprint.synthesis.pool",
    "read_manifest": "modelprint.synthesis.pool",
    "verify_pool": "modelprint.synthesis.pool",
    "SynthesisSettings": "modelprint.synthesis.pool",
    "PoolSummary": "modelprint.synthesis.pool",
    "fidelity": "modelprint.synthesis.fidelity",
    "train_group": "modelprint.synthesis.train",
    "train_generator": "modelprint.synthesis.train",
    "apply_generator": "modelprint.synthesis.train",
    "SyntheticGenerator": "modelprint.synthesis.model",
}

__all__ = [
    "ACTIVATIONS", "EXTENDED_SPACE", "NORMS", "PAPER_SPACE", "SPACES", "UPSAMPLERS", "Architecture",
    "all_architectures", "list_architectures", "model_id", "parse_model_id", "restrict", *_LAZY,
]


def __getattr__(name: str):  # noqa: ANN202
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'modelprint.synthesis' has no attribute {name!r}")

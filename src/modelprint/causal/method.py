"""``decoupled``: a base fingerprint method's embedding projected by a fitted :class:`CausalDecoupler`.

The decoupler's file records the base method it was fitted on (name, parameters, version); the method rebuilds that
base and refuses a base whose version no longer matches (other weights, other code), since the projection was
learned on that base's embeddings. ``modelprint decoupler train`` writes such a file.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from modelprint.causal.decoupler import CausalDecoupler
from modelprint.errors import CheckpointError
from modelprint.methods.base import METHODS, FingerprintMethod

__all__ = ["DecoupledMethod"]


@METHODS.register("decoupled")
class DecoupledMethod(FingerprintMethod):
    """Base method's embedding projected to keep model identity and drop content (a fitted decoupler file)."""

    def __init__(self, weights: str) -> None:
        self.weights = str(weights)
        self._decoupler = CausalDecoupler.load(self.weights)
        base = self._decoupler.info_.get("base")
        if not isinstance(base, dict) or not {"name", "params", "version"} <= set(base):
            raise CheckpointError(f"{self.weights}: decoupler records no base method (name, params, version); "
                                  "write it with `modelprint decoupler train`")
        self._base = METHODS.create(str(base["name"]), **dict(base["params"]))
        if self._base.version != base["version"]:
            raise CheckpointError(f"{self.weights}: decoupler was fitted on {base['name']}@{base['version']}, but "
                                  f"that method is now {self._base.tag}; refit it")

    @property
    def base(self) -> FingerprintMethod:
        return self._base

    @property
    def version(self) -> str:
        return f"1-{self._decoupler.sha256_[:16]}-{self._base.tag}"

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        if not len(images):
            return np.zeros((0, self._decoupler.output_dim_), dtype=np.float32)
        return self._decoupler.transform(self._base.embed(images))

"""Mean residual spectra per model, for reports: what a model's images share in the frequency domain."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from modelprint.io.images import ImageLimits, load_image_file
from modelprint.methods import FingerprintMethod

#: Images per model whose spectra a report averages when the method computes none itself.
SPECTRA_PER_MODEL = 12


def mean_spectra_per_model(
    paths: Sequence[str],
    labels: Sequence[str],
    method: FingerprintMethod,
    *,
    per_model: int = SPECTRA_PER_MODEL,
    limits: ImageLimits | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Mean centred residual log-spectrum of up to ``per_model`` images of each model (for reports), decoding one
    image at a time; ``progress(1)`` after each."""
    from modelprint.methods.spectral import SpectralMethod

    spec = method if isinstance(method, SpectralMethod) else SpectralMethod(reference=None)
    out: dict[str, np.ndarray] = {}
    for label in sorted(set(labels)):
        chosen = [p for p, lab in zip(paths, labels) if lab == label][:per_model]
        total = np.zeros((spec.tile, spec.tile), dtype=np.float64)
        for p in chosen:
            total += spec.log_spectra([load_image_file(p, limits).pixels])[0]
            if progress:
                progress(1)
        out[label] = (total / max(1, len(chosen))).astype(np.float32)
    return out

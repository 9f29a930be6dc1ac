"""What the extractor sees: residual log-spectra of square windows, for training and inference alike."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from modelprint.spectra import grid_starts, window_log_spectra


def window_spectra(residual: np.ndarray, tile: int = 64, per_side: int = 3) -> np.ndarray:
    """Log-spectra ``(n_windows, 3, tile, tile)`` of a residual's sliding windows.

    Windows form a ``per_side × per_side`` grid evenly spread over the image (fewer where the image is not much
    larger than a window). Any size ≥ 32 px works: a side shorter than ``tile`` uses a window of its own length
    and the spectrum is resampled onto the ``tile`` frequency grid.
    """
    import torch
    import torch.nn.functional as F

    h, w, _ = residual.shape
    size = min(tile, h, w)
    r = torch.from_numpy(np.ascontiguousarray(residual.transpose(2, 0, 1)))
    wins = torch.stack([r[:, y : y + size, x : x + size] for y in grid_starts(h, size, per_side) for x in grid_starts(w, size, per_side)])
    spec = window_log_spectra(wins)
    if size != tile:
        spec = F.interpolate(spec, size=(tile, tile), mode="bilinear", align_corners=False)
    return spec.numpy()


def residual_spectra(images: Sequence[np.ndarray], residual, tile: int = 64) -> np.ndarray:  # noqa: ANN001
    """Spectra ``(n, 3, tile, tile)`` of ``tile``-sized images (one window each), batched through ``residual``."""
    res = residual.batch(list(images))
    return np.concatenate([window_spectra(r, tile, per_side=1) for r in res])

"""What the extractor sees: Welch log-spectra of residual regions, for training and inference alike.

A *region* (128² by default) is one sliding window of the image; its spectrum is the average periodogram of its
``tile``² sub-tiles (50% overlap), so a 128² region averages 9 periodograms of 64². A single periodogram is too
noisy to show a generator's faint spectral peaks; the average keeps them.
"""

from __future__ import annotations

import numpy as np

from modelprint.spectra import grid_starts, window_log_spectra


def region_spectra(regions, tile: int):  # noqa: ANN001, ANN201
    """Welch log-spectra ``(N, 3, tile, tile)`` of torch regions ``(N, 3, H, W)``; a side < tile is resampled up."""
    import torch.nn.functional as F

    spec = window_log_spectra(regions, tile)
    if spec.shape[-1] != tile:
        spec = F.interpolate(spec, size=(tile, tile), mode="bilinear", align_corners=False)
    return spec


def window_spectra(residual: np.ndarray, tile: int = 64, per_side: int = 3, region: int = 128) -> np.ndarray:
    """Log-spectra ``(n_windows, 3, tile, tile)`` of a residual's sliding windows (regions).

    Windows of ``region`` px form a ``per_side × per_side`` grid evenly spread over the image (fewer where the
    image is not much larger than a window); ``region=0`` makes the whole residual one window. Any size ≥ 32 px
    works: a side shorter than ``region`` uses a window of its own length, and one shorter than ``tile`` a single
    periodogram resampled onto the ``tile`` grid.
    """
    import torch

    r = torch.from_numpy(np.ascontiguousarray(residual.transpose(2, 0, 1)))
    return window_spectra_torch(r, tile, per_side, region).numpy()


def window_spectra_torch(residual, tile: int = 64, per_side: int = 3, region: int = 128):  # noqa: ANN001, ANN201
    """:func:`window_spectra` of a torch ``(3, H, W)`` residual, differentiable: ``(n_windows, 3, tile, tile)``."""
    import torch

    if region == 0:
        return region_spectra(residual[None], tile)
    h, w = residual.shape[-2:]
    size = min(region, h, w)
    wins = torch.stack([residual[:, y : y + size, x : x + size]
                        for y in grid_starts(h, size, per_side) for x in grid_starts(w, size, per_side)])
    return region_spectra(wins, tile)


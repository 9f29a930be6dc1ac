"""``learned``: the zero-shot fingerprint extractor trained on synthetic models (Model Synthesis).

image → DnCNN residual → Welch log-spectrum of the whole image (or of a grid of sliding windows, each embedded and
the embeddings averaged; any size ≥ 32 px) → standardised → :class:`~modelprint.extractor.network.FingerprintNet`
→ L2-normalised embedding.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from modelprint.extractor.checkpoint import load_extractor
from modelprint.methods.base import METHODS, FingerprintMethod
from modelprint.scores import l2_normalize


@METHODS.register("learned")
class LearnedMethod(FingerprintMethod):
    """Zero-shot fingerprint embeddings from modelprint's extractor.

    Parameters
    ----------
    weights:
        ``None`` for the shipped extractor, or a ``.safetensors`` file written by ``modelprint train``.
    windows_per_side:
        The sliding-window grid (3 gives 9 windows, as in the paper); 1 disables sliding windows.
    window:
        ``0`` (default) embeds the whole image as one Welch region (all its 64² tiles averaged, at most 256;
        ``windows_per_side`` is then ignored): chosen over sliding windows on half of the real-world benchmark's
        classes (``benchmarks/README.md``). Otherwise the window side in px, ``None`` for the region the weights
        were trained on (128).
    residual:
        The residual extractor the weights were trained with; it must be local (``dncnn``, ``highpass``).
    margin:
        Context pixels around each window for the residual (must exceed the extractor's receptive radius).
    """

    def __init__(self, weights: str | Path | None = None, windows_per_side: int = 3, window: int | None = 0,
                 residual: str = "dncnn", margin: int = 12) -> None:
        if window is not None and window != 0 and window < 32:
            raise ValueError(f"learned: window must be 0 (whole image) or ≥ 32 px, got {window}")
        self.weights = weights
        self.windows_per_side = windows_per_side
        self.window = window
        self.residual = residual
        self.margin = margin
        self._net, self._mean, self._std, self.meta = load_extractor(weights)
        from modelprint.residuals import get_residual
        from modelprint.seeding import configure_torch_threads

        configure_torch_threads()
        self._residual = get_residual(residual)

    @property
    def residual_extractor(self):  # noqa: ANN201
        """The residual extractor the extractor's spectra are taken from."""
        return self._residual

    @property
    def version(self) -> str:
        grid = "whole" if self.window == 0 else f"w{self.windows_per_side}x{self.window or self._net.config['region']}"
        return f"2-{self.meta['sha256'][:12]}-{grid}m{self.margin}-{self.residual}:{self._residual.version}"

    def window_spectra(self, image: np.ndarray) -> np.ndarray:
        """Log-spectra ``(n_windows, 3, T, T)`` of the image's sliding windows.

        Only the windows' pixels (plus a margin wider than the denoiser's receptive field, reflected at the image
        border) go through the residual extractor, so a large image costs no more than its windows.
        """
        from modelprint.extractor.features import window_spectra
        from modelprint.spectra import grid_starts

        tile, m = self._net.config["tile"], self.margin
        region = self._net.config["region"] if self.window is None else self.window
        if region == 0:
            return window_spectra(self._residual(image), tile, region=0)
        h, w, _ = image.shape
        size = min(region, h, w)
        padded = np.pad(image, ((m, m), (m, m), (0, 0)), mode="reflect")
        crops = [padded[y : y + size + 2 * m, x : x + size + 2 * m]
                 for y in grid_starts(h, size, self.windows_per_side) for x in grid_starts(w, size, self.windows_per_side)]
        residuals = self._residual.batch(crops)
        return np.concatenate([window_spectra(r[m : m + size, m : m + size], tile, per_side=1, region=region) for r in residuals])

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return self.embed_with_spectra(images)[0]

    def embed_with_spectra(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings, and each image's window log-spectra averaged over windows and channels ``(n, T, T)``."""
        tile = self._net.config["tile"]
        if len(images) == 0:
            return self.embed_spectra([]), np.zeros((0, tile, tile), dtype=np.float32)
        spectra = [self.window_spectra(np.asarray(im, dtype=np.float32)) for im in images]
        return self.embed_spectra(spectra), np.stack([s.mean(axis=(0, 1)) for s in spectra])

    def embed_spectra(self, spectra: Sequence[np.ndarray]) -> np.ndarray:
        """Embeddings ``(n, d)`` of images given by their :meth:`window_spectra` (one array per image): the
        network's part of :meth:`embed`, so that extractors sharing a residual can share the spectra."""
        import torch

        dim = self._net.config["embed_dim"]
        if len(spectra) == 0:
            return np.zeros((0, dim), dtype=np.float32)
        owner = np.repeat(np.arange(len(spectra)), [len(s) for s in spectra])
        x = torch.from_numpy((np.concatenate(spectra) - self._mean) / self._std).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            e = torch.nn.functional.normalize(self._net(x), dim=1).numpy()
        out = np.zeros((len(spectra), dim), dtype=np.float32)
        np.add.at(out, owner, e)
        return l2_normalize(out)

    def embed_torch(self, x):  # noqa: ANN001, ANN201
        """:meth:`embed` as a differentiable torch function of ``(n, 3, H, W)`` pixels in [0, 1] (see
        :mod:`modelprint.methods.differentiable`); the same windows, residual, spectra and network."""
        import torch
        import torch.nn.functional as F

        from modelprint.extractor.features import window_spectra_torch
        from modelprint.methods.differentiable import torch_residual
        from modelprint.spectra import grid_starts

        residual = torch_residual(self.name, self._residual)
        tile, m = self._net.config["tile"], self.margin
        region = self._net.config["region"] if self.window is None else self.window
        h, w = x.shape[-2:]
        if region == 0:
            spectra = [window_spectra_torch(r, tile, region=0) for r in residual(x)]
        else:
            size = min(region, h, w)
            padded = F.pad(x, (m, m, m, m), mode="reflect")
            starts = [(y, x_) for y in grid_starts(h, size, self.windows_per_side)
                      for x_ in grid_starts(w, size, self.windows_per_side)]
            crops = torch.stack([padded[:, :, y : y + size + 2 * m, x_ : x_ + size + 2 * m] for y, x_ in starts], 1)
            res = residual(crops.flatten(0, 1))[..., m : m + size, m : m + size].unflatten(0, crops.shape[:2])
            spectra = [torch.cat([window_spectra_torch(r, tile, per_side=1, region=region) for r in windows])
                       for windows in res]
        mean, std = torch.from_numpy(self._mean), torch.from_numpy(self._std)
        embeddings = [F.normalize(self._net((s - mean) / std), dim=1).sum(0) for s in spectra]
        return F.normalize(torch.stack(embeddings), dim=1)

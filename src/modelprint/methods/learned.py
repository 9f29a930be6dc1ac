"""``learned``: the zero-shot fingerprint extractor trained on synthetic models (Model Synthesis).

image → DnCNN residual → Welch log-spectrum of the whole image (or of a grid of sliding windows, each embedded and
the embeddings averaged; any size ≥ 32 px) → standardised → :class:`~modelprint.extractor.network.FingerprintNet`
→ L2-normalised embedding.

With ``tile_grid = g`` the whole-image Welch spectrum is estimated from ``g × g`` blocks of ``block`` px evenly
spread over the image (grid starts as for sliding windows; the 64² sub-tiles of all blocks averaged), and only
those blocks (plus ``margin`` px of context each) go through the residual: the denoiser's cost, which dominates,
is bounded by ``g² · (block + 2·margin)²`` pixels whatever the image size. An image with fewer pixels than that
is processed whole, as with ``tile_grid = 0``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from modelprint.extractor.checkpoint import load_extractor
from modelprint.methods.base import METHODS, FingerprintMethod
from modelprint.scores import l2_normalize
from modelprint.spectra import blocks_log_spectrum, grid_starts

#: The spectrum-level test-time augmentations of :class:`LearnedMethod` (its ``symmetries``).
SYMMETRIES = ("none", "mirror", "d4")


def symmetric_spectra(spectra, symmetries: str):  # noqa: ANN001, ANN201
    """Centred log-power spectra ``(n, c, t, t)`` (torch) followed by their copies under ``symmetries``: a mirrored
    image's power spectrum is the spectrum mirrored about DC (index ``k`` → ``t − k``, Nyquist fixed), a transposed
    image's the spectrum transposed. Differentiable."""
    import torch

    if symmetries == "none":
        return spectra
    mirror = torch.roll(spectra.flip(-1), 1, dims=-1)
    copies = [spectra, mirror]
    if symmetries == "d4":
        copies += [spectra.transpose(-1, -2), mirror.transpose(-1, -2)]
    return torch.cat(copies)


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
    tile_grid:
        ``0``: the residual of every pixel feeds the whole-image spectrum. ``g > 0`` (whole-image mode only): the
        spectrum of ``g × g`` evenly spread blocks, whose residuals alone are computed (see the module
        docstring); bounds time and memory for large images. Default ``2`` (with ``block=128``): on the
        real-world benchmark's selection half it identifies as well as ``0`` (0.943 both) for a quarter of the CPU
        time at 512² (``benchmarks/README.md``, realworld_use).
    block:
        Side of those blocks in px (at least the extractor's 64² tile).
    flips:
        Test-time augmentation: the embedding is the mean of the image's and its left-right mirror's (twice the
        cost).
    symmetries:
        Test-time augmentation on the spectrum, at no residual cost: ``"mirror"`` also embeds the power spectrum
        of the mirrored image, ``"d4"`` those of the image mirrored, transposed and turned by 90° (the square's
        symmetries as they act on a power spectrum, which is point-symmetric); the embedding is the mean. ``"none"``
        (default) embeds the spectrum as it is.
    """

    def __init__(self, weights: str | Path | None = None, windows_per_side: int = 3, window: int | None = 0,
                 residual: str = "dncnn", margin: int = 12, tile_grid: int = 2, block: int = 128, flips: bool = False,
                 symmetries: str = "none") -> None:
        if window is not None and window != 0 and window < 32:
            raise ValueError(f"learned: window must be 0 (whole image) or ≥ 32 px, got {window}")
        if tile_grid < 0 or block < 64:
            raise ValueError(f"learned: need tile_grid ≥ 0 and block ≥ 64, got {tile_grid} and {block}")
        if symmetries not in SYMMETRIES:
            raise ValueError(f"learned: symmetries must be one of {', '.join(SYMMETRIES)}, got {symmetries!r}")
        self.symmetries = symmetries
        self.tile_grid = tile_grid
        self.block = block
        self.flips = flips
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
        if self.window == 0 and self.tile_grid:
            grid += f"g{self.tile_grid}b{self.block}"
        tta = ("-flip" if self.flips else "") + ("" if self.symmetries == "none" else f"-sym{self.symmetries}")
        return f"2-{self.meta['sha256'][:12]}-{grid}m{self.margin}{tta}-{self.residual}:{self._residual.version}"

    def _tile_starts(self, h: int, w: int) -> list[tuple[int, int]] | None:
        """Top-left corners of the ``tile_grid²`` residual tiles, or ``None`` to process the whole image."""
        g, b = self.tile_grid, self.block
        if g == 0 or h < b or w < b or h * w <= g * g * (b + 2 * self.margin) ** 2:
            return None
        return [(y, x) for y in grid_starts(h, b, g) for x in grid_starts(w, b, g)]

    def window_spectra(self, image: np.ndarray) -> np.ndarray:
        """Log-spectra ``(n_windows, 3, T, T)`` of the image's sliding windows.

        Only the windows' pixels (plus a margin wider than the denoiser's receptive field, reflected at the image
        border) go through the residual extractor, so a large image costs no more than its windows.
        """
        from modelprint.extractor.features import window_spectra

        tile, m = self._net.config["tile"], self.margin
        region = self._net.config["region"] if self.window is None else self.window
        h, w, _ = image.shape
        if region == 0:
            starts = self._tile_starts(h, w)
            if starts is None:
                return window_spectra(self._residual(image), tile, region=0)
            import torch

            padded = np.pad(image, ((m, m), (m, m), (0, 0)), mode="reflect")
            b = self.block
            res = self._residual.batch([padded[y : y + b + 2 * m, x : x + b + 2 * m] for y, x in starts])
            blocks = torch.from_numpy(np.stack([r[m : m + b, m : m + b] for r in res]).transpose(0, 3, 1, 2).copy())
            return blocks_log_spectrum(blocks, tile)
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
        arrays = [np.asarray(im, dtype=np.float32) for im in images]
        spectra = [self.window_spectra(a) for a in arrays]
        if self.flips:  # the mirror's windows count as more windows of the same image
            spectra = [np.concatenate([s, self.window_spectra(np.ascontiguousarray(a[:, ::-1]))])
                       for s, a in zip(spectra, arrays, strict=True)]
        return self.embed_spectra(spectra), np.stack([s.mean(axis=(0, 1)) for s in spectra])

    def embed_spectra(self, spectra: Sequence[np.ndarray]) -> np.ndarray:
        """Embeddings ``(n, d)`` of images given by their window spectra (one array per image, all its windows, the
        mirror's included when ``flips``): the network's part of :meth:`embed`, so that extractors sharing a
        residual can share the spectra."""
        import torch

        dim = self._net.config["embed_dim"]
        if len(spectra) == 0:
            return np.zeros((0, dim), dtype=np.float32)
        spectra = [symmetric_spectra(torch.from_numpy(np.asarray(s)), self.symmetries).numpy() for s in spectra]
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
        import torch.nn.functional as F

        if self.flips:
            return F.normalize(self._embed_torch(x) + self._embed_torch(x.flip(-1)), dim=1)
        return F.normalize(self._embed_torch(x), dim=1)

    def _embed_torch(self, x):  # noqa: ANN001, ANN202
        """Sum of the unit window embeddings of each image of ``x`` (not normalised)."""
        import torch
        import torch.nn.functional as F

        from modelprint.extractor.features import window_spectra_torch
        from modelprint.methods.differentiable import torch_residual

        residual = torch_residual(self.name, self._residual)
        tile, m = self._net.config["tile"], self.margin
        region = self._net.config["region"] if self.window is None else self.window
        h, w = x.shape[-2:]
        starts = self._tile_starts(h, w) if region == 0 else None
        if starts is not None:
            padded = F.pad(x, (m, m, m, m), mode="reflect")
            b = self.block
            crops = torch.stack([padded[:, :, y : y + b + 2 * m, x_ : x_ + b + 2 * m] for y, x_ in starts], 1)
            res = residual(crops.flatten(0, 1))[..., m : m + b, m : m + b].unflatten(0, crops.shape[:2])
            spectra = [blocks_log_spectrum(r, tile) for r in res]
        elif region == 0:
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
        return torch.stack([F.normalize(self._net((symmetric_spectra(s, self.symmetries) - mean) / std), dim=1).sum(0)
                            for s in spectra])

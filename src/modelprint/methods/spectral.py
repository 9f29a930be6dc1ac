"""``spectral``: the handcrafted baseline fingerprint.

image → noise residual → Welch log-power spectrum on a fixed grid of normalised frequencies → standardised
against the same spectrum of *real* photographs (a reference: per-frequency mean and standard deviation).
The embedding therefore says how, and at which frequencies, an image's residual departs from a real camera's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from modelprint.artefacts import read_arrays, shipped_path, write_arrays
from modelprint.errors import CheckpointError
from modelprint.methods.base import METHODS, FingerprintMethod
from modelprint.spectra import welch_power

_FORMAT = 1


def reference_path(residual: str, tile: int) -> Path:
    """The shipped (or :func:`build_reference`-built) reference for ``residual`` and ``tile``."""
    return shipped_path(f"spectral_reference_{residual}_t{tile}.npz")


@METHODS.register("spectral")
class SpectralMethod(FingerprintMethod):
    """Residual log-spectrum fingerprint.

    Parameters
    ----------
    residual:
        Name of a registered residual extractor (``dncnn``, ``wavelet``, ``highpass``).
    tile:
        Tile size of the Welch spectrum; embeddings have ``(tile//2 + 1) * tile`` dimensions.
    margin:
        Pixels cut from each border of the residual (padding effects), when the image is large enough.
    reference:
        ``"default"`` for the shipped real-photo reference, a path to an ``.npz`` written by
        :meth:`save_reference`, or ``None`` (no standardisation until :meth:`fit` is called).
    """

    def __init__(self, residual: str = "dncnn", tile: int = 64, margin: int = 8, reference: str | Path | None = "default") -> None:
        self.residual = residual
        self.tile = tile
        self.margin = margin
        self.reference = reference
        self._residual = None
        self._mean: np.ndarray | None = None
        self._std: np.ndarray | None = None
        self._ref_hash = "none"
        if reference == "default":
            self._load_reference(reference_path(residual, tile), shipped=True)
        elif reference is not None:
            self._load_reference(Path(reference))

    @property
    def residual_extractor(self):
        if self._residual is None:
            from modelprint.residuals import get_residual

            self._residual = get_residual(self.residual)
        return self._residual

    @property
    def version(self) -> str:
        return f"{_FORMAT}-{self.residual}:{self.residual_extractor.version}-t{self.tile}m{self.margin}-ref:{self._ref_hash}"

    def log_spectra(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Centred Welch log-power spectra of the residuals, shape (n, tile, tile)."""
        out = np.empty((len(images), self.tile, self.tile), dtype=np.float32)
        residuals = self.residual_extractor.batch(list(images))
        for i, r in enumerate(residuals):
            m = self.margin
            if min(r.shape[:2]) - 2 * m >= 32:
                r = r[m:-m, m:-m] if m else r
            out[i] = np.log(welch_power(r, self.tile) + 1e-12)
        return out

    def _features(self, spectra: np.ndarray) -> np.ndarray:
        # A real signal's power spectrum is point-symmetric: the upper half-plane holds all of it.
        return spectra[:, : self.tile // 2 + 1, :].reshape(len(spectra), -1)

    def fit(self, images: Sequence[np.ndarray], labels: Sequence[str] | None = None) -> SpectralMethod:
        """Learn the reference from *real* images (labels are ignored)."""
        feats = self._features(self.log_spectra(images))
        self._set_reference(feats.mean(0), feats.std(0))
        return self

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return self.embed_with_spectra(images)[0]

    def embed_with_spectra(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        if len(images) == 0:
            return (np.zeros((0, (self.tile // 2 + 1) * self.tile), dtype=np.float32),
                    np.zeros((0, self.tile, self.tile), dtype=np.float32))
        spectra = self.log_spectra(images)
        feats = self._features(spectra)
        if self._mean is not None:
            feats = (feats - self._mean) / self._std
        else:
            feats = feats - feats.mean(axis=1, keepdims=True)
        return feats.astype(np.float32), spectra

    def embed_torch(self, x):  # noqa: ANN001, ANN201
        """:meth:`embed` as a differentiable torch function of ``(n, 3, H, W)`` pixels in [0, 1] (see
        :mod:`modelprint.methods.differentiable`)."""
        import torch

        from modelprint.methods.differentiable import torch_residual
        from modelprint.spectra import welch_power_torch

        residuals = torch_residual(self.name, self.residual_extractor)(x)
        m = self.margin
        if m and min(residuals.shape[-2:]) - 2 * m >= 32:
            residuals = residuals[..., m:-m, m:-m]
        spectra = torch.stack([torch.log(welch_power_torch(r, self.tile) + 1e-12) for r in residuals])
        feats = spectra[:, : self.tile // 2 + 1, :].flatten(1)
        if self._mean is None:
            return feats - feats.mean(dim=1, keepdim=True)
        return (feats - torch.from_numpy(self._mean)) / torch.from_numpy(self._std)

    def _set_reference(self, mean: np.ndarray, std: np.ndarray) -> None:
        self._mean = mean.astype(np.float32)
        self._std = np.maximum(std, 1e-3).astype(np.float32)
        self._ref_hash = hashlib.sha256(self._mean.tobytes() + self._std.tobytes()).hexdigest()[:12]

    def _load_reference(self, path: Path, shipped: bool = False) -> None:
        data = read_arrays(path, "spectral reference", shipped=shipped,
                           hint="; build it with `modelprint spectral-reference` or pass reference=None")
        try:
            mean, std = data["mean"], data["std"]
            residual_version = str(data["residual_version"])
        except KeyError as exc:
            raise CheckpointError(f"{path}: not a spectral reference (no {exc} array)") from None
        expected = (self.tile // 2 + 1) * self.tile
        if mean.shape != (expected,) or std.shape != (expected,):
            raise CheckpointError(f"{path}: reference has {mean.shape[0]} frequencies, tile {self.tile} needs {expected}")
        if residual_version != self.residual_extractor.version:
            raise CheckpointError(
                f"{path}: reference was made with residual {residual_version}, but {self.residual} is now "
                f"{self.residual_extractor.version}; rebuild it with `modelprint spectral-reference`"
            )
        self._set_reference(mean, std)

    def save_reference(self, path: str | Path, **provenance: object) -> None:
        """Write the fitted reference (with the residual version and any provenance fields, also in its sidecar)
        atomically."""
        if self._mean is None:
            raise CheckpointError("no reference to save: call fit() on real images first")
        fields = {"residual": self.residual, "residual_version": self.residual_extractor.version, "tile": self.tile,
                  **provenance}
        arrays = {"mean": self._mean, "std": self._std, "residual_version": np.array(self.residual_extractor.version),
                  **{k: np.array(v) for k, v in provenance.items()}}
        write_arrays(path, arrays, {"format": f"modelprint-spectral-reference/{_FORMAT}", **fields})


def build_reference(residual: str = "dncnn", tile: int = 64, n: int = 1000, size: int = 128, seed: int = 0) -> Path:
    """Fit the shipped reference on ``n`` real-pool crops (train split) and write it into the weights folder."""
    from modelprint.io.pool import RealPool

    crops = RealPool().crops(n, size=size, seed=seed, split="train")
    method = SpectralMethod(residual=residual, tile=tile, reference=None)
    method.fit([c.astype(np.float32) / 255.0 for c in crops])
    path = reference_path(residual, tile)
    method.save_reference(path, n=n, size=size, seed=seed, pool="RealPool() package photos, split=train")
    return path

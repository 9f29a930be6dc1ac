"""The extractor's training data: real-pool crops passed through synthetic generators, degraded, as spectra.

Each synthetic model gets its own random real crops (content carries no label information), its output is
quantised to 8 bits like a saved PNG, randomly resized and JPEG-compressed (augmentation), centre-cropped to the
tile, and turned into the residual log-spectrum that the extractor sees. The result is cached as float16.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelprint.atomic import atomic_path
from modelprint.extractor.features import residual_spectra
from modelprint.io.degrade import centre_crop, random_degrade
from modelprint.io.pool import RealPool


@dataclass
class SpectraSet:
    """Spectra ``(n, 3, T, T)`` float16 with integer labels indexing ``model_ids``."""

    spectra: np.ndarray
    labels: np.ndarray
    model_ids: list[str]

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, spectra=self.spectra, labels=self.labels, model_ids=np.array(self.model_ids))

    @classmethod
    def load(cls, path: str | Path) -> SpectraSet:
        with np.load(path) as d:
            return cls(d["spectra"], d["labels"], [str(x) for x in d["model_ids"]])

    def subset_models(self, keep: Sequence[int]) -> SpectraSet:
        """Only the models with these label indices, relabelled 0..len(keep)-1."""
        remap = {old: new for new, old in enumerate(keep)}
        mask = np.isin(self.labels, list(keep))
        labels = np.array([remap[int(x)] for x in self.labels[mask]], dtype=np.int64)
        return SpectraSet(self.spectra[mask], labels, [self.model_ids[i] for i in keep])


def render_spectra_set(
    generators: Sequence[tuple[str, object]],
    *,
    per_model: int = 48,
    tile: int = 64,
    seed: int = 0,
    augment: bool = True,
    residual: str = "dncnn",
    pool: RealPool | None = None,
    progress: Callable[[int], None] | None = None,
) -> SpectraSet:
    """Render ``per_model`` fingerprinted spectra for each ``(model_id, torch module)`` in ``generators``."""
    from modelprint.residuals import get_residual
    from modelprint.synthesis.train import apply_generator

    pool = pool or RealPool()
    margin = tile // 4  # room for resize augmentation before the centre crop
    src = tile + margin
    bank = pool.crops(len(generators) * per_model, size=src, seed=seed, split="train")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(bank))
    res = get_residual(residual)
    spectra = np.empty((len(generators) * per_model, 3, tile, tile), dtype=np.float16)
    labels = np.repeat(np.arange(len(generators)), per_model)
    for m, (_, module) in enumerate(generators):
        crops = bank[order[m * per_model : (m + 1) * per_model]]
        fake = apply_generator(module, crops)
        if augment:
            images = [random_degrade(im, rng, out_size=tile) for im in fake]
        else:
            images = [centre_crop(im, tile) for im in fake]
        spectra[m * per_model : (m + 1) * per_model] = residual_spectra([im.astype(np.float32) / 255 for im in images], res, tile)
        if progress:
            progress(1)
    return SpectraSet(spectra, labels, [g[0] for g in generators])

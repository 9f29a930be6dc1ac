"""The extractor's training data: real-pool crops passed through synthetic generators, degraded, as spectra.

Each synthetic model gets its own random real crops (content carries no label information), its output is
quantised to 8 bits like a saved PNG, degraded by a named augmentation (:data:`modelprint.io.degrade.AUGMENTATIONS`:
resizing, JPEG, …) and cropped to the region, and turned into the residual's Welch log-spectrum that the extractor
sees. Region sizes are drawn from ``region_sizes`` (capped by the image's side when an augmentation shrank it) so
that small images (a single 64² periodogram) are in the training distribution too. The result is cached as float16.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from modelprint.atomic import atomic_path
from modelprint.io.degrade import get_augmentation
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


def _render_model(module, crops: np.ndarray, rng: np.random.Generator, *, tile: int, region: int,  # noqa: ANN001
                  region_sizes: Sequence[tuple[int, float]], augment: str, residual: str) -> np.ndarray:
    """Spectra ``(len(crops), 3, tile, tile)`` float16 of real crops passed through one synthetic generator."""
    import torch

    from modelprint.extractor.features import region_spectra
    from modelprint.residuals import get_residual
    from modelprint.synthesis.train import apply_generator

    fake = apply_generator(module, crops)
    policy = get_augmentation(augment)
    images = [policy(im, rng, out_size=region) for im in fake]
    residuals = get_residual(residual).batch([im.astype(np.float32) / 255 for im in images])
    sides = np.array([s for s, _ in region_sizes])
    probs = np.array([p for _, p in region_sizes], dtype=np.float64)
    out = np.empty((len(crops), 3, tile, tile), dtype=np.float16)
    for i, r in enumerate(residuals):
        have = min(r.shape[:2])
        side = min(int(rng.choice(sides, p=probs / probs.sum())), have)
        y, x = rng.integers(0, have - side + 1, size=2)
        win = torch.from_numpy(np.ascontiguousarray(r[y : y + side, x : x + side].transpose(2, 0, 1)))[None]
        out[i] = region_spectra(win, tile)[0].numpy()
    return out


def _init_render_worker() -> None:
    import torch

    torch.set_num_threads(1)


def render_spectra_set(
    generators: Sequence[tuple[str, object]],
    *,
    per_model: int = 32,
    tile: int = 64,
    region: int = 128,
    region_sizes: Sequence[tuple[int, float]] = ((64, 0.15), (96, 0.15), (128, 0.7)),
    seed: int = 0,
    augment: str = "standard",
    residual: str = "dncnn",
    pool: RealPool | None = None,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
) -> SpectraSet:
    """Render ``per_model`` fingerprinted spectra for each ``(model_id, torch module)`` in ``generators``.

    ``region_sizes`` pairs a region side (≤ ``region``) with its probability; each rendered image is a
    ``region``² crop (smaller when ``augment`` shrank it) whose residual spectrum is taken over a random sub-region
    of the drawn size (at most the crop's). ``augment`` names an augmentation policy. Every model
    draws from its own random stream (``seed``, model index), so ``workers`` processes (1 torch thread each)
    give the same result as one.
    """
    if any(side > region or side < 1 for side, _ in region_sizes) or not any(p > 0 for _, p in region_sizes):
        raise ValueError(f"region_sizes {list(region_sizes)}: sides must lie in 1..{region} and some probability be > 0")
    policy = get_augmentation(augment)
    pool = pool or RealPool()
    bank = pool.crops(len(generators) * per_model, size=policy.input_side(region), seed=seed, split="train")
    order = np.random.default_rng(seed).permutation(len(bank))
    render = partial(_render_model, tile=tile, region=region, region_sizes=tuple(region_sizes), augment=augment, residual=residual)
    modules = [module for _, module in generators]
    crops = [bank[order[m * per_model : (m + 1) * per_model]] for m in range(len(generators))]
    rngs = [np.random.default_rng([seed, m]) for m in range(len(generators))]
    parts = []
    with ExitStack() as stack:
        run = map
        if workers > 1 and generators:
            run = stack.enter_context(ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                                          initializer=_init_render_worker)).map
        for part in run(render, modules, crops, rngs):
            parts.append(part)
            if progress:
                progress(1)
    spectra = np.concatenate(parts) if parts else np.empty((0, 3, tile, tile), np.float16)
    return SpectraSet(spectra, np.repeat(np.arange(len(generators)), per_model), [g[0] for g in generators])

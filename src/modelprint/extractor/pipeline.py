"""From a synthetic pool to trained extractor weights: split, render, train (``modelprint train``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from modelprint.artefacts import file_sha256, update_sidecar
from modelprint.errors import ModelprintError
from modelprint.extractor.data import SpectraSet, render_spectra_set
from modelprint.extractor.train import TrainConfig, train_extractor


def split_by_architecture(model_ids: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Hold out whole architectures (all their seeds) for validation, so selection measures zero-shot transfer."""
    from modelprint.synthesis.space import parse_model_id

    archs = sorted({parse_model_id(m)[0].id for m in model_ids})
    rng = np.random.default_rng(seed)
    n_val = max(2, round(len(archs) * val_fraction)) if val_fraction > 0 else 0
    val_archs = set(rng.choice(archs, n_val, replace=False)) if n_val else set()
    train = [m for m in model_ids if parse_model_id(m)[0].id not in val_archs]
    val = [m for m in model_ids if parse_model_id(m)[0].id in val_archs]
    return train, val


def render_pool(pool_dir: Path, model_ids: list[str], *, per_model: int, tile: int, region: int, seed: int,
                augment: str, cache: Path, workers: int = 1, progress: Callable[[int], None] | None = None) -> SpectraSet:
    """Render (or load from ``cache``) the spectra of ``model_ids``; the cache key is in its file name."""
    from modelprint.synthesis.pool import load_synthetic

    if cache.exists():
        cached = SpectraSet.load(cache)
        if cached.model_ids == model_ids:
            return cached
    generators = [(m, load_synthetic(pool_dir, m)) for m in model_ids]
    data = render_spectra_set(generators, per_model=per_model, tile=tile, region=region, seed=seed, augment=augment,
                              workers=workers, progress=progress)
    data.save(cache)
    return data


def train_from_pool(
    pool_dir: str | Path,
    out_dir: str | Path,
    *,
    config: TrainConfig | None = None,
    per_model: int = 32,
    val_fraction: float = 0.1,
    tile: int = 64,
    augment: str = "standard",
    seed: int = 0,
    workers: int = 1,
    init: str | Path | None = None,
    command: str = "",
    render_progress: Callable[[int], None] | None = None,
    train_progress: Callable[[int, dict], None] | None = None,
) -> dict:
    """Render training spectra from every model of a synthetic pool and train the extractor on them.

    ``augment`` names the augmentation policy of the rendered images (:data:`modelprint.io.degrade.AUGMENTATIONS`);
    ``init`` fine-tunes existing extractor weights instead of training from scratch (see :func:`train_extractor`).
    Writes ``out_dir/extractor.safetensors`` (+ ``.json`` with the recipe) and resumes where a killed run stopped
    (rendered spectra are cached in ``out_dir``; training resumes from ``out_dir/checkpoint.pt``).
    """
    from modelprint.synthesis.pool import read_manifest

    pool, out = Path(pool_dir), Path(out_dir)
    ids = sorted(read_manifest(pool))
    if len(ids) < 4:
        raise ModelprintError(f"{pool}: a synthetic pool with at least 4 models is needed (found {len(ids)}); run `modelprint synthesize`")
    cfg = config or TrainConfig(seed=seed)
    train_ids, val_ids = split_by_architecture(ids, val_fraction, seed)
    out.mkdir(parents=True, exist_ok=True)
    policy = {"standard": "aug", "none": "noaug"}.get(augment, augment)  # the first two keep their old cache names
    tag = f"t{tile}-r{cfg.region}-k{per_model}-s{seed}-{policy}"
    train = render_pool(pool, train_ids, per_model=per_model, tile=tile, region=cfg.region, seed=seed, augment=augment,
                        cache=out / f"spectra-train-{tag}.npz", workers=workers, progress=render_progress)
    val = render_pool(pool, val_ids, per_model=per_model, tile=tile, region=cfg.region, seed=seed + 1, augment=augment,
                      cache=out / f"spectra-val-{tag}.npz", workers=workers, progress=render_progress) if val_ids else None
    history = train_extractor(train, out, cfg, val=val, init=init, progress=train_progress)
    recipe = {"command": command, "pool": str(pool), "n_pool_models": len(ids), "n_train_models": len(train_ids),
              "n_val_models": len(val_ids), "val_split": "whole architectures held out", "per_model": per_model,
              "tile": tile, "region": cfg.region, "augment": augment,
              **({"init_sha256": file_sha256(Path(init))} if init else {}), "seed": seed, "best": history["best"], "seconds": history.get("seconds")}
    update_sidecar(out / "extractor.safetensors", {"recipe": recipe})
    return {"recipe": recipe, "history": history}

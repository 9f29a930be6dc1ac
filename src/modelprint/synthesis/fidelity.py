"""Fidelity of a synthetic pool: FFD against real generators, and the ablation of Table II of the paper.

**Spectra.** A model's spectrum is the mean, over ``n_images`` 64² images, of the 1-D azimuthally integrated power
spectrum (:func:`modelprint.spectra.radial_power_spectrum`) of their residuals (``residual``, any name known to
:func:`modelprint.residuals.get_residual`), as log10 (``log=True``; power spans orders of magnitude, and without
the log the lowest bins dominate the distance).

* A synthetic model's images are the same ``n_images`` held-out real-pool crops (photos no pool model trained on)
  passed through it and quantised to 8 bits, as a saved PNG would be.
* A real generator class is a folder of images; it takes ``n_images`` crops of ``crop``² at native resolution
  (never resized: resampling would reshape the spectrum), ``ceil(n_images / files)`` per file at offsets that are
  multiples of 8 drawn by a seeded generator, in file-name order. Classes with fewer than ``min_images`` files or
  not enough pixels are left out, as are folders whose name starts with ``real`` (photographs, not generators).

**FFD** (:func:`modelprint.spectra.ffd`): Fréchet distance between Gaussians fitted across models to the synthetic
spectra and to the real-class spectra. **Ablation**: the pool restricted on one factor as in the paper (w/o K: one
block; w/o L: one conv layer; w/o S: ``post`` order only; w/o U: bilinear only; w/o A: no activation; w/o N: no
norm; w/o seed: one seed per architecture), each next to the mean FFD of random subsets of the same size (fewer
models alone change an FFD; the control separates that from the loss of variety).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from modelprint.atomic import atomic_path
from modelprint.errors import DatasetError
from modelprint.synthesis.space import parse_model_id

ABLATIONS: dict[str, tuple[str, object]] = {
    "w/o K": ("blocks", 1),
    "w/o L": ("convs", 1),
    "w/o S": ("order", "post"),
    "w/o U": ("upsampling", "bilinear"),
    "w/o A": ("activation", "none"),
    "w/o N": ("norm", "none"),
}


def _features(mean_power: np.ndarray, log: bool) -> np.ndarray:
    return np.log10(np.maximum(mean_power, 1e-20)) if log else mean_power


def mean_residual_spectrum(images: Sequence[np.ndarray], residual) -> np.ndarray:
    """Mean 1-D radial power spectrum of the residuals of ``images`` ((H, W, 3) uint8 or float in [0, 1])."""
    from modelprint.spectra import radial_power_spectrum

    residuals = residual.batch([np.asarray(im) for im in images])
    return np.mean([radial_power_spectrum(r) for r in residuals], axis=0)


def _class_crops(files: list[Path], crop: int, n: int, seed_text: str) -> list[np.ndarray]:
    from modelprint.io.images import load_image

    per_file = math.ceil(n / len(files))
    out: list[np.ndarray] = []
    for f in files:
        img = load_image(f)
        h, w = img.shape[:2]
        if h < crop or w < crop:
            continue
        rng = np.random.default_rng(int(hashlib.sha256(f"{seed_text}/{f.name}".encode()).hexdigest()[:12], 16))
        for _ in range(per_file):
            y = int(rng.integers(0, (h - crop) // 8 + 1)) * 8
            x = int(rng.integers(0, (w - crop) // 8 + 1)) * 8
            out.append(img[y : y + crop, x : x + crop])
        if len(out) >= n:
            break
    return out[:n]


def real_class_spectra(
    real_root: str | Path,
    *,
    residual: str = "highpass",
    n_images: int = 50,
    crop: int = 64,
    min_images: int = 8,
    classes: Sequence[str] | None = None,
    log: bool = True,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Class name → spectrum (see the module docstring) for every usable class folder under ``real_root``."""
    from modelprint.io.datasets import expand_paths
    from modelprint.residuals import get_residual

    root = Path(real_root)
    if not root.is_dir():
        raise DatasetError(f"{root}: real-generator folder does not exist")
    res = get_residual(residual)
    names = list(classes) if classes is not None else sorted(
        d.name for d in root.iterdir() if d.is_dir() and not d.name.lower().startswith("real")
    )
    out: dict[str, np.ndarray] = {}
    for name in names:
        files = sorted((p for p in expand_paths([root / name]) if isinstance(p, Path)), key=lambda p: p.name)
        if len(files) < min_images:
            continue
        crops = _class_crops(files, crop, n_images, f"{seed}/{name}")
        if len(crops) < n_images:
            continue
        out[name] = _features(mean_residual_spectrum(crops, res), log)
    if len(out) < 2:
        raise DatasetError(f"{root}: fewer than 2 classes with {min_images}+ images and {n_images} crops of {crop}²")
    return out


def synthetic_spectra(
    pool_dir: str | Path,
    *,
    residual: str = "highpass",
    n_images: int = 50,
    crop: int = 64,
    log: bool = True,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Model id → spectrum for every model of the pool (cached in ``pool_dir/fidelity/``, keyed by sha256)."""
    from modelprint.io.pool import RealPool
    from modelprint.residuals import get_residual
    from modelprint.synthesis.pool import SETTINGS, load_synthetic, read_manifest
    from modelprint.synthesis.train import apply_generator

    pool_dir = Path(pool_dir)
    records = list(read_manifest(pool_dir).values())
    if len(records) < 2:
        raise DatasetError(f"{pool_dir}: a synthetic pool with at least 2 models is needed")
    res = get_residual(residual)
    folders, packages = (), True
    if (pool_dir / SETTINGS).exists():
        saved = json.loads((pool_dir / SETTINGS).read_text()).get("settings", {})
        folders, packages = tuple(saved.get("pool_folders", ())), bool(saved.get("include_packages", True))
    key = hashlib.sha256(json.dumps([res.tag, n_images, crop, seed, list(folders), packages]).encode()).hexdigest()[:16]
    cache = pool_dir / "fidelity" / f"spectra-{key}.npz"
    known: dict[tuple[str, str], np.ndarray] = {}
    if cache.exists():
        with np.load(cache) as z:
            known = {(i, s): p for i, s, p in zip(z["ids"], z["sha"], z["power"], strict=True)}
    images = RealPool(folders=folders, include_packages=packages).crops(n_images, size=crop, seed=10_000 + seed, split="holdout")
    out: dict[str, np.ndarray] = {}
    fresh = 0
    for k, rec in enumerate(sorted(records, key=lambda r: r["model_id"])):
        mid, sha = rec["model_id"], rec["sha256"]
        if (mid, sha) not in known:
            model = load_synthetic(pool_dir, mid)
            known[(mid, sha)] = mean_residual_spectrum(apply_generator(model, images), res)
            fresh += 1
            if fresh % 64 == 0:
                _save_cache(cache, known)
        out[mid] = _features(known[(mid, sha)], log)
        if progress is not None:
            progress(k + 1, len(records))
    if fresh:
        _save_cache(cache, known)
    return out


def _save_cache(path: Path, known: dict[tuple[str, str], np.ndarray]) -> None:
    keys = sorted(known)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, ids=np.array([k[0] for k in keys]), sha=np.array([k[1] for k in keys]),
                 power=np.stack([known[k] for k in keys]))


def pool_ffd(synth: np.ndarray, real: np.ndarray) -> float:
    """FFD between per-model spectra (rows) of a synthetic pool and of real generators; quiet about singularity."""
    import warnings

    from scipy.linalg import LinAlgWarning

    from modelprint.spectra import ffd

    with warnings.catch_warnings():  # with fewer models than bins a covariance is singular by construction
        warnings.simplefilter("ignore", LinAlgWarning)
        return float(ffd(synth, real))


def ablation_table(
    synth: dict[str, np.ndarray], real: np.ndarray, *, trials: int = 20, seed: int = 0,
    extra: dict[str, Sequence[str]] | None = None,
) -> list[dict]:
    """FFD of the pool restricted on each factor (paper Table II), with a same-size random-subset control.

    ``extra`` adds rows for named subsets of model ids (e.g. the models with a low residual).
    """
    ids = sorted(synth)
    parsed = {i: parse_model_id(i) for i in ids}
    matrix = np.stack([synth[i] for i in ids])
    rng = np.random.default_rng(seed)
    rows = [{"name": "All", "restriction": {}, "n_models": len(ids), "ffd": pool_ffd(matrix, real)}]
    first_seed = {}
    for i in ids:
        a, s = parsed[i]
        first_seed[a] = min(s, first_seed.get(a, s))
    subsets = {name: ({factor: value}, [k for k, i in enumerate(ids) if parsed[i][0].get(factor) == value])
               for name, (factor, value) in ABLATIONS.items()}
    subsets["w/o seed"] = ({"seed": "lowest per architecture"},
                           [k for k, i in enumerate(ids) if parsed[i][1] == first_seed[parsed[i][0]]])
    for name, members in (extra or {}).items():
        keep = set(members)
        subsets[name] = ({"models": "given subset"}, [k for k, i in enumerate(ids) if i in keep])
    for name, (restriction, rows_idx) in subsets.items():
        row = {"name": name, "restriction": restriction, "n_models": len(rows_idx)}
        if len(rows_idx) < 2 or len(rows_idx) == len(ids):
            row["ffd"] = None
            row["note"] = "the pool has no variety in this factor" if len(rows_idx) == len(ids) else "too few models"
        else:
            row["ffd"] = pool_ffd(matrix[rows_idx], real)
            ctrl = [pool_ffd(matrix[rng.choice(len(ids), len(rows_idx), replace=False)], real) for _ in range(trials)]
            row["random_subset_ffd_mean"] = float(np.mean(ctrl))
            row["random_subset_ffd_sd"] = float(np.std(ctrl))
        rows.append(row)
    return rows


def fidelity(
    pool_dir: str | Path,
    real_root: str | Path,
    *,
    residual: str = "highpass",
    n_images: int = 50,
    crop: int = 64,
    min_images: int = 8,
    classes: Sequence[str] | None = None,
    log: bool = True,
    ablation: bool = True,
    trials: int = 20,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    extra_subsets: dict[str, Sequence[str]] | None = None,
) -> dict:
    """FFD between the synthetic pool in ``pool_dir`` and the real generator classes under ``real_root``.

    Returns ``{"ffd", "n_models", "real_classes", "residual", "n_images", "crop", "log", "ablation": [rows]}``;
    each ablation row has ``name``, ``restriction``, ``n_models``, ``ffd`` and the random-subset control
    ``random_subset_ffd_mean``/``_sd`` (see the module docstring); ``extra_subsets`` (name → model ids) adds rows.
    """
    from modelprint.residuals import get_residual

    real = real_class_spectra(real_root, residual=residual, n_images=n_images, crop=crop, min_images=min_images,
                              classes=classes, log=log, seed=seed)
    synth = synthetic_spectra(pool_dir, residual=residual, n_images=n_images, crop=crop, log=log, seed=seed,
                              progress=progress)
    real_matrix = np.stack(list(real.values()))
    rows = ablation_table(synth, real_matrix, trials=trials, seed=seed, extra=extra_subsets) if ablation else []
    total = rows[0]["ffd"] if rows else pool_ffd(np.stack(list(synth.values())), real_matrix)
    return {
        "ffd": total,
        "n_models": len(synth),
        "real_classes": sorted(real),
        "residual": get_residual(residual).tag,
        "n_images": n_images,
        "crop": crop,
        "log": log,
        "ablation": rows,
    }

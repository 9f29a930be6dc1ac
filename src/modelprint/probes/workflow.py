"""File-level workflows of the white-box probes, as the ``modelprint probe`` commands run them.

- :func:`load_candidates`: ``NAME=SOURCE`` specs (a zoo model name, a diffusers folder, or a UNet checkpoint file
  with its ``config.json``) → named :class:`~modelprint.probes.candidates.DiffusionCandidate` objects;
- :func:`load_probe_images`: image files → one uint8 batch every candidate can take, with each unusable file
  reported (named, with the reason) instead of stopping the run;
- :func:`fit_prototypes` / :func:`identify_files`: fit a :class:`~modelprint.probes.attribution.ProbeAttributor`
  on reference folders, and rank the candidates for new images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from modelprint.errors import ImageError, ModelprintError, ProbeError
from modelprint.io.datasets import expand_paths
from modelprint.io.images import ImageLimits, load_image_file, to_uint8
from modelprint.probes.attribution import ProbeAttributor
from modelprint.probes.candidates import DiffusionCandidate, DiffusersCandidate
from modelprint.probes.base import Probe, ProbeProgress

__all__ = ["ProbeImages", "load_candidates", "parse_named", "load_probe_images", "fit_prototypes", "identify_files"]

#: Probe inputs are checked against each candidate's own size, not the fingerprinting minimum.
PROBE_LIMITS = ImageLimits(min_side=1)


def parse_named(spec: str, what: str) -> tuple[str, str]:
    """``NAME=VALUE`` → ``(NAME, VALUE)``; a bare value is named after its last path component."""
    name, sep, value = spec.partition("=")
    if not sep:
        value = spec
        name = Path(spec.rstrip("/")).stem or spec
    if not name or not value:
        raise ProbeError(f"{what} {spec!r}: expected NAME=PATH")
    return name, value


def load_candidates(specs: Sequence[str], zoo: str | Path | None = None) -> dict[str, DiffusionCandidate]:
    """Load every candidate of ``NAME=SOURCE`` specs (``SOURCE``: zoo model name with ``zoo``, diffusers folder,
    or UNet ``.safetensors``/``.pth`` with ``config.json`` beside it); a bare ``SOURCE`` is named after itself."""
    if not specs:
        raise ProbeError("no candidates given (use --candidates NAME=PATH, once per candidate model)")
    out: dict[str, DiffusionCandidate] = {}
    for spec in specs:
        name, source = parse_named(spec, "candidate")
        if name in out:
            raise ProbeError(f"candidate {name!r} is given twice")
        try:
            out[name] = DiffusersCandidate.load(source, zoo=zoo, name=name)
        except ModelprintError as err:
            raise ProbeError(f"candidate {name!r} ({source}): {err}") from None
    return out


@dataclass
class ProbeImages:
    """Images that every candidate can take, as one uint8 batch, and the files that could not be used."""

    images: np.ndarray
    paths: list[str]
    errors: list[ImageError] = field(default_factory=list)


def load_probe_images(paths: Sequence[str | Path], candidates: dict[str, DiffusionCandidate],
                      limits: ImageLimits = PROBE_LIMITS) -> ProbeImages:
    """Decode image files (folders are expanded) and check each against every candidate's input size."""
    files = expand_paths(paths)
    images, kept, errors = [], [], []
    size: tuple[int, int] | None = None
    for path in files:
        if isinstance(path, ImageError):
            errors.append(path)
            continue
        try:
            pixels = to_uint8(load_image_file(path, limits).pixels)
            h, w = pixels.shape[:2]
            for denoiser in candidates.values():
                try:
                    denoiser.input_shape(h, w)
                except ModelprintError as err:
                    raise ImageError(path, str(err)) from None
            if size is not None and (h, w) != size:
                raise ImageError(path, f"size {h}x{w} differs from the first image's {size[0]}x{size[1]}; "
                                       "probe images of one size together")
        except ImageError as err:
            errors.append(err)
            continue
        size = (h, w)
        images.append(pixels)
        kept.append(str(path))
    batch = np.stack(images) if images else np.zeros((0, 1, 1, 3), np.uint8)
    return ProbeImages(batch, kept, errors)


def fit_prototypes(candidates: dict[str, DiffusionCandidate], refs: Sequence[str], probe: Probe,
                   features: str = "concat", classifier: str = "logreg", seed: int = 0,
                   progress: ProbeProgress | None = None) -> tuple[ProbeAttributor, dict]:
    """Fit an unknown-origin attributor on reference folders (``CLASS=DIR`` or ``DIR``, class = folder name).

    Returns the attributor and a summary (images per class, files skipped with reasons)."""
    classes: list[tuple[str, str]] = [parse_named(spec, "reference folder") for spec in refs]
    if len({c for c, _ in classes}) != len(classes):
        raise ProbeError("a reference class is given twice")
    for cls, folder in classes:
        if not Path(folder).is_dir():
            raise ProbeError(f"reference folder {folder}: not a folder (class {cls!r})")
    loaded = {cls: load_probe_images([folder], candidates) for cls, folder in classes}
    errors = [e for batch in loaded.values() for e in batch.errors]
    empty = [cls for cls, batch in loaded.items() if not len(batch.paths)]
    if empty:
        raise ProbeError(f"no usable reference images for class(es) {', '.join(empty)}"
                         + (f" (first problem: {errors[0]})" if errors else ""))
    sizes = {batch.images.shape[1:3] for batch in loaded.values()}
    if len(sizes) > 1:
        raise ProbeError(f"reference classes have different image sizes {sorted(sizes)}; use one size")
    images = np.concatenate([batch.images for batch in loaded.values()])
    labels = [cls for cls, batch in loaded.items() for _ in batch.paths]
    attributor = ProbeAttributor(candidates, probe=probe, features=features, classifier=classifier, seed=seed)  # type: ignore[arg-type]
    attributor.fit(attributor.signatures(images, progress=progress), labels)
    summary = {"classes": {cls: len(batch.paths) for cls, batch in loaded.items()},
               "candidates": list(candidates), "calls_per_image": probe.calls_per_image * len(candidates),
               "failed": [str(e) for e in errors]}
    return attributor, summary


def identify_files(attributor: ProbeAttributor, paths: Sequence[str | Path], top_k: int = 3,
                   progress: ProbeProgress | None = None) -> dict:
    """Rank the attributor's classes for every usable image; unusable files are listed under ``failed``."""
    batch = load_probe_images(paths, dict(attributor.candidates))
    results = []
    if len(batch.paths):
        sigs = attributor.signatures(batch.images, progress=progress)
        scores = attributor.decision_function(sigs)
        probs = attributor.predict_proba(sigs) if attributor.classifier == "logreg" else None
        for i, path in enumerate(batch.paths):
            order = np.argsort(-scores[i], kind="stable")[:top_k]
            row = {"path": path, "prediction": str(attributor.classes_[order[0]]),
                   "top_k": [{"model": str(attributor.classes_[j]), "score": float(scores[i, j])} for j in order]}
            if probs is not None:
                for entry, j in zip(row["top_k"], order):
                    entry["probability"] = float(probs[i, j])
            results.append(row)
    return {"classifier": attributor.classifier, "features": attributor.features,
            "candidates": list(attributor.candidates), "calls_per_image": attributor.calls_per_image,
            "results": results, "failed": [str(e) for e in batch.errors]}


"""File-level workflows of the white-box probes, as the ``modelprint probe`` commands run them.

- :func:`load_candidates`: ``NAME=SOURCE`` specs (a zoo model name, a diffusers folder, or a UNet checkpoint file
  with its ``config.json``) → named :class:`~modelprint.probes.candidates.DiffusionCandidate` objects;
- :func:`load_probe_images`: image files → one uint8 batch every candidate can take, with each unusable file
  reported (named, with the reason) instead of stopping the run;
- :func:`fit_prototypes` / :func:`identify_files`: fit a :class:`~modelprint.probes.attribution.ProbeAttributor`
  on reference folders, and rank the candidates for new images (a :class:`ProbeReport`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelprint.errors import ImageError, ModelprintError, ProbeError
from modelprint.io.datasets import expand_paths
from modelprint.io.images import ImageLimits, load_image_file, to_uint8
from modelprint.probes.attribution import ProbeAttributor
from modelprint.probes.base import Probe, ProbeProgress
from modelprint.probes.candidates import DiffusionCandidate, DiffusersCandidate

__all__ = ["ProbeAttribution", "ProbeImages", "ProbeReport", "RankedCandidate", "fit_prototypes", "identify_files",
           "load_candidates", "load_probe_images", "parse_named"]

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


@dataclass(frozen=True)
class RankedCandidate:
    """One class of an attribution ranking: its decision score and, for ``logreg``, its probability."""

    model: str
    score: float
    probability: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "score": self.score}
        if self.probability is not None:
            out["probability"] = self.probability
        return out


@dataclass
class ProbeAttribution:
    """The ranking of one image (most likely first)."""

    path: str
    top_k: list[RankedCandidate]

    @property
    def prediction(self) -> str:
        return self.top_k[0].model


@dataclass
class ProbeReport:
    """What :func:`identify_files` found: the attributor's settings, one ranking per usable image (``results``) and
    the files that could not be used (``errors``, each naming the file and the reason)."""

    classifier: str
    features: str
    candidates: list[str]
    calls_per_image: int
    results: list[ProbeAttribution]
    errors: list[ImageError] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"classifier": self.classifier, "features": self.features, "candidates": list(self.candidates),
                "calls_per_image": self.calls_per_image,
                "results": [{"path": r.path, "prediction": r.prediction, "top_k": [c.to_dict() for c in r.top_k]}
                            for r in self.results],
                "failed": [str(e) for e in self.errors]}


def identify_files(attributor: ProbeAttributor, paths: Sequence[str | Path], top_k: int = 3,
                   progress: ProbeProgress | None = None) -> ProbeReport:
    """Rank the attributor's classes for every usable image; unusable files are reported, not fatal."""
    batch = load_probe_images(paths, dict(attributor.candidates))
    results = []
    if len(batch.paths):
        sigs = attributor.signatures(batch.images, progress=progress)
        scores = attributor.decision_function(sigs)
        probs = attributor.predict_proba(sigs) if attributor.classifier == "logreg" else None
        for i, path in enumerate(batch.paths):
            order = np.argsort(-scores[i], kind="stable")[:top_k]
            results.append(ProbeAttribution(path, [
                RankedCandidate(str(attributor.classes_[j]), float(scores[i, j]),
                                None if probs is None else float(probs[i, j])) for j in order]))
    return ProbeReport(attributor.classifier, attributor.features, list(attributor.candidates),
                       attributor.calls_per_image, results, batch.errors)


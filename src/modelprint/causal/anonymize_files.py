"""``modelprint anonymize`` on files: every image attacked at its full size, saved as ``OUT/<stem>.png``.

Images are decoded with :mod:`modelprint.io.images`'s rules (EXIF orientation applied, alpha dropped: the output
is the RGB image modelprint fingerprints), attacked one at a time at full size (the fingerprint methods take any
size ≥ 32 px; the DnCNN residual's windows recompute their activations in the backward pass, so memory is a few
times the image's floats plus one window's activations), and written atomically as 8-bit PNGs. An input is never
written: an output that would land on an input, or two inputs that would write the same output, stop the command
before any image is read.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelprint.causal.anonymize import Anonymizer, GalleryJudge
from modelprint.errors import AttackError, ImageError
from modelprint.gallery import Gallery
from modelprint.io import ImageLimits, expand_paths, load_image_file, save_png
from modelprint.methods import FingerprintMethod


@dataclass
class AnonymizeReport:
    """Per-file outcomes of :func:`anonymize_files` (``results``: ``path``, ``out`` and
    :meth:`~modelprint.causal.anonymize.AttackResult.to_dict`) and the inputs that could not be read."""

    method: str
    gallery: str
    threshold: float | None
    settings: dict[str, Any]
    results: list[dict[str, Any]] = field(default_factory=list)
    errors: list[ImageError] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Success rate and mean PSNR (over the images changed), SSIM and seconds over the images attacked."""
        rows = self.results
        finite = [r["psnr"] for r in rows if r["psnr"] is not None]
        return {"images": len(rows), "succeeded": sum(r["success"] for r in rows),
                "success_rate": float(np.mean([r["success"] for r in rows])) if rows else None,
                "mean_psnr": float(np.mean(finite)) if finite else None,
                "mean_ssim": float(np.mean([r["ssim"] for r in rows])) if rows else None,
                "mean_seconds": float(np.mean([r["seconds"] for r in rows])) if rows else None}

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (what ``modelprint anonymize --json`` prints)."""
        return {"method": self.method, "gallery": self.gallery, "threshold": self.threshold,
                "settings": self.settings, "summary": self.summary(), "results": self.results,
                "failed": [str(e) for e in self.errors]}


def output_paths(inputs: Sequence[Path | ImageError], out_dir: Path) -> dict[Path, Path]:
    """``OUT/<stem>.png`` for each input file; :class:`AttackError` if ``out_dir`` is not a folder, if an output
    would overwrite an input, or if two inputs share a stem."""
    if out_dir.exists() and not out_dir.is_dir():
        raise AttackError(f"{out_dir}: --out exists and is not a folder")
    files = [p for p in inputs if isinstance(p, Path)]
    resolved = {os.path.realpath(p): p for p in files}
    outs: dict[Path, Path] = {}
    taken: dict[Path, Path] = {}
    for p in files:
        out = out_dir / f"{p.stem}.png"
        if os.path.realpath(out) in resolved:
            raise AttackError(f"{out}: would overwrite the input {resolved[os.path.realpath(out)]}; choose another "
                              "--out folder")
        if out in taken:
            raise AttackError(f"{taken[out]} and {p} would both be written to {out}; anonymize them into separate "
                              "folders")
        taken[out] = p
        outs[p] = out
    return outs


def anonymize_files(
    paths: Sequence[str | Path | ImageError],
    gallery: Gallery,
    method: FingerprintMethod,
    out_dir: str | Path,
    anonymizer: Anonymizer,
    *,
    source: str | None = None,
    threshold: float | None = None,
    limits: ImageLimits | None = None,
    progress: Callable[[int], None] | None = None,
) -> AnonymizeReport:
    """Anonymize each image of ``paths`` (files or folders) against ``gallery``'s ``method`` fingerprint and write
    it to ``out_dir/<stem>.png``; unreadable inputs are collected, not raised. ``source`` (default: each image's
    top-1 model) and ``threshold`` (default: the gallery's) are those of the attack; see
    :class:`~modelprint.causal.anonymize.Anonymizer`."""
    judge = GalleryJudge(gallery, method, threshold)
    if anonymizer.target is not None:
        judge.index(anonymizer.target)
    if source is not None:
        judge.index(source)
    inputs = expand_paths(paths)
    outs = output_paths(inputs, Path(out_dir))
    report = AnonymizeReport(method.tag, str(gallery.path), judge.threshold, anonymizer.get_params())
    for p in inputs:
        try:
            if isinstance(p, ImageError):
                raise p
            image = load_image_file(p, limits).pixels
        except ImageError as exc:
            report.errors.append(exc)
        else:
            result = anonymizer.attack(judge, image, source)
            save_png(outs[p], result.pixels)
            report.results.append({"path": str(p), "out": str(outs[p]), **result.to_dict()})
        if progress:
            progress(1)
    return report

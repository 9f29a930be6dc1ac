"""The public, path-level API that the CLI and the service call: embed, enroll, identify, verify, evaluate.

Every function takes paths, decodes them with the rules of :mod:`modelprint.io.images`, and keeps going when an
input is bad: the bad ones come back as :class:`~modelprint.errors.ImageError` objects beside the results.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from modelprint.errors import GalleryError, ImageError
from modelprint.io.datasets import Dataset, expand_paths
from modelprint.io.images import ImageLimits, load_image_file
from modelprint.methods import DEFAULT_METHOD, FingerprintMethod, load_method

Progress = Callable[[int], None]


@dataclass
class Embedded:
    """Embeddings of the inputs that decoded, in input order, and the errors of those that did not."""

    paths: list[str]
    hashes: list[str]
    vectors: np.ndarray
    errors: list[ImageError] = field(default_factory=list)


def embed_paths(
    method: FingerprintMethod,
    paths: Sequence[str | Path | ImageError],
    *,
    limits: ImageLimits | None = None,
    progress: Progress | None = None,
) -> Embedded:
    """Decode, embed and drop one image at a time, so memory is bounded by one image whatever the batch holds.

    Bad inputs (and the :class:`ImageError` entries of a folder scan, see :func:`collect_paths`) are collected in
    input order, not raised; ``progress`` is called once per input.
    """
    kept_paths: list[str] = []
    hashes: list[str] = []
    vectors: list[np.ndarray] = []
    errors: list[ImageError] = []
    for p in paths:
        if isinstance(p, ImageError):
            errors.append(p)
        else:
            try:
                vector, sha = _embed_file(method, p, limits)
            except ImageError as err:
                errors.append(err)
            else:
                kept_paths.append(str(p))
                hashes.append(sha)
                vectors.append(vector)
        if progress:
            progress(1)
    stacked = np.stack(vectors) if vectors else np.zeros((0, 0), dtype=np.float32)
    return Embedded(kept_paths, hashes, stacked, errors)


def _embed_file(method: FingerprintMethod, path: str | Path, limits: ImageLimits | None) -> tuple[np.ndarray, str]:
    """One image's embedding and sha256; its pixels are freed on return, before the next image is decoded."""
    img = load_image_file(path, limits)
    return method.embed([img.pixels])[0], img.sha256


def resolve_method(method: FingerprintMethod | str | None) -> FingerprintMethod:
    if isinstance(method, FingerprintMethod):
        return method
    return load_method(method or DEFAULT_METHOD)


def gallery_method(gallery, method: FingerprintMethod | str | None) -> FingerprintMethod:
    """The method to identify with: the one named, else the single method the gallery was enrolled with."""
    if method is not None:
        return resolve_method(method)
    held = gallery.methods()
    if not held:
        raise GalleryError(f"{gallery.path}: gallery is empty; enroll models first")
    names = sorted({name for name, _ in held})
    if len(names) > 1:
        raise GalleryError(f"{gallery.path}: gallery holds several methods ({', '.join(names)}); choose one with --method")
    return load_method(names[0])


def collect_paths(paths: Sequence[str | Path | ImageError]) -> list[Path | ImageError]:
    """Files as given plus the images inside any folders given, and an :class:`ImageError` in place of each
    thing a folder scan had to skip (unreadable folder, link to a folder, folder without images), so that
    :func:`embed_paths` reports it in order. Collecting a collected list again changes nothing."""
    return expand_paths(paths)


def dataset_embeddings(
    dataset: Dataset, method: FingerprintMethod, *, limits: ImageLimits | None = None, progress: Progress | None = None
) -> tuple[Embedded, list[str]]:
    """Embed every image of ``dataset``; returns the embeddings and the labels of the images that decoded.

    The errors start with what the dataset's folder scan skipped, then those of images that did not decode.
    """
    label_of = {str(s.path): s.label for s in dataset}
    emb = embed_paths(method, dataset.paths, limits=limits, progress=progress)
    emb.errors[:0] = dataset.skipped
    return emb, [label_of[p] for p in emb.paths]


def verify_pair(
    image_a: str | Path,
    image_b: str | Path,
    *,
    gallery: str | Path | None = None,
    method: FingerprintMethod | str | None = None,
    threshold: float | None = None,
    max_pixels: int | None = None,
) -> dict:
    """Similarity of two images and, if a threshold is known, the same-model decision.

    The threshold is ``threshold`` if given, else the verification threshold calibrated in ``gallery``
    (equal error rate over its enrolled same-model and different-model pairs), else there is no decision.
    """
    from modelprint.gallery import Gallery
    from modelprint.io.images import load_image_file

    limits = ImageLimits(max_pixels=max_pixels)
    a, b = load_image_file(image_a, limits), load_image_file(image_b, limits)
    source = "given" if threshold is not None else None
    if gallery is not None:
        with Gallery(gallery, create=False) as g:
            m = gallery_method(g, method)
            if threshold is None:
                calib = g.calibration(m.name, m.version)
                if calib is not None:
                    threshold, source = calib.verify_threshold, f"calibrated in {gallery}"
    else:
        m = resolve_method(method)
    va, vb = m.embed([a.pixels, b.pixels])
    sim = float(va @ vb / (np.linalg.norm(va) * np.linalg.norm(vb) + 1e-12))
    return {
        "a": str(image_a),
        "b": str(image_b),
        "method": m.tag,
        "similarity": sim,
        "threshold": threshold,
        "threshold_source": source,
        "same_model": None if threshold is None else bool(sim >= threshold),
    }


@dataclass
class DatasetEvaluation:
    result: object  # modelprint.evaluation.EvaluationResult
    errors: list[ImageError]
    embedded: Embedded
    labels: list[str]


def evaluate_dataset(
    dataset: Dataset | str | Path,
    method: FingerprintMethod | str | None = DEFAULT_METHOD,
    *,
    support: int = 5,
    pairs: int = 2000,
    seed: int = 0,
    min_per_class: int | None = None,
    max_pixels: int | None = None,
    report: str | Path | None = None,
    progress: Progress | None = None,
) -> DatasetEvaluation:
    """Embed a labelled dataset and run every protocol of :func:`modelprint.evaluation.evaluate_embeddings`.

    Models with fewer than ``min_per_class`` images (default ``support + 3``) are left out before anything is
    computed. With ``report``, a self-contained HTML report is written there.
    """
    from modelprint.evaluation import evaluate_embeddings

    ds = dataset if isinstance(dataset, Dataset) else Dataset.from_path(dataset)
    ds = ds.with_min_count(min_per_class if min_per_class is not None else support + 3)
    if len(ds.classes) < 2:
        from modelprint.errors import DatasetError

        raise DatasetError(f"{ds.source}: fewer than 2 models have enough images for support {support}")
    m = resolve_method(method)
    emb, labels = dataset_embeddings(ds, m, limits=ImageLimits(max_pixels=max_pixels), progress=progress)
    result = evaluate_embeddings(emb.vectors, labels, support=support, pairs=pairs, seed=seed, method=m.tag, paths=emb.paths)
    if report is not None:
        from modelprint.reports import write_html_report

        write_html_report(result, report, embeddings=emb.vectors, labels=labels,
                          mean_spectra=mean_spectra_per_model(emb.paths, labels, m, limits=ImageLimits(max_pixels=max_pixels)),
                          title=f"modelprint evaluation: {m.name} on {ds.source}")
    return DatasetEvaluation(result, emb.errors, emb, labels)


def mean_spectra_per_model(
    paths: Sequence[str], labels: Sequence[str], method: FingerprintMethod, *, per_model: int = 12, limits: ImageLimits | None = None
) -> dict[str, np.ndarray]:
    """Mean centred residual log-spectrum of up to ``per_model`` images of each model (for reports)."""
    from modelprint.methods.spectral import SpectralMethod

    spec = method if isinstance(method, SpectralMethod) else SpectralMethod(reference=None)
    out: dict[str, np.ndarray] = {}
    for label in sorted(set(labels)):
        chosen = [p for p, lab in zip(paths, labels) if lab == label][:per_model]
        images = [load_image_file(p, limits).pixels for p in chosen]
        out[label] = spec.log_spectra(images).mean(0)
    return out


@dataclass
class EnrollReport:
    model: str
    method: str
    added: int
    skipped: int
    errors: list[ImageError]
    unknown_threshold: float | None


def enroll(
    gallery,
    model: str,
    paths: Sequence[str | Path],
    *,
    method: FingerprintMethod | str | None = None,
    notes: str = "",
    limits: ImageLimits | None = None,
    progress: Progress | None = None,
) -> EnrollReport:
    """Embed the images (and folders) in ``paths`` and enroll them as ``model`` in ``gallery``."""
    m = resolve_method(method)
    emb = embed_paths(m, collect_paths(paths), limits=limits, progress=progress)
    added = skipped = 0
    if emb.paths:
        if model not in {i.name for i in gallery.models()}:
            gallery.add_model(model, notes)
        res = gallery.add_embeddings(model, emb.vectors, emb.hashes, emb.paths, m.name, m.version)
        added, skipped = res.added, res.skipped
    calib = gallery.calibration(m.name, m.version)
    return EnrollReport(model, m.tag, added, skipped, emb.errors, None if calib is None else calib.unknown_threshold)


@dataclass
class IdentifyReport:
    method: str
    paths: list[str]
    results: list  # list[modelprint.gallery.Identification], one per path
    errors: list[ImageError]

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "results": [
                {"path": p, "prediction": r.model, "similarity": r.similarity, "threshold": r.threshold,
                 "top_k": [{"model": name, "similarity": s} for name, s in r.top_k]}
                for p, r in zip(self.paths, self.results)
            ],
            "failed": [str(e) for e in self.errors],
        }


def identify(
    gallery,
    paths: Sequence[str | Path],
    *,
    method: FingerprintMethod | str | None = None,
    top_k: int = 3,
    threshold: float | None = None,
    limits: ImageLimits | None = None,
    progress: Progress | None = None,
) -> IdentifyReport:
    """Attribute each image (1:N) to the gallery's models, or to ``unknown`` below the threshold."""
    m = gallery_method(gallery, method)
    emb = embed_paths(m, collect_paths(paths), limits=limits, progress=progress)
    results = gallery.identify_embeddings(emb.vectors, m.name, m.version, top_k=top_k, threshold=threshold) if emb.paths else []
    return IdentifyReport(m.tag, emb.paths, results, emb.errors)

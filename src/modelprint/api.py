"""The public, path-level API that the CLI and the service call: embed, enroll, identify, verify, evaluate.

Every function takes paths, decodes them with the rules of :mod:`modelprint.io.images`, and keeps going when an
input is bad: the bad ones come back as :class:`~modelprint.errors.ImageError` objects beside the results.
:class:`Gallery` (``modelprint.Gallery``) is the gallery store with path-level :meth:`~Gallery.enroll` and
:meth:`~Gallery.identify`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelprint.errors import GalleryError, ImageError
from modelprint.executor import Executor
from modelprint.gallery import Gallery as GalleryStore
from modelprint.gallery import verify
from modelprint.gallery.index import describe as describe_indexes
from modelprint.io.datasets import Dataset, expand_paths, query_counterparts
from modelprint.io.images import ImageLimits, load_image_file
from modelprint.methods import DEFAULT_METHOD, METHODS, FingerprintMethod, resolve_method
from modelprint.methods.batch import embedded
from modelprint.methods.tap import SpectraTap
from modelprint.reports.spectra import SPECTRA_PER_MODEL, mean_spectra_per_model

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
    executor: Executor | None = None,
) -> Embedded:
    """Decode, embed and drop one image at a time, so memory is bounded by one image whatever the batch holds.

    Bad inputs (and the :class:`ImageError` entries of a folder scan, see :func:`collect_paths`) are collected in
    input order, not raised; ``progress`` is called once per input. With an ``executor`` (worker processes, Ray),
    chunks of :data:`~modelprint.methods.batch.EMBED_CHUNK` images are embedded by its workers, each holding one copy of ``method``.
    """
    kept_paths: list[str] = []
    hashes: list[str] = []
    vectors: list[np.ndarray] = []
    errors: list[ImageError] = []
    for p, got in embedded(method, paths, limits, progress, executor):
        if isinstance(got, ImageError):
            errors.append(got)
        else:
            kept_paths.append(str(p))
            hashes.append(got[1])
            vectors.append(got[0])
    stacked = np.stack(vectors) if vectors else np.zeros((0, 0), dtype=np.float32)
    return Embedded(kept_paths, hashes, stacked, errors)


Params = dict[str, Any]


def gallery_method(gallery: GalleryStore, method: FingerprintMethod | str | None,
                   params: Params | None = None) -> FingerprintMethod:
    """The method to compare with: the one named (with ``params``), which the gallery must hold, else the gallery's
    single method, recreated from the parameters the gallery stored with it (``params`` override them). A gallery
    enrolled with another version of that method (other weights, or defaults since changed) is refused: re-enroll."""
    held = gallery.methods()
    if not held:
        raise GalleryError(f"{gallery.path}: gallery is empty; enroll models first")
    if method is None:
        names = sorted({name for name, _ in held})
        if len(names) > 1:
            raise GalleryError(f"{gallery.path}: gallery holds several methods ({', '.join(names)}); choose one with "
                               "--method")
        method = names[0]
    if isinstance(method, FingerprintMethod):
        m = resolve_method(method, params)
    else:
        versions = [v for n, v in held if n == method]
        stored = gallery.method_params(method, versions[0]) if len(versions) == 1 else None
        m = resolve_method(method, {**(stored or {}), **(params or {})})
    if (m.name, m.version) not in held:
        tags = ", ".join(f"{n}@{v}" for n, v in held)
        if any(n == m.name for n, _ in held):  # enrolled with other weights or parameters than these give
            raise GalleryError(f"{gallery.path}: gallery holds {tags} embeddings, made by another version of "
                               f"{m.name} than {m.tag}; re-enroll its models with this one (or pass the "
                               "--method-param values it was enrolled with)")
        raise GalleryError(f"{gallery.path}: gallery holds {tags} embeddings, not {m.tag}; its method is needed "
                           "to compare with it (leave out --method and --method-param)")
    return m


def collect_paths(paths: Sequence[str | Path | ImageError]) -> list[Path | ImageError]:
    """Files as given plus the images inside any folders given, and an :class:`ImageError` in place of each
    thing a folder scan had to skip (unreadable folder, link to a folder, folder without images), so that
    :func:`embed_paths` reports it in order. Collecting a collected list again changes nothing."""
    return expand_paths(paths)


def dataset_embeddings(
    dataset: Dataset,
    method: FingerprintMethod,
    *,
    limits: ImageLimits | None = None,
    progress: Progress | None = None,
    spectra: dict[str, np.ndarray] | None = None,
) -> tuple[Embedded, list[str]]:
    """Embed every image of ``dataset``, one model at a time; returns the embeddings and the labels of the images
    that decoded (grouped by model). The errors start with what the dataset's folder scan skipped, then those of
    images that did not decode.

    With ``spectra`` (a dict), each model's mean residual log-spectrum is stored there when the method computes
    spectra while embedding (:meth:`~modelprint.methods.FingerprintMethod.embed_with_spectra`), at no extra cost.
    """
    tap = SpectraTap(method) if spectra is not None else None
    parts: list[Embedded] = []
    labels: list[str] = []
    for label in dataset.classes:
        part = embed_paths(tap or method, [s.path for s in dataset if s.label == label], limits=limits, progress=progress)
        parts.append(part)
        labels += [label] * len(part.paths)
        mean = tap.pop_mean() if tap is not None else None
        if mean is not None and spectra is not None:
            spectra[label] = mean
    vectors = [p.vectors for p in parts if len(p.paths)]
    return Embedded(
        [p for part in parts for p in part.paths],
        [h for part in parts for h in part.hashes],
        np.concatenate(vectors) if vectors else np.zeros((0, 0), dtype=np.float32),
        [*dataset.skipped, *(e for part in parts for e in part.errors)],
    ), labels


def verify_pair(
    image_a: str | Path,
    image_b: str | Path,
    *,
    gallery: GalleryStore | str | Path | None = None,
    method: FingerprintMethod | str | None = None,
    threshold: float | None = None,
    max_pixels: int | None = None,
    params: Params | None = None,
) -> dict:
    """Similarity of two images and, if a threshold is known, the same-model decision.

    The threshold is ``threshold`` if given, else the verification threshold calibrated in ``gallery`` (a path, or
    an open gallery)
    (equal error rate over its enrolled same-model and different-model pairs), else there is no decision. With a
    gallery, the pair is scored and decided by :meth:`~modelprint.gallery.Gallery.verify_embeddings`, without
    one by the same rule (:func:`modelprint.gallery.verify`).
    """
    limits = ImageLimits(max_pixels=max_pixels)
    a, b = load_image_file(image_a, limits), load_image_file(image_b, limits)
    source = "given" if threshold is not None else None
    if gallery is not None:
        opened = isinstance(gallery, GalleryStore)
        with contextlib.nullcontext(gallery) if opened else GalleryStore(gallery, create=False) as g:
            m = gallery_method(g, method, params)
            va, vb = m.embed([a.pixels, b.pixels])
            decision = g.verify_embeddings(va, vb, m.name, m.version, threshold=threshold)
        if source is None and decision.threshold is not None:
            source = f"calibrated in {g.path if opened else gallery}"
    else:
        m = resolve_method(method, params)
        va, vb = m.embed([a.pixels, b.pixels])
        decision = verify(va, vb, threshold)
    return {
        "a": str(image_a),
        "b": str(image_b),
        "method": m.tag,
        "similarity": decision.similarity,
        "threshold": decision.threshold,
        "threshold_source": source,
        "same_model": decision.same_model,
    }


@dataclass
class DatasetEvaluation:
    result: object  # modelprint.evaluation.EvaluationResult
    errors: list[ImageError]
    embedded: Embedded
    labels: list[str]
    queries: Embedded | None = None  # with a query dataset: the counterparts' embeddings, row for row


Phase = Callable[[str, int], None]
"""``phase(description, steps)``: a new phase starts that will advance ``progress`` by ``steps`` (0: none)."""


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
    phase: Phase | None = None,
    params: Params | None = None,
    query_dataset: Dataset | str | Path | None = None,
) -> DatasetEvaluation:
    """Embed a labelled dataset and run every protocol of :func:`modelprint.evaluation.evaluate_embeddings`.

    Models with fewer than ``min_per_class`` images (default ``support + 3``) are left out before anything is
    computed and listed, with the reason, in the result's ``dropped_classes``. Image paths in the result are
    relative to the dataset's folder (the index file's folder for an index). With ``report``, a self-contained
    HTML report is written there; its spectra are those the method computed while embedding when it computes
    any. ``phase`` is told when embedding, the protocols and the report start; ``progress`` advances each.

    With ``query_dataset`` (e.g. the same images after JPEG), support images come from ``dataset`` and queries
    are their counterparts in ``query_dataset``: same class folder and file stem, any extension
    (:func:`query_counterparts`); an image without exactly one counterpart is named in the errors and left out.
    """
    from modelprint.errors import DatasetError
    from modelprint.evaluation import evaluate_embeddings, too_small

    ds = dataset if isinstance(dataset, Dataset) else Dataset.from_path(dataset)
    minimum = min_per_class if min_per_class is not None else support + 3
    dropped = too_small(ds.counts(), minimum, "min_per_class" if min_per_class is not None else "support + 3")
    ds = ds.with_min_count(minimum)
    pair_errors, counterpart = [], {}
    if query_dataset is not None:
        qds = query_dataset if isinstance(query_dataset, Dataset) else Dataset.from_path(query_dataset)
        found, pair_errors = query_counterparts(ds, qds)
        counterpart = {str(s.path): c for s, c in zip(ds, found, strict=True) if c is not None}
        ds = ds.subset([i for i, c in enumerate(found) if c is not None])
        dropped |= too_small(ds.counts(), minimum, "min_per_class" if min_per_class is not None else "support + 3")
        ds = ds.with_min_count(minimum)
    if len(ds.classes) < 2:
        raise DatasetError(f"{ds.source}: fewer than 2 models have at least {minimum} images "
                           f"(the minimum for support {support}; see min_per_class)")
    m = resolve_method(method, params)
    limits = ImageLimits(max_pixels=max_pixels)
    if phase:
        phase(f"embedding {len(ds)} images of {len(ds.classes)} models with {m.name}", len(ds))
    spectra: dict[str, np.ndarray] | None = {} if report is not None else None
    emb, labels = dataset_embeddings(ds, m, limits=limits, progress=progress, spectra=spectra)
    queries = None
    if query_dataset is not None:
        if phase:
            phase(f"embedding the {len(emb.paths)} query counterparts", len(emb.paths))
        queries = embed_paths(m, [counterpart[p] for p in emb.paths], limits=limits, progress=progress)
        rows = [i for i, p in enumerate(emb.paths) if str(counterpart[p]) in set(queries.paths)]
        emb = Embedded([emb.paths[i] for i in rows], [emb.hashes[i] for i in rows], emb.vectors[rows],
                       [*emb.errors, *pair_errors, *queries.errors])
        labels = [labels[i] for i in rows]
    if phase:
        phase("evaluating: identification, verification, open set, clustering", 0)
    root = Path(ds.source) if Path(ds.source).is_dir() else Path(ds.source).parent
    result = evaluate_embeddings(emb.vectors, labels, support=support, pairs=pairs, seed=seed, method=m.tag,
                                 paths=[os.path.relpath(p, root) for p in emb.paths], dropped=dropped,
                                 query_embeddings=None if queries is None else queries.vectors)
    if report is not None and spectra is not None:
        from modelprint.reports import write_html_report

        missing = [c for c in result.labels if c not in spectra]
        if missing:  # the method computes no spectra while embedding: compute them for the report
            rows = [(p, lab) for p, lab in zip(emb.paths, labels, strict=True) if lab in missing]
            if phase:
                phase(f"report: spectra of {len(missing)} models",
                      sum(min(SPECTRA_PER_MODEL, labels.count(c)) for c in missing))
            spectra.update(mean_spectra_per_model([p for p, _ in rows], [lab for _, lab in rows], m, limits=limits,
                                                  progress=progress))
        if phase:
            phase("report: embedding map and figures", 0)
        write_html_report(result, report, embeddings=emb.vectors, labels=labels,
                          mean_spectra={c: spectra[c] for c in result.labels},
                          title=f"modelprint evaluation: {m.name} on {root.name or ds.source}")
    return DatasetEvaluation(result, emb.errors, emb, labels, queries)


@dataclass
class EnrollReport:
    """What :func:`enroll` did. ``also_enrolled_as`` maps other model names to how many of these images they hold;
    ``threshold_source`` says where identification's "unknown" threshold comes from (see
    :class:`~modelprint.gallery.OpenSetThreshold`); ``warnings`` are one line each."""

    model: str
    method: str
    added: int
    skipped: int
    errors: list[ImageError]
    unknown_threshold: float | None
    threshold_source: str = "none"
    also_enrolled_as: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (what ``modelprint enroll --json`` prints)."""
        return {"model": self.model, "method": self.method, "added": self.added, "skipped_duplicates": self.skipped,
                "failed": [str(e) for e in self.errors], "unknown_threshold": self.unknown_threshold,
                "threshold_source": self.threshold_source, "also_enrolled_as": self.also_enrolled_as,
                "warnings": self.warnings}


def enroll(
    gallery: GalleryStore | str | Path,
    model: str,
    paths: Sequence[str | Path],
    *,
    method: FingerprintMethod | str | None = None,
    notes: str = "",
    limits: ImageLimits | None = None,
    progress: Progress | None = None,
    executor: Executor | None = None,
    params: Params | None = None,
) -> EnrollReport:
    """Embed the images (and folders) in ``paths`` and enroll them as ``model`` in ``gallery``, in one transaction.

    ``gallery`` is an open :class:`~modelprint.gallery.Gallery`, or a path: the file is then created (if missing)
    only once the method is known to exist. Without ``method``, a gallery that holds a method enrolls with it
    (recreated from its stored parameters), an empty one with :data:`DEFAULT_METHOD`; ``params`` are the
    method's parameters, stored in the gallery with its version. A read-only gallery, a reserved model name or
    another method than the gallery's is refused before any image is embedded.
    """
    if not isinstance(gallery, GalleryStore):
        m = resolve_method(method, params) if method is not None or not Path(gallery).exists() else method
        with GalleryStore(gallery) as g:
            return enroll(g, model, paths, method=m, notes=notes, limits=limits, progress=progress,
                          params=None if m is not None else params, executor=executor)
    held = gallery.methods()
    if method is None and held and len({n for n, _ in held}) == 1:
        m = gallery_method(gallery, None, params)
    else:
        m = resolve_method(method, params)
    gallery.check_enroll(model, m.name, m.version)
    tap = SpectraTap(m, keep=True)  # the spectra the method computes anyway join the model's mean spectrum
    emb = embed_paths(tap, collect_paths(paths), limits=limits, progress=progress, executor=executor)
    report = EnrollReport(model, m.tag, 0, 0, emb.errors, None)
    params = m.json_params()
    if emb.paths:
        res = gallery.add_embeddings(model, emb.vectors, emb.hashes, emb.paths, m.name, m.version, notes=notes,
                                     log_spectra=tap.pop_each(len(emb.paths)), params=params)
        report.added, report.skipped, report.also_enrolled_as = res.added, res.skipped, dict(res.also_enrolled_as)
    if report.also_enrolled_as:
        others = ", ".join(f"{name} ({n})" for name, n in report.also_enrolled_as.items())
        report.warnings.append(f"some of these images are already enrolled under other model names: {others}")
    if params is None and m.name in METHODS and METHODS.get(m.name) is type(m):
        report.warnings.append(f"the parameters of {m.name} are not JSON data: the gallery cannot store them, and "
                               "reopens the method with its defaults")
    if (m.name, m.version) in gallery.methods():
        threshold = gallery.open_set_threshold(m.name, m.version)
        report.unknown_threshold, report.threshold_source = threshold.value, threshold.source
        if not threshold.calibrated:
            report.warnings.append(threshold.detail)
    return report


@dataclass
class IdentifyReport:
    """Attributions of the images that decoded (``results``, one per path) and the errors of the others.

    ``threshold_source`` is ``"given"``, or where the gallery's threshold comes from (``"calibrated"``,
    ``"fallback"``, ``"none"``), ``threshold_detail`` says it in one line; ``warnings`` are one line each.
    ``spectra`` (asked for with ``spectra=True``, and if the method computes them) are the images' residual
    log-spectra ``(n, side, side)``, one per result; they are not part of :meth:`to_dict`.
    """

    method: str
    paths: list[str]
    results: list  # list[modelprint.gallery.Identification], one per path
    errors: list[ImageError]
    threshold_source: str = "given"
    threshold_detail: str = ""
    warnings: list[str] = field(default_factory=list)
    spectra: np.ndarray | None = None

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "threshold_source": self.threshold_source,
            "threshold_detail": self.threshold_detail,
            "warnings": list(self.warnings),
            "results": [
                {"path": p, "prediction": r.model, "similarity": r.similarity, "threshold": r.threshold,
                 "top_k": [{"model": name, "similarity": s} for name, s in r.top_k]}
                for p, r in zip(self.paths, self.results)
            ],
            "failed": [str(e) for e in self.errors],
        }


def identify(
    gallery: GalleryStore,
    paths: Sequence[str | Path],
    *,
    method: FingerprintMethod | str | None = None,
    top_k: int = 3,
    threshold: float | None = None,
    limits: ImageLimits | None = None,
    progress: Progress | None = None,
    spectra: bool = False,
    executor: Executor | None = None,
    params: Params | None = None,
) -> IdentifyReport:
    """Attribute each image (1:N) to the gallery's models, or to ``unknown`` below the threshold.

    The method is the one named (with ``params``), else the gallery's, recreated from its stored parameters.

    The threshold is ``threshold`` if given, else the gallery's :meth:`~modelprint.gallery.Gallery.open_set_threshold`
    (calibrated, or the method's measured fallback, with a warning, when the gallery cannot calibrate). With
    ``spectra``, the report keeps the residual log-spectra the method computes while embedding (no extra cost).
    """
    m = gallery_method(gallery, method, params)
    source, detail, warnings = "given", f"given: {threshold}", []
    if threshold is None:
        chosen = gallery.open_set_threshold(m.name, m.version)
        threshold, source, detail = chosen.value, chosen.source, chosen.detail
        warnings = [] if chosen.calibrated else [chosen.detail]
    stale = describe_indexes(gallery.index_status())
    warnings += [stale] if stale else []
    tap = SpectraTap(m, keep=True) if spectra else None
    emb = embed_paths(tap or m, collect_paths(paths), limits=limits, progress=progress, executor=executor)
    results = (
        gallery.identify_embeddings(emb.vectors, m.name, m.version, top_k=top_k, threshold=threshold)
        if emb.paths else []
    )
    return IdentifyReport(m.tag, emb.paths, results, emb.errors, source, detail, warnings,
                          tap.pop_each(len(emb.paths)) if tap else None)


class Gallery(GalleryStore):
    """The gallery store (:class:`modelprint.gallery.Gallery`) with path-level enrolment and identification.

    >>> with modelprint.Gallery("models.sqlite") as g:                  # doctest: +SKIP
    ...     g.enroll("sd2", ["samples/sd2/"])
    ...     g.identify(["query.png"], top_k=3).to_dict()
    """

    def enroll(
        self,
        model: str,
        paths: Sequence[str | Path],
        *,
        method: FingerprintMethod | str | None = None,
        notes: str = "",
        limits: ImageLimits | None = None,
        progress: Progress | None = None,
        params: Params | None = None,
    ) -> EnrollReport:
        """Embed ``paths`` (files or folders) and enroll them as ``model``; see :func:`enroll`."""
        return enroll(self, model, paths, method=method, notes=notes, limits=limits, progress=progress,
                      params=params)

    def identify(
        self,
        paths: Sequence[str | Path],
        *,
        method: FingerprintMethod | str | None = None,
        top_k: int = 3,
        threshold: float | None = None,
        limits: ImageLimits | None = None,
        progress: Progress | None = None,
        spectra: bool = False,
        params: Params | None = None,
    ) -> IdentifyReport:
        """Attribute images (files or folders) to enrolled models; see :func:`identify`."""
        return identify(self, paths, method=method, top_k=top_k, threshold=threshold, limits=limits,
                        progress=progress, spectra=spectra, params=params)

    def listing(self) -> dict[str, Any]:
        """Models (name, notes, created, embedding and image counts, methods) and each method's calibration, as
        JSON-ready data (what ``modelprint gallery list --json`` prints)."""
        calibs = {tag: self.calibration(n, v) for n, v in self.methods() for tag in [f"{n}@{v}"]}
        return {
            "models": [{"name": i.name, "notes": i.notes, "created": i.created, "n_embeddings": i.n_embeddings,
                        "n_images": i.n_images, "methods": list(i.methods)} for i in self.models()],
            "calibration": {k: (None if c is None else {"unknown_threshold": c.unknown_threshold,
                                                        "verify_threshold": c.verify_threshold, "rule": c.rule})
                            for k, c in calibs.items()},
        }

    def mean_spectra(self, method: FingerprintMethod | str | None = None) -> dict[str, np.ndarray]:
        """Model name → mean residual log-spectrum ``(side, side)`` of its enrolled images, for the models enrolled
        with spectra by the gallery's method (see :mod:`modelprint.gallery.spectra`)."""
        from modelprint.gallery import spectra

        m = gallery_method(self, method)
        with self._read() as conn:
            return spectra.means(conn, m.name, m.version)

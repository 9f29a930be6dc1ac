"""File-level workflows of provenance, as the ``modelprint provenance`` commands run them.

- :func:`load_model`: one ``--model`` (a zoo name with ``zoo``, a diffusers folder such as a saved ``DDPMPipeline``,
  or a UNet checkpoint) → a :class:`~modelprint.probes.candidates.DiffusionCandidate`;
- :func:`fit_provenance` / :func:`score_files`: fit a :class:`~modelprint.provenance.model.Provenance` on folders
  of member, external and generated images (or ``N`` images sampled from the model), and score image files;
- :class:`AttributionModel`, :func:`fit_attribution` / :func:`attribute_files`: which of several candidate models
  made each image, or ``none``: an attribution rule (:data:`~modelprint.provenance.attribution.ATTRIBUTORS`:
  per-candidate loss thresholds or a rule learned from the trajectories' shape) over denoising-loss trajectories,
  the rule and its settings chosen on held-out own samples and external images.

Images are decoded one at a time (:func:`~modelprint.probes.workflow.load_probe_images`); an unusable file is
reported (named, with the reason) and the rest go on. Fitted files are written atomically with a sidecar and record
the sha256 of every model (:func:`~modelprint.provenance.model.model_digest`): another model is refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from modelprint.artefacts import meta_array, one_line, read_arrays, read_meta, write_arrays
from modelprint.errors import CheckpointError, ImageError, ProbeError, RegistryError
from modelprint.probes.attribution import unknown_origin_signatures
from modelprint.probes.base import ProbeProgress
from modelprint.probes.candidates import DiffusersCandidate, DiffusionCandidate
from modelprint.probes.loss import DenoisingLossProbe
from modelprint.probes.workflow import ProbeImages, load_candidates, load_probe_images
from modelprint.provenance.attribution import (
    ATTRIBUTORS,
    NONE,
    LearnedRejectAttributor,
    RejectAttributor,
    choose_attributor,
    settings,
)
from modelprint.provenance.model import Provenance, model_digest

__all__ = ["ATTRIBUTOR_FORMAT", "AttributionFit", "AttributionModel", "AttributionReport", "ProvenanceFit",
           "ProvenanceReport", "attribute_files", "fit_attribution", "fit_provenance", "load_folder", "load_model",
           "sample_images", "score_files"]

ATTRIBUTOR_FORMAT = "modelprint-provenance-attributor/2"


def load_model(spec: str, zoo: str | Path | None = None) -> DiffusionCandidate:
    """The candidate of one ``[NAME=]SOURCE`` (see :func:`~modelprint.probes.workflow.load_candidates`)."""
    return next(iter(load_candidates([spec], zoo=zoo).values()))


def load_folder(folder: str | Path, what: str, candidates: Mapping[str, DiffusionCandidate]) -> ProbeImages:
    """The usable images of a fitting folder (a ``what``); ProbeError if it is no folder or holds none."""
    if not Path(folder).is_dir():
        raise ProbeError(f"{what} folder {folder}: not a folder")
    batch = load_probe_images([folder], dict(candidates))
    if not batch.paths:
        first = f" (first problem: {batch.errors[0]})" if batch.errors else ""
        raise ProbeError(f"{what} folder {folder}: no usable images{first}")
    return batch


def sample_images(denoiser: DiffusionCandidate, n: int, seed: int = 0, steps: int = 50) -> np.ndarray:
    """``n`` images drawn from the model by deterministic DDIM (``steps`` steps) from ``seed``."""
    if not isinstance(denoiser, DiffusersCandidate):
        raise ProbeError(f"candidate {denoiser.name!r}: cannot draw samples from a {type(denoiser).__name__}; give "
                         "its generated images as a folder")
    if n < 1:
        raise ProbeError(f"candidate {denoiser.name!r}: the number of samples to draw must be >= 1, got {n}")
    return denoiser.model.sample(int(n), seed=int(seed), steps=steps)


# ------------------------------------------------------------------------------------------------ provenance


@dataclass
class ProvenanceFit:
    """A fitted :class:`Provenance`, its cost per image, how many generated images were drawn from the model
    (``sampled``) and the files that could not be used."""

    provenance: Provenance
    calls_per_image: int
    backwards_per_image: int
    sampled: int = 0
    errors: list[ImageError] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**self.provenance.to_dict(), "sampled": self.sampled, "calls_per_image": self.calls_per_image,
                "backwards_per_image": self.backwards_per_image, "failed": [str(e) for e in self.errors]}


def fit_provenance(provenance: Provenance, denoiser: DiffusionCandidate, members: str | Path,
                   external: str | Path, generated: str | Path | None = None, sample: int | None = None,
                   progress: ProbeProgress | None = None) -> ProvenanceFit:
    """Fit ``provenance`` on the images of the ``members`` and ``external`` folders and the model's generations:
    the ``generated`` folder, or ``sample`` images drawn from it with the provenance's seed (neither: two classes)."""
    if generated is not None and sample is not None:
        raise ProbeError("give the model's generated images as a folder or a number of samples to draw, not both")
    model = {denoiser.name: denoiser}
    folders = {"member": members, "external": external, "generated": generated}
    parts = {what: load_folder(folder, what, model) for what, folder in folders.items() if folder is not None}
    if sample is not None:
        made = sample_images(denoiser, sample, provenance.seed)
    else:
        made = parts["generated"].images if "generated" in parts else np.zeros((0, 1, 1, 3), np.uint8)
    provenance.fit(denoiser, parts["member"].images, made, parts["external"].images, progress)
    return ProvenanceFit(provenance, provenance.calls_per_image(denoiser), provenance.backwards_per_image(denoiser),
                         0 if sample is None else len(made), [e for p in parts.values() for e in p.errors])


@dataclass
class ProvenanceReport:
    """What :func:`score_files` found: per usable image (``paths``) the decision and the probability of each class,
    and the files that could not be used."""

    model: str
    classes: list[str]
    confidence_threshold: float
    calls_per_image: int
    paths: list[str]
    decisions: list[str]
    probabilities: np.ndarray
    errors: list[ImageError] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        results = [{"path": path, "decision": decision, "probabilities": dict(zip(self.classes, map(float, p)))}
                   for path, decision, p in zip(self.paths, self.decisions, self.probabilities)]
        return {"model": self.model, "classes": list(self.classes), "confidence_threshold": self.confidence_threshold,
                "calls_per_image": self.calls_per_image, "results": results,
                "failed": [str(e) for e in self.errors]}


def score_files(provenance: Provenance, denoiser: DiffusionCandidate, paths: Sequence[str | Path],
                progress: ProbeProgress | None = None) -> ProvenanceReport:
    """Member / generated / external (or ``uncertain``) for every usable image; unusable files are reported."""
    provenance.check_model(denoiser)
    batch = load_probe_images(paths, {denoiser.name: denoiser})
    classes = [str(c) for c in provenance.classes_]
    probabilities, decisions = np.zeros((0, len(classes))), []
    if batch.paths:
        scored = provenance.score(denoiser, batch.images, progress)
        probabilities, decisions = scored.probabilities, [str(d) for d in scored.decisions]
    return ProvenanceReport(denoiser.name, classes, float(provenance.classifier_.confidence_),
                            provenance.calls_per_image(denoiser), batch.paths, decisions,
                            probabilities, batch.errors)


# ----------------------------------------------------------------------------------------------- attribution


def _digests(candidates: Mapping[str, DiffusionCandidate]) -> dict[str, str]:
    return {name: model_digest(c) for name, c in candidates.items()}


@dataclass
class AttributionModel:
    """An attribution rule over the loss trajectories (``probe``) of its candidates, with what it was fitted on
    (``features`` ``(n, K, T)`` of the candidates' own samples and external images, ``labels``), each candidate's
    model sha256 and the validation accuracy of every setting tried. :meth:`save` writes no pickles; :meth:`load`
    refits."""

    attributor: RejectAttributor | LearnedRejectAttributor
    probe: DenoisingLossProbe
    sha256: dict[str, str]
    features: np.ndarray
    labels: np.ndarray
    validation: list[dict[str, Any]] = field(default_factory=list)

    @property
    def candidates(self) -> list[str]:
        return list(self.attributor.candidates)

    def settings(self) -> dict[str, Any]:
        return {"candidates": self.candidates, **settings(self.attributor),
                "calls_per_image": self.probe.calls_per_image * len(self.candidates),
                "probe": {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.probe.get_params().items()}}

    def check(self, candidates: Mapping[str, DiffusionCandidate], where: str = "attributor"
              ) -> dict[str, DiffusionCandidate]:
        """``candidates`` in fitted order; ProbeError unless they are exactly the fitted models (by sha256)."""
        missing = [n for n in self.candidates if n not in candidates]
        extra = [n for n in candidates if n not in self.candidates]
        if missing or extra:
            raise ProbeError(f"{where}: fitted with candidates {', '.join(self.candidates)}, given "
                             f"{', '.join(candidates) or 'none'}; give the same --model NAME=SOURCE list")
        for name, sha in _digests(candidates).items():
            if sha != self.sha256[name]:
                raise ProbeError(f"{where}: candidate {name!r} is not the model it was fitted with (its weights' "
                                 f"sha256 {sha[:12]}… differ from {self.sha256[name][:12]}…)")
        return {n: candidates[n] for n in self.candidates}

    def save(self, path: str | Path) -> None:
        """Write the settings and fitted trajectories to ``path`` atomically, with its sidecar."""
        meta = {"format": ATTRIBUTOR_FORMAT, **self.settings(), "sha256": self.sha256, "validation": self.validation}
        arrays = {"meta": meta_array(meta), "features": self.features,
                  "labels": self.labels.astype(str), "scores": self.attributor.decision_function(self.features)}
        write_arrays(path, arrays, {"format": ATTRIBUTOR_FORMAT, "candidates": self.candidates,
                                    "sha256": self.sha256})

    @classmethod
    def load(cls, path: str | Path) -> AttributionModel:
        """Read a file written by :meth:`save` and refit (checked against the scores it saved)."""
        path = Path(path)
        arrays = read_arrays(path, "provenance attributor file")
        meta = read_meta(arrays, path, "provenance attributor file", ATTRIBUTOR_FORMAT,
                         " (written by `modelprint provenance attribute-fit`)")
        features, labels, saved = arrays["features"], arrays["labels"], arrays["scores"]
        probe = DenoisingLossProbe(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in meta["probe"].items()})
        try:
            rule = ATTRIBUTORS.get(meta["rule"])
            params = {k: meta[k] for k in rule().get_params() if k != "candidates"}
        except (KeyError, RegistryError) as err:
            raise CheckpointError(f"{path}: no attribution rule settings ({one_line(err)})") from None
        attributor = rule(meta["candidates"], **params).fit(features, labels)
        if not np.allclose(attributor.decision_function(features), saved, atol=1e-9):
            raise ProbeError(f"{path}: refitting gives other scores than were saved; fit it again with "
                             "`modelprint provenance attribute-fit`")
        return cls(attributor, probe, dict(meta["sha256"]), features, labels, list(meta["validation"]))


@dataclass
class AttributionFit:
    """A fitted :class:`AttributionModel`, the images it used per class (``sampled``: drawn from the models) and the
    files that could not be used."""

    model: AttributionModel
    counts: dict[str, int]
    sampled: dict[str, int]
    errors: list[ImageError] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**self.model.settings(), "counts": dict(self.counts), "sampled": dict(self.sampled),
                "sha256": dict(self.model.sha256), "validation": list(self.model.validation),
                "failed": [str(e) for e in self.errors]}


def fit_attribution(candidates: Mapping[str, DiffusionCandidate], samples: Mapping[str, str | Path],
                    external: str | Path, probe: DenoisingLossProbe, sample: int | None = None, seed: int = 0,
                    val_fraction: float = 0.25, progress: ProbeProgress | None = None) -> AttributionFit:
    """Fit attribution with reject among ``candidates``: each candidate's own samples come from ``samples[name]``
    (a folder) or are ``sample`` images drawn from it. A stratified ``val_fraction`` of every class (own samples
    and ``external`` images) chooses the rule and its settings (:func:`choose_attributor`); the rest is fitted on
    (the learned rule learns from the external images too)."""
    unknown = [n for n in samples if n not in candidates]
    if unknown:
        raise ProbeError(f"samples given for {', '.join(unknown)}, which are not candidates "
                         f"({', '.join(candidates)})")
    own, counts, sampled, errors = [], {}, {}, []
    for i, (name, denoiser) in enumerate(candidates.items()):
        if name in samples:
            batch = load_folder(samples[name], f"samples of {name!r}", candidates)
            images, errors = batch.images, errors + batch.errors
        elif sample is not None:
            images = sample_images(denoiser, sample, seed + i)
            sampled[name] = len(images)
        else:
            raise ProbeError(f"candidate {name!r}: give its own samples (--samples {name}=DIR) or --sample N")
        own.append(images)
        counts[name] = len(images)
    outside = load_folder(external, "external", candidates)
    counts[NONE], errors = len(outside.paths), errors + outside.errors
    labels = np.asarray([name for name, n in counts.items() for _ in range(n)])
    try:
        X = unknown_origin_signatures(probe, candidates, np.concatenate([*own, outside.images]), progress)  # noqa: N806
    except ValueError as err:  # images of different sizes
        raise ProbeError(f"attribution: cannot probe the images together ({err})") from None
    rows = np.arange(len(labels))
    try:
        fit_rows, val_rows = train_test_split(rows, test_size=val_fraction, stratify=labels, random_state=seed)
    except ValueError as err:
        raise ProbeError(f"attribution: too few images to hold some out for validation ({err})") from None
    fit_rows, val_rows = np.sort(fit_rows), np.sort(val_rows)
    choice = choose_attributor(X[fit_rows], labels[fit_rows], X[val_rows], labels[val_rows], list(candidates))
    model = AttributionModel(choice.attributor, probe, _digests(candidates), X[fit_rows], labels[fit_rows],
                             choice.validation)
    return AttributionFit(model, counts, sampled, errors)


@dataclass
class AttributionReport:
    """What :func:`attribute_files` found: per usable image the answer (a candidate or ``none``) and its margin over
    each candidate's threshold (``≥ 0``: accepted), and the files that could not be used."""

    settings: dict[str, Any]
    paths: list[str]
    predictions: list[str]
    margins: np.ndarray
    errors: list[ImageError] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        names = sorted(self.settings["candidates"])  # the attributor's (sorted) class order
        results = [{"path": path, "prediction": pred, "margins": dict(zip(names, map(float, m)))}
                   for path, pred, m in zip(self.paths, self.predictions, self.margins)]
        return {**self.settings, "results": results, "failed": [str(e) for e in self.errors]}


def attribute_files(model: AttributionModel, candidates: Mapping[str, DiffusionCandidate],
                    paths: Sequence[str | Path], progress: ProbeProgress | None = None) -> AttributionReport:
    """Which candidate made each usable image, or ``none``; unusable files are reported, not fatal."""
    candidates = model.check(candidates)
    batch = load_probe_images(paths, dict(candidates))
    margins, predictions = np.zeros((0, len(candidates))), []
    if batch.paths:
        X = unknown_origin_signatures(model.probe, candidates, batch.images, progress)  # noqa: N806
        margins = model.attributor.decision_function(X)
        predictions = [str(p) for p in model.attributor.predict(X)]
    return AttributionReport(model.settings(), batch.paths, predictions, margins, batch.errors)

"""Provenance of images for one diffusion model, fitted once and saved: what ``modelprint provenance fit|score``
run.

:class:`Provenance` extracts trajectory features of the model's training members, its own generations and external
images, holds out a stratified validation part, fits a :class:`~modelprint.provenance.classifier.ProvenanceClassifier`
on the rest (calibrated) and chooses its "uncertain" confidence on the validation part. :meth:`Provenance.save`
writes one ``.npz`` atomically, without pickles: the settings and the fitted features (not the images), with its
sidecar (:mod:`modelprint.artefacts`). :meth:`Provenance.load` refits from them, which is deterministic, and checks
that the refitted classifier gives the probabilities that were saved. The file records the :func:`model_digest` of
the model it was fitted on, and :meth:`Provenance.score` refuses another model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.model_selection import train_test_split

from modelprint.artefacts import meta_array, read_arrays, read_meta, write_arrays
from modelprint.errors import ModelprintError, ProbeError
from modelprint.probes.base import ProbeProgress
from modelprint.probes.candidates import DiffusionCandidate
from modelprint.provenance.base import EXTERNAL, GENERATED, MEMBER, check_fitted
from modelprint.provenance.classifier import ProvenanceClassifier, ProvenanceDecisions
from modelprint.provenance.features import TrajectoryExtractor

__all__ = ["FORMAT", "Provenance", "model_digest"]

FORMAT = "modelprint-provenance/1"


def model_digest(denoiser: DiffusionCandidate) -> str:
    """sha256 over a candidate's noise schedule and weights (its network's parameters, and its VAE's), whatever it
    was loaded from: a zoo model and the diffusers folder it was saved to share it. A callable without
    parameters is identified by its schedule only."""
    h = hashlib.sha256(denoiser.alphas_cumprod.double().contiguous().numpy().tobytes())
    vae = getattr(getattr(denoiser, "encoder", None), "vae", None)
    params = denoiser.named_parameters()
    if vae is not None:
        params += [(f"vae.{n}", p) for n, p in vae.named_parameters()]
    for name, param in params:
        h.update(name.encode())
        h.update(param.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()}


class Provenance(BaseEstimator):
    """Member / generated / external for images of one denoiser.

    ``extractor`` and ``classifier`` default to :class:`TrajectoryExtractor` and :class:`ProvenanceClassifier`
    with ``seed``; ``val_fraction`` of each class is held out to choose the confidence threshold.
    """

    def __init__(self, extractor: TrajectoryExtractor | None = None, classifier: ProvenanceClassifier | None = None,
                 val_fraction: float = 0.25, seed: int = 0) -> None:
        self.extractor = extractor
        self.classifier = classifier
        self.val_fraction = val_fraction
        self.seed = seed

    def _extractor(self) -> TrajectoryExtractor:
        return self.extractor if self.extractor is not None else TrajectoryExtractor(seed=self.seed)

    def _classifier(self) -> ProvenanceClassifier:
        return self.classifier if self.classifier is not None else ProvenanceClassifier(seed=self.seed)

    def fit(self, denoiser: DiffusionCandidate, members: np.ndarray, generated: np.ndarray, external: np.ndarray,
            progress: ProbeProgress | None = None) -> Provenance:
        """Extract the features of the three image sets (uint8 ``(n, H, W, 3)`` each; an empty one is left out) and
        fit on them."""
        parts = [(label, images) for label, images in [(MEMBER, members), (GENERATED, generated),
                                                        (EXTERNAL, external)] if len(images)]
        extractor = self._extractor()
        total = sum(len(images) for _, images in parts) * extractor.calls_per_image(denoiser)
        values, labels, done, names = [], [], 0, []
        for label, images in parts:
            step = None if progress is None else (lambda k, _t, o=done: progress(o + k, total))
            trajectory = extractor.extract(denoiser, images, step)
            done += len(images) * extractor.calls_per_image(denoiser)
            values.append(trajectory.values)
            labels += [label] * len(images)
            names = trajectory.names
        self.fit_features(np.concatenate(values), labels, names, denoiser.name)
        self.model_sha256_ = model_digest(denoiser)
        return self

    def fit_features(self, X: np.ndarray, y: Sequence[str], names: Sequence[str], denoiser: str  # noqa: N803
                     ) -> Provenance:
        """Fit on precomputed trajectory features ``X`` (columns ``names``) labelled ``y``."""
        x, labels = np.asarray(X, dtype=np.float64), np.asarray(y).astype(str)
        if x.ndim != 2 or x.shape[1] != len(names) or len(x) != len(labels):
            raise ProbeError(f"provenance: {x.shape} features, {len(names)} names and {len(labels)} labels "
                             "do not fit together")
        counts = dict(zip(*np.unique(labels, return_counts=True)))
        if len(counts) < 2 or min(counts.values()) < 8:
            raise ProbeError(f"provenance: needs at least 8 images of each of two or more classes, got {counts}")
        fit_rows, val_rows = train_test_split(np.arange(len(x)), test_size=self.val_fraction, stratify=labels,
                                              random_state=self.seed)
        fit_rows, val_rows = np.sort(fit_rows), np.sort(val_rows)
        self.classifier_ = ProvenanceClassifier(**self._classifier().get_params()).fit(
            x[fit_rows], labels[fit_rows], x[val_rows], labels[val_rows])
        self.classes_ = self.classifier_.classes_
        self.features_, self.labels_, self.feature_names_, self.denoiser_ = x, labels, list(names), str(denoiser)
        self.model_sha256_: str | None = None
        return self

    def check_model(self, denoiser: DiffusionCandidate) -> None:
        """ProbeError unless ``denoiser`` has the weights this provenance was fitted on (when it recorded them)."""
        check_fitted(self, "classifier_")
        if self.model_sha256_ is not None and (sha := model_digest(denoiser)) != self.model_sha256_:
            raise ProbeError(f"candidate {denoiser.name!r}: is not the model this provenance was fitted on "
                             f"({self.denoiser_!r}): its weights' sha256 {sha[:12]}… differ from "
                             f"{self.model_sha256_[:12]}…; fit a provenance for this model")

    def calls_per_image(self, denoiser: DiffusionCandidate) -> int:
        """Denoiser calls (forward images) per scored image."""
        return self._extractor().calls_per_image(denoiser)

    def backwards_per_image(self, denoiser: DiffusionCandidate) -> int:
        """Backward passes (images) per scored image."""
        return self._extractor().backwards_per_image(denoiser)

    def score(self, denoiser: DiffusionCandidate, images: np.ndarray, progress: ProbeProgress | None = None
              ) -> ProvenanceDecisions:
        """Calibrated class probabilities and decisions (``uncertain`` below the validated confidence)."""
        self.check_model(denoiser)
        trajectory = self._extractor().extract(denoiser, images, progress)
        if trajectory.names != self.feature_names_:
            raise ProbeError(f"candidate {denoiser.name!r}: gives other trajectory features than the model this "
                             f"provenance was fitted on ({self.denoiser_!r}); use the same model")
        return self.classifier_.decide(trajectory.values)

    def to_dict(self) -> dict[str, Any]:
        """Settings, class counts and the chosen confidence."""
        check_fitted(self, "classifier_")
        counts = dict(zip(*np.unique(self.labels_, return_counts=True)))
        return {"denoiser": self.denoiser_, "classes": [str(c) for c in self.classes_],
                "counts": {str(k): int(v) for k, v in counts.items()}, "n_features": len(self.feature_names_),
                "confidence_threshold": float(self.classifier_.confidence_), "model_sha256": self.model_sha256_,
                "extractor": _jsonable(self._extractor().get_params()),
                "classifier": _jsonable(self._classifier().get_params())}

    def save(self, path: str | Path) -> None:
        """Write settings, fitted features and labels to ``path`` atomically (no pickles)."""
        check_fitted(self, "classifier_")
        meta = {"format": FORMAT, "val_fraction": self.val_fraction, "seed": self.seed, **self.to_dict(),
                "feature_names": self.feature_names_}
        arrays = {"meta": meta_array(meta), "features": self.features_,
                  "labels": self.labels_.astype(str), "probabilities": self.classifier_.predict_proba(self.features_)}
        write_arrays(path, arrays, {"format": FORMAT, "denoiser": self.denoiser_, "model_sha256": self.model_sha256_,
                                    "seed": self.seed})

    @classmethod
    def load(cls, path: str | Path) -> Provenance:
        """Read a file written by :meth:`save` and refit from its features (checked against its probabilities)."""
        path = Path(path)
        arrays = read_arrays(path, "provenance file")
        meta = read_meta(arrays, path, "provenance file", FORMAT)
        extractor = TrajectoryExtractor(**{k: (tuple(v) if isinstance(v, list) else v)
                                           for k, v in meta["extractor"].items()})
        model = cls(extractor, ProvenanceClassifier(**meta["classifier"]), meta["val_fraction"], meta["seed"])
        model.fit_features(arrays["features"], arrays["labels"], meta["feature_names"], meta["denoiser"])
        model.model_sha256_ = meta.get("model_sha256")  # files written before it was recorded have none
        if not np.allclose(model.classifier_.predict_proba(arrays["features"]), arrays["probabilities"], atol=1e-9):
            raise ModelprintError(f"{path}: refitting gives other probabilities than were saved (another "
                                  "scikit-learn version?); fit it again with `modelprint provenance fit`")
        return model

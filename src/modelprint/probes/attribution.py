"""Which candidate diffusion model made an image: SDS signatures, two protocols, three classifiers.

Protocols:

- **true model** (the reference's, leaky): each image is probed only through its own generator
  (:func:`true_model_signatures`). The label chooses the feature extractor, so the feature partly records which
  denoiser ran; it cannot be used on an image of unknown origin and is here only to report side by side.
- **unknown origin**: every image is probed through all ``M`` candidates (:func:`unknown_origin_signatures`,
  ``(n, M, d)``) and the decision uses all ``M`` responses, either concatenated (``features="concat"``) or as cosine
  similarities to every candidate's class prototypes (``features="distances"``, ``M × C`` values: how much the
  image's response through candidate ``m`` resembles that of class ``c``'s references through ``m``).

Classifiers (:func:`make_classifier`, standardised scikit-learn pipelines): nearest prototype by cosine similarity
(``prototype``), PCA + logistic regression (``logreg``), a linear SVM (``svm``), and, for the denoising-loss probe,
the training-free ``lowest-loss`` rule (:class:`LowestLoss`). :func:`ranking_metrics` gives
top-1, top-3 and mean reciprocal rank. :class:`ProbeAttributor` packages the unknown-origin protocol as an estimator
that is fitted on reference images of each candidate and saved to / loaded from one ``.npz`` file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from modelprint.artefacts import meta_array, read_arrays, read_meta, write_arrays
from modelprint.errors import ProbeError
from modelprint.probes.base import PROBES, Probe, ProbeProgress, check_fitted, validated
from modelprint.probes.candidates import DiffusionCandidate
from modelprint.probes.loss import DenoisingLossProbe
from modelprint.probes.sds import SpectralProbe
from modelprint.registry import Registry
from modelprint.scores import l2_normalize

__all__ = [
    "CLASSIFIERS",
    "FEATURES",
    "NORMALISATIONS",
    "LowestLoss",
    "NearestPrototype",
    "CandidatePrototypeSimilarity",
    "ProbeAttributor",
    "fit_classifier",
    "make_classifier",
    "ranking_metrics",
    "true_model_signatures",
    "unknown_origin_signatures",
]

#: Probe classifiers by name: factories ``(pca_components, C, seed, candidates) -> Pipeline`` (:func:`make_classifier`).
CLASSIFIERS: Registry[Any] = Registry("probe classifier")
#: :class:`LowestLoss` normalisations.
NORMALISATIONS = ("raw", "standardised")
FEATURES = ("concat", "distances")
FORMAT = "modelprint-probe-attributor/1"


class NearestPrototype(ClassifierMixin, BaseEstimator):
    """Assigns the class whose mean feature vector (prototype) has the highest cosine similarity."""

    def fit(self, X: np.ndarray, y: Sequence[Any]) -> NearestPrototype:  # noqa: N803
        x, y = validated(self, X, y, classes=True, dtype=np.float64)
        self.classes_, index = np.unique(y, return_inverse=True)
        self.prototypes_ = np.stack([x[index == k].mean(axis=0) for k in range(len(self.classes_))])
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        """Cosine similarity to each prototype, ``(n, n_classes)``."""
        check_fitted(self)
        x = validated(self, X, reset=False, dtype=np.float64)
        return l2_normalize(x, np.float64) @ l2_normalize(self.prototypes_, np.float64).T

    def predict(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        scores = self.decision_function(X)
        return self.classes_[np.argmax(scores, axis=1)]


class CandidatePrototypeSimilarity(TransformerMixin, BaseEstimator):
    """Unknown-origin signatures flattened to ``(n, M·d)`` → cosine similarities ``(n, M·C)`` of each image's
    standardised response through candidate ``m`` to each class's mean response through ``m``."""

    def __init__(self, n_candidates: int = 1) -> None:
        self.n_candidates = n_candidates

    def _blocks(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean_) / self.scale_).reshape(len(x), int(self.n_candidates), -1)

    def fit(self, X: np.ndarray, y: Sequence[Any]) -> CandidatePrototypeSimilarity:  # noqa: N803
        x, y = validated(self, X, y, classes=True, dtype=np.float64)
        if int(self.n_candidates) < 1 or x.shape[1] % int(self.n_candidates):
            raise ProbeError(f"candidate prototypes: {x.shape[1]} features do not split into {self.n_candidates} "
                             "candidates")
        self.mean_ = x.mean(axis=0)
        self.scale_ = np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
        self.classes_, index = np.unique(y, return_inverse=True)
        blocks = self._blocks(x)
        self.prototypes_ = np.stack([blocks[index == k].mean(axis=0) for k in range(len(self.classes_))],
                                    axis=1)  # (M, C, d)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        check_fitted(self)
        blocks = l2_normalize(self._blocks(validated(self, X, reset=False, dtype=np.float64)))  # (n, M, d)
        sims = np.einsum("nmd,mcd->nmc", blocks, l2_normalize(self.prototypes_))
        return sims.reshape(len(blocks), -1)


class LowestLoss(ClassifierMixin, BaseEstimator):
    """Training-free attribution from denoising losses: the candidate whose noise prediction fits the image best.

    Input: :class:`~modelprint.probes.loss.DenoisingLossProbe` signatures of every candidate, flattened ``(n, M·T)``
    in ``candidates`` order (``classes_`` are the candidate names, sorted). A candidate's score is minus its log
    loss averaged over timesteps. ``normalisation="raw"`` compares the log losses as they are, which suits
    candidates that share one model space; candidates in different spaces (pixels, latents) or of different quality
    have losses on different scales, so with ``"standardised"`` (the default) each (candidate, timestep) log loss
    is first standardised by its mean and spread over the fitted images, whatever their labels: ``fit`` learns no
    class boundary, only each candidate's loss scale. Choose between them on a validation split
    (:func:`modelprint.provenance.attribution.choose_attributor` does).
    """

    def __init__(self, candidates: Sequence[str] = (),
                 normalisation: Literal["raw", "standardised"] = "standardised") -> None:
        self.candidates = candidates
        self.normalisation = normalisation

    def _blocks(self, x: np.ndarray) -> np.ndarray:
        return x.reshape(len(x), len(self.candidates), -1)

    def fit(self, X: np.ndarray, y: Sequence[Any] | None = None) -> LowestLoss:  # noqa: N803
        if y is None:
            x = validated(self, X, dtype=np.float64)
        else:
            x, y = validated(self, X, y, classes=True, dtype=np.float64)
        m = len(self.candidates)
        if not m or x.shape[1] % m:
            raise ProbeError(f"lowest-loss: {x.shape[1]} features do not split into {m} candidates")
        blocks = self._blocks(x)
        unknown = sorted({str(v) for v in y} - set(map(str, self.candidates))) if y is not None else []
        if unknown:
            raise ProbeError(f"lowest-loss: classes {unknown} are not candidates; its classes are the "
                             f"candidates ({', '.join(map(str, self.candidates))})")
        names = [str(c) for c in self.candidates]
        self.classes_ = np.asarray(sorted(names))  # sorted, as every scikit-learn classifier's
        self.order_ = np.asarray([names.index(c) for c in self.classes_])
        if self.normalisation not in NORMALISATIONS:
            raise ProbeError(f"lowest-loss: unknown normalisation {self.normalisation!r}; known: "
                             f"{', '.join(NORMALISATIONS)}")
        if self.normalisation == "standardised":
            self.mean_ = blocks.mean(axis=0)
            spread = blocks.std(axis=0)
            self.scale_ = np.where(spread > 0, spread, 1.0)
        else:
            self.mean_, self.scale_ = np.zeros(blocks.shape[1:]), np.ones(blocks.shape[1:])
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        """``(n, M)``: minus the (standardised) log loss through each candidate, averaged over timesteps, in
        ``classes_`` order."""
        check_fitted(self)
        blocks = self._blocks(validated(self, X, reset=False, dtype=np.float64))
        return -((blocks - self.mean_) / self.scale_).mean(axis=2)[:, self.order_]

    def predict(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        scores = self.decision_function(X)
        return self.classes_[np.argmax(scores, axis=1)]


@CLASSIFIERS.register("prototype")
def _prototype(pca_components: int, C: float, seed: int, candidates: Sequence[str]) -> Pipeline:  # noqa: N803
    """Standardised signatures, nearest class prototype by cosine similarity."""
    return Pipeline([("scale", StandardScaler()), ("clf", NearestPrototype())])


@CLASSIFIERS.register("logreg")
def _logreg(pca_components: int, C: float, seed: int, candidates: Sequence[str]) -> Pipeline:  # noqa: N803
    """Standardised signatures, PCA, logistic regression (class probabilities)."""
    return Pipeline([("scale", StandardScaler()), ("pca", PCA(n_components=pca_components, random_state=seed)),
                     ("clf", LogisticRegression(max_iter=5000))])


@CLASSIFIERS.register("svm")
def _svm(pca_components: int, C: float, seed: int, candidates: Sequence[str]) -> Pipeline:  # noqa: N803
    """Standardised signatures, linear SVM with ``C``."""
    return Pipeline([("scale", StandardScaler()), ("clf", LinearSVC(C=C, max_iter=20000, random_state=seed))])


@CLASSIFIERS.register("lowest-loss")
def _lowest_loss(pca_components: int, C: float, seed: int, candidates: Sequence[str]) -> Pipeline:  # noqa: N803
    """Training-free: the candidate with the lowest denoising loss (denoising-loss signatures only)."""
    return Pipeline([("clf", LowestLoss(candidates=tuple(candidates)))])


def make_classifier(name: str, pca_components: int = 64, C: float = 0.1, seed: int = 0,  # noqa: N803
                    candidates: Sequence[str] = ()) -> Pipeline:
    """The :data:`CLASSIFIERS` pipeline ``name``: ``prototype`` (cosine), ``logreg`` (PCA + logistic regression),
    ``svm`` (linear SVM with ``C``), or ``lowest-loss`` (:class:`LowestLoss` over ``candidates``; denoising-loss
    signatures only). Fit it with :func:`fit_classifier` when there may be fewer than ``pca_components`` samples or
    features. An unknown name raises :class:`~modelprint.errors.RegistryError`."""
    return CLASSIFIERS.create(name, pca_components=pca_components, C=C, seed=seed, candidates=tuple(candidates))


def attribution_pipeline(features: str, classifier: str, candidates: Sequence[str], pca_components: int = 64,
                         C: float = 0.1, seed: int = 0) -> Pipeline:  # noqa: N803
    """The unknown-origin pipeline over flattened ``(n, M·d)`` signatures of ``candidates``: the classifier of
    :func:`make_classifier`, after a :class:`CandidatePrototypeSimilarity` step for ``features="distances"``."""
    if features not in FEATURES:
        raise ProbeError(f"unknown features {features!r}; known: {', '.join(FEATURES)}")
    pipe = make_classifier(classifier, pca_components, C, seed, candidates)
    if features == "distances":
        pipe.steps.insert(0, ("sim", CandidatePrototypeSimilarity(len(candidates))))
    return pipe


def fit_classifier(pipeline: Pipeline, X: np.ndarray, y: Sequence[Any]) -> Pipeline:  # noqa: N803
    """Fit a :func:`make_classifier` pipeline, first lowering its PCA's components to what ``X`` can give."""
    if "pca" in pipeline.named_steps:
        n_features = X.shape[1]
        if "sim" in pipeline.named_steps:
            n_features = pipeline.named_steps["sim"].n_candidates * len(np.unique(y))
        limit = min(int(pipeline.named_steps["pca"].n_components), len(X), n_features)
        pipeline.set_params(pca__n_components=limit)
    return pipeline.fit(X, y)


def scores(pipeline: Pipeline, X: np.ndarray) -> np.ndarray:  # noqa: N803
    """``(n, n_classes)`` decision scores in ``pipeline.classes_`` order (also for two classes)."""
    s = np.asarray(pipeline.decision_function(X), dtype=np.float64)
    return np.stack([-s, s], axis=1) if s.ndim == 1 else s


def ranking_metrics(y_true: Sequence[Any], scores: np.ndarray, classes: Sequence[Any]) -> dict[str, float]:
    """``top1``, ``top3`` and ``mrr`` of ``(n, n_classes)`` scores (columns in ``classes`` order).

    The rank of the true class counts ties against it: rank = number of classes scoring at least as high.
    """
    classes = list(classes)
    s = np.asarray(scores, dtype=np.float64)
    missing = sorted({str(y) for y in y_true} - {str(c) for c in classes})
    if missing:
        raise ProbeError(f"true labels {missing} are not among the scored classes")
    col = np.array([classes.index(y) for y in y_true])
    true = s[np.arange(len(col)), col]
    rank = (s >= true[:, None]).sum(axis=1)
    return {"top1": float(np.mean(rank <= 1)), "top3": float(np.mean(rank <= 3)), "mrr": float(np.mean(1.0 / rank)),
            "n": int(len(col))}


def true_model_signatures(probe: Probe, candidates: Mapping[str, DiffusionCandidate], images: np.ndarray,
                          labels: Sequence[str]) -> np.ndarray:
    """The reference protocol: image ``i`` probed only through ``candidates[labels[i]]``; ``(n, d)``."""
    labels = np.asarray(labels).astype(str)
    if len(labels) != len(images):
        raise ProbeError(f"{len(images)} images but {len(labels)} labels")
    unknown = sorted(set(labels.tolist()) - set(candidates))
    if unknown:
        raise ProbeError(f"no candidate named {', '.join(map(repr, unknown))}; known: {', '.join(candidates)}")
    out = np.empty((len(images), probe.n_features))
    for name in np.unique(labels):
        rows = labels == name
        out[rows] = probe.signature(candidates[name], images[rows])
    return out


def unknown_origin_signatures(probe: Probe, candidates: Mapping[str, DiffusionCandidate], images: np.ndarray,
                              progress: ProbeProgress | None = None) -> np.ndarray:
    """Every image probed through every candidate: ``(n, M, d)`` in ``candidates`` order.

    ``progress(done, total)`` counts forward images over all candidates.
    """
    names = list(candidates)
    if not names:
        raise ProbeError("no candidates to probe")
    total = len(images) * probe.calls_per_image * len(names)
    out = []
    for m, name in enumerate(names):
        offset = m * len(images) * probe.calls_per_image
        step = None if progress is None else (lambda done, _total, o=offset: progress(o + done, total))
        out.append(probe.signature(candidates[name], images, progress=step))
    return np.stack(out, axis=1)


_STEP_CLASSES: dict[str, type] = {cls.__name__: cls for cls in (StandardScaler, PCA, LogisticRegression, LinearSVC,
                                                                NearestPrototype, CandidatePrototypeSimilarity,
                                                                LowestLoss)}


class ProbeAttributor(ClassifierMixin, BaseEstimator):
    """Unknown-origin attribution of images to the candidate diffusion models that may have made them.

    ``fit(X, y)`` probes reference images ``X`` (uint8 ``(n, H, W, 3)``) of each class ``y`` (usually the
    candidate names) through all candidates with ``probe`` and fits ``classifier`` on ``features``. Every method that
    takes ``X`` also accepts the precomputed :meth:`signatures` ``(n, M, d)`` instead, so one probing serves many
    classifiers. ``probe`` is any registered :class:`~modelprint.probes.base.Probe` (default: the 1-step
    :class:`~modelprint.probes.sds.SpectralProbe`); ``classifier="lowest-loss"`` needs the denoising-loss probe.
    ``decision_function``/``rank`` order classes by score; ``predict_proba`` exists for ``logreg`` only (the other
    scores are not probabilities). :meth:`save`/:meth:`load` store everything but the candidates'
    weights in one ``.npz``.
    """

    def __init__(self, candidates: Mapping[str, DiffusionCandidate], probe: Probe | None = None,
                 features: Literal["concat", "distances"] = "concat",
                 classifier: Literal["prototype", "logreg", "svm", "lowest-loss"] = "logreg",
                 pca_components: int = 64, C: float = 0.1, seed: int = 0) -> None:  # noqa: N803
        self.candidates = candidates
        self.probe = probe
        self.features = features
        self.classifier = classifier
        self.pca_components = pca_components
        self.C = C
        self.seed = seed

    def _probe(self) -> Probe:
        return self.probe if self.probe is not None else SpectralProbe()

    @property
    def calls_per_image(self) -> int:
        """Denoiser calls (forward images) per attributed image, over all candidates."""
        return self._probe().calls_per_image * len(self.candidates)

    def signatures(self, images: np.ndarray, progress: ProbeProgress | None = None) -> np.ndarray:
        """``(n, M, d)`` signatures of ``images`` through every candidate (in ``candidates`` order)."""
        return unknown_origin_signatures(self._probe(), self.candidates, images, progress)

    def _as_signatures(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        x = np.asarray(X)
        if x.dtype == np.uint8:
            x = self.signatures(x)
        want = (len(self.candidates), self._probe().n_features)
        if x.ndim != 3 or x.shape[1:] != want:
            raise ProbeError(f"expected uint8 images (n, H, W, 3) or signatures (n, {want[0]}, {want[1]}), "
                             f"got {x.dtype} {x.shape}")
        bad = [name for m, name in enumerate(self.candidates) if not np.isfinite(x[:, m]).all()]
        if bad:
            raise ProbeError(f"signatures through candidate(s) {', '.join(bad)} are not all finite (does the model "
                             "predict NaN or inf?)")
        return x.astype(np.float64)

    def _pipeline(self) -> Pipeline:
        if self.classifier == "lowest-loss" and (not isinstance(self._probe(), DenoisingLossProbe)
                                                 or self.features != "concat"):
            raise ProbeError("the lowest-loss classifier needs the denoising-loss probe (a loss-* preset) and "
                             "concat features")
        return attribution_pipeline(self.features, self.classifier, list(self.candidates), self.pca_components,
                                    self.C, self.seed)

    def fit(self, X: np.ndarray, y: Sequence[str]) -> ProbeAttributor:  # noqa: N803
        pipeline = self._pipeline()
        sigs = self._as_signatures(X)
        y = np.asarray(y).astype(str)
        if len(y) != len(sigs):
            raise ProbeError(f"{len(sigs)} reference images but {len(y)} labels")
        if len(np.unique(y)) < 2:
            raise ProbeError("attribution needs reference images of at least two classes")
        self.candidate_names_ = list(self.candidates)
        self.pipeline_ = fit_classifier(pipeline, sigs.reshape(len(sigs), -1), y)
        self.classes_ = self.pipeline_.classes_
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        """``(n, n_classes)`` scores, higher = more likely, columns in ``classes_`` order."""
        check_fitted(self, "pipeline_")
        sigs = self._as_signatures(X)
        return scores(self.pipeline_, sigs.reshape(len(sigs), -1))

    def predict(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        scores = self.decision_function(X)
        return self.classes_[np.argmax(scores, axis=1)]

    def predict_proba(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        """Class probabilities ``(n, n_classes)`` of the logistic regression (``classifier="logreg"`` only)."""
        check_fitted(self, "pipeline_")
        if self.classifier != "logreg":
            raise ProbeError(f"predict_proba needs classifier='logreg'; {self.classifier!r} gives scores only "
                             "(use decision_function or rank)")
        sigs = self._as_signatures(X)
        return self.pipeline_.predict_proba(sigs.reshape(len(sigs), -1))

    def rank(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        """``(n, n_classes)`` class names from most to least likely."""
        return self.classes_[np.argsort(-self.decision_function(X), axis=1, kind="stable")]

    def score_ranking(self, X: np.ndarray, y: Sequence[str]) -> dict[str, float]:  # noqa: N803
        """:func:`ranking_metrics` (top-1, top-3, MRR) on ``(X, y)``."""
        return ranking_metrics(np.asarray(y).astype(str), self.decision_function(X), self.classes_)

    # ------------------------------------------------------------------------------------------- persistence

    def save(self, path: str | Path) -> None:
        """Write the fitted attributor (settings, candidate names, fitted pipeline arrays) to ``path`` atomically."""
        check_fitted(self, "pipeline_")
        arrays: dict[str, np.ndarray] = {}
        steps = []
        for i, (step_name, step) in enumerate(self.pipeline_.steps):
            scalars: dict[str, Any] = {}
            for key, value in vars(step).items():
                if not key.endswith("_") or key.startswith("_"):
                    continue
                if isinstance(value, np.ndarray):
                    if value.dtype == object:
                        raise ProbeError(f"{path}: cannot store {step_name}.{key} (object array)")
                    arrays[f"step{i}.{key}"] = value
                elif value is None or isinstance(value, (bool, int, float, str, np.integer, np.floating)):
                    scalars[key] = value.item() if isinstance(value, np.generic) else value
                else:
                    raise ProbeError(f"{path}: cannot store {step_name}.{key} ({type(value).__name__})")
            steps.append({"name": step_name, "class": type(step).__name__, "params": step.get_params(),
                          "scalars": scalars})
        meta = {
            "format": FORMAT,
            "candidates": self.candidate_names_,
            "probe_kind": self._probe().name,
            "probe": {k: (list(v) if isinstance(v, tuple) else v) for k, v in self._probe().get_params().items()},
            "features": self.features,
            "classifier": self.classifier,
            "pca_components": self.pca_components,
            "C": self.C,
            "seed": self.seed,
            "steps": steps,
        }
        arrays["meta"] = meta_array(meta)
        write_arrays(path, arrays, {"format": FORMAT, "candidates": self.candidate_names_, "seed": self.seed})

    @classmethod
    def load(cls, path: str | Path, candidates: Mapping[str, DiffusionCandidate]) -> ProbeAttributor:
        """Read an attributor written by :meth:`save`; ``candidates`` must hold every candidate it was fitted with."""
        path = Path(path)
        arrays = read_arrays(path, "probe attributor file")
        meta = read_meta(arrays, path, "probe attributor file", FORMAT)
        del arrays["meta"]
        names = meta["candidates"]
        missing = [n for n in names if n not in candidates]
        if missing:
            raise ProbeError(f"{path}: fitted with candidate(s) {', '.join(missing)} that were not given "
                             f"(given: {', '.join(candidates) or 'none'})")
        probe_cls = PROBES.get(meta.get("probe_kind", "sds"))
        probe = probe_cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in meta["probe"].items()})
        model = cls({n: candidates[n] for n in names}, probe=probe, features=meta["features"],
                    classifier=meta["classifier"], pca_components=meta["pca_components"], C=meta["C"],
                    seed=meta["seed"])
        steps = []
        for i, spec in enumerate(meta["steps"]):
            if spec["class"] not in _STEP_CLASSES:
                raise ProbeError(f"{path}: unknown pipeline step {spec['class']!r}")
            params = dict(spec["params"])
            if spec["class"] == "LowestLoss" and "standardise" in params:  # files written before `normalisation`
                params["normalisation"] = "standardised" if params.pop("standardise") else "raw"
            step = _STEP_CLASSES[spec["class"]](**params)
            for key, value in spec["scalars"].items():
                setattr(step, key, value)
            prefix = f"step{i}."
            for key, value in arrays.items():
                if key.startswith(prefix):
                    setattr(step, key[len(prefix):], value)
            steps.append((spec["name"], step))
        model.candidate_names_ = names
        model.pipeline_ = Pipeline(steps)
        model.classes_ = model.pipeline_.classes_
        return model

"""What the gallery answers: enrolment outcomes, model listings, calibrations, identifications, verifications."""

from __future__ import annotations

from dataclasses import dataclass

UNKNOWN = "unknown"
"""The model name identification answers below the open-set threshold (reserved: no model may take it)."""


@dataclass(frozen=True)
class EnrollResult:
    """Outcome of :meth:`~modelprint.gallery.Gallery.add_embeddings`: rows inserted, rows skipped as already
    enrolled, and ``(other model, n images)`` for images of the batch that other models already hold (same sha256).
    """

    added: int
    skipped: int
    also_enrolled_as: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class ModelInfo:
    """One enrolled model; ``methods`` lists the ``"name@version"`` tags it has embeddings for, ``n_images`` counts
    its distinct images (an image embedded by two method versions is one image and two embeddings)."""

    name: str
    notes: str
    created: str
    n_embeddings: int
    methods: list[str]
    n_images: int


@dataclass(frozen=True)
class Calibration:
    """Thresholds of one ``(method, version)``, how they were computed (``rule``) and on how much data.

    ``genuine_accept_rate`` / ``impostor_reject_rate`` are measured at ``unknown_threshold`` on the
    leave-one-out genuine and best-other-model impostor scores; ``eer`` is the equal error rate at
    ``verify_threshold``.
    """

    method: str
    version: str
    unknown_threshold: float
    verify_threshold: float
    target_tpr: float
    rule: str
    n_models: int
    n_embeddings: int
    n_genuine: int
    n_impostor: int
    n_same_pairs: int
    n_diff_pairs: int
    genuine_accept_rate: float
    impostor_reject_rate: float
    eer: float
    created: str


@dataclass(frozen=True)
class Identification:
    """Attribution of one embedding.

    ``model`` is the best-matching model, or :data:`UNKNOWN` if ``similarity`` (the best cosine similarity)
    is below ``threshold``; ``threshold`` is ``None`` when no threshold applied. ``top_k`` lists
    ``(model, similarity)`` pairs, best first.
    """

    model: str
    similarity: float
    top_k: list[tuple[str, float]]
    threshold: float | None

    @property
    def is_unknown(self) -> bool:
        return self.model == UNKNOWN


@dataclass(frozen=True)
class Neighbour:
    """One enrolled image near a query: its model, image sha256, source path as enrolled, and cosine similarity."""

    model: str
    image_sha256: str
    source: str
    similarity: float


@dataclass(frozen=True)
class OpenSetThreshold:
    """The similarity below which identification answers "unknown", where it comes from, and that in one line.

    ``source`` is ``"calibrated"`` (on the gallery's own models), ``"fallback"`` (the gallery cannot calibrate;
    measured for the method on held-out classes and shipped with its weights, see
    :mod:`modelprint.gallery.fallback`) or ``"none"`` (neither: ``value`` is ``None``, "unknown" is never answered).
    """

    value: float | None
    source: str
    detail: str

    @property
    def calibrated(self) -> bool:
        return self.source == "calibrated"


@dataclass(frozen=True)
class Verification:
    """Whether two embeddings come from the same model: ``same_model`` is ``None`` if no threshold applied."""

    similarity: float
    same_model: bool | None
    threshold: float | None

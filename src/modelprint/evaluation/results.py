"""What an evaluation produces: one result type per protocol and :class:`EvaluationResult`, with their JSON form.

:meth:`EvaluationResult.to_dict` is the ``modelprint evaluate --json`` document (format :data:`FORMAT`);
:meth:`EvaluationResult.from_dict` reads it back (older formats too), e.g. to re-render a report.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from modelprint import atomic
from modelprint.errors import DatasetError

__all__ = [
    "FORMAT",
    "THRESHOLD_RULE",
    "ClusteringResult",
    "EvaluationResult",
    "IdentificationResult",
    "OpenSetResult",
    "VerificationResult",
    "ci",
    "num",
]

FORMAT = "modelprint.evaluation/2"
_OLD_FORMATS = ("modelprint.evaluation/1",)  # read too: dropped_classes held bare image counts
THRESHOLD_RULE = "max accuracy on validation pairs"

Interval = list[float | None]  # [low, high]


def num(x: Any) -> float | None:
    """A JSON-safe float: ``None`` for NaN/inf/None."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def ci(pair: tuple[float, float]) -> Interval:
    """An interval ``(low, high)`` as JSON-safe ``[low, high]``."""
    return [num(pair[0]), num(pair[1])]


def _jsonable(obj: Any) -> Any:
    """Recursively convert NumPy types, tuples and non-finite floats into plain JSON values."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return num(obj)
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


def _from_fields(cls: type, data: dict[str, Any] | None) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in (data or {}).items() if k in names})


@dataclass
class IdentificationResult:
    """1:N closed-set identification against per-class prototypes."""

    accuracy: float | None = None
    accuracy_ci: Interval = field(default_factory=lambda: [None, None])
    macro_f1: float | None = None
    macro_f1_ci: Interval = field(default_factory=lambda: [None, None])
    labels: list[str] = field(default_factory=list)
    confusion_matrix: list[list[int]] = field(default_factory=list)  # rows = true, columns = predicted
    per_class_accuracy: dict[str, float | None] = field(default_factory=dict)
    n_support: int = 0  # support images per class
    n_queries: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)  # the most confident mistakes


@dataclass
class VerificationResult:
    """1:1 verification on balanced pairs; threshold chosen on validation pairs, everything else on test pairs."""

    skipped: str | None = None
    auc: float | None = None
    auc_ci: Interval = field(default_factory=lambda: [None, None])
    eer: float | None = None
    eer_threshold: float | None = None
    tpr_at_1pct_fpr: float | None = None
    accuracy: float | None = None  # on test pairs, at the validation threshold
    accuracy_ci: Interval = field(default_factory=lambda: [None, None])
    threshold: float | None = None
    threshold_rule: str = THRESHOLD_RULE
    val_accuracy: float | None = None
    n_val_pairs: int = 0
    n_test_pairs: int = 0
    n_val_images: int = 0
    n_test_images: int = 0
    metrics: dict[str, float | None] = field(default_factory=dict)  # other registered score metrics, on test
    roc_fpr: list[float] = field(default_factory=list)  # test-pair ROC (possibly thinned)
    roc_tpr: list[float] = field(default_factory=list)


@dataclass
class OpenSetResult:
    """Known-vs-unknown detection by max prototype similarity."""

    skipped: str | None = None
    auroc: float | None = None
    oscr: float | None = None
    closed_set_accuracy: float | None = None  # among known queries, over known prototypes only
    known_classes: list[str] = field(default_factory=list)
    unknown_classes: list[str] = field(default_factory=list)
    n_known: int = 0
    n_unknown: int = 0
    # The operating point of ``modelprint identify``: the "unknown" threshold a gallery enrolled with the known
    # models' support images calibrates, and what it does to the queries.
    unknown_threshold: float | None = None
    threshold_rule: str | None = None  # how it was calibrated, or why there is none
    known_accepted: float | None = None  # share of known queries scoring >= threshold (answered with a model)
    known_correct: float | None = None  # share of known queries answered with their true model
    unknown_rejected: float | None = None  # share of unknown-model images answered "unknown"
    # Every registered rejection rule (modelprint.evaluation.openset): its open-set metrics on the same queries.
    rules: dict[str, dict[str, float | None]] = field(default_factory=dict)


@dataclass
class ClusteringResult:
    silhouette: float | None = None  # cosine, in [-1, 1], higher is better
    davies_bouldin: float | None = None  # >= 0, lower is better
    n: int = 0


@dataclass
class EvaluationResult:
    """Everything an evaluation produced: JSON via :meth:`to_dict` / :meth:`to_json`, and input to the report."""

    method: str
    seed: int
    support: int
    n_models: int  # classes evaluated (after dropping small ones)
    n_images: int  # images of the evaluated classes
    labels: list[str]  # evaluated classes, sorted; the order of the confusion matrix
    identification: IdentificationResult
    verification: VerificationResult
    open_set: OpenSetResult
    clustering: ClusteringResult
    dropped_classes: dict[str, dict[str, Any]] = field(default_factory=dict)  # label -> {"images", "reason"}
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (plain Python types; NaN becomes ``None``)."""
        return {"format": FORMAT, **_jsonable(dataclasses.asdict(self))}

    def to_json(self, path: str | Path | None = None) -> str:
        """The JSON text; also written atomically to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"
        if path is not None:
            atomic.write_text(path, text)
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluationResult:
        """Rebuild a result from :meth:`to_dict` output (e.g. to re-render a report from saved JSON)."""
        fmt = data.get("format", FORMAT)
        if fmt != FORMAT and fmt not in _OLD_FORMATS:
            raise DatasetError(f"unsupported evaluation format {fmt!r} (expected {FORMAT!r})")
        plain = {k: v for k, v in data.items() if k not in ("identification", "verification", "open_set", "clustering")}
        plain["dropped_classes"] = {
            k: v if isinstance(v, dict) else {"images": v, "reason": f"{v} image(s), fewer than support + 1"}
            for k, v in (data.get("dropped_classes") or {}).items()
        }
        return _from_fields(
            cls,
            {
                **plain,
                "identification": _from_fields(IdentificationResult, data.get("identification")),
                "verification": _from_fields(VerificationResult, data.get("verification")),
                "open_set": _from_fields(OpenSetResult, data.get("open_set")),
                "clustering": _from_fields(ClusteringResult, data.get("clustering")),
            },
        )

    @classmethod
    def from_json(cls, path: str | Path) -> EvaluationResult:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


@dataclass(frozen=True)
class SupportSplit:
    """The identification split every protocol shares: per class, ``support`` rows forming its prototype, and the
    query rows (all other rows of the class) with their similarities to every prototype."""

    classes: list[str]  # evaluated classes, sorted; class ``c`` is ``classes[c]``
    codes: NDArray[np.int64]  # class of every row, -1 for rows of dropped classes
    support_rows: list[NDArray[np.int64]]  # per class
    prototypes: NDArray[np.float64]  # (k, d), unit norm
    queries: NDArray[np.int64]  # query rows, grouped by class
    query_classes: NDArray[np.int64]
    query_scores: NDArray[np.float64]  # (n_queries, k) cosine to each prototype

"""Evaluation: metrics (pure functions on arrays) and protocols (identification, verification, open set,
clustering) that turn fingerprint embeddings into an :class:`EvaluationResult`."""

from modelprint.evaluation.metrics import (
    METRICS,
    accuracy_at_threshold,
    best_threshold,
    bootstrap_ci,
    davies_bouldin,
    eer,
    identification_metrics,
    metric,
    open_set_auroc,
    oscr,
    roc_auc,
    roc_curve_points,
    silhouette_cosine,
    tpr_at_fpr,
)
from modelprint.evaluation.protocols import (
    EvaluationResult,
    draw_verification_pairs,
    evaluate_embeddings,
    too_small,
    verification_from_scores,
)

__all__ = [
    "METRICS",
    "EvaluationResult",
    "accuracy_at_threshold",
    "best_threshold",
    "bootstrap_ci",
    "davies_bouldin",
    "draw_verification_pairs",
    "eer",
    "evaluate_embeddings",
    "identification_metrics",
    "metric",
    "open_set_auroc",
    "oscr",
    "roc_auc",
    "roc_curve_points",
    "silhouette_cosine",
    "too_small",
    "tpr_at_fpr",
    "verification_from_scores",
]

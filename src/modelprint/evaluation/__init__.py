"""Evaluation: metrics (pure functions on arrays), protocols (identification, verification, open set, clustering;
one function each) that turn fingerprint embeddings into an :class:`EvaluationResult` (:mod:`.results`), and the
measurement of the gallery's fallback "unknown" thresholds (:mod:`.fallback`, not imported here)."""

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
    open_set_metrics,
    oscr,
    roc_auc,
    roc_curve_points,
    silhouette_cosine,
    tpr_at_fpr,
)
from modelprint.evaluation.openset import REJECTION_RULES, RejectionRule, evaluate_open_set
from modelprint.evaluation.protocols import (
    draw_verification_pairs,
    evaluate_clustering,
    evaluate_embeddings,
    evaluate_identification,
    evaluate_verification,
    split_support,
    too_small,
    verification_from_scores,
)
from modelprint.evaluation.results import (
    ClusteringResult,
    EvaluationResult,
    IdentificationResult,
    OpenSetResult,
    VerificationResult,
)

__all__ = [
    "METRICS",
    "REJECTION_RULES",
    "ClusteringResult",
    "EvaluationResult",
    "IdentificationResult",
    "OpenSetResult",
    "RejectionRule",
    "VerificationResult",
    "accuracy_at_threshold",
    "best_threshold",
    "bootstrap_ci",
    "davies_bouldin",
    "draw_verification_pairs",
    "eer",
    "evaluate_clustering",
    "evaluate_embeddings",
    "evaluate_identification",
    "evaluate_open_set",
    "evaluate_verification",
    "identification_metrics",
    "metric",
    "open_set_auroc",
    "open_set_metrics",
    "oscr",
    "roc_auc",
    "roc_curve_points",
    "silhouette_cosine",
    "split_support",
    "too_small",
    "tpr_at_fpr",
    "verification_from_scores",
]

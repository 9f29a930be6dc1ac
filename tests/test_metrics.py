"""Metrics: checked against scikit-learn, analytic cases and hand-computed examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    davies_bouldin_score,
    f1_score,
    roc_auc_score,
    silhouette_score,
)

from modelprint.errors import RegistryError
from modelprint.evaluation import metrics as M


def _normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


# ------------------------------------------------------------------------------------------- identification


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_identification_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    labels = ["a", "b", "c", "d", "never"]  # "never" occurs neither as truth nor as prediction
    y_true = rng.choice(labels[:4], size=200)
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.choice(labels[:3], size=200))  # "d" never predicted
    out = M.identification_metrics(y_true, y_pred, labels)
    assert out["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert out["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))
    assert out["confusion_matrix"] == confusion_matrix(y_true, y_pred, labels=labels).tolist()
    assert out["labels"] == labels
    assert out["per_class_accuracy"]["never"] is None
    cm = np.array(out["confusion_matrix"])
    assert out["per_class_accuracy"]["a"] == pytest.approx(cm[0, 0] / cm[0].sum())
    assert all(type(v) is int for row in out["confusion_matrix"] for v in row)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_fast_accuracy_and_macro_f1_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 6, size=150)
    p = np.where(rng.random(150) < 0.5, t, rng.integers(0, 7, size=150))  # 6 appears only as a prediction
    assert M.accuracy(t, p) == pytest.approx(accuracy_score(t, p))
    for labels in (None, list(range(8))):
        ref = f1_score(t, p, labels=labels, average="macro", zero_division=0)
        assert M.macro_f1(t, p, labels=labels) == pytest.approx(ref)


# ------------------------------------------------------------------------------------------------- ROC family


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_matches_sklearn_including_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(300) < 0.4
    s = np.round(rng.normal(size=300) + y, 1)  # rounding creates many ties
    assert M.roc_auc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert math.isnan(M.roc_auc(s, np.ones(300, bool)))


def test_roc_curve_points_thinning_keeps_endpoints():
    rng = np.random.default_rng(0)
    y = rng.random(2000) < 0.5
    s = rng.normal(size=2000) + y
    fpr, tpr, thr = M.roc_curve_points(s, y, max_points=50)
    assert len(fpr) <= 50 and len(fpr) == len(tpr) == len(thr)
    assert (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_matches_sklearn_including_ties(seed):
    from sklearn.metrics import roc_curve

    from modelprint.scores import roc

    rng = np.random.default_rng(seed)
    y = rng.random(300) < 0.4
    s = np.round(rng.normal(size=300) + y, 1)  # rounding creates many ties
    for ours, theirs in zip(roc(s, y), roc_curve(y, s, drop_intermediate=False), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    with pytest.raises(ValueError, match="both positive and negative"):
        roc(s, np.ones(300, bool))


def test_one_eer_for_evaluation_and_gallery():
    from modelprint import scores

    assert M.eer is scores.eer and M.METRICS.get("eer")(np.array([0.1, 0.9]), np.array([0, 1], bool)) == 0.0


def test_eer_perfectly_separable_is_zero():
    s = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    y = np.array([0, 0, 0, 1, 1, 1], bool)
    rate, thr = M.eer(s, y)
    assert rate == 0.0
    assert M.accuracy_at_threshold(s, y, thr) == 1.0


def test_eer_two_gaussians_analytic():
    # positives ~ N(+1, 1), negatives ~ N(-1, 1): the error rates cross at 0, where each is Φ(-1).
    rng = np.random.default_rng(0)
    n = 100_000
    s = np.concatenate([rng.normal(1.0, 1.0, n), rng.normal(-1.0, 1.0, n)])
    y = np.concatenate([np.ones(n, bool), np.zeros(n, bool)])
    rate, thr = M.eer(s, y)
    assert rate == pytest.approx(_normal_cdf(-1.0), abs=0.004)
    assert thr == pytest.approx(0.0, abs=0.02)
    # at the returned threshold both error rates are (close to) the EER
    assert np.mean(s[y] < thr) == pytest.approx(rate, abs=0.003)
    assert np.mean(s[~y] >= thr) == pytest.approx(rate, abs=0.003)


def test_eer_interpolates_between_roc_points():
    # ROC by decreasing threshold: .9 → (0, 1/2); .7 → (1/3, 1/2); .6 → (2/3, 1/2); .5 → (2/3, 1).
    # FNR - FPR goes from +1/6 (at .7) to -1/6 (at .6): the crossing is halfway, at FPR = FNR = 1/2.
    s = np.array([0.9, 0.5, 0.7, 0.6, 0.2])
    y = np.array([1, 1, 0, 0, 0], bool)
    rate, thr = M.eer(s, y)
    assert rate == pytest.approx(0.5)
    assert thr == pytest.approx(0.65)


def test_tpr_at_fpr_hand_case():
    neg = np.arange(100.0)  # one negative per integer 0..99
    pos = np.arange(100.0) + 50.5  # 50.5..149.5
    s = np.concatenate([pos, neg])
    y = np.concatenate([np.ones(100, bool), np.zeros(100, bool)])
    # FPR <= 1% accepts at most the negative at 99: the lowest such threshold is 98.5, accepting 98.5..149.5
    assert M.tpr_at_fpr(s, y, fpr=0.01) == pytest.approx(0.52)
    # FPR = 0 accepts no negative: threshold 99.5, accepting 99.5..149.5
    assert M.tpr_at_fpr(s, y, fpr=0.0) == pytest.approx(0.51)
    assert M.tpr_at_fpr(s, y, fpr=1.0) == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_best_threshold_maximises_accuracy(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(120) < 0.5
    s = np.round(rng.normal(size=120) + 1.2 * y, 2)
    thr = M.best_threshold(s, y, rule="accuracy")
    candidates = np.concatenate([np.unique(s), [np.inf]])
    best = max(M.accuracy_at_threshold(s, y, t) for t in candidates)
    assert M.accuracy_at_threshold(s, y, thr) == pytest.approx(best)
    assert M.best_threshold(s, y, rule="eer") == pytest.approx(M.eer(s, y)[1])


def test_best_threshold_separable_is_midpoint_of_gap():
    s = np.array([0.1, 0.3, 0.5, 0.9])
    y = np.array([0, 0, 1, 1], bool)
    assert M.best_threshold(s, y) == pytest.approx(0.4)
    assert M.best_threshold(s, np.ones(4, bool)) == pytest.approx(0.1)  # accept all
    assert M.best_threshold(s, np.zeros(4, bool)) > 0.9  # reject all
    with pytest.raises(ValueError):
        M.best_threshold(s, y, rule="median")


# ------------------------------------------------------------------------------------------------- open set


def test_open_set_auroc_matches_sklearn():
    rng = np.random.default_rng(0)
    known, unknown = rng.normal(1, 1, 80), rng.normal(0, 1, 50)
    ref = roc_auc_score(np.r_[np.ones(80), np.zeros(50)], np.r_[known, unknown])
    assert M.open_set_auroc(known, unknown) == pytest.approx(ref)


def test_oscr_hand_computed():
    # thresholds high→low: 0.9 (ccr 1/4), 0.8 (wrong), 0.7 (fpr 1/2), 0.6 (ccr 2/4), 0.4 (fpr 1), 0.3 (ccr 3/4)
    # area = 0.5 * 0.25 + 0.5 * 0.5 = 0.375
    correct = np.array([True, False, True, True])
    known = np.array([0.9, 0.8, 0.6, 0.3])
    unknown = np.array([0.7, 0.4])
    assert M.oscr(correct, known, unknown) == pytest.approx(0.375)
    fpr, ccr = M.oscr_curve(correct, known, unknown)
    assert (fpr[0], ccr[0]) == (0.0, 0.0)
    assert (fpr[-1], ccr[-1]) == (1.0, 0.75)  # ends at the closed-set accuracy


def test_oscr_reduces_to_auroc_when_all_correct_and_is_bounded_by_accuracy():
    rng = np.random.default_rng(1)
    known = np.round(rng.normal(1, 1, 60), 1)
    unknown = np.round(rng.normal(0, 1, 40), 1)
    assert M.oscr(np.ones(60, bool), known, unknown) == pytest.approx(M.open_set_auroc(known, unknown))
    correct = rng.random(60) < 0.7
    assert M.oscr(correct, known, unknown) <= correct.mean() + 1e-12
    assert math.isnan(M.oscr(correct, known, []))


# ----------------------------------------------------------------------------------------------- clustering


def test_clustering_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 8)) * 3
    y = np.repeat([0, 1, 2], 40)
    x = centers[y] + rng.normal(size=(120, 8))
    assert M.silhouette_cosine(x, y) == pytest.approx(silhouette_score(x, y, metric="cosine"))
    assert M.davies_bouldin(x, y) == pytest.approx(davies_bouldin_score(x, y))
    assert M.silhouette_cosine(x, y) > 0.3
    assert math.isnan(M.silhouette_cosine(x, np.zeros(120)))
    assert math.isnan(M.davies_bouldin(x, np.zeros(120)))


# ------------------------------------------------------------------------------------------------ bootstrap


def test_bootstrap_ci_contains_estimate_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    widths = []
    for n in (100, 1600):
        x = rng.normal(size=n)
        low, high = M.bootstrap_ci(np.mean, x, n_boot=400, seed=0)
        assert low <= x.mean() <= high
        widths.append(high - low)
    assert widths[1] < widths[0] / 2.5  # ~1/sqrt(16) = 1/4 in theory
    # a 95% interval of a mean is about ±1.96 standard errors
    assert widths[0] == pytest.approx(2 * 1.96 / math.sqrt(100), rel=0.25)


def test_bootstrap_ci_is_deterministic_and_resamples_rows_together():
    rng = np.random.default_rng(0)
    s = rng.normal(size=300)
    y = rng.random(300) < 0.5
    s = s + y
    a = M.bootstrap_ci(M.roc_auc, s, y, n_boot=200, seed=3, strata=y)
    assert a == M.bootstrap_ci(M.roc_auc, s, y, n_boot=200, seed=3, strata=y)
    assert a != M.bootstrap_ci(M.roc_auc, s, y, n_boot=200, seed=4, strata=y)
    assert a[0] <= M.roc_auc(s, y) <= a[1]
    # stratified resampling keeps the number of positives fixed
    assert M.bootstrap_ci(lambda v: float(v.sum()), y, n_boot=50, strata=y) == (float(y.sum()), float(y.sum()))
    nan = M.bootstrap_ci(lambda v: float("nan"), s, n_boot=20)
    assert all(math.isnan(v) for v in nan)
    with pytest.raises(ValueError):
        M.bootstrap_ci(M.roc_auc, s, y[:10])


# ------------------------------------------------------------------------------------------------- registry


def test_metric_registry_adds_a_metric_with_one_decorator():
    try:

        @M.metric("tpr_at_10pct_fpr", kind="scores")
        def tpr10(scores, is_positive):
            return M.tpr_at_fpr(scores, is_positive, 0.1)

        s = np.array([0.1, 0.4, 0.35, 0.8])
        y = np.array([0, 0, 1, 1], bool)
        out = M.score_metrics(s, y)
        assert out["tpr_at_10pct_fpr"] == M.tpr_at_fpr(s, y, 0.1)
        assert {"auc", "eer", "tpr_at_1pct_fpr"} <= set(out)
        assert set(M.label_metrics([1, 2], [1, 1])) >= {"accuracy", "macro_f1"}
        with pytest.raises(RegistryError):
            M.metric("auc", kind="scores")(lambda s, y: 0.0)
    finally:
        M.METRICS._entries.pop("tpr_at_10pct_fpr", None)

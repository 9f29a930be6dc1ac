"""Honest protocols for provenance: the auditor's data budget, fit / validation / test splits whose test rows no fit
ever sees, and operating points chosen on validation whose false-positive rate is then *realised* on test.

- :func:`audit_split`: per class, a seeded permutation cut into test, validation and fit rows; of the member
  class only ``budget`` (a share of the whole member set) goes to fitting.
- :func:`threshold_at_fpr`: the lowest threshold that accepts at most ``fpr`` of the given non-members.
- :func:`membership_metrics`: AUC on test, and TPR at each FPR target from one threshold per target chosen on
  validation, with the FPR that threshold realises on test and how many test non-members back it (a 0.1% FPR
  needs ≥ 1,000 of them to mean anything).
- :func:`evaluate_membership`: a :class:`~modelprint.provenance.base.MembershipAttack` fitted (training-free: on
  the validation rows; learned: on the fit rows), thresholded on validation, measured once on test.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelprint.errors import ProbeError
from modelprint.evaluation.metrics import roc_auc
from modelprint.provenance.base import MEMBER, MembershipAttack

__all__ = ["AuditSplit", "MembershipResult", "audit_split", "evaluate_membership", "fpr_key",
           "membership_metrics", "threshold_at_fpr"]

#: FPR targets reported by default: 1% and 0.1%.
FPRS = (0.01, 0.001)


@dataclass(frozen=True)
class AuditSplit:
    """Row indices of the fit (the auditor's budget), validation and test parts; disjoint, each sorted."""

    fit: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def to_dict(self) -> dict[str, int]:
        return {"fit": int(len(self.fit)), "val": int(len(self.val)), "test": int(len(self.test))}


def audit_split(labels: Sequence[Any], budget: float = 0.1, val_fraction: float = 0.2, test_fraction: float = 0.3,
                member_label: str = MEMBER, seed: int = 0) -> AuditSplit:
    """Stratified split of rows labelled ``labels``: per class, ``test_fraction`` of the rows are test and
    ``val_fraction`` validation; the remaining rows are fit rows, except that members contribute only
    ``round(budget × number of members)`` of them (at least one). The test rows of a class do not depend on
    ``budget``, so budgets compare on the same test set."""
    y = np.asarray(labels).astype(str)
    if not 0 < budget <= 1 or not 0 < test_fraction < 1 or not 0 < val_fraction < 1 or \
            val_fraction + test_fraction >= 1:
        raise ProbeError(f"audit split: need 0 < budget <= 1 and positive val/test fractions summing below 1, "
                         f"got budget {budget}, val {val_fraction}, test {test_fraction}")
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"fit": [], "val": [], "test": []}
    for cls in np.unique(y):
        rows = np.flatnonzero(y == cls)[rng.permutation(int((y == cls).sum()))]
        n_test, n_val = round(test_fraction * len(rows)), round(val_fraction * len(rows))
        if n_test < 1 or n_val < 1 or len(rows) - n_test - n_val < 1:
            raise ProbeError(f"audit split: class {cls!r} has {len(rows)} images, too few for fit, validation "
                             "and test rows")
        rest = rows[n_test + n_val:]
        if cls == member_label:
            want = max(1, round(budget * len(rows)))
            if want > len(rest):
                raise ProbeError(f"audit split: a budget of {budget:.0%} of {len(rows)} members is {want} "
                                 f"images, but only {len(rest)} are left after validation and test")
            rest = rest[:want]
        parts["test"].append(rows[:n_test])
        parts["val"].append(rows[n_test:n_test + n_val])
        parts["fit"].append(rest)
    return AuditSplit(**{k: np.sort(np.concatenate(v)) for k, v in parts.items()})


def threshold_at_fpr(negative_scores: np.ndarray, fpr: float) -> float:
    """The lowest threshold ``τ`` such that ``score > τ`` accepts at most ``fpr`` of ``negative_scores``
    (decide positive when ``score > τ``)."""
    neg = np.sort(np.asarray(negative_scores, dtype=np.float64))[::-1]
    if not len(neg) or not np.isfinite(neg).all():
        raise ProbeError("threshold at FPR: needs finite scores of at least one non-member")
    return float(neg[min(int(np.floor(fpr * len(neg) + 1e-9)), len(neg) - 1)])


def fpr_key(fpr: float) -> str:
    """``0.01`` → ``1pct``, ``0.001`` → ``0.1pct``."""
    return f"{100 * fpr:g}pct"


def membership_metrics(val_scores: np.ndarray, val_member: np.ndarray, test_scores: np.ndarray,
                       test_member: np.ndarray, fprs: Sequence[float] = FPRS) -> dict[str, Any]:
    """AUC on test; per FPR target a threshold from the validation non-members, with its TPR and realised FPR on
    test (keys ``tpr_at_1pct_fpr``, ``realised_fpr_at_1pct``, ``threshold_at_1pct``, and
    ``expected_false_positives_at_1pct``: how many test non-members back the target, ``fpr × n``)."""
    vs, vm = np.asarray(val_scores, dtype=np.float64), np.asarray(val_member, dtype=bool)
    ts, tm = np.asarray(test_scores, dtype=np.float64), np.asarray(test_member, dtype=bool)
    out: dict[str, Any] = {"auc": roc_auc(ts, tm), "n_test_members": int(tm.sum()),
                           "n_test_nonmembers": int((~tm).sum()), "n_val_nonmembers": int((~vm).sum())}
    for fpr in fprs:
        key = fpr_key(fpr)
        threshold = threshold_at_fpr(vs[~vm], fpr)
        out[f"threshold_at_{key}"] = threshold
        out[f"tpr_at_{key}_fpr"] = float(np.mean(ts[tm] > threshold)) if tm.any() else float("nan")
        out[f"realised_fpr_at_{key}"] = float(np.mean(ts[~tm] > threshold)) if (~tm).any() else float("nan")
        out[f"expected_false_positives_at_{key}"] = float(fpr * (~tm).sum())  # below 1: the figure means little
    return out


@dataclass
class MembershipResult:
    """A fitted attack, its validation scores and test metrics."""

    attack: MembershipAttack
    metrics: dict[str, Any]
    split: AuditSplit

    def to_dict(self) -> dict[str, Any]:
        chosen = getattr(self.attack, "chosen_", None)
        return {"attack": self.attack.name, "learned": self.attack.learned,
                "chosen": chosen.item() if isinstance(chosen, np.generic) else chosen,
                "split": self.split.to_dict(), **self.metrics}


def evaluate_membership(attack: MembershipAttack, measurements: np.ndarray, is_member: Sequence[bool],
                        split: AuditSplit, fprs: Sequence[float] = FPRS) -> MembershipResult:
    """Fit ``attack`` on its measurements of every row without looking at ``split.test`` (training-free attacks
    fit on the validation rows, learned ones on the fit rows), choose thresholds on the validation rows, and
    measure the test rows once."""
    x, member = np.asarray(measurements, dtype=np.float64), np.asarray(is_member, dtype=bool)
    if len(x) != len(member):
        raise ProbeError(f"{attack.name}: {len(x)} measured rows but {len(member)} labels")
    rows = split.fit if attack.learned else split.val
    attack.fit(x[rows], member[rows])
    val_scores = attack.decision_function(x[split.val])
    test_scores = attack.decision_function(x[split.test])
    metrics = membership_metrics(val_scores, member[split.val], test_scores, member[split.test], fprs)
    return MembershipResult(attack, metrics, split)

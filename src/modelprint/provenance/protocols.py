"""The provenance benchmark's protocols, on measurements already taken, so that one measurement of every test-bed
image serves every protocol and a script only orchestrates.

Rows are the images of a :class:`~modelprint.provenance.testbed.MembershipTestBed` (:func:`bed_images`), each
with its group (``member``, ``matched``, ``shifted``, ``generated``, ``other:<model>``); one
:func:`~modelprint.provenance.splits.audit_split` of those groups cuts fit / validation / test rows, and every
protocol below fits on fit rows (training-free attacks: on validation rows), picks timesteps, thresholds and
confidences on validation rows and touches the test rows once.

- :func:`membership_condition`: members against non-members of one kind (``share`` of them shifted, the rest
  matched: 0 is *matched*, 1 *shifted*, in between the mixing sweep), AUC and TPR at 1% / 0.1% FPR from one
  validation threshold each, the FPR it realises on test and how many test non-members back it;
  :func:`false_member_rate`: the share of the model's own generations that the matched operating point calls
  members; :func:`budget_sweep`: the same at several data budgets (share of the member set fitted on).
- :func:`per_timestep_auc` (the Goldilocks curves: one feature kind at one ``t``, its sign chosen on validation),
  :func:`kind_curves` (mean and spread of a kind per group against ``t``), :func:`weights_by_kind`.
- :func:`three_way`: member / generated / external with a calibrated :class:`ProvenanceClassifier`: macro accuracy,
  generated-vs-rest AUC, and what the ``uncertain`` answer costs and buys.
- :func:`attribution_with_reject`: :func:`~modelprint.provenance.attribution.choose_attributor` (threshold or
  learned rule) on candidates' own samples plus external images, every rule family scored beside the chosen one and
  beside plain lowest loss (both normalisations) that can never say ``none``.
- :func:`measure`: an attack's measurements with their cost (denoiser calls, backward passes, seconds per image).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.metrics import balanced_accuracy_score, confusion_matrix

from modelprint.errors import ProbeError
from modelprint.evaluation.metrics import bootstrap_ci, roc_auc
from modelprint.probes.attribution import NORMALISATIONS, LowestLoss
from modelprint.probes.base import ProbeProgress
from modelprint.probes.candidates import DiffusionCandidate
from modelprint.provenance.attribution import (
    NONE,
    AttributorChoice,
    LearnedRejectAttributor,
    choose_attributor,
    settings,
)
from modelprint.provenance.base import EXTERNAL, GENERATED, MEMBER, MembershipAttack
from modelprint.provenance.classifier import ProvenanceClassifier
from modelprint.provenance.splits import FPRS, AuditSplit, audit_split, evaluate_membership, fpr_key
from modelprint.provenance.testbed import MembershipTestBed

__all__ = ["ATTRIBUTION_RULES", "BUDGETS", "MATCHED", "SHARES", "SHIFTED", "Measured", "attribution_with_reject",
           "bed_images",
           "budget_sweep", "false_member_rate", "kind_curves", "measure", "membership_condition", "parse_feature",
           "per_timestep_auc", "three_way", "weights_by_kind"]

MATCHED, SHIFTED = "matched", "shifted"
#: Data budgets of the auditor: shares of the member set it may fit on.
BUDGETS = (0.01, 0.05, 0.1, 0.5)
#: Shares of shifted non-members in the mixing sweep.
SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass
class Measured:
    """One method's ``(n, S)`` measurements of the test-bed rows and their cost per image."""

    values: np.ndarray
    calls_per_image: float
    backwards_per_image: float
    seconds_per_image: float

    def cost(self) -> dict[str, float]:
        return {"calls_per_image": float(self.calls_per_image), "backwards_per_image": float(self.backwards_per_image),
                "seconds_per_image": float(self.seconds_per_image)}


def measure(attack: MembershipAttack, denoiser: DiffusionCandidate, images: np.ndarray,
            progress: ProbeProgress | None = None) -> Measured:
    """``attack.measure`` of ``images``, with denoiser calls counted and seconds timed in this run."""
    start, before = time.perf_counter(), denoiser.n_forward
    values = attack.measure(denoiser, images, progress)
    n = max(len(images), 1)
    return Measured(values, (denoiser.n_forward - before) / n, float(attack.backwards_per_image(denoiser)),
                    (time.perf_counter() - start) / n)


def bed_images(bed: MembershipTestBed) -> tuple[np.ndarray, np.ndarray]:
    """Every image of the test bed ``(n, H, W, 3)`` and its group: members, matched, shifted, generated, then
    ``other:<model>`` samples."""
    parts = [(MEMBER, bed.members), (MATCHED, bed.matched), (SHIFTED, bed.shifted), (GENERATED, bed.generated),
             *((f"other:{k}", v) for k, v in bed.others.items())]
    parts = [(g, v) for g, v in parts if len(v)]
    return np.concatenate([v for _, v in parts]), np.concatenate([[g] * len(v) for g, v in parts])


def _nonmembers(groups: np.ndarray, rows: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """Non-member rows of one part: ``round(share · m)`` shifted and the rest matched, ``m`` the smaller count."""
    matched, shifted = rows[groups[rows] == MATCHED], rows[groups[rows] == SHIFTED]
    m = min(len(matched), len(shifted)) if 0 < share < 1 else len(shifted if share else matched)
    k = round(share * m)
    return np.concatenate([rng.permutation(shifted)[:k], rng.permutation(matched)[:m - k]]).astype(int)


def _condition(groups: np.ndarray, split: AuditSplit, share: float, seed: int
               ) -> tuple[np.ndarray, np.ndarray, AuditSplit]:
    """Rows of the condition (members and non-members of each part), whether each is a member, and the split in
    the condition's own row numbers."""
    if not 0 <= share <= 1:
        raise ProbeError(f"share of shifted non-members must be in [0, 1], got {share}")
    rng = np.random.default_rng(seed)
    parts = {}
    for part in ("fit", "val", "test"):
        rows = getattr(split, part)
        parts[part] = np.sort(np.concatenate([rows[groups[rows] == MEMBER], _nonmembers(groups, rows, share, rng)]))
    rows = np.concatenate([parts["fit"], parts["val"], parts["test"]])
    sizes = np.cumsum([0, *(len(parts[p]) for p in ("fit", "val", "test"))])
    local = AuditSplit(*(np.arange(sizes[i], sizes[i + 1]) for i in range(3)))
    return rows, groups[rows] == MEMBER, local


def membership_condition(attack: MembershipAttack, values: np.ndarray, groups: Sequence[str], split: AuditSplit,
                         share: float = 0.0, seed: int = 0, fprs: Sequence[float] = FPRS
                         ) -> tuple[MembershipAttack, dict[str, Any]]:
    """A fresh clone of ``attack`` fitted and thresholded without the test rows, then measured on them, members
    against non-members of which ``share`` are shifted (the rest matched). Returns the fitted clone and its
    metrics (:func:`~modelprint.provenance.splits.membership_metrics` plus the chosen setting and row counts)."""
    g = np.asarray(groups).astype(str)
    rows, member, local = _condition(g, split, share, seed)
    result = evaluate_membership(clone(attack), np.asarray(values)[rows], member, local, fprs)
    return result.attack, {"share_shifted": float(share), **result.to_dict()}


def false_member_rate(attack: MembershipAttack, metrics: Mapping[str, Any], values: np.ndarray,
                      groups: Sequence[str], group: str = GENERATED, fprs: Sequence[float] = FPRS) -> dict[str, Any]:
    """Share of the rows of ``group`` (the model's own generations: no membership fit sees them) that the fitted
    ``attack`` calls members at each operating point of ``metrics``."""
    rows = np.flatnonzero(np.asarray(groups).astype(str) == group)
    if not len(rows):
        raise ProbeError(f"no {group!r} rows to measure a false-member rate on")
    scores = attack.decision_function(np.asarray(values)[rows])
    out: dict[str, Any] = {"n": int(len(rows))}
    for fpr in fprs:
        out[f"false_member_rate_at_{fpr_key(fpr)}"] = float(np.mean(scores > metrics[f"threshold_at_{fpr_key(fpr)}"]))
    return out


def budget_sweep(attack: MembershipAttack, values: np.ndarray, groups: Sequence[str],
                 budgets: Sequence[float] = BUDGETS, seed: int = 0, **split_kw: Any) -> list[dict[str, Any]]:
    """Matched membership metrics at each data budget; one test set for every budget (:func:`audit_split` keeps
    it). A budget too small to fit on is reported with ``skipped`` and the reason."""
    out = []
    for budget in budgets:
        try:
            split = audit_split(groups, budget=budget, seed=seed, **split_kw)
            _, metrics = membership_condition(attack, values, groups, split, 0.0, seed)
            out.append({"budget": float(budget), **metrics})
        except (ProbeError, ValueError) as err:
            out.append({"budget": float(budget), "skipped": str(err).splitlines()[0]})
    return out


_NAME = re.compile(r"^(?P<kind>[^@\[]+)(\[(?P<group>[^\]]*)\])?@t=(?P<t>\d+)$")


def parse_feature(name: str) -> tuple[str, str | None, int]:
    """``loss@t=10`` → ``("loss", None, 10)``; ``grad_params[conv_in]@t=5`` → ``("grad_params", "conv_in", 5)``."""
    match = _NAME.match(name)
    if match is None:
        raise ProbeError(f"not a trajectory feature name: {name!r}")
    return match["kind"], match["group"], int(match["t"])


def _by_kind(values: np.ndarray, names: Sequence[str]) -> dict[str, tuple[list[int], np.ndarray]]:
    """Per kind: its timesteps and ``(n, T)`` values (parameter groups averaged at each ``t``)."""
    cols: dict[str, dict[int, list[int]]] = {}
    for j, name in enumerate(names):
        kind, _, t = parse_feature(name)
        cols.setdefault(kind, {}).setdefault(t, []).append(j)
    x = np.asarray(values, dtype=np.float64)
    return {kind: (sorted(by_t), np.stack([x[:, by_t[t]].mean(axis=1) for t in sorted(by_t)], axis=1))
            for kind, by_t in cols.items()}


def per_timestep_auc(values: np.ndarray, names: Sequence[str], groups: Sequence[str], split: AuditSplit,
                     share: float = 0.0, seed: int = 0) -> dict[str, dict[str, list[float]]]:
    """Per feature kind and timestep, the test AUC of members against non-members (``share`` shifted) of that one
    feature, oriented by its sign on the validation rows (so no choice looks at the test rows)."""
    g = np.asarray(groups).astype(str)
    rows, member, local = _condition(g, split, share, seed)
    out = {}
    for kind, (steps, x) in _by_kind(np.asarray(values)[rows], names).items():
        aucs = []
        for j in range(x.shape[1]):
            sign = 1.0 if roc_auc(x[local.val, j], member[local.val]) >= 0.5 else -1.0
            aucs.append(float(roc_auc(sign * x[local.test, j], member[local.test])))
        out[kind] = {"timesteps": [int(t) for t in steps], "auc": aucs}
    return out


def kind_curves(values: np.ndarray, names: Sequence[str], groups: Sequence[str], kind: str = "loss"
                ) -> dict[str, dict[str, list[float]]]:
    """Mean and standard deviation of one feature kind (e.g. the log loss) per group against ``t``."""
    table = _by_kind(values, names)
    if kind not in table:
        raise ProbeError(f"trajectory features hold no {kind!r} columns")
    steps, x = table[kind]
    g = np.asarray(groups).astype(str)
    return {group: {"timesteps": [int(t) for t in steps], "mean": x[g == group].mean(axis=0).tolist(),
                    "sd": x[g == group].std(axis=0).tolist()} for group in dict.fromkeys(g)}


def weights_by_kind(weights: np.ndarray, names: Sequence[str]) -> dict[str, dict[str, list[float]]]:
    """A linear classifier's weights ``(d,)`` per standardised feature, per kind against ``t`` (parameter groups
    averaged)."""
    return {kind: {"timesteps": [int(t) for t in steps], "weight": x[0].tolist()}
            for kind, (steps, x) in _by_kind(np.asarray(weights, dtype=np.float64)[None, :], names).items()}


def _provenance_labels(groups: np.ndarray) -> np.ndarray:
    return np.where(groups == MEMBER, MEMBER, np.where(groups == GENERATED, GENERATED, EXTERNAL))


def three_way(values: np.ndarray, groups: Sequence[str], split: AuditSplit, model: str = "linear",
              target_accuracy: float = 0.95, seed: int = 0) -> tuple[ProvenanceClassifier, dict[str, Any]]:
    """Member / generated / external (matched, shifted and other models' samples) with a calibrated
    :class:`ProvenanceClassifier` fitted on the fit rows (a linear model's ``C`` chosen on them by cross-validation),
    its ``uncertain`` confidence chosen on the validation rows; on test: macro accuracy (mean per-class recall, every
    row answered), generated-vs-rest AUC, and the coverage and accuracy of the answers above the confidence.
    Returns the fitted classifier and the metrics."""
    x, y = np.asarray(values, dtype=np.float64), _provenance_labels(np.asarray(groups).astype(str))
    clf = ProvenanceClassifier(model, C="cv", target_accuracy=target_accuracy, seed=seed)  # type: ignore[arg-type]
    clf.fit(x[split.fit], y[split.fit], x[split.val], y[split.val])
    decided = clf.decide(x[split.test])
    truth, proba = y[split.test], decided.probabilities
    top = clf.classes_[proba.argmax(axis=1)]
    answered = decided.decisions != "uncertain"
    gen = list(clf.classes_).index(GENERATED) if GENERATED in clf.classes_ else None
    return clf, {"model": model, "classes": [str(c) for c in clf.classes_], "n_test": int(len(truth)),
            "macro_accuracy": float(balanced_accuracy_score(truth, top)),
            "accuracy": float(np.mean(top == truth)),
            "generated_vs_rest_auc": float(roc_auc(proba[:, gen], truth == GENERATED)) if gen is not None else None,
            "confidence_threshold": float(clf.confidence_), "coverage": float(answered.mean()),
            "accuracy_answered": float(np.mean(top[answered] == truth[answered])) if answered.any() else None,
            "confusion": confusion_matrix(truth, top, labels=clf.classes_).tolist()}


#: The rule families compared by :func:`attribution_with_reject`: name → :func:`choose_attributor` restriction.
ATTRIBUTION_RULES: dict[str, dict[str, Any]] = {
    "threshold_raw": {"normalisations": ("raw",), "kinds": ()},
    "threshold_standardised": {"normalisations": ("standardised",), "kinds": ()},
    "learned_own": {"normalisations": (), "kinds": ("own",)},
    "learned_signature": {"normalisations": (), "kinds": ("signature",)},
    "learned_multinomial": {"normalisations": (), "kinds": ("multinomial",)},
    "learned_relative": {"normalisations": (), "kinds": ("relative",)},
}


def _attribution_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    own = truth != NONE
    return {"accuracy": float(np.mean(pred == truth)), "accuracy_own_samples": float(np.mean(pred[own] == truth[own])),
            "external_rejected": float(np.mean(pred[~own] == NONE)) if (~own).any() else None,
            "macro_accuracy": float(balanced_accuracy_score(truth, pred))}


def _lineage_scores(attributor: Any, x: np.ndarray, truth: np.ndarray, lineages: dict[str, str]) -> dict[str, Any]:
    """The scores of the answer "which lineage, or none": a learned rule sums its candidates' probabilities per
    lineage and answers the most probable lineage at its own threshold; a threshold rule's answer is mapped to its
    lineage."""
    root = np.vectorize(lambda c: lineages.get(c, c), otypes=[str])
    if isinstance(attributor, LearnedRejectAttributor):
        proba, names = attributor.candidate_proba(x), root(attributor.classes_[:-1])
        roots = np.unique(names)
        summed = np.stack([proba[:, names == r].sum(axis=1) for r in roots], axis=1)
        pred = np.where(summed.max(axis=1) >= float(attributor.threshold), roots[summed.argmax(axis=1)], NONE)
    else:
        pred = root(attributor.predict(x))
    return {"lineages": dict(lineages), **_attribution_scores(pred, root(truth))}


def attribution_with_reject(signatures: np.ndarray, labels: Sequence[str], candidates: Sequence[str],
                            seed: int = 0, val_fraction: float = 0.3, test_fraction: float = 0.4,
                            lineages: dict[str, str] | None = None) -> dict[str, Any]:
    """Attribution among ``candidates`` with a ``none`` answer, from loss trajectories ``(n, K, T)`` of each
    candidate's own samples (label: its name) and external images (label ``none``).

    Per label a seeded split into fit, validation and test rows. The fit rows of both kinds are fitted on (the
    threshold rule calibrates on the candidates' own rows; the learned rule also learns from the external fit rows);
    the rule and its settings are chosen on validation (:func:`choose_attributor`) and the test rows are scored once:
    overall accuracy, on own samples and on external images. Each rule family (:data:`ATTRIBUTION_RULES`, its best
    setting on validation) is scored on the same test rows, and so is plain lowest loss (raw or standardised, no
    ``none``). ``macro_accuracy`` is the mean recall over the candidates and ``none``; ``accuracy_ci95`` the chosen
    rule's accuracy's 95% bootstrap interval over the test rows (resampled within each true answer). With
    ``lineages`` (candidate → the root of its chain of parents among the candidates, e.g. a fine-tune → its base
    model) the chosen rule's answers are also scored by lineage (``by_lineage``): a fine-tune taken for its base
    counts as right there."""
    x, y = np.asarray(signatures, dtype=np.float64), np.asarray(labels).astype(str)
    split = audit_split(y, budget=1.0, val_fraction=val_fraction, test_fraction=test_fraction, member_label="",
                        seed=seed)
    fit, val, test = split.fit, split.val, split.test
    truth = y[test]
    own = truth != NONE
    rules, table, best = {}, [], None
    for family, restriction in ATTRIBUTION_RULES.items():
        family_choice = choose_attributor(x[fit], y[fit], x[val], y[val], candidates, **restriction)
        table += family_choice.validation
        chosen = settings(family_choice.attributor)
        val_row = next(r for r in family_choice.validation if all(r[k] == v for k, v in chosen.items()))
        rules[family] = {**chosen, "validation": {k: val_row[k] for k in ("accuracy", "accuracy_own_samples",
                                                                            "external_rejected")},
                         "test": _attribution_scores(family_choice.attributor.predict(x[test]), truth)}
        if best is None or val_row["accuracy"] > best[0]:  # ties: the earlier family, as choose_attributor
            best = (val_row["accuracy"], family_choice.attributor)
    assert best is not None
    choice = AttributorChoice(best[1], table)
    pred = choice.attributor.predict(x[test])
    plain: dict[str, Any] = {}
    fit_own, val_own = fit[y[fit] != NONE], val[y[val] != NONE]
    for normalisation in NORMALISATIONS:
        rule = LowestLoss(tuple(candidates), normalisation=normalisation).fit(x[fit_own].reshape(len(fit_own), -1),
                                                                               y[fit_own])
        guess = rule.predict(x[test].reshape(len(test), -1))
        plain[normalisation] = {
            "val_accuracy_own_samples": float(np.mean(rule.predict(x[val_own].reshape(len(val_own), -1))
                                                      == y[val_own])),
            "accuracy": float(np.mean(guess == truth)),
            "accuracy_own_samples": float(np.mean(guess[own] == truth[own]))}
    plain["chosen_on_validation"] = max(NORMALISATIONS, key=lambda k: plain[k]["val_accuracy_own_samples"])
    classes = [*sorted(candidates), NONE]
    interval = bootstrap_ci(lambda p, t: float(np.mean(p == t)), pred, truth, strata=truth, seed=seed)
    return {"candidates": list(candidates), "n_fit": int(len(fit)), "n_fit_external": int(np.sum(y[fit] == NONE)),
            "n_val": int(len(val)), "n_test": int(len(test)), "n_test_external": int((~own).sum()),
            **choice.to_dict(), **_attribution_scores(pred, truth), "accuracy_ci95": list(interval),
            **({"by_lineage": _lineage_scores(choice.attributor, x[test], truth, lineages)} if lineages else {}),
            "confusion": {"labels": classes, "matrix": confusion_matrix(truth, pred, labels=classes).tolist()},
            "rules": rules, "lowest_loss_without_reject": plain}

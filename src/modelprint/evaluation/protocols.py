"""Evaluation protocols on fingerprint embeddings: 1:N identification, 1:1 verification, open set, clustering.

Everything is computed from an ``(n, d)`` embedding matrix and one model label per row, with cosine similarity
on L2-normalised embeddings, and is deterministic given ``seed``. Each protocol draws its randomness from its
own child of ``numpy.random.SeedSequence(seed)``, so e.g. changing ``pairs`` does not change the support split.

1. **Identification** — per class, ``support`` random images form the prototype (mean, renormalised); the other
   images are queries, predicted by the most similar prototype. Classes with fewer than ``support + 1`` images
   are dropped from *all* protocols and listed, with the reason, in :attr:`EvaluationResult.dropped_classes`.
2. **Verification** — the query images are split per class into a validation and a test side (no image is on
   both sides); balanced same-model / different-model pairs are drawn within each side; the decision threshold
   is the one maximising validation accuracy, and all reported numbers are measured on the test pairs.
3. **Open set** — ``open_set_fraction`` of the classes (at least one, chosen by seed) are held out as unknown;
   score = max cosine to the known prototypes; AUROC (known vs unknown) and OSCR; and the operating point
   ``modelprint identify`` would use: the gallery's "unknown" threshold calibrated on the known models' support
   images (:func:`modelprint.gallery.calibrate`), with the rates it gives on the known and unknown queries.
   Every registered rejection rule (:mod:`modelprint.evaluation.openset`) is scored on the same queries.
4. **Clustering** — silhouette (cosine) and Davies–Bouldin of the query embeddings by true label.

With ``query_embeddings`` (one row per row of ``embeddings``: e.g. the same images after JPEG), prototypes and the
gallery calibration come from ``embeddings`` and every query side (identification queries, the second image of
each verification pair, open-set queries, clustering) from ``query_embeddings``: clean enrolment, degraded
queries. With ``adaptation`` (:mod:`modelprint.gallery.adaptation`), it is fit on the support rows only and every
embedding is mapped through it before the protocols.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from modelprint.errors import DatasetError
from modelprint.evaluation import metrics as M
from modelprint.evaluation.openset import evaluate_open_set
from modelprint.evaluation.results import (
    THRESHOLD_RULE,
    ClusteringResult,
    EvaluationResult,
    IdentificationResult,
    SupportSplit,
    VerificationResult,
    ci,
    num,
)
from modelprint.gallery.adaptation import Adaptation
from modelprint.scores import l2_normalize

__all__ = [
    "PairSplit",
    "SupportSplit",
    "draw_verification_pairs",
    "evaluate_clustering",
    "evaluate_embeddings",
    "evaluate_identification",
    "evaluate_open_set",
    "evaluate_verification",
    "split_support",
    "too_small",
    "verification_from_scores",
]

MAX_ROC_POINTS = 200
MAX_ERRORS = 50


# ----------------------------------------------------------------------------------------------- helpers


def too_small(counts: Mapping[str, int], minimum: int, rule: str) -> dict[str, dict[str, Any]]:
    """``{label: {"images": n, "reason": ...}}`` for the labels with fewer than ``minimum`` images (``rule`` names
    where the minimum comes from, e.g. ``"support + 1"``)."""
    return {
        str(label): {"images": int(n), "reason": f"{n} image(s), fewer than {rule} = {minimum}"}
        for label, n in sorted(counts.items())
        if n < minimum
    }


def _int_seed(seq: np.random.SeedSequence) -> int:
    return int(seq.generate_state(1)[0])


def _triu_unrank(r: NDArray[np.int64], m: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Map ranks ``r`` in ``[0, m(m-1)/2)`` to pairs ``i < j`` in row-major order of the upper triangle."""
    r = np.asarray(r, dtype=np.int64)

    def start(i: NDArray[np.int64]) -> NDArray[np.int64]:  # rank of pair (i, i + 1)
        return i * (2 * m - i - 1) // 2

    b = 2 * m - 1
    i = np.floor((b - np.sqrt(np.maximum(b * b - 8.0 * r, 0.0))) / 2.0).astype(np.int64)
    i = np.clip(i, 0, m - 2)
    i = np.where(start(i) > r, i - 1, i)  # fix floating-point rounding either way
    i = np.where((i + 1 <= m - 2) & (start(i + 1) <= r), i + 1, i)
    j = i + 1 + (r - start(i))
    return i, j


def _sample_pairs(
    rng: np.random.Generator, groups: list[NDArray[np.int64]], n_each: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Up to ``n_each`` distinct same-group and as many distinct different-group pairs (equal counts).

    Pairs are drawn uniformly without replacement from all possible pairs, by ranking them block by block
    (one block per group for positives, per group pair for negatives), so nothing quadratic is materialised.
    """
    sizes = np.array([g.size for g in groups], dtype=np.int64)
    pos_sizes = sizes * (sizes - 1) // 2
    a_idx, b_idx = np.triu_indices(len(groups), k=1)
    neg_sizes = sizes[a_idx] * sizes[b_idx]
    k = int(min(n_each, pos_sizes.sum(), neg_sizes.sum()))
    empty = np.empty((0, 2), dtype=np.int64)
    if k <= 0:
        return empty, empty

    pos = np.empty((k, 2), dtype=np.int64)
    ranks = np.sort(rng.choice(int(pos_sizes.sum()), size=k, replace=False))
    starts = np.concatenate([[0], np.cumsum(pos_sizes)])
    block = np.searchsorted(starts, ranks, side="right") - 1
    for g in np.unique(block):
        sel = block == g
        i, j = _triu_unrank(ranks[sel] - starts[g], int(sizes[g]))
        pos[sel, 0], pos[sel, 1] = groups[g][i], groups[g][j]

    neg = np.empty((k, 2), dtype=np.int64)
    ranks = np.sort(rng.choice(int(neg_sizes.sum()), size=k, replace=False))
    starts = np.concatenate([[0], np.cumsum(neg_sizes)])
    block = np.searchsorted(starts, ranks, side="right") - 1
    for blk in np.unique(block):
        sel = block == blk
        off = ranks[sel] - starts[blk]
        ga, gb = groups[a_idx[blk]], groups[b_idx[blk]]
        neg[sel, 0], neg[sel, 1] = ga[off // gb.size], gb[off % gb.size]
    return pos, neg


@dataclass(frozen=True)
class PairSplit:
    """Verification pairs (row indices into the embedding matrix) split into disjoint validation/test images."""

    val_pairs: NDArray[np.int64]  # (k, 2)
    val_same: NDArray[np.bool_]  # (k,)
    test_pairs: NDArray[np.int64]
    test_same: NDArray[np.bool_]
    val_images: NDArray[np.int64]
    test_images: NDArray[np.int64]


def draw_verification_pairs(
    image_indices: Sequence[int] | NDArray[np.int64],
    codes: Sequence[int] | NDArray[np.int64],
    *,
    pairs: int,
    val_fraction: float,
    seed: int | np.random.SeedSequence,
) -> PairSplit:
    """Split images per class into validation/test sides, then draw balanced pairs within each side.

    ``image_indices`` are the candidate rows (the query images) and ``codes`` their integer class labels.
    Each class with at least two images puts ``round(val_fraction * m)`` of them (clipped to ``[1, m - 1]``) on
    the validation side; a single image goes to validation with probability ``val_fraction``. The validation
    side gets ``round(pairs * val_fraction)`` pairs, the test side the rest, each half same-class and half
    different-class (fewer if the side has fewer distinct pairs, always balanced).
    """
    rng = np.random.default_rng(seed)
    idx = np.asarray(image_indices, dtype=np.int64)
    cls = np.asarray(codes)
    if idx.shape != cls.shape:
        raise ValueError("image_indices and codes differ in length")
    val_groups: list[NDArray[np.int64]] = []
    test_groups: list[NDArray[np.int64]] = []
    for c in np.unique(cls):
        members = rng.permutation(idx[cls == c])
        m = members.size
        n_val = min(max(int(round(val_fraction * m)), 1), m - 1) if m >= 2 else int(rng.random() < val_fraction)
        val_groups.append(np.sort(members[:n_val]))
        test_groups.append(np.sort(members[n_val:]))

    def side(groups: list[NDArray[np.int64]], n_pairs: int) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
        groups = [g for g in groups if g.size]
        pos, neg = _sample_pairs(rng, groups, n_pairs // 2)
        both = np.concatenate([pos, neg])
        return both, np.concatenate([np.ones(len(pos), bool), np.zeros(len(neg), bool)])

    n_val_pairs = int(round(pairs * val_fraction))
    val_pairs, val_same = side(val_groups, n_val_pairs)
    test_pairs, test_same = side(test_groups, pairs - n_val_pairs)
    return PairSplit(
        val_pairs,
        val_same,
        test_pairs,
        test_same,
        np.sort(np.concatenate(val_groups)) if val_groups else np.empty(0, np.int64),
        np.sort(np.concatenate(test_groups)) if test_groups else np.empty(0, np.int64),
    )


def verification_from_scores(
    val_scores: NDArray[np.float64],
    val_same: NDArray[np.bool_],
    test_scores: NDArray[np.float64],
    test_same: NDArray[np.bool_],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> VerificationResult:
    """Verification metrics from pair scores: the threshold is chosen from the validation pairs **only**.

    ``threshold`` maximises validation accuracy (:func:`~modelprint.evaluation.metrics.best_threshold`); AUC,
    EER, TPR@1%FPR, the ROC curve, accuracy at that threshold and their bootstrap CIs (pairs resampled within
    same/different strata) are measured on the test pairs.
    """
    val_scores, val_same = np.asarray(val_scores, np.float64), np.asarray(val_same, bool)
    test_scores, test_same = np.asarray(test_scores, np.float64), np.asarray(test_same, bool)
    for name, same in (("validation", val_same), ("test", test_same)):
        if same.size == 0 or same.all() or not same.any():
            return VerificationResult(
                skipped=f"not enough query images to form both same-model and different-model {name} pairs",
                n_val_pairs=int(val_same.size),
                n_test_pairs=int(test_same.size),
            )
    threshold = M.best_threshold(val_scores, val_same, rule="accuracy")
    eer_rate, eer_thr = M.eer(test_scores, test_same)
    fpr, tpr, _ = M.roc_curve_points(test_scores, test_same, max_points=MAX_ROC_POINTS)
    ss = np.random.SeedSequence(seed).spawn(2)

    def acc(s: NDArray[np.float64], y: NDArray[np.bool_]) -> float:
        return float(np.mean((s >= threshold) == y))

    return VerificationResult(
        auc=num(M.roc_auc(test_scores, test_same)),
        auc_ci=ci(M.bootstrap_ci(M.roc_auc, test_scores, test_same, n_boot=n_boot, seed=_int_seed(ss[0]),
                                  alpha=alpha, strata=test_same)),
        eer=num(eer_rate),
        eer_threshold=num(eer_thr),
        tpr_at_1pct_fpr=num(M.tpr_at_fpr(test_scores, test_same, 0.01)),
        accuracy=num(acc(test_scores, test_same)),
        accuracy_ci=ci(M.bootstrap_ci(acc, test_scores, test_same, n_boot=n_boot, seed=_int_seed(ss[1]),
                                       alpha=alpha, strata=test_same)),
        threshold=num(threshold),
        val_accuracy=num(acc(val_scores, val_same)),
        n_val_pairs=int(val_same.size),
        n_test_pairs=int(test_same.size),
        metrics={  # registered score metrics beyond the built-in fields above
            k: num(v)
            for k, v in M.score_metrics(test_scores, test_same).items()
            if k not in {f.name for f in dataclasses.fields(VerificationResult)}
        },
        roc_fpr=[float(v) for v in fpr],
        roc_tpr=[float(v) for v in tpr],
    )


# ----------------------------------------------------------------------------------------------- protocols


def split_support(
    x: NDArray[np.float64], codes: NDArray[np.int64], classes: list[str], support: int, seed: np.random.SeedSequence,
    xq: NDArray[np.float64] | None = None,
) -> SupportSplit:
    """Draw ``support`` rows per class of the normalised embeddings ``x`` as its prototype; the rest are queries,
    scored with their rows of ``xq`` (default ``x``)."""
    rng = np.random.default_rng(seed)
    support_rows, query_rows = [], []
    for c in range(len(classes)):
        members = rng.permutation(np.flatnonzero(codes == c))
        support_rows.append(members[:support])
        query_rows.append(np.sort(members[support:]))
    protos = l2_normalize(np.stack([x[r].mean(axis=0) for r in support_rows]))
    queries = np.concatenate(query_rows)
    xq = x if xq is None else xq
    return SupportSplit(classes, codes, support_rows, protos, queries, codes[queries], xq[queries] @ protos.T)


def evaluate_identification(
    split: SupportSplit, *, n_boot: int, seed: np.random.SeedSequence, paths: Sequence[str] | None = None
) -> IdentificationResult:
    """1:N identification of the queries by their most similar prototype, with bootstrap intervals; ``paths``
    (one per row) name the images in the list of the most confident mistakes."""
    keep, queries, q_true, q_sims = split.classes, split.queries, split.query_classes, split.query_scores
    q_pred = np.argmax(q_sims, axis=1)
    names = np.array(keep)
    ident = M.identification_metrics(names[q_true], names[q_pred], labels=keep)
    s_ids = np.random.SeedSequence(_int_seed(seed)).spawn(2)
    acc_ci = M.bootstrap_ci(M.accuracy, q_true, q_pred, n_boot=n_boot, seed=_int_seed(s_ids[0]), strata=q_true)
    f1_ci = M.bootstrap_ci(
        lambda t, p: M.macro_f1(t, p, labels=range(len(keep))), q_true, q_pred,
        n_boot=n_boot, seed=_int_seed(s_ids[1]), strata=q_true,
    )
    wrong = np.flatnonzero(q_pred != q_true)
    wrong = wrong[np.argsort(-q_sims[wrong, q_pred[wrong]], kind="stable")][:MAX_ERRORS]
    errors = [
        {
            "index": int(queries[i]),
            **({"path": str(paths[queries[i]])} if paths is not None else {}),
            "true": keep[q_true[i]],
            "predicted": keep[q_pred[i]],
            "score": float(q_sims[i, q_pred[i]]),
            "score_true": float(q_sims[i, q_true[i]]),
        }
        for i in wrong
    ]
    return IdentificationResult(
        accuracy=num(ident["accuracy"]),
        accuracy_ci=ci(acc_ci),
        macro_f1=num(ident["macro_f1"]),
        macro_f1_ci=ci(f1_ci),
        labels=list(keep),
        confusion_matrix=ident["confusion_matrix"],
        per_class_accuracy={c: num(v) for c, v in ident["per_class_accuracy"].items()},
        n_support=int(len(split.support_rows[0])),
        n_queries=int(queries.size),
        errors=errors,
    )


def evaluate_verification(
    x: NDArray[np.float64],
    split: SupportSplit,
    *,
    pairs: int,
    val_fraction: float,
    n_boot: int,
    pair_seed: np.random.SeedSequence,
    boot_seed: np.random.SeedSequence,
    xq: NDArray[np.float64] | None = None,
) -> VerificationResult:
    """1:1 verification on balanced pairs of query images (:func:`draw_verification_pairs`), the threshold chosen
    on the validation side (:func:`verification_from_scores`); a pair's second image is its row of ``xq``."""
    xq = x if xq is None else xq
    pair_split = draw_verification_pairs(split.queries, split.query_classes, pairs=pairs, val_fraction=val_fraction,
                                         seed=pair_seed)

    def pair_scores(p: NDArray[np.int64]) -> NDArray[np.float64]:
        return np.einsum("ij,ij->i", x[p[:, 0]], xq[p[:, 1]]) if len(p) else np.empty(0)

    result = verification_from_scores(
        pair_scores(pair_split.val_pairs), pair_split.val_same, pair_scores(pair_split.test_pairs),
        pair_split.test_same, n_boot=n_boot, seed=_int_seed(boot_seed),
    )
    result.n_val_images = int(pair_split.val_images.size)
    result.n_test_images = int(pair_split.test_images.size)
    return result


def evaluate_clustering(
    x: NDArray[np.float64], split: SupportSplit, *, seed: np.random.SeedSequence
) -> ClusteringResult:
    """Silhouette (cosine) and Davies–Bouldin of the query embeddings ``x[split.queries]`` by true class."""
    xq, labels = x[split.queries], split.query_classes
    return ClusteringResult(
        silhouette=num(M.silhouette_cosine(xq, labels, seed=_int_seed(seed))),
        davies_bouldin=num(M.davies_bouldin(xq, labels)),
        n=int(split.queries.size),
    )


def evaluate_embeddings(
    embeddings: NDArray[Any],
    labels: Sequence[str],
    *,
    support: int = 5,
    pairs: int = 2000,
    seed: int = 0,
    val_fraction: float = 0.5,
    open_set_fraction: float = 0.25,
    n_boot: int = 1000,
    method: str = "",
    paths: Sequence[str] | None = None,
    dropped: Mapping[str, dict[str, Any]] | None = None,
    query_embeddings: NDArray[Any] | None = None,
    adaptation: Adaptation | None = None,
) -> EvaluationResult:
    """Run the four protocols (see the module docstring) on ``embeddings`` labelled by model.

    ``paths`` (one per row, optional) name the images in the list of identification mistakes. ``dropped``
    lists classes the caller left out before (as :func:`too_small` does); they are reported with those dropped
    here. ``query_embeddings`` and ``adaptation``: see the module docstring. Raises
    :class:`~modelprint.errors.DatasetError` when fewer than two models have ``support + 1`` images.
    """
    x = np.asarray(embeddings)
    labels = [str(v) for v in labels]
    _check_arguments(x, labels, paths, support, val_fraction, open_set_fraction, pairs, n_boot)
    x = l2_normalize(x, np.float64)
    xq = x
    if query_embeddings is not None:
        q = np.asarray(query_embeddings)
        if q.shape != x.shape or not np.all(np.isfinite(q)):
            raise ValueError(f"query_embeddings must be finite and shaped like embeddings {x.shape}, got {q.shape}")
        xq = l2_normalize(q, np.float64)
    names, counts = np.unique(np.array(labels, dtype=str), return_counts=True)
    keep = [str(n) for n, c in zip(names, counts, strict=True) if c >= support + 1]
    dropped = {**(dropped or {}), **too_small(dict(zip(names.tolist(), counts.tolist(), strict=True)), support + 1,
                                              "support + 1")}
    if len(keep) < 2:
        raise DatasetError(
            f"evaluation needs at least 2 models with >= {support + 1} images (support {support} + 1 query); "
            f"got {len(keep)} (image counts: {dict(zip(names.tolist(), counts.tolist(), strict=True))})"
        )
    code_of = {n: i for i, n in enumerate(keep)}
    codes = np.array([code_of.get(lab, -1) for lab in labels], dtype=np.int64)
    seq_support, seq_pairs, seq_open, seq_boot, seq_cluster = np.random.SeedSequence(seed).spawn(5)
    boot_id, boot_ver = seq_boot.spawn(2)
    split = split_support(x, codes, keep, support, seq_support, xq)
    if adaptation is not None:
        rows = np.concatenate(split.support_rows)
        adaptation.fit(x[rows], codes[rows])
        x, xq = adaptation.transform(x), (adaptation.transform(xq) if query_embeddings is not None else None)
        xq = x if xq is None else xq
        split = split_support(x, codes, keep, support, seq_support, xq)  # same rows: the draw depends on codes only
    return EvaluationResult(
        method=method,
        seed=int(seed),
        support=int(support),
        n_models=len(keep),
        n_images=int(np.sum(codes >= 0)),
        labels=list(keep),
        identification=evaluate_identification(split, n_boot=n_boot, seed=boot_id, paths=paths),
        verification=evaluate_verification(x, split, pairs=pairs, val_fraction=val_fraction, n_boot=n_boot,
                                           pair_seed=seq_pairs, boot_seed=boot_ver, xq=xq),
        open_set=evaluate_open_set(x, split, open_set_fraction=open_set_fraction, seed=seq_open, xq=xq),
        clustering=evaluate_clustering(xq, split, seed=seq_cluster),
        dropped_classes=dropped,
        config={
            "pairs": int(pairs),
            "val_fraction": float(val_fraction),
            "open_set_fraction": float(open_set_fraction),
            "n_boot": int(n_boot),
            "similarity": "cosine on L2-normalised embeddings",
            "threshold_rule": THRESHOLD_RULE,
            "queries": "query_embeddings" if query_embeddings is not None else "embeddings",
            "adaptation": adaptation.name + "@" + adaptation.version if adaptation is not None else None,
        },
    )


def _check_arguments(
    x: NDArray[Any], labels: list[str], paths: Sequence[str] | None, support: int, val_fraction: float,
    open_set_fraction: float, pairs: int, n_boot: int,
) -> None:
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D (n, d) array, got shape {x.shape}")
    if x.shape[0] != len(labels):
        raise ValueError(f"{x.shape[0]} embeddings but {len(labels)} labels")
    if paths is not None and len(paths) != len(labels):
        raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
    if not np.all(np.isfinite(x)):
        raise ValueError("embeddings contain NaN or infinite values")
    if support < 1:
        raise ValueError(f"support must be >= 1, got {support}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if not 0.0 < open_set_fraction < 1.0:
        raise ValueError(f"open_set_fraction must be in (0, 1), got {open_set_fraction}")
    if pairs < 0 or n_boot < 0:
        raise ValueError("pairs and n_boot must be >= 0")

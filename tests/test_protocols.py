"""Evaluation protocols on synthetic embeddings."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from modelprint.errors import DatasetError
from modelprint.evaluation import (
    EvaluationResult,
    draw_verification_pairs,
    evaluate_embeddings,
    too_small,
    verification_from_scores,
)

N_BOOT = 100


def clustered(n_classes=6, per_class=30, dim=16, noise=0.15, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_classes, dim))
    labels = [f"model_{c}" for c in range(n_classes) for _ in range(per_class)]
    x = np.repeat(centers, per_class, axis=0) + noise * rng.normal(size=(n_classes * per_class, dim))
    return x.astype(np.float32), labels


def random_embeddings(n_classes=6, per_class=40, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n_classes * per_class, dim)), [f"m{c}" for c in range(n_classes) for _ in range(per_class)]


def dotted(d, key):
    for part in key.split("."):
        d = d[part]
    return d


@pytest.fixture(scope="module")
def separated():
    x, y = clustered()
    return x, y, evaluate_embeddings(x, y, seed=0, n_boot=N_BOOT, method="toy@1")


def test_well_separated_is_near_perfect(separated):
    _, _, r = separated
    assert r.n_models == 6 and r.n_images == 180
    assert r.identification.accuracy >= 0.99
    assert r.identification.macro_f1 >= 0.99
    assert r.identification.n_queries == 6 * 25 and r.identification.n_support == 5
    assert r.verification.auc >= 0.99
    assert r.verification.eer <= 0.02
    assert r.verification.accuracy >= 0.97
    assert r.open_set.auroc >= 0.95 and r.open_set.oscr >= 0.95
    assert len(r.open_set.unknown_classes) == 2  # round(0.25 * 6)
    assert r.clustering.silhouette > 0.5
    assert r.clustering.davies_bouldin < 1.0


def test_evaluate_embeddings_composes_one_function_per_protocol(separated):
    from modelprint.evaluation import (
        evaluate_clustering,
        evaluate_identification,
        evaluate_open_set,
        evaluate_verification,
        split_support,
    )
    from modelprint.scores import l2_normalize

    x, y, r = separated
    xn = l2_normalize(x, np.float64)
    classes = sorted(set(y))
    codes = np.array([classes.index(v) for v in y])
    seq_support, seq_pairs, seq_open, seq_boot, seq_cluster = np.random.SeedSequence(0).spawn(5)
    boot_id, boot_ver = seq_boot.spawn(2)
    split = split_support(xn, codes, classes, 5, seq_support)
    assert evaluate_identification(split, n_boot=N_BOOT, seed=boot_id) == r.identification
    assert evaluate_verification(xn, split, pairs=2000, val_fraction=0.5, n_boot=N_BOOT, pair_seed=seq_pairs,
                                 boot_seed=boot_ver) == r.verification
    assert evaluate_open_set(xn, split, open_set_fraction=0.25, seed=seq_open) == r.open_set
    assert evaluate_clustering(xn, split, seed=seq_cluster) == r.clustering


def test_to_dict_keys_json_and_round_trip(separated, tmp_path):
    _, _, r = separated
    d = r.to_dict()
    for key in [
        "identification.accuracy", "identification.macro_f1", "verification.auc", "verification.eer",
        "verification.accuracy", "n_models", "n_images", "seed", "support", "method", "open_set.auroc",
        "open_set.oscr", "clustering.silhouette", "clustering.davies_bouldin", "identification.confusion_matrix",
        "identification.labels", "verification.roc_fpr", "verification.roc_tpr", "verification.threshold",
    ]:
        dotted(d, key)
    for key in ["identification.accuracy_ci", "identification.macro_f1_ci", "verification.auc_ci",
                "verification.accuracy_ci"]:
        ci = dotted(d, key)
        assert isinstance(ci, list) and len(ci) == 2 and ci[0] <= ci[1]
    ident = d["identification"]
    assert ident["accuracy_ci"][0] <= ident["accuracy"] <= ident["accuracy_ci"][1]
    assert d["method"] == "toy@1"
    assert len(d["verification"]["roc_fpr"]) <= 200
    text = r.to_json(tmp_path / "out" / "result.json")
    assert json.loads(text) == json.loads((tmp_path / "out" / "result.json").read_text()) == d
    assert json.loads(json.dumps(d, allow_nan=False)) == d  # plain JSON: no numpy types, no NaN
    assert EvaluationResult.from_json(tmp_path / "out" / "result.json").to_dict() == d
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["result.json"]  # no temp files left


def test_random_embeddings_are_near_chance():
    x, y = random_embeddings()
    r = evaluate_embeddings(x, y, seed=0, n_boot=N_BOOT)
    assert abs(r.identification.accuracy - 1 / 6) < 0.12
    assert abs(r.verification.auc - 0.5) < 0.1
    assert abs(r.verification.accuracy - 0.5) < 0.1
    assert abs(r.open_set.auroc - 0.5) < 0.15
    assert abs(r.clustering.silhouette) < 0.1
    ci = r.identification.accuracy_ci
    assert ci[0] <= r.identification.accuracy <= ci[1]


def test_deterministic_by_seed_and_paths_name_mistakes():
    x, y = random_embeddings(per_class=20)
    paths = [f"/imgs/{i}.png" for i in range(len(y))]
    a = evaluate_embeddings(x, y, seed=5, n_boot=20, paths=paths).to_dict()
    b = evaluate_embeddings(x, y, seed=5, n_boot=20, paths=paths).to_dict()
    c = evaluate_embeddings(x, y, seed=6, n_boot=20, paths=paths).to_dict()
    assert a == b
    assert a != c
    errors = a["identification"]["errors"]
    assert errors and all(e["path"] == paths[e["index"]] and e["true"] != e["predicted"] for e in errors)
    assert all(e1["score"] >= e2["score"] for e1, e2 in itertools.pairwise(errors))  # most confident first


def test_support_split_is_independent_of_pair_count():
    x, y = random_embeddings(per_class=20)
    a = evaluate_embeddings(x, y, seed=1, n_boot=10, pairs=400)
    b = evaluate_embeddings(x, y, seed=1, n_boot=10, pairs=800)
    assert a.identification == b.identification
    assert a.verification.n_test_pairs < b.verification.n_test_pairs


def test_small_classes_are_dropped_and_listed():
    x, y = clustered(n_classes=4, per_class=10)
    rng = np.random.default_rng(1)
    x = np.vstack([x, rng.normal(size=(5 + 6, x.shape[1]))])
    y = y + ["five"] * 5 + ["six"] * 6  # support 5: "five" has no query image, "six" has one
    r = evaluate_embeddings(x, y, support=5, seed=0, n_boot=10)
    assert r.dropped_classes == {"five": {"images": 5, "reason": "5 image(s), fewer than support + 1 = 6"}}
    assert "five" not in r.labels and "six" in r.labels
    assert r.n_models == 5 and r.n_images == 46
    assert "five" not in r.identification.labels
    assert len(r.identification.confusion_matrix) == 5
    with pytest.raises(DatasetError, match="at least 2 models"):
        evaluate_embeddings(x[:15], ["a"] * 10 + ["b"] * 5, support=5, n_boot=10)


def test_classes_dropped_before_embedding_are_reported_with_those_dropped_here():
    x, y = clustered(n_classes=4, per_class=10)
    before = too_small({"model_0": 10, "tiny": 7}, 8, "support + 3")
    assert before == {"tiny": {"images": 7, "reason": "7 image(s), fewer than support + 3 = 8"}}
    r = evaluate_embeddings(x[:-4], y[:-4], support=6, seed=0, n_boot=10, dropped=before)  # model_3: 6 images
    assert r.dropped_classes == {"tiny": before["tiny"],
                                 "model_3": {"images": 6, "reason": "6 image(s), fewer than support + 1 = 7"}}
    assert EvaluationResult.from_dict(json.loads(r.to_json())).dropped_classes == r.dropped_classes


def test_results_of_the_previous_format_still_load():
    x, y = clustered(n_classes=3, per_class=10)
    d = evaluate_embeddings(x, y, n_boot=10).to_dict()
    d.update({"format": "modelprint.evaluation/1", "dropped_classes": {"five": 5}})
    for key in ("unknown_threshold", "threshold_rule", "known_accepted", "known_correct", "unknown_rejected"):
        del d["open_set"][key]
    old = EvaluationResult.from_dict(d)
    assert old.dropped_classes["five"]["images"] == 5 and old.open_set.unknown_threshold is None


def test_open_set_reports_the_operating_point_identify_uses(separated):
    from modelprint.gallery import calibrate

    x, y, r = separated
    osr = r.open_set
    assert osr.unknown_threshold is not None and "leave-one-out" in osr.threshold_rule
    # the same threshold a gallery enrolled with the known models' support images calibrates: identify's
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    rng = np.random.default_rng(np.random.SeedSequence(0).spawn(5)[0])
    support = {c: rng.permutation(np.flatnonzero(np.array(y) == c))[:5] for c in r.labels}
    enrolled = np.concatenate([support[c] for c in osr.known_classes])
    counts = np.full(len(osr.known_classes), 5)
    expected = calibrate(xn[enrolled].astype(np.float64), np.arange(0, counts.sum(), 5), counts)
    assert osr.unknown_threshold == pytest.approx(expected["unknown_threshold"])
    assert 0.9 <= osr.known_accepted <= 1.0 and osr.known_correct <= osr.known_accepted
    assert osr.unknown_rejected >= 0.9  # well-separated unknown models are answered "unknown"
    one_shot = evaluate_embeddings(x, y, support=1, seed=0, n_boot=10).open_set
    assert one_shot.unknown_threshold is None and one_shot.threshold_rule.startswith("none")


def test_argument_errors():
    x, y = clustered(n_classes=3, per_class=8)
    with pytest.raises(ValueError):
        evaluate_embeddings(x, y[:-1])
    with pytest.raises(ValueError):
        evaluate_embeddings(x, y, val_fraction=1.0)
    with pytest.raises(ValueError):
        evaluate_embeddings(x, y, support=0)
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError):
        evaluate_embeddings(bad, y)


def test_skips_with_reasons_on_tiny_data():
    x, y = clustered(n_classes=2, per_class=6)  # support 5 → one query per class
    r = evaluate_embeddings(x, y, n_boot=10)
    assert r.verification.skipped and r.verification.auc is None
    assert r.open_set.skipped and "3 models" in r.open_set.skipped
    d = r.to_dict()
    assert d["verification"]["auc"] is None and d["open_set"]["oscr"] is None
    json.dumps(d, allow_nan=False)


# --------------------------------------------------------------------------------------- verification split


def test_pairs_are_balanced_and_val_test_images_disjoint():
    codes = np.repeat(np.arange(5), 12)
    images = np.arange(100, 160)  # row indices of the query images
    split = draw_verification_pairs(images, codes, pairs=300, val_fraction=0.5, seed=0)
    assert set(split.val_images.tolist()).isdisjoint(split.test_images.tolist())
    assert set(split.val_images.tolist()) | set(split.test_images.tolist()) == set(images.tolist())
    label_of = dict(zip(images.tolist(), codes.tolist(), strict=True))
    for pairs, same, side in ((split.val_pairs, split.val_same, split.val_images),
                              (split.test_pairs, split.test_same, split.test_images)):
        assert set(pairs.ravel().tolist()) <= set(side.tolist())
        assert same.sum() == (~same).sum() > 0
        assert all((label_of[a] == label_of[b]) == s for (a, b), s in zip(pairs.tolist(), same, strict=True))
        assert np.all(pairs[:, 0] != pairs[:, 1])
        assert len({tuple(sorted(p)) for p in pairs.tolist()}) == len(pairs)  # no duplicates
    assert len(split.val_pairs) == 150 and len(split.test_pairs) == 150


def test_pair_sampling_exhausts_small_sides_exactly():
    codes = np.array([0] * 4 + [1] * 6 + [2] * 2)
    images = np.arange(codes.size)
    split = draw_verification_pairs(images, codes, pairs=10_000, val_fraction=0.5, seed=3)
    val_codes = codes[split.val_images]
    n_pos = sum(m * (m - 1) // 2 for m in np.bincount(val_codes))
    assert split.val_same.sum() == n_pos  # every same-model pair, each once (balanced by as many negatives)
    pos = {tuple(sorted(p)) for p in split.val_pairs[split.val_same].tolist()}
    assert len(pos) == n_pos


def test_threshold_comes_from_validation_pairs_only():
    rng = np.random.default_rng(0)
    val_same = np.repeat([True, False], 100)
    val_scores = rng.normal(size=200) + 1.5 * val_same
    test_same = np.repeat([True, False], 150)
    test_scores = rng.normal(size=300) + 1.5 * test_same
    base = verification_from_scores(val_scores, val_same, test_scores, test_same, n_boot=20)

    shifted_test = verification_from_scores(val_scores, val_same, test_scores + 0.7, test_same, n_boot=20)
    flipped_test = verification_from_scores(val_scores, val_same, -test_scores, test_same, n_boot=20)
    assert shifted_test.threshold == flipped_test.threshold == base.threshold
    assert shifted_test.accuracy != base.accuracy and flipped_test.auc < 0.5  # the test pairs were really used

    moved_val = verification_from_scores(val_scores + 0.7, val_same, test_scores, test_same, n_boot=20)
    assert moved_val.threshold != base.threshold
    assert moved_val.auc == base.auc  # nothing but the threshold depends on validation pairs
    assert base.accuracy == pytest.approx(np.mean((test_scores >= base.threshold) == test_same))
    assert base.n_val_pairs == 200 and base.n_test_pairs == 300

"""The learned attribution rule with a ``none`` answer: it reads the shape of the loss trajectory, so it rejects
external images that the per-candidate loss thresholds accept; it is chosen on validation rows only and survives a
save / load through the attributor file."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from modelprint.errors import CheckpointError, ProbeError
from modelprint.probes import DenoisingLossProbe
from modelprint.provenance import ATTRIBUTORS, NONE, LearnedRejectAttributor, RejectAttributor, choose_attributor
from modelprint.provenance.attribution import LEARNED_CS, LEARNED_KINDS
from modelprint.provenance.protocols import ATTRIBUTION_RULES, attribution_with_reject
from modelprint.provenance.splits import audit_split
from modelprint.provenance.workflow import AttributionModel

SHAPE = np.array([0.3, 0.15, 0.0, -0.15, -0.3])  # own samples: loss falls along t; external: rises (same mean)


def _same_level(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Log losses ``(n·(K+1), K, 5)``: through its own model a sample's loss is 0.5 lower than through the others,
    and external images' loss is as low as that through *every* candidate (photos are in-distribution for
    photo-trained models) but its shape along t is reversed: the level cannot tell them, the shape can."""
    rng = np.random.default_rng(seed)
    names = [f"m{j}" for j in range(k)] + [NONE]
    y = np.repeat(names, n)
    x = rng.normal(scale=0.15, size=(len(y), k, 5)) + 0.5
    for j in range(k):
        x[y == f"m{j}", j] += SHAPE - 0.5
    x[y == NONE] += -SHAPE - 0.5
    return x, y


def test_learned_rule_rejects_external_images_that_the_thresholds_accept() -> None:
    names = ["m0", "m1", "m2"]
    x, y = _same_level(40, 3, 0)
    x_val, y_val = _same_level(30, 3, 1)
    x_test, y_test = _same_level(60, 3, 2)
    outside = y_test == NONE
    threshold = choose_attributor(x, y, x_val, y_val, names, kinds=()).attributor
    assert isinstance(threshold, RejectAttributor)
    rejected_by_threshold = np.mean(threshold.predict(x_test[outside]) == NONE)
    for kind in LEARNED_KINDS:
        learned = LearnedRejectAttributor(names, kind).fit(x, y)  # type: ignore[arg-type]
        assert list(learned.classes_) == [*names, NONE]
        pred = learned.predict(x_test)
        assert np.mean(pred[outside] == NONE) >= 0.9 > rejected_by_threshold + 0.3, kind
        assert np.mean(pred[~outside] == y_test[~outside]) >= 0.9, kind
    choice = choose_attributor(x, y, x_val, y_val, names)
    assert choice.to_dict()["rule"] == "learned" and len(choice.validation) == 8 + len(LEARNED_KINDS) * len(LEARNED_CS)
    assert np.mean(choice.attributor.predict(x_test) == y_test) >= 0.9
    best = max(choice.validation, key=lambda r: r["accuracy"])
    assert best["accuracy"] == max(r["accuracy"] for r in choice.validation if r["rule"] == "learned")
    assert choice.attributor.threshold == next(r["threshold"] for r in choice.validation if r == best)


def _hard_images(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Log losses where how hard an image is to denoise (one offset per image and timestep, shared by every
    candidate, sd 2) dwarfs its own model's advantage (0.3 lower loss)."""
    rng = np.random.default_rng(seed)
    y = np.repeat([*(f"m{j}" for j in range(k)), NONE], n)
    x = rng.normal(scale=0.05, size=(len(y), k, 5)) + rng.normal(scale=2.0, size=(len(y), 1, 5))
    for j in range(k):
        x[y == f"m{j}", j] -= 0.3
    return x, y


def test_relative_rule_reads_small_differences_under_large_image_difficulty() -> None:
    names = [f"m{j}" for j in range(4)]
    x, y = _hard_images(15, 4, 0)
    x_test, y_test = _hard_images(100, 4, 2)
    own = y_test != NONE
    acc = {kind: np.mean(LearnedRejectAttributor(names, kind, C=1.0, threshold=0.0).fit(x, y).predict(x_test)[own]
                         == y_test[own]) for kind in ("multinomial", "relative")}
    assert acc["relative"] >= 0.95 and acc["multinomial"] <= acc["relative"] - 0.1, acc


def test_learned_rule_as_an_estimator() -> None:
    x, y = _same_level(10, 2, 0)
    model = LearnedRejectAttributor(("m0", "m1"), "signature", C=0.5, threshold=0.4)
    params = model.get_params()
    with pytest.raises(NotFittedError):
        model.predict(x)
    model.fit(x, y)
    assert model.get_params() == params and model.n_features_in_ == 10 and ATTRIBUTORS.get("learned") is type(model)
    margins = model.decision_function(x)
    assert margins.shape == (len(x), 2)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(model)).predict(x), model.predict(x))
    np.testing.assert_array_equal(clone(model).fit(x, y).decision_function(x), margins)
    np.testing.assert_array_equal(model.predict(x.reshape(len(x), -1)), model.predict(x))
    with pytest.raises(ProbeError, match="at least two rows labelled 'none'"):
        LearnedRejectAttributor(("m0", "m1")).fit(x[y != NONE], y[y != NONE])
    with pytest.raises(ProbeError, match="labels c are neither"):
        LearnedRejectAttributor(("m0", "m1")).fit(x, np.where(y == "m0", "c", y))
    with pytest.raises(ProbeError, match="do not split into the trajectories of 3"):
        LearnedRejectAttributor(("m0", "m1", "m2")).fit(x, y)
    with pytest.raises(ProbeError, match="kind must be one of"):
        LearnedRejectAttributor(("m0", "m1"), "deep").fit(x, y)  # type: ignore[arg-type]


def test_attribution_protocol_never_reads_the_test_rows() -> None:
    x, y = _same_level(50, 4, 0)
    names = ["m0", "m1", "m2", "m3"]
    result = attribution_with_reject(x, y, names, seed=0)
    test = audit_split(y, budget=1.0, val_fraction=0.3, test_fraction=0.4, member_label="", seed=0).test
    assert result["n_test"] == len(test) == 5 * 20 and result["n_fit_external"] == 15
    poisoned = x.copy()
    poisoned[test] = np.random.default_rng(1).normal(loc=5.0, size=poisoned[test].shape)  # junk where test rows are
    again = attribution_with_reject(poisoned, y, names, seed=0)
    assert again["validation"] == result["validation"] and again["rule"] == result["rule"]
    for family in ATTRIBUTION_RULES:
        assert again["rules"][family]["validation"] == result["rules"][family]["validation"]
    assert again["accuracy"] != result["accuracy"]  # the test rows are scored, once
    assert result["rule"] == "learned" and result["accuracy"] >= 0.9 and result["external_rejected"] >= 0.9
    assert result["rules"]["threshold_standardised"]["test"]["external_rejected"] < 0.5
    assert set(result["rules"]) == set(ATTRIBUTION_RULES)


def test_attribution_scored_by_lineage_and_by_class() -> None:
    x, y = _same_level(30, 4, 0)
    names = ["m0", "m1", "m2", "m3"]
    x[y == "m1"] = x[y == "m0"]  # m1 is a copy of m0: a fine-tune that did not move
    result = attribution_with_reject(x, y, names, seed=0, lineages={"m0": "m0", "m1": "m0", "m2": "m2", "m3": "m3"})
    confusion = np.array(result["confusion"]["matrix"])
    assert result["macro_accuracy"] == pytest.approx(np.mean(np.diag(confusion) / confusion.sum(axis=1)))
    assert result["accuracy_own_samples"] < 0.85  # m0 and m1 cannot be told apart
    lineage = result["by_lineage"]
    assert lineage["lineages"]["m1"] == "m0" and lineage["accuracy_own_samples"] >= 0.9
    assert lineage["accuracy"] > result["accuracy"] and "by_lineage" not in attribution_with_reject(
        x[:: 3], y[:: 3], names, seed=0)


def test_learned_attributor_file_round_trip(tmp_path: Path) -> None:
    x, y = _same_level(12, 2, 0)
    attributor = LearnedRejectAttributor(("m0", "m1"), "own", C=1.0, threshold=0.35).fit(x, y)
    model = AttributionModel(attributor, DenoisingLossProbe(timesteps=(1, 2, 3, 4, 5)), {"m0": "a" * 64,
                             "m1": "b" * 64}, x, y, [{"rule": "learned"}])
    model.save(tmp_path / "a.npz")
    loaded = AttributionModel.load(tmp_path / "a.npz")
    assert isinstance(loaded.attributor, LearnedRejectAttributor)
    assert loaded.settings() == model.settings() and loaded.candidates == ["m0", "m1"]
    np.testing.assert_allclose(loaded.attributor.decision_function(x), attributor.decision_function(x))
    assert loaded.settings()["rule"] == "learned" and loaded.settings()["threshold"] == 0.35
    import json

    from modelprint.artefacts import meta_array, read_arrays, write_arrays

    arrays = dict(read_arrays(tmp_path / "a.npz", "attributor"))
    meta = json.loads(arrays["meta"].tobytes().decode())
    arrays["meta"] = meta_array({**meta, "rule": "nearest"})
    write_arrays(tmp_path / "b.npz", arrays, {"format": meta["format"]})
    with pytest.raises(CheckpointError, match="b.npz: no attribution rule settings"):
        AttributionModel.load(tmp_path / "b.npz")

"""The provenance benchmark's protocols on synthetic measurements whose answer is known (matched vs shifted
non-members, mixing, false members among generations, data budgets, Goldilocks curves, three-way, attribution with
reject), that no protocol looks at the test rows, and one end-to-end run on the tiny member-split zoo DDPM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from modelprint.probes import DenoisingLossProbe, DiffusersCandidate, unknown_origin_signatures
from modelprint.provenance import ATTACKS, EXTERNAL, GENERATED, MEMBER, NONE, TrajectoryAttack, audit_split
from modelprint.provenance.protocols import (
    MATCHED,
    SHIFTED,
    attribution_with_reject,
    bed_images,
    budget_sweep,
    false_member_rate,
    kind_curves,
    measure,
    membership_condition,
    parse_feature,
    per_timestep_auc,
    three_way,
    weights_by_kind,
)
from modelprint.provenance.testbed import membership_testbed
from modelprint.zoo.build import build_zoo
from modelprint.zoo.store import load_generator

torch.set_num_threads(1)

STEPS = (10, 100, 500)
NAMES = [f"{kind}@t={t}" for kind in ("loss", "sima") for t in STEPS] + [f"grad_params[{g}]@t={t}"
                                                                          for t in STEPS for g in ("a", "b")]


def _bed(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Trajectory-like measurements (columns :data:`NAMES`) of a test bed whose answers are known: members have a
    lower log loss than matched non-members at early t only (by 1 sd); shifted non-members are far off in every
    column (an easy, spurious signal); generations look like members in the loss and apart in ``sima``."""
    rng = np.random.default_rng(seed)
    groups = np.repeat([MEMBER, MATCHED, SHIFTED, GENERATED], n)
    x = rng.normal(size=(len(groups), len(NAMES)))
    x[groups == MEMBER, :2] -= 1.0
    x[groups == SHIFTED] += 4.0
    x[groups == GENERATED, :2] -= 1.0
    x[groups == GENERATED, 3:6] += 3.0
    return -x, groups  # higher = more member-like in the loss columns, as the baselines' scores are


def test_matched_shifted_and_mixing_track_the_shift_not_membership() -> None:
    x, groups = _bed()
    split = audit_split(groups, budget=0.5, seed=0)
    attack = ATTACKS.create("naive-loss", timesteps=tuple(range(len(NAMES))))
    fitted, matched = membership_condition(attack, x, groups, split, share=0.0)
    assert fitted is not attack and not hasattr(attack, "setting_")  # a clone is fitted, the given one stays
    _, shifted = membership_condition(attack, x, groups, split, share=1.0)
    assert 0.7 < matched["auc"] < 0.85 and shifted["auc"] > 0.99  # measured 0.78 and 1.0
    assert matched["chosen"] in (0, 1)  # an early-t loss column, chosen on validation
    assert matched["n_test_members"] == matched["n_test_nonmembers"] == 60 and matched["split"]["test"] == 120
    assert shifted["tpr_at_1pct_fpr"] > 0.95 > matched["tpr_at_1pct_fpr"]
    aucs = [membership_condition(attack, x, groups, split, share=s)[1]["auc"] for s in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert aucs == sorted(aucs) and aucs[0] == matched["auc"]
    rate = false_member_rate(fitted, matched, x, groups)
    assert rate["n"] == 200 and rate["false_member_rate_at_1pct"] > matched["tpr_at_1pct_fpr"] - 0.15
    with pytest.raises(Exception, match="share of shifted"):
        membership_condition(attack, x, groups, split, share=1.5)


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_no_protocol_looks_at_the_test_rows(share: float) -> None:
    x, groups = _bed()
    split = audit_split(groups, budget=0.1, seed=0)
    poisoned = x.copy()
    poisoned[split.test] = np.random.default_rng(5).normal(scale=50.0, size=(len(split.test), x.shape[1]))
    for attack in (ATTACKS.create("naive-loss", timesteps=tuple(range(len(NAMES)))),
                   ATTACKS.create("gsa1", classifier="linear")):
        _, clean = membership_condition(attack, x, groups, split, share)
        _, dirty = membership_condition(attack, poisoned, groups, split, share)
        for key in ("chosen", "threshold_at_1pct", "threshold_at_0.1pct", "n_test_members", "n_test_nonmembers"):
            assert clean[key] == dirty[key], key
        assert clean["auc"] != dirty["auc"]
    # per-t AUCs take each feature's sign from validation: a sign that flips on test shows up as AUC < 0.5
    flipped = x.copy()
    flipped[split.test, 0] *= -1
    assert per_timestep_auc(flipped, NAMES, groups, split, share)["loss"]["auc"][0] < 0.5
    assert per_timestep_auc(x, NAMES, groups, split, share)["loss"]["auc"][0] > 0.5


def test_budget_sweep_keeps_one_test_set_and_reports_budgets_too_small_to_fit() -> None:
    x, groups = _bed(100)
    rows = budget_sweep(TrajectoryAttack(), x, groups, budgets=(0.01, 0.1, 0.5))
    assert "skipped" in rows[0] and "at least two classes" in rows[0]["skipped"]  # 1 member cannot be calibrated
    assert rows[1]["split"]["test"] == rows[2]["split"]["test"] and rows[1]["split"]["fit"] < rows[2]["split"]["fit"]
    assert rows[2]["auc"] > 0.8 and {r["budget"] for r in rows} == {0.01, 0.1, 0.5}


def test_goldilocks_curves_loss_spread_and_weights_against_t() -> None:
    x, groups = _bed()
    split = audit_split(groups, budget=0.5, seed=0)
    curves = per_timestep_auc(x, NAMES, groups, split)
    assert set(curves) == {"loss", "sima", "grad_params"} and curves["loss"]["timesteps"] == list(STEPS)
    assert min(curves["loss"]["auc"][:2]) > 0.7 and abs(curves["loss"]["auc"][2] - 0.5) < 0.15  # early t only
    spread = kind_curves(-x, NAMES, groups, "loss")
    assert list(spread) == [MEMBER, MATCHED, SHIFTED, GENERATED]
    assert spread[MEMBER]["mean"][0] < spread[MATCHED]["mean"][0] - 0.7 and 0.8 < spread[MEMBER]["sd"][0] < 1.2
    weights = weights_by_kind(np.arange(len(NAMES), dtype=float), NAMES)
    assert weights["loss"] == {"timesteps": list(STEPS), "weight": [0.0, 1.0, 2.0]}
    assert weights["grad_params"]["weight"] == [6.5, 8.5, 10.5]  # the two groups at each t averaged
    assert parse_feature("grad_params[down_blocks.0]@t=5") == ("grad_params", "down_blocks.0", 5)
    with pytest.raises(Exception, match="not a trajectory feature name"):
        parse_feature("loss")


@pytest.mark.parametrize("model", ["linear", "boosted"])
def test_three_way_macro_accuracy_and_generated_auc(model: str) -> None:
    x, groups = _bed()
    split = audit_split(groups, budget=0.5, seed=0)
    clf, result = three_way(x, groups, split, model=model, target_accuracy=0.95)
    assert result["classes"] == sorted([MEMBER, GENERATED, EXTERNAL]) and result["n_test"] == len(split.test)
    assert result["generated_vs_rest_auc"] > 0.99 and result["macro_accuracy"] > 0.75  # member/matched overlap
    assert result["coverage"] < 1 and result["accuracy_answered"] > result["accuracy"]
    assert np.sum(result["confusion"]) == len(split.test) and clf.confidence_ == result["confidence_threshold"]


def _trajectories(n: int, offsets: tuple[float, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Log losses through K candidates: an image's own model is 0.5 lower, external images 0.5 higher everywhere;
    ``offsets`` shift each candidate's losses (another model space)."""
    rng = np.random.default_rng(seed)
    names = [f"m{j}" for j in range(len(offsets))] + [NONE]
    y = np.repeat(names, n)
    x = rng.normal(scale=0.3, size=(len(y), len(offsets), 4)) + np.asarray(offsets)[None, :, None]
    for j in range(len(offsets)):
        x[y == f"m{j}", j] -= 0.5
    x[y == NONE] += 0.5
    return x, y


def test_attribution_with_reject_against_lowest_loss_that_cannot_say_none() -> None:
    x, y = _trajectories(60, (0.0, 0.0, 0.0, -2.0), 0)
    result = attribution_with_reject(x, y, ["m0", "m1", "m2", "m3"], seed=0)
    assert result["n_test"] == 5 * 24 and result["n_test_external"] == 24 and result["n_fit"] == 5 * 18
    assert result["n_fit_external"] == 18  # external fit rows are fitted on (the learned rule), not validated on
    assert result["accuracy"] > 0.9 and result["external_rejected"] > 0.8  # measured 0.96 and 1.0
    assert result["rules"]["threshold_standardised"]["test"]["accuracy"] > 0.9  # m3 works in another space
    assert result["rules"]["threshold_raw"]["test"]["accuracy"] < result["rules"]["threshold_standardised"]["test"][
        "accuracy"]
    plain = result["lowest_loss_without_reject"]
    assert plain["chosen_on_validation"] == "standardised" and plain["raw"]["accuracy_own_samples"] < 0.8
    assert plain["standardised"]["accuracy"] <= 0.8 < result["accuracy"]  # it calls every external image a model
    assert np.sum(result["confusion"]["matrix"]) == result["n_test"]
    low, high = result["accuracy_ci95"]
    assert low <= result["accuracy"] <= high and high - low < 0.2


@pytest.mark.slow
def test_end_to_end_on_the_tiny_member_model(tmp_path: Path) -> None:
    build_zoo(tmp_path, tier="tiny", only=["tiny-ddpm-members"], n_samples=16)
    denoiser = DiffusersCandidate(load_generator("tiny-ddpm-members", zoo=tmp_path), name="tiny-ddpm-members")
    images, groups = bed_images(membership_testbed(tmp_path, "tiny-ddpm-members"))
    assert list(dict.fromkeys(groups)) == [MEMBER, MATCHED, SHIFTED, GENERATED] and len(images) == 112
    attack = ATTACKS.create("naive-loss", timesteps=(10, 50, 100), repeats=2)
    measured = measure(attack, denoiser, images)
    assert measured.values.shape == (112, 3) and measured.calls_per_image == attack.calls_per_image(denoiser) == 6
    assert measured.backwards_per_image == 0 and measured.seconds_per_image > 0
    split = audit_split(groups, budget=0.5, seed=0)
    fitted, matched = membership_condition(attack, measured.values, groups, split)
    assert matched["auc"] > 0.75 and matched["n_test_members"] == 10  # the tiny model memorises its 32 crops
    assert 0 <= false_member_rate(fitted, matched, measured.values, groups)["false_member_rate_at_1pct"] <= 1
    signatures = unknown_origin_signatures(DenoisingLossProbe((10, 100), repeats=1), {"a": denoiser}, images[:4])
    assert signatures.shape == (4, 1, 2)

"""Trajectory provenance: features and every baseline end to end on a tiny member-split zoo DDPM, determinism, the
member / non-member loss gap, protocols that never fit on test rows, the three-way classifier and attribution with
reject on synthetic features whose answer is known, persistence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError

from modelprint.errors import ModelprintError
from modelprint.probes import CallableCandidate, DenoisingLossProbe, DiffusersCandidate, ProbeAttributor
from modelprint.probes.attribution import LowestLoss
from modelprint.provenance import (
    ATTACKS,
    EXTERNAL,
    GENERATED,
    MEMBER,
    NONE,
    MembershipAttack,
    MembershipTestBed,
    UNCERTAIN,
    Provenance,
    ProvenanceClassifier,
    RejectAttributor,
    TrajectoryAttack,
    TrajectoryExtractor,
    audit_split,
    choose_attributor,
    evaluate_membership,
    membership_metrics,
    membership_testbed,
    threshold_at_fpr,
    trajectory_timesteps,
)
from modelprint.provenance.classifier import C_GRID
from modelprint.zoo.build import build_zoo
from modelprint.zoo.recipes import tier_recipes
from modelprint.zoo.store import load_generator, recipe_from_dict

pytestmark = pytest.mark.slow
torch.set_num_threads(1)

MODEL = "tiny-ddpm-members"
#: Small settings for the end-to-end checks (the defaults cost 10 timesteps).
STEPS = (10, 100, 500)
SMALL = TrajectoryExtractor(timesteps=STEPS, repeats=2, seed=3, batch_size=16)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("zoo")
    build_zoo(root, tier="tiny", only=[MODEL], n_samples=16)
    return root


@pytest.fixture(scope="module")
def denoiser(zoo: Path) -> DiffusersCandidate:
    return DiffusersCandidate(load_generator(MODEL, zoo=zoo), name=MODEL)


@pytest.fixture(scope="module")
def bed(zoo: Path) -> MembershipTestBed:
    return membership_testbed(zoo, MODEL)


def test_the_manifest_records_the_member_split_and_the_testbed_checks_it(zoo: Path, bed: MembershipTestBed,
                                                                         tmp_path: Path) -> None:
    entry = json.loads((zoo / "manifest.jsonl").read_text().splitlines()[0])
    assert entry["name"] == MODEL and entry["recipe"]["holdout"]["subset"] == "photos-b"
    assert entry["splits"]["members"]["n_images"] == entry["splits"]["holdout"]["n_images"] == 32
    assert recipe_from_dict(entry["recipe"]) == next(r for r in tier_recipes("tiny") if r.name == MODEL)
    old = {k: v for k, v in entry["recipe"].items() if k != "holdout"}  # manifests written before member splits
    assert recipe_from_dict(old).holdout is None
    counts = bed.to_dict()["counts"]
    assert counts == {"members": 32, "matched": 32, "shifted": 32, "generated": 16}
    assert not np.array_equal(bed.members, bed.matched) and bed.shifted.shape == bed.members.shape
    tampered = json.loads(json.dumps(entry))
    tampered["splits"]["holdout"]["sha256"] = "0" * 64
    (tmp_path / "manifest.jsonl").write_text(json.dumps(tampered) + "\n")
    with pytest.raises(ModelprintError, match="held-out images rebuilt here differ"):
        membership_testbed(tmp_path, MODEL)
    del tampered["splits"]
    (tmp_path / "manifest.jsonl").write_text(json.dumps(tampered) + "\n")
    with pytest.raises(ModelprintError, match="no member split"):
        membership_testbed(tmp_path, MODEL)


def test_member_and_held_out_images_differ_in_loss(denoiser: DiffusersCandidate, bed: MembershipTestBed) -> None:
    """The tiny member model memorises its 32 crops: their loss is lower than that of 32 held-out crops of the same
    photo distribution (measured: log-loss gap 0.39–0.49 at t = 5…100, 0 at t ≥ 700)."""
    probe = DenoisingLossProbe(timesteps=(10, 25, 50, 100, 900), repeats=4, seed=0, batch_size=64)
    gap = probe.signature(denoiser, bed.matched).mean(0) - probe.signature(denoiser, bed.members).mean(0)
    assert np.all(gap[:4] > 0.3), gap
    assert abs(gap[4]) < 0.05, gap  # at the end of the trajectory the image hardly matters


def test_trajectory_features_end_to_end_deterministic_and_counted(denoiser: DiffusersCandidate,
                                                                  bed: MembershipTestBed) -> None:
    images = np.concatenate([bed.members[:3], bed.matched[:3]])
    seen: list[tuple[int, int]] = []
    before = denoiser.n_forward
    traj = SMALL.extract(denoiser, images, progress=lambda done, total: seen.append((done, total)))
    groups = SMALL.group_names(denoiser)
    assert traj.values.shape == (6, len(STEPS) * (5 + len(groups))) and np.isfinite(traj.values).all()
    assert traj.names[0] == "loss@t=10" and f"grad_params[{groups[0]}]@t=500" in traj.names
    # calls: loss T·R, PIA 1 + T, SimA T, SecMI 3T, gradients T forward + T backward
    assert SMALL.calls_per_image(denoiser) == 6 + 4 + 3 + 9 + 3 == traj.calls_per_image
    assert (denoiser.n_forward - before) / 6 == traj.calls_per_image and traj.backwards_per_image == 3
    assert seen[-1] == (6 * traj.calls_per_image, 6 * traj.calls_per_image)
    np.testing.assert_array_equal(SMALL.extract(denoiser, images).values, traj.values)  # same seed, same features
    loss = DenoisingLossProbe(timesteps=STEPS, repeats=2, seed=3).signature(denoiser, images)
    np.testing.assert_allclose(traj.kind("loss"), loss, rtol=1e-6)  # the loss probe's common random numbers
    other = TrajectoryExtractor(timesteps=STEPS, repeats=2, seed=4, kinds=("loss",)).extract(denoiser, images)
    assert not np.allclose(other.values, traj.kind("loss")) and other.names == traj.names[:3]
    assert traj.kind("pia").shape == (6, 3) and json.dumps(traj.to_dict())
    assert trajectory_timesteps(1000) == (5, 10, 25, 50, 100, 200, 300, 500, 700, 900)
    with pytest.raises(ModelprintError, match="outside its schedule"):
        TrajectoryExtractor(timesteps=(1000,)).extract(denoiser, images)
    with pytest.raises(ModelprintError, match="unknown kinds"):
        TrajectoryExtractor(kinds=("nope",)).extract(denoiser, images)


def test_gradients_flow_only_when_asked(denoiser: DiffusersCandidate, bed: MembershipTestBed) -> None:
    x = denoiser.to_model_space(bed.members[:2]).requires_grad_(True)
    assert not denoiser.predict_noise(x, 10).requires_grad  # the probes' default: no graph
    (grad,) = torch.autograd.grad(denoiser.predict_noise(x, 10, grad=True).square().sum(), x)
    assert grad.abs().sum() > 0
    net = torch.nn.Conv2d(3, 3, 3, padding=1)
    callable_ = CallableCandidate(lambda x_t, t: net(x_t), torch.linspace(0.99, 0.01, 100), name="plain")
    assert callable_.named_parameters() == []
    with pytest.raises(ModelprintError, match="no parameters to take gradients of"):
        TrajectoryExtractor(timesteps=(5,), kinds=("grad_params",)).extract(callable_, bed.members[:1])
    inputs_only = TrajectoryExtractor(timesteps=(5, 50), kinds=("grad_input",)).extract(callable_, bed.members[:2])
    assert inputs_only.values.shape == (2, 2) and inputs_only.backwards_per_image == 2
    module = CallableCandidate(net, torch.linspace(0.99, 0.01, 100), name="module")
    assert [n for n, _ in module.named_parameters()] == ["weight", "bias"]


def _synthetic_members(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Measurements of 4 settings; members score higher in setting 2 only."""
    rng = np.random.default_rng(seed)
    member = np.arange(n) % 2 == 0
    x = rng.normal(size=(n, 4))
    x[:, 2] += 1.5 * member
    return x, member


@pytest.mark.parametrize("attack", [ATTACKS.create("naive-loss", timesteps=(1, 2, 3, 4)),
                                    ATTACKS.create("gsa1", classifier="linear"),
                                    ATTACKS.create("gsa2", classifier="boosted"),
                                    TrajectoryAttack()])
def test_fitting_never_sees_the_test_rows(attack: MembershipAttack) -> None:
    x, member = _synthetic_members(400, 0)
    split = audit_split(np.where(member, MEMBER, EXTERNAL), budget=0.5, seed=1)
    assert split.to_dict() == {"fit": 200, "val": 80, "test": 120}
    clean = evaluate_membership(attack, x, member, split)
    state = (clean.to_dict()["chosen"], [clean.metrics[k] for k in ("threshold_at_1pct", "threshold_at_0.1pct")],
             attack.decision_function(x[split.val]), getattr(attack, "auc_by_setting_", None))
    poisoned, flipped = x.copy(), member.copy()
    poisoned[split.test] = np.random.default_rng(9).normal(scale=100.0, size=(len(split.test), 4))
    flipped[split.test] = ~flipped[split.test]
    dirty = evaluate_membership(attack, poisoned, flipped, split)
    assert dirty.to_dict()["chosen"] == state[0]
    assert [dirty.metrics[k] for k in ("threshold_at_1pct", "threshold_at_0.1pct")] == state[1]
    np.testing.assert_array_equal(attack.decision_function(x[split.val]), state[2])
    np.testing.assert_array_equal(getattr(attack, "auc_by_setting_", None), state[3])  # the per-t AUCs t was chosen by
    assert clean.metrics["auc"] > 0.7 and dirty.metrics["auc"] != clean.metrics["auc"]
    if not attack.learned:
        assert clean.to_dict()["chosen"] == 3  # setting index 2 is timestep 3


def _correlated_members(n_fit: int, n_test: int, seed: int) -> tuple[np.ndarray, ...]:
    """150 features, few fit rows: 30 share one nuisance per image and a member shift of 1 (like one measurement
    at neighbouring timesteps), 120 are independent noise."""
    rng = np.random.default_rng(seed)
    member = np.r_[np.arange(n_fit) % 2 == 0, np.arange(n_test) % 2 == 0]
    x = rng.normal(size=(len(member), 150))
    x[:, :30] = rng.normal(size=(len(member), 1)) + member[:, None] + 0.1 * rng.normal(size=(len(member), 30))
    return x[:n_fit], member[:n_fit], x[n_fit:], member[n_fit:]


def test_trajectory_attack_chooses_its_regularisation_on_the_fit_rows() -> None:
    """32 fit rows of 150 features overfit at C = 1; C chosen by cross-validation on the fit rows holds out better."""
    from sklearn.metrics import roc_auc_score

    gains, chosen_cs = [], []
    for seed in range(4):
        x, member, x_test, member_test = _correlated_members(32, 400, seed)
        chosen, fixed = TrajectoryAttack(seed=seed).fit(x, member), TrajectoryAttack(C=1.0, seed=seed).fit(x, member)
        assert chosen.classifier_.C_ in C_GRID and fixed.classifier_.C_ == 1.0
        chosen_cs.append(chosen.classifier_.C_)
        gains.append(roc_auc_score(member_test, chosen.decision_function(x_test))
                     - roc_auc_score(member_test, fixed.decision_function(x_test)))
    # C chosen from 32 rows is noisy (here 1, 0.003, 0.01, 0.03; held-out AUC gains 0, 0.09, 0.04, 0.02)
    assert min(gains) >= 0 and np.mean(gains) > 0.025 and sum(c < 1 for c in chosen_cs) >= 3
    again = TrajectoryAttack(seed=seed).fit(x, member)  # deterministic by seed
    assert again.classifier_.C_ == chosen.classifier_.C_
    np.testing.assert_array_equal(again.decision_function(x_test), chosen.decision_function(x_test))
    assert ProvenanceClassifier().C == 1.0
    assert ProvenanceClassifier("boosted", target_accuracy=None).fit(x, member).C_ is None


def test_audit_split_budget_and_operating_points() -> None:
    labels = np.array([MEMBER] * 200 + [EXTERNAL] * 100 + [GENERATED] * 40)
    small, large = audit_split(labels, budget=0.05, seed=0), audit_split(labels, budget=0.25, seed=0)
    np.testing.assert_array_equal(small.test, large.test)  # budgets compare on one test set
    np.testing.assert_array_equal(small.val, large.val)
    for s in (small, large):
        assert not (set(s.fit) & set(s.val) or set(s.fit) & set(s.test) or set(s.val) & set(s.test))
    assert (labels[small.fit] == MEMBER).sum() == 10 and (labels[large.fit] == MEMBER).sum() == 50
    assert (labels[small.test] == EXTERNAL).sum() == 30 and (labels[small.fit] == EXTERNAL).sum() == 50
    with pytest.raises(ModelprintError, match="only 100 are left"):
        audit_split(labels, budget=0.6)
    neg = np.arange(1000.0)
    assert np.mean(neg > threshold_at_fpr(neg, 0.01)) == 0.01
    assert np.mean(neg > threshold_at_fpr(neg, 0.001)) == 0.001
    # A threshold from validation realises another FPR on test, and the metrics say so.
    rng = np.random.default_rng(0)
    m = membership_metrics(rng.normal(size=200), np.arange(200) < 100, rng.normal(0.5, 1, 400) + np.r_[np.ones(200),
                           np.zeros(200)], np.arange(400) < 200)
    assert m["n_test_nonmembers"] == 200 and m["expected_false_positives_at_0.1pct"] == pytest.approx(0.2)
    assert m["realised_fpr_at_1pct"] > 0.01 and 0.5 < m["auc"] < 1


def _three_clusters(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = {MEMBER: [3.0, 0, 0], GENERATED: [0, 3.0, 0], EXTERNAL: [0, 0, 3.0]}
    y = np.array([MEMBER, GENERATED, EXTERNAL] * n)
    x = np.stack([centres[c] for c in y]) + rng.normal(size=(len(y), 3))
    return np.c_[x, rng.normal(size=(len(y), 2))], y  # two uninformative features


@pytest.mark.parametrize("model", ["linear", "boosted"])
def test_three_way_classifier_with_calibrated_probabilities_and_uncertain(model: str) -> None:
    x, y = _three_clusters(120, 0)
    x_val, y_val = _three_clusters(60, 1)
    x_test, y_test = _three_clusters(100, 2)
    clf = ProvenanceClassifier(model, target_accuracy=0.99, seed=0)
    with pytest.raises(NotFittedError, match="not fitted"):
        clf.predict_proba(x_test)
    clf.fit(x, y, x_val, y_val)
    proba = clf.predict_proba(x_test)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert list(clf.classes_) == sorted([MEMBER, GENERATED, EXTERNAL])
    assert np.mean(clf.classes_[proba.argmax(1)] == y_test) > 0.9
    assert 0.34 < clf.confidence_ < 1
    answered = clf.predict(x_test) != UNCERTAIN
    assert 0.5 < answered.mean() < 1 and np.mean(clf.predict(x_test)[answered] == y_test[answered]) > 0.97
    assert clf.predict(np.array([[1.5, 1.5, 1.5, 0, 0]]))[0] == UNCERTAIN  # midway between every class
    decided = clf.decide(x_test[:2]).to_dict(paths=["a.png", "b.png"])
    assert decided["results"][0]["path"] == "a.png" and set(decided["results"][0]["probabilities"]) == set(y)
    if model == "linear":
        weights = clf.linear_weights()
        assert weights.shape == (3, 5) and np.abs(weights[:, :3]).min() > np.abs(weights[:, 3:]).max()
    never = ProvenanceClassifier(model, target_accuracy=None).fit(x, y)
    assert never.confidence_ == 0 and UNCERTAIN not in never.predict(x_test)


def _loss_trajectories(n: int, offsets: tuple[float, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Log losses ``(n·(K+1), K, 4)`` through K candidates of their own samples and of external images (label
    ``none``): an image's own model predicts its noise 0.5 better in log loss than the others; external images are
    0.5 worse through every candidate; ``offsets`` shift each candidate's losses (another model space)."""
    rng = np.random.default_rng(seed)
    k = len(offsets)
    names = [f"m{j}" for j in range(k)] + [NONE]
    y = np.repeat(names, n)
    x = rng.normal(scale=0.3, size=(len(y), k, 4)) + np.asarray(offsets)[None, :, None]
    for j in range(k):
        x[y == f"m{j}", j] -= 0.5
    x[y == NONE] += 0.5
    return x, y


def test_attribution_with_reject_calibrates_each_candidate_on_its_own_samples() -> None:
    offsets = (0.0, 0.0, -2.0)  # the third candidate works in another space: its losses are far lower
    x, y = _loss_trajectories(60, offsets, 0)
    x_val, y_val = _loss_trajectories(40, offsets, 1)
    x_test, y_test = _loss_trajectories(100, offsets, 2)
    own = y != NONE
    names = ["m0", "m1", "m2"]
    model = RejectAttributor(names, "standardised", accept=0.9).fit(x[own], y[own])
    assert list(model.classes_) == [*names, NONE]
    margins = model.decision_function(x[own])
    for j, name in enumerate(names):  # each threshold accepts 90% of that candidate's own samples
        assert np.mean(margins[y[own] == name, j] >= 0) == pytest.approx(0.9, abs=0.02)
    choice = choose_attributor(x[own], y[own], x_val, y_val, names, kinds=())  # no external rows to learn from
    best = max(choice.validation, key=lambda row: row["accuracy"])
    assert choice.to_dict()["normalisation"] == best["normalisation"] == "standardised"
    assert choice.to_dict()["accept"] == best["accept"] and len(choice.validation) == 8
    accuracy = np.mean(choice.attributor.predict(x_test) == y_test)
    raw = choose_attributor(x[own], y[own], x_val, y_val, names, normalisations=("raw",), kinds=()).attributor
    assert accuracy >= 0.95 and np.mean(raw.predict(x_test) == y_test) < accuracy - 0.03  # measured 0.98, 0.93
    assert np.mean(choice.attributor.predict(x_test[y_test == NONE]) == NONE) >= 0.9
    with pytest.raises(NotFittedError):
        RejectAttributor(names).predict(x_test)
    with pytest.raises(ModelprintError, match="at least two of its own samples"):
        RejectAttributor(names).fit(x[:61], y[:61])


def test_lowest_loss_normalisation_raw_and_files_written_before_it(tmp_path: Path) -> None:
    x, y = _loss_trajectories(20, (0.0, 0.0), 0)
    x, y = x[y != NONE], y[y != NONE]
    flat = x.reshape(len(x), -1)
    raw = LowestLoss(["m0", "m1"], normalisation="raw").fit(flat)
    np.testing.assert_array_equal(raw.predict(flat), np.array(["m0", "m1"])[np.argmin(x.mean(2), axis=1)])
    assert LowestLoss().normalisation == "standardised"  # today's behaviour stays the default
    with pytest.raises(ModelprintError, match="unknown normalisation"):
        LowestLoss(["m0", "m1"], normalisation="z").fit(flat)
    probe = DenoisingLossProbe(timesteps=(1, 2, 3, 4))
    candidates = {"m0": None, "m1": None}  # signatures given, so the denoisers are never called
    model = ProbeAttributor(candidates, probe, classifier="lowest-loss").fit(x, y.astype(str))
    path = tmp_path / "old.npz"
    model.save(path)
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(arrays["meta"].tobytes().decode())
    assert meta["steps"][0]["params"].pop("normalisation") == "standardised"
    meta["steps"][0]["params"]["standardise"] = True  # as written before the parameter existed
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, **arrays)
    path.with_suffix(".json").unlink()  # files written then had no sidecar
    loaded = ProbeAttributor.load(path, candidates)
    assert loaded.pipeline_.named_steps["clf"].normalisation == "standardised"
    np.testing.assert_allclose(loaded.decision_function(x), model.decision_function(x))


def test_provenance_fits_saves_loads_and_scores(denoiser: DiffusersCandidate, bed: MembershipTestBed,
                                                tmp_path: Path) -> None:
    extractor = TrajectoryExtractor(timesteps=STEPS, repeats=2, kinds=("loss", "sima", "grad_input"))
    model = Provenance(extractor, ProvenanceClassifier(cv=2), seed=0)
    with pytest.raises(NotFittedError):
        model.score(denoiser, bed.matched[:2])
    model.fit(denoiser, bed.members, bed.generated, bed.shifted)
    summary = model.to_dict()
    assert summary["counts"] == {MEMBER: 32, GENERATED: 16, EXTERNAL: 32} and json.dumps(summary)
    decisions = model.score(denoiser, bed.matched[:4])
    assert decisions.probabilities.shape == (4, 3)
    assert set(decisions.decisions) <= {MEMBER, GENERATED, EXTERNAL, UNCERTAIN}
    path = tmp_path / "p.npz"
    model.save(path)
    loaded = Provenance.load(path)
    np.testing.assert_allclose(loaded.score(denoiser, bed.matched[:4]).probabilities, decisions.probabilities)
    assert loaded.to_dict() == summary
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ModelprintError, match="not a provenance file"):
        Provenance.load(tmp_path / "bad.npz")

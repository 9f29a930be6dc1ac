"""White-box probes: SDS signatures through two tiny zoo diffusion models, a plain PyTorch DDPM, a conditional UNet;
both attribution protocols; determinism; persistence; clear errors; pipeline selection and cascade evaluation on
precomputed signatures (also as the benchmark runs them); typed identification reports."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.exceptions import NotFittedError

from modelprint.errors import ImageError, ModelprintError, ProbeError, RegistryError
from modelprint.probes import (
    CallableCandidate,
    CascadeAttributor,
    CascadeStage,
    ConditionalUNetCandidate,
    DenoisingLossProbe,
    DiffusersCandidate,
    ProbeAttributor,
    SpectralProbe,
    coupling,
    fit_classifier,
    make_classifier,
    probe_from_preset,
    ranking_metrics,
    ring_masks,
    choose_margin,
    cross_validated_scores,
    evaluate_cascade,
    fit_pipeline,
    score_margin,
    select_pipeline,
    true_model_signatures,
    unknown_origin_signatures,
)
from modelprint.probes.workflow import ProbeAttribution, ProbeReport, RankedCandidate
from modelprint.zoo.build import build_zoo
from modelprint.zoo.store import load_generator

torch.set_num_threads(1)

MODELS = ("tiny-ddpm", "tiny-ldm")
#: A small setting for the end-to-end checks: 2 scales × 2 timesteps × 4 rings × 2 repeats = 32 calls per image.
SMALL = {"rings": 4, "timesteps": (481, 1), "noise_scales": (1.0, 1.5), "repeats": 2}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("zoo")
    build_zoo(root, tier="tiny", only=list(MODELS), n_samples=16)
    return root


@pytest.fixture(scope="module")
def candidates(zoo: Path) -> dict[str, DiffusersCandidate]:
    return {name: DiffusersCandidate(load_generator(name, zoo=zoo), name=name) for name in MODELS}


@pytest.fixture(scope="module")
def samples(zoo: Path) -> dict[str, np.ndarray]:
    return {name: np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted((zoo / "samples" / name).glob("*.png"))])
            for name in MODELS}


def test_ring_masks_partition_the_spectrum() -> None:
    masks = ring_masks(16, 12, 5)
    assert masks.shape == (5, 16, 12)
    assert torch.equal(masks.sum(0), torch.ones(16, 12, dtype=torch.long))
    assert bool(masks[0, 0, 0]) and bool(masks[-1, 8, 6])  # DC in the first ring, the corner in the last
    flipped = torch.roll(torch.flip(masks, dims=(1, 2)), shifts=(1, 1), dims=(1, 2))  # f → −f
    assert torch.equal(masks, flipped)  # Hermitian-symmetric: band-limited noise stays real


def test_probe_noise_is_band_limited_and_rescaled() -> None:
    probe = SpectralProbe(rings=4, noise_scales=(1.0, 2.0), repeats=3)
    noise = probe.probe_noise((3, 16, 16)).double()
    assert noise.shape == (2, 4, 3, 3, 16, 16)
    masks = ring_masks(16, 16, 4)
    power = torch.fft.fft2(noise).abs().square().sum(dim=(2, 3))  # (S, K, h, w)
    for k in range(4):
        assert float(power[:, k][:, ~masks[k]].max()) < 1e-12 * float(power[:, k].max())
    torch.testing.assert_close(noise[1], 2 * noise[0])
    assert abs(float(noise[0].std(dim=(2, 3, 4)).mean()) - 1.0) < 0.1


@pytest.mark.slow
def test_signatures_of_two_zoo_models(candidates: dict, samples: dict) -> None:
    probe = SpectralProbe(**SMALL, batch_size=48)
    assert probe.calls_per_image == 32 and probe.n_features == 2 * 2 * 16
    for name, denoiser in candidates.items():
        images = samples[name][:3]
        before = denoiser.n_forward
        energies = probe.energies(denoiser, images)
        assert denoiser.n_forward - before == 3 * probe.calls_per_image
        assert energies.shape == (3, 2, 2, 4, 4) and np.all(energies > 0)
        sig = probe.signature_from_energies(energies)
        assert sig.shape == (3, probe.n_features) and np.all(np.isfinite(sig))
        matrices = sig.reshape(3, 2, 2, 4, 4)
        np.testing.assert_allclose(matrices.sum(-1), 1.0, rtol=1e-12)
        np.testing.assert_array_equal(matrices, coupling(energies))
    ddpm, ldm = (probe.signature(candidates[n], samples["tiny-ddpm"][:3]) for n in MODELS)
    assert not np.allclose(ddpm, ldm)  # the same images respond differently through the two models


@pytest.mark.slow
def test_same_seed_same_signature(candidates: dict, samples: dict) -> None:
    images = samples["tiny-ldm"][:4]
    denoiser = candidates["tiny-ldm"]
    a = SpectralProbe(**SMALL, seed=3).signature(denoiser, images)
    b = SpectralProbe(**SMALL, seed=3).signature(denoiser, images)
    c = SpectralProbe(**SMALL, seed=4).signature(denoiser, images)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    logged = SpectralProbe(**SMALL, seed=3, log_energy=True)
    d = logged.signature(denoiser, images)
    assert d.shape[1] == logged.n_features == a.shape[1] + 2 * 2 * 4
    np.testing.assert_array_equal(d[:, : a.shape[1]], a)


@pytest.mark.slow
def test_a_cheaper_setting_cut_from_a_larger_grid_equals_probing_with_it(candidates: dict, samples: dict) -> None:
    images = samples["tiny-ddpm"][:3]
    denoiser = candidates["tiny-ddpm"]
    grid = SpectralProbe(rings=4, timesteps=(481, 201, 1), noise_scales=(1.0, 1.5), repeats=3, seed=5)
    full = grid.repeat_energies(denoiser, images)
    assert full.shape == (3, 2, 3, 4, 3, 4)
    cheap = SpectralProbe(rings=4, timesteps=(1, 481), noise_scales=(1.5,), repeats=2, seed=5)
    np.testing.assert_allclose(cheap.energies_within(grid, full), cheap.energies(denoiser, images), rtol=1e-5)
    with pytest.raises(ModelprintError, match="not within"):
        SpectralProbe(rings=4, timesteps=(601,), repeats=2, seed=5).energies_within(grid, full)
    with pytest.raises(ModelprintError, match="own probing"):
        SpectralProbe(rings=2, timesteps=(1,), repeats=1, seed=5).energies_within(grid, full)


@pytest.mark.slow
def test_unknown_origin_attribution_beats_chance(candidates: dict, samples: dict, tmp_path: Path) -> None:
    probe = SpectralProbe.preset("fast", batch_size=128)
    train = np.concatenate([samples[n][:8] for n in MODELS])
    test = np.concatenate([samples[n][8:] for n in MODELS])
    y_train, y_test = np.repeat(MODELS, 8), np.repeat(MODELS, 8)
    sig_train = unknown_origin_signatures(probe, candidates, train)
    sig_test = unknown_origin_signatures(probe, candidates, test)
    assert sig_train.shape == (16, 2, probe.n_features)
    for classifier in ("prototype", "logreg", "svm"):
        for features in ("concat", "distances"):
            model = ProbeAttributor(candidates, probe, features=features, classifier=classifier).fit(sig_train, y_train)
            metrics = model.score_ranking(sig_test, y_test)
            assert metrics["top1"] >= 0.9, (classifier, features, metrics)
            assert metrics["mrr"] >= metrics["top1"] and metrics["top3"] == 1.0
    # Images in, through every candidate, and a saved attributor gives the same scores.
    model = ProbeAttributor(candidates, probe, classifier="logreg").fit(train, y_train)
    scores = model.decision_function(sig_test)
    np.testing.assert_allclose(model.decision_function(test), scores)
    proba = model.predict_proba(test[:3])
    np.testing.assert_allclose(proba.sum(1), 1.0)
    assert list(model.rank(test[:1])[0]) in (list(MODELS), list(MODELS[::-1]))
    path = tmp_path / "attributor.npz"
    model.save(path)
    loaded = ProbeAttributor.load(path, candidates)
    np.testing.assert_allclose(loaded.decision_function(sig_test), scores)
    np.testing.assert_array_equal(loaded.predict(sig_test), model.predict(sig_test))
    with pytest.raises(ModelprintError, match="tiny-ldm"):
        ProbeAttributor.load(path, {"tiny-ddpm": candidates["tiny-ddpm"]})
    with pytest.raises(ModelprintError, match="predict_proba needs"):
        ProbeAttributor(candidates, probe, classifier="svm").fit(sig_train, y_train).predict_proba(sig_test)


@pytest.mark.slow
def test_denoising_loss_probe_is_deterministic_and_cuts_from_a_grid(candidates: dict, samples: dict) -> None:
    images = samples["tiny-ddpm"][:3]
    denoiser = candidates["tiny-ddpm"]
    grid = DenoisingLossProbe(timesteps=(1, 101, 481), repeats=3, seed=2, batch_size=4)
    before = denoiser.n_forward
    losses = grid.repeat_losses(denoiser, images)
    assert denoiser.n_forward - before == 3 * grid.calls_per_image == 27
    assert losses.shape == (3, 3, 3) and np.all(losses > 0)
    # By hand for one image, timestep and repeat: x_t = √ᾱ x0 + √(1−ᾱ) ε, loss = mean (ε̂ − ε)².
    z0, eps, a = denoiser.to_model_space(images[1:2]), grid.noise((3, 32, 32))[2:3], float(denoiser.alphas_cumprod[101])
    x_t = a ** 0.5 * z0 + (1 - a) ** 0.5 * eps
    assert losses[1, 1, 2] == pytest.approx(float((denoiser.predict_noise(x_t, 101) - eps).square().mean()), rel=1e-5)
    same = DenoisingLossProbe(timesteps=(1, 101, 481), repeats=3, seed=2, batch_size=7).repeat_losses(denoiser, images)
    np.testing.assert_allclose(same, losses, rtol=1e-5)
    cheap = DenoisingLossProbe(timesteps=(481, 1), repeats=2, seed=2)
    np.testing.assert_allclose(np.log(cheap.losses_within(grid, losses)), cheap.signature(denoiser, images), rtol=1e-6)
    with pytest.raises(ModelprintError, match="not within"):
        DenoisingLossProbe(timesteps=(201,), repeats=1, seed=2).losses_within(grid, losses)
    with pytest.raises(ModelprintError, match="outside its schedule"):
        DenoisingLossProbe(timesteps=(1000,)).signature(denoiser, images)
    assert isinstance(probe_from_preset("loss-fast", seed=1), DenoisingLossProbe)
    with pytest.raises(ModelprintError, match="unknown probe preset 'nope'.*loss-fast"):
        probe_from_preset("nope")


@pytest.mark.slow
def test_lowest_loss_attribution_through_every_candidate(candidates: dict, samples: dict, tmp_path: Path) -> None:
    probe = probe_from_preset("loss-fast", batch_size=128)
    refs = np.concatenate([samples[n][:8] for n in MODELS])
    test = np.concatenate([samples[n][8:] for n in MODELS])
    y_refs, y_test = np.repeat(MODELS, 8), np.repeat(MODELS, 8)
    sig_refs = unknown_origin_signatures(probe, candidates, refs)
    sig_test = unknown_origin_signatures(probe, candidates, test)
    assert sig_test.shape == (16, 2, 4)
    model = ProbeAttributor(candidates, probe, classifier="lowest-loss").fit(sig_refs, y_refs)
    assert list(model.classes_) == list(MODELS)
    reordered = {n: candidates[n] for n in MODELS[::-1]}  # classes stay sorted, scores follow them
    backwards = ProbeAttributor(reordered, probe, classifier="lowest-loss").fit(sig_refs[:, ::-1], y_refs)
    np.testing.assert_allclose(backwards.decision_function(sig_test[:, ::-1]), model.decision_function(sig_test))
    # The rule itself: the candidate whose standardised log loss is lowest, nothing learnt from the labels.
    z = (sig_test - sig_refs.mean(0)) / sig_refs.std(0)
    np.testing.assert_array_equal(model.predict(sig_test), np.asarray(MODELS)[np.argmin(z.mean(2), axis=1)])
    shuffled = ProbeAttributor(candidates, probe, classifier="lowest-loss").fit(sig_refs, y_refs[::-1])
    np.testing.assert_array_equal(shuffled.decision_function(sig_test), model.decision_function(sig_test))
    assert model.score_ranking(sig_test, y_test)["top1"] >= 0.75
    path = tmp_path / "loss.npz"
    model.save(path)
    loaded = ProbeAttributor.load(path, candidates)
    assert isinstance(loaded.probe, DenoisingLossProbe) and loaded.probe.get_params() == probe.get_params()
    np.testing.assert_allclose(loaded.decision_function(sig_test), model.decision_function(sig_test))
    with pytest.raises(ModelprintError, match="needs the denoising-loss probe"):
        ProbeAttributor(candidates, SpectralProbe.preset("fast"), classifier="lowest-loss").fit(sig_refs, y_refs)


def test_choose_margin_keeps_the_final_stages_accuracy() -> None:
    classes = ["a", "b"]
    y = np.array(["a", "a", "b", "b", "a"])
    cheap = np.array([[0.9, 0.1], [0.6, 0.4], [0.45, 0.55], [0.2, 0.8], [0.3, 0.7]])  # margins .8 .2 .1 .6 .4
    final = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])  # always right
    np.testing.assert_allclose(score_margin(cheap), [0.8, 0.2, 0.1, 0.6, 0.4])
    # the last image is wrong at margin 0.4, so only margins above it may exit: 0.6
    assert choose_margin(cheap, final, y, classes) == pytest.approx(0.6)
    assert choose_margin(cheap, final, y, classes, tolerance=0.2) == pytest.approx(0.1)
    assert choose_margin(final, cheap, y, classes) == 1.0  # a perfect cheap stage exits everything


@pytest.mark.slow
def test_cascade_exits_early_only_where_the_cheap_stage_is_sure(candidates: dict, samples: dict) -> None:
    refs = np.concatenate([samples[n][:8] for n in MODELS])
    test = np.concatenate([samples[n][8:12] for n in MODELS])
    y_refs = np.repeat(MODELS, 8)
    cheap = ProbeAttributor(candidates, probe_from_preset("loss-fast"), classifier="lowest-loss").fit(refs, y_refs)
    final = ProbeAttributor(candidates, SpectralProbe(**SMALL), classifier="logreg").fit(refs, y_refs)
    assert (cheap.calls_per_image, final.calls_per_image) == (32, 64)
    never = CascadeAttributor([cheap, final], [np.inf]).decide(test)
    np.testing.assert_array_equal(never.stage, 1)
    np.testing.assert_array_equal(never.calls, 96)
    np.testing.assert_array_equal(never.predictions, final.predict(test))
    always = CascadeAttributor([cheap, final], [-np.inf]).decide(test)
    np.testing.assert_array_equal(always.calls, 32)
    np.testing.assert_array_equal(always.predictions, cheap.predict(test))
    middle = np.median(score_margin(cheap.decision_function(test)))
    mixed = CascadeAttributor([cheap, final], [middle]).decide(test)
    assert set(mixed.stage.tolist()) == {0, 1} and mixed.calls.mean() < 96
    with pytest.raises(ModelprintError, match="one margin per stage"):
        CascadeAttributor([cheap, final], [])


@pytest.mark.slow
def test_true_model_protocol_probes_each_image_through_its_own_generator(candidates: dict, samples: dict) -> None:
    probe = SpectralProbe(rings=2, timesteps=(1,), noise_scales=(1.0,), repeats=1)
    images = np.concatenate([samples[n][:2] for n in MODELS])
    labels = np.repeat(MODELS, 2)
    sig = true_model_signatures(probe, candidates, images, labels)
    np.testing.assert_array_equal(sig[:2], probe.signature(candidates["tiny-ddpm"], images[:2]))
    np.testing.assert_array_equal(sig[2:], probe.signature(candidates["tiny-ldm"], images[2:]))
    with pytest.raises(ModelprintError, match="no candidate named 'other'"):
        true_model_signatures(probe, candidates, images, ["other"] * 4)


def test_ranking_metrics_and_classifiers() -> None:
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.5, 0.3], [0.6, 0.3, 0.1]])
    m = ranking_metrics(["a", "c", "c"], scores, ["a", "b", "c"])
    assert m["top1"] == pytest.approx(1 / 3) and m["top3"] == 1.0
    assert m["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (20, 5)), rng.normal(3, 1, (20, 5))])
    y = np.repeat(["p", "q"], 20)
    for name in ("prototype", "logreg", "svm"):
        assert fit_classifier(make_classifier(name), x, y).score(x, y) > 0.9
    with pytest.raises(RegistryError, match="unknown probe classifier 'knn'; known: logreg, lowest-loss"):
        make_classifier("knn")


def _signatures(n_per: int, seed: int, spread: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Flattened unknown-origin signatures ``(n, 2·4)`` of two candidates: each class's images respond through
    their own candidate with an offset of ``1 / spread``."""
    rng = np.random.default_rng(seed)
    y = np.repeat(["a", "b"], n_per)
    x = rng.normal(scale=spread, size=(2 * n_per, 2, 4))
    x[y == "a", 0] += 1.0
    x[y == "b", 1] += 1.0
    return x.reshape(len(x), -1), y


def test_cross_validated_scores_never_come_from_a_model_that_saw_the_row() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 60)), np.repeat(["a", "b"], 20)  # labels carry no signal
    assert np.mean(fit_pipeline(x, y, "concat", "svm", ["a", "b"]).predict(x) == y) == 1.0  # memorised in sample
    oof = cross_validated_scores(x, y, "concat", "svm", ["a", "b"], seed=0)
    assert oof.shape == (40, 2) and np.mean(np.array(["a", "b"])[oof.argmax(axis=1)] == y) < 0.75
    np.testing.assert_array_equal(cross_validated_scores(x, y, "concat", "svm", ["a", "b"], seed=0), oof)


def test_select_pipeline_keeps_the_best_cross_validated_pair() -> None:
    x, y = _signatures(12, 0)
    chosen = select_pipeline(x, y, ["a", "b"], seed=0)
    assert set(chosen.accuracy) == {f"{f}/{c}" for f in ("concat", "distances") for c in ("prototype", "logreg", "svm")}
    best = max(chosen.accuracy.values())
    assert chosen.accuracy[chosen.name] == best > 0.8
    assert chosen.name == next(k for k, v in chosen.accuracy.items() if v == best)  # ties go to the earlier pair
    with pytest.raises(ProbeError, match="unknown features 'pixels'"):
        select_pipeline(x, y, ["a", "b"], [("pixels", "svm")])
    with pytest.raises(RegistryError, match="unknown probe classifier 'knn'"):
        select_pipeline(x, y, ["a", "b"], [("concat", "knn")])


def test_cascade_evaluation_chooses_its_margin_on_the_development_split_only() -> None:
    (cheap_dev, y_dev), (cheap_test, y_test) = _signatures(12, 1, spread=1.5), _signatures(10, 2, spread=1.5)
    (final_dev, _), (final_test, _) = _signatures(12, 3, spread=0.3), _signatures(10, 4, spread=0.3)
    cheap = CascadeStage(cheap_dev, cheap_test, "concat", "prototype", 16)
    final = CascadeStage(final_dev, final_test, "concat", "logreg", 720)
    result = evaluate_cascade(cheap, final, y_dev, y_test, ["a", "b"], seed=0)
    assert 0 < result.exit_early_fraction < 1 and result.final_top1 >= result.cheap_top1
    assert result.mean_calls == pytest.approx(16 + (1 - result.exit_early_fraction) * 720)
    assert result.top1_ci[0] <= result.top1 <= result.top1_ci[1]
    assert set(result.to_dict()) == {"margin", "exit_early_fraction", "top1", "top1_ci",
                                     "mean_calls_per_image_per_candidate", "stage_calls", "stage1_alone_top1",
                                     "stage2_alone_top1"}
    noise = np.random.default_rng(5).normal(size=cheap_test.shape)
    other = evaluate_cascade(CascadeStage(cheap_dev, noise, "concat", "prototype", 16), final, y_dev, y_test,
                             ["a", "b"], seed=0)
    assert other.margin == result.margin  # test rows never move the threshold


def test_the_benchmark_runs_its_protocols_through_the_library() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    try:
        bench = importlib.import_module("bench_probes")
    finally:
        sys.path.pop(0)
    names = ["a", "b"]
    sig, y = {}, {}
    for split, seed in (("samples", 0), ("faces", 1)):
        flat, y[split] = _signatures(10 if split == "samples" else 3, seed, spread=0.5)
        sig[split] = flat.reshape(len(flat), 2, 4)
    pos = np.tile(np.arange(10), 2)
    idx = {"dev": np.flatnonzero(pos < 6), "test": np.flatnonzero(pos >= 6)}
    res = bench.evaluate_setting(sig, y, idx, names, seed=0)
    chosen = select_pipeline(sig["samples"][idx["dev"]].reshape(12, -1), y["samples"][idx["dev"]], names, seed=0)
    assert res["unknown_origin"]["selected"] == chosen.name and res["unknown_origin"]["dev_cv"] == chosen.accuracy
    assert res["unknown_origin"]["in_domain"]["n"] == 8 and res["true_model"]["cross_domain"]["n"] == 6
    stages = [(sig["samples"].reshape(20, -1), "concat/prototype", 16), (sig["samples"].reshape(20, -1),
                                                                          "concat/logreg", 720)]
    assert bench.evaluate_cascade(stages, y, idx, names, seed=0)["stage_calls"] == [16, 736]


def test_an_attributor_refuses_unfitted_use_and_signatures_that_are_not_finite() -> None:
    schedule = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), dim=0)
    fine = CallableCandidate(lambda x, t: torch.zeros_like(x), schedule, name="fine")
    broken = CallableCandidate(lambda x, t: torch.full_like(x, float("nan")), schedule, name="broken")
    images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    attributor = ProbeAttributor({"fine": fine, "broken": broken}, DenoisingLossProbe(timesteps=(1,), repeats=1),
                                 classifier="prototype")
    with pytest.raises(NotFittedError, match="ProbeAttributor is not fitted yet"):
        attributor.predict(images)
    with pytest.raises(ProbeError, match="through candidate\\(s\\) broken are not all finite"):
        attributor.fit(images, ["fine", "fine", "broken", "broken"])


def test_probe_report_as_json() -> None:
    report = ProbeReport("logreg", "concat", ["a", "b"], 32, [
        ProbeAttribution("q.png", [RankedCandidate("b", 1.5, 0.8), RankedCandidate("a", -1.5, 0.2)])],
        [ImageError("broken.png", "not an image")])
    assert report.results[0].prediction == "b"
    assert report.to_dict() == {
        "classifier": "logreg", "features": "concat", "candidates": ["a", "b"], "calls_per_image": 32,
        "results": [{"path": "q.png", "prediction": "b", "top_k": [{"model": "b", "score": 1.5, "probability": 0.8},
                                                                  {"model": "a", "score": -1.5, "probability": 0.2}]}],
        "failed": ["broken.png: not an image"]}
    assert "probability" not in RankedCandidate("a", 0.3).to_dict()


class EpsNet(torch.nn.Module):
    """A plain PyTorch ε-model: three convolutions with the timestep as an extra input plane."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Conv2d(4, 16, 3, padding=1), torch.nn.SiLU(),
                                       torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.SiLU(),
                                       torch.nn.Conv2d(16, 3, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        plane = (t.float() / 1000).view(-1, 1, 1, 1).expand(-1, 1, *x.shape[2:])
        return self.net(torch.cat([x, plane], dim=1))


@pytest.mark.slow
def test_plain_pytorch_ddpm_through_the_callable_adapter(samples: dict) -> None:
    torch.manual_seed(0)
    net = EpsNet()
    alphas_cumprod = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), dim=0)
    x0 = torch.from_numpy(samples["tiny-ddpm"]).permute(0, 3, 1, 2).float() / 127.5 - 1
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(10):  # a few DDPM training steps
        t = torch.randint(0, 1000, (len(x0),))
        noise = torch.randn_like(x0)
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        loss = ((net(a.sqrt() * x0 + (1 - a).sqrt() * noise, t) - noise) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    net.eval()
    denoiser = CallableCandidate(net, alphas_cumprod, name="plain-ddpm")
    probe = SpectralProbe(**SMALL)
    images = samples["tiny-ddpm"][:3]
    sig = probe.signature(denoiser, images)
    assert sig.shape == (3, probe.n_features) and np.all(np.isfinite(sig))
    assert denoiser.n_forward == 3 * probe.calls_per_image
    other = CallableCandidate(EpsNet(), alphas_cumprod.numpy(), name="untrained")
    assert not np.allclose(probe.signature(other, images), sig)


@pytest.mark.slow
def test_callable_adapter_matches_the_diffusers_adapter(zoo: Path, samples: dict) -> None:
    model = load_generator("tiny-ddpm", zoo=zoo)
    wrapped = CallableCandidate(lambda x, t: model.unet(x, t).sample, model.scheduler.alphas_cumprod, name="fn")
    probe = SpectralProbe(**SMALL)
    images = samples["tiny-ddpm"][:2]
    np.testing.assert_array_equal(probe.signature(wrapped, images),
                                  probe.signature(DiffusersCandidate(model, name="tiny-ddpm"), images))


@pytest.mark.slow
def test_conditional_unet_with_a_shared_vae(zoo: Path, samples: dict) -> None:
    from diffusers import DDIMScheduler, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(8, 16),
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1,
                                cross_attention_dim=8, attention_head_dim=2, norm_num_groups=4)
    vae = load_generator("tiny-ldm", zoo=zoo).vae  # 4-channel latents at half resolution
    denoiser = ConditionalUNetCandidate(unet, DDIMScheduler(), vae, name="cond")
    assert denoiser.input_shape(32, 32) == (4, 16, 16)
    probe = SpectralProbe(**SMALL)
    sig = probe.signature(denoiser, samples["tiny-ldm"][:2])
    assert sig.shape == (2, probe.n_features) and np.all(np.isfinite(sig))
    prompt = torch.randn(1, 5, 8)
    other = ConditionalUNetCandidate(unet, DDIMScheduler(), vae, name="cond", encoder_hidden_states=prompt)
    assert not np.allclose(probe.signature(other, samples["tiny-ldm"][:2]), sig)
    with pytest.raises(ModelprintError, match=r"'cond'.*\(1, L, 8\)"):
        ConditionalUNetCandidate(unet, DDIMScheduler(), vae, name="cond", encoder_hidden_states=torch.zeros(1, 77, 4))
    ddpm_like = load_generator("tiny-ddpm", zoo=zoo)
    with pytest.raises(ModelprintError, match="'cond3'.*4-channel latents but the UNet takes 3"):
        CallableCandidate(ddpm_like.unet, ddpm_like.scheduler.alphas_cumprod, name="cond3", space="latent",
                         vae=vae, channels=3)


@pytest.mark.slow
def test_size_and_shape_errors_name_the_candidate(candidates: dict, samples: dict) -> None:
    probe = SpectralProbe(**SMALL)
    ddpm, ldm = candidates["tiny-ddpm"], candidates["tiny-ldm"]
    small = samples["tiny-ddpm"][:1, :30, :30]
    with pytest.raises(ModelprintError, match="'tiny-ddpm': takes 32x32 images, got 30x30"):
        probe.signature(ddpm, small)
    loose = DiffusersCandidate(ddpm.model, name="loose", strict_size=False)
    with pytest.raises(ModelprintError, match="'loose': image size 31x31 is not divisible by 2"):
        probe.signature(loose, samples["tiny-ddpm"][:1, :31, :31])
    assert loose.input_shape(64, 48) == (3, 64, 48)
    with pytest.raises(ModelprintError, match="'tiny-ldm': image size 31x31 is not divisible by its VAE's"):
        probe.signature(ldm, samples["tiny-ldm"][:1, :31, :31])
    with pytest.raises(ModelprintError, match="'tiny-ldm': takes 32x32 images, got 64x64"):
        probe.signature(ldm, np.zeros((1, 64, 64, 3), np.uint8))
    with pytest.raises(ModelprintError, match="'tiny-ddpm': expected uint8 RGB images"):
        probe.signature(ddpm, samples["tiny-ddpm"][:1].astype(np.float32))
    with pytest.raises(ModelprintError, match="'tiny-ddpm': sds probe timesteps \\[1000\\] are outside"):
        SpectralProbe(timesteps=(1000,)).signature(ddpm, samples["tiny-ddpm"][:1])
    with pytest.raises(ModelprintError, match="'tiny-ldm': its 16x16 model space is too small for 32"):
        SpectralProbe(rings=32).signature(ldm, samples["tiny-ldm"][:1])
    with pytest.raises(ModelprintError, match="'odd': image size 30x30 is not divisible by 4"):
        CallableCandidate(ddpm.model.unet, ddpm.alphas_cumprod, name="odd", multiple=4).input_shape(30, 30)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelprint.cli.main", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_probe_cli_prototypes_then_identify(zoo: Path, tmp_path: Path) -> None:
    refs, queries = tmp_path / "refs", tmp_path / "queries"
    for name in MODELS:
        files = sorted((zoo / "samples" / name).glob("*.png"))
        (refs / name).mkdir(parents=True)
        for f in files[:10]:
            shutil.copy(f, refs / name / f.name)
        queries.mkdir(exist_ok=True)
        for f in files[10:13]:
            shutil.copy(f, queries / f"{name}-{f.name}")
    (queries / "broken.png").write_bytes(b"not an image")
    Image.new("RGB", (48, 48)).save(queries / "wrong-size.png")
    cands = [arg for name in MODELS for arg in ("--candidates", f"{name}={name}")]

    fit = _cli("probe", "prototypes", *cands, "--zoo", str(zoo), "--refs", str(refs / MODELS[0]),
               "--refs", f"ldm-class={refs / MODELS[1]}", "--out", "att.npz", "--json", "--seed", "1", cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr
    summary = json.loads(fit.stdout)
    assert summary["classes"] == {MODELS[0]: 10, "ldm-class": 10}
    assert summary["calls_per_image"] == 16 * 2 and (tmp_path / "att.npz").is_file()

    ident = _cli("probe", "identify", str(queries), "--attributor", "att.npz", *cands, "--zoo", str(zoo), "--json",
                 "--top-k", "2", cwd=tmp_path)
    assert ident.returncode == 1, ident.stderr  # two unusable files, each named; the rest attributed
    assert "broken.png" in ident.stderr and "wrong-size.png" in ident.stderr and "takes 32x32 images, got 48x48" in ident.stderr
    res = json.loads(ident.stdout)
    assert len(res["results"]) == 6 and len(res["failed"]) == 2
    for row in res["results"]:
        assert {c["model"] for c in row["top_k"]} == {MODELS[0], "ldm-class"}
        assert abs(sum(c["probability"] for c in row["top_k"]) - 1) < 1e-6
        assert row["prediction"] == row["top_k"][0]["model"]

    missing = _cli("probe", "identify", str(queries), "--attributor", "att.npz", "--candidates",
                   f"{MODELS[0]}={MODELS[0]}", "--zoo", str(zoo), cwd=tmp_path)
    assert missing.returncode == 2 and "fitted with candidate(s) tiny-ldm that were not given" in missing.stderr
    absent = _cli("probe", "prototypes", "--candidates", "x=no-such-model", "--zoo", str(zoo), "--refs", str(refs),
                  "--out", "b.npz", cwd=tmp_path)
    assert absent.returncode == 2 and "candidate 'x' (no-such-model)" in absent.stderr
    assert len(absent.stderr.strip().splitlines()) == 1 and not (tmp_path / "b.npz").exists()

"""One contract for every registered extension, in the spirit of scikit-learn's ``parametrize_with_checks``.

Every residual, fingerprint method, metric, probe, probe classifier, synthesis component, zoo family and membership
attack gives the documented shape and dtype, the same output for the same seed (another for another seed where it
draws noise), rebuilds from ``get_params``, changes its ``version`` (or, where identity is the parameters, its
output) when a parameter that matters changes, and an unknown name is a ``RegistryError``. A registered name without
a case below fails, so a new extension cannot skip the contract. Then scikit-learn's own estimator checks on the
estimators of probes and provenance, with the checks that knowingly do not apply marked and explained.
"""

from __future__ import annotations

import importlib
import pickle
import pkgutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

import modelprint
import modelprint.causal  # noqa: F401  (registers the methods defined above the methods layer)
from conftest import natural_like
from modelprint.errors import ProbeError, RegistryError
from modelprint.evaluation.metrics import METRICS, OPEN_SET_METRICS
from modelprint.methods import METHODS
from modelprint.probes import CLASSIFIERS, PROBES, CallableCandidate, fit_classifier, make_classifier
from modelprint.probes.attribution import CandidatePrototypeSimilarity, LowestLoss, NearestPrototype, scores
from modelprint.provenance import ATTACKS, GSA, NaiveLoss, ProvenanceClassifier, RejectAttributor, TrajectoryAttack
from modelprint.registry import Parametrised, all_registries
from modelprint.residuals import RESIDUALS
from modelprint.synthesis.space import ACTIVATIONS, NORMS, UPSAMPLERS
from modelprint.zoo.base import FAMILIES
from modelprint.zoo.recipes import tier_recipes

torch.set_num_threads(1)

IMAGES = [natural_like(48, 56, seed).astype(np.float32) / 255 for seed in (0, 1)]


# ------------------------------------------------------------------------------------------------ every registry

def test_every_registry_is_listed_with_its_entries() -> None:
    registries = all_registries()
    for info in pkgutil.walk_packages(modelprint.__path__, "modelprint."):  # any module may create a registry
        importlib.import_module(info.name)
    assert set(all_registries()) == set(registries)  # BUILTIN_MODULES names every module that creates one
    assert {"residual", "fingerprint method", "metric", "probe", "probe classifier", "zoo family",
            "membership attack", "synthesis upsampling", "synthesis activation", "synthesis normalisation"} \
        <= set(registries)
    for kind, registry in registries.items():
        assert registry.names() and set(registry.describe()) == set(registry.names()), kind


@pytest.mark.parametrize("kind", sorted(all_registries()))
def test_an_unknown_name_is_a_registry_error_listing_the_known_ones(kind: str) -> None:
    registry = all_registries()[kind]
    with pytest.raises(RegistryError, match=f"unknown {kind} 'no-such-name'; known: {registry.names()[0]}"):
        registry.create("no-such-name")


# ------------------------------------------------------------------------------------------------ residuals

#: A parameter change that changes the output, per residual.
RESIDUAL_CHANGES = {"highpass": {"sigma": 2.0}, "wavelet": {"wavelet": "haar"},
                    "dncnn": {"tile": 24, "overlap": 2}}  # tiling narrower than the receptive field is not exact


@pytest.mark.parametrize("name", RESIDUALS.names())
def test_residual_contract(name: str) -> None:
    residual = RESIDUALS.create(name)
    out = residual(IMAGES[0])
    assert out.shape == IMAGES[0].shape and out.dtype == np.float32 and np.isfinite(out).all()
    rebuilt = type(residual)(**residual.get_params())
    assert rebuilt.tag == residual.tag and repr(rebuilt) == repr(residual)
    np.testing.assert_array_equal(rebuilt(IMAGES[0]), out)
    np.testing.assert_array_equal(residual.batch(IMAGES)[0], out)
    changed = rebuilt.set_params(**RESIDUAL_CHANGES[name])
    assert changed is rebuilt and changed.version != residual.version
    assert not np.allclose(changed(IMAGES[0]), out, atol=1e-6)


def test_parameters_follow_scikit_learns_convention() -> None:
    residual = RESIDUALS.create("highpass", sigma=1.5)
    assert residual.get_params() == {"sigma": 1.5, "truncate": 4.0}
    with pytest.raises(ValueError, match="invalid parameter.*bogus.*valid: sigma, truncate"):
        residual.set_params(bogus=1)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        residual.set_params(sigma=-1.0)
    assert residual.sigma == 1.5 and residual.version == "v1-sigma1.5-trunc4"  # a refused value changes nothing
    assert isinstance(residual, Parametrised) and isinstance(METHODS.create("spectral"), Parametrised)


# ------------------------------------------------------------------------------------------------ methods

def decoupler_file(path: Path, seed: int) -> str:
    """A small decoupler fitted on ``spectral`` embeddings of natural-like images, as ``decoupled`` needs."""
    from modelprint.causal import CausalDecoupler

    spectral = METHODS.create("spectral")
    x = spectral.embed([natural_like(40, 40, s).astype(np.float32) / 255 for s in range(12)])
    fitted = CausalDecoupler(dim=8, hidden=16, epochs=3, val_fraction=0.0, seed=seed).fit(
        x, np.repeat(["a", "b", "c"], 4), np.tile(np.arange(4), 3))
    info = {"base": {"name": "spectral", "params": spectral.get_params(), "version": spectral.version}}
    fitted.save(path, info)
    return str(path)


#: Parameters a method needs to be built at all (a weights file), made in a temporary folder.
METHOD_ARGS = {"decoupled": lambda tmp: {"weights": decoupler_file(tmp / "a.safetensors", 0)}}
METHOD_CHANGES = {"spectral": lambda tmp: {"margin": 0}, "learned": lambda tmp: {"window": None},
                  "fused": lambda tmp: {"views": (("learned", 1.0), ("spectral", 3.0))},
                  "decoupled": lambda tmp: {"weights": decoupler_file(tmp / "b.safetensors", 1)},
                  "dire-stats": lambda tmp: {"steps": 3}, "dire-fourier": lambda tmp: {"quantum": 0.5},
                  "dire-cnn": lambda tmp: {"steps": 3},
                  "contrast": lambda tmp: {"ids": ["b1-c1-pre-up_transposed-act_none-norm_batch-s100"]}}


@pytest.mark.parametrize("name", METHODS.names())
def test_fingerprint_method_contract(name: str, tmp_path: Path) -> None:
    method = METHODS.create(name, **METHOD_ARGS.get(name, lambda tmp: {})(tmp_path))
    embeddings = method.embed(IMAGES)
    assert embeddings.ndim == 2 and len(embeddings) == 2 and embeddings.dtype == np.float32
    assert np.isfinite(embeddings).all() and method.embed([]).shape == (0, embeddings.shape[1])
    rebuilt = type(method)(**method.get_params())
    assert rebuilt.tag == method.tag
    np.testing.assert_array_equal(rebuilt.embed(IMAGES), embeddings)
    changed = rebuilt.set_params(**METHOD_CHANGES[name](tmp_path))
    assert changed.version != method.version
    assert not np.allclose(changed.embed(IMAGES), embeddings, atol=1e-5)


# ------------------------------------------------------------------------------------------------ metrics

@pytest.mark.parametrize("name", METRICS.names())
def test_metric_contract(name: str) -> None:
    fn = METRICS.get(name)
    rng = np.random.default_rng(0)
    if fn.kind == "scores":
        args = (rng.normal(size=40), np.arange(40) % 2 == 0)
    else:
        args = (np.repeat(["a", "b"], 20), rng.choice(["a", "b"], 40))
    value = fn(*args)
    assert isinstance(value, float) and np.isfinite(value) and fn(*args) == value


@pytest.mark.parametrize("name", OPEN_SET_METRICS.names())
def test_open_set_metric_contract(name: str) -> None:
    fn = OPEN_SET_METRICS.get(name)
    rng = np.random.default_rng(0)
    args = (rng.random(30) < 0.7, rng.normal(1.0, 1.0, size=30), rng.normal(size=20))
    value = fn(*args)
    assert isinstance(value, float) and 0.0 <= value <= 1.0 and fn(*args) == value
    assert fn(args[0], args[1] + 10.0, args[2]) >= value  # known queries scoring higher never lowers the metric


# ------------------------------------------------------------------------------------------------ probes

class TinyEps(torch.nn.Module):
    """An untrained ε-network with the timestep as an extra input plane."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.SiLU(),
                                       torch.nn.Conv2d(8, 3, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        plane = (t.float() / 1000).view(-1, 1, 1, 1).expand(-1, 1, *x.shape[2:])
        return self.net(torch.cat([x, plane], dim=1))


@pytest.fixture(scope="module")
def candidate() -> CallableCandidate:
    torch.manual_seed(0)
    return CallableCandidate(TinyEps().eval(), torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), 0), name="tiny")


PROBE_IMAGES = np.stack([natural_like(32, 32, seed) for seed in range(6)])


@pytest.mark.parametrize("name", PROBES.names())
def test_probe_contract(name: str, candidate: CallableCandidate) -> None:
    cls = PROBES.get(name)
    assert cls.presets and all(cls.preset(p).get_params() for p in cls.presets)
    probe = cls()
    before = candidate.n_forward
    signature = probe.signature(candidate, PROBE_IMAGES[:2])
    assert candidate.n_forward - before == 2 * probe.calls_per_image
    assert signature.shape == (2, probe.n_features) and signature.dtype == np.float64
    assert np.isfinite(signature).all()
    np.testing.assert_array_equal(type(probe)(**probe.get_params()).signature(candidate, PROBE_IMAGES[:2]), signature)
    assert not np.allclose(clone(probe).set_params(seed=1).signature(candidate, PROBE_IMAGES[:2]), signature)


@pytest.mark.parametrize("name", CLASSIFIERS.names())
def test_probe_classifier_contract(name: str) -> None:
    rng = np.random.default_rng(0)
    y = np.repeat(["a", "b"], 12)
    x = rng.normal(size=(24, 2, 3))
    x[y == "a", 1] += 2.0  # for the loss rule: "b" predicts the noise of its own images better
    x = x.reshape(24, -1)
    pipeline = fit_classifier(make_classifier(name, pca_components=4, candidates=("a", "b")), x, y)
    s = scores(pipeline, x)
    assert s.shape == (24, 2) and s.dtype == np.float64 and list(pipeline.classes_) == ["a", "b"]
    assert np.mean(pipeline.classes_[s.argmax(axis=1)] == y) > 0.8
    again = fit_classifier(clone(pipeline), x, y)
    np.testing.assert_array_equal(scores(again, x), s)


# ------------------------------------------------------------------------------------------------ synthesis

@pytest.mark.parametrize(("registry", "name"), [(r, n) for r in (UPSAMPLERS, ACTIVATIONS, NORMS) for n in r.names()])
def test_synthesis_component_contract(registry, name: str) -> None:  # noqa: ANN001
    """A factory's layer acts on each group's channels alone (grouped models train side by side)."""
    def build() -> torch.nn.Module:
        torch.manual_seed(0)
        return registry.create(name, 8, 2).eval()

    x = torch.randn(2, 16, 6, 6)
    y = build()(x)
    scale = 2 if registry is UPSAMPLERS else 1
    assert y.shape == (2, 16, 6 * scale, 6 * scale) and y.dtype == torch.float32
    torch.testing.assert_close(build()(x), y, rtol=0, atol=0)
    other = x.clone()
    other[:, 8:] = torch.randn(2, 8, 6, 6)  # the second model's channels only
    torch.testing.assert_close(build()(other)[:, :8], y[:, :8], rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------ zoo families

TINY = {r.family: r for r in reversed(tier_recipes("tiny"))}  # the first recipe of each family
FAMILY_CHANGES = {"gan": {"upsample": "nearest"}, "vae": {"latent": 8}, "flow": {"hidden": 8},
                  "ddpm": {"sample_steps": 5}, "autoencoder": {"latent_channels": 2}, "ldm": {"sample_steps": 5},
                  "ddpm-finetune": {"sample_steps": 5}, "ddpm-lora": {"rank": 2}}


def _one_step(family: str, params: dict | None = None):  # noqa: ANN202
    """The tiny recipe of ``family`` (with ``params``), its parent built the same way, each trained one step."""
    recipe = TINY[family]
    recipe = replace(recipe, params={**recipe.params, **(params or {})}, steps=1, batch_size=8)
    parent = _one_step(next(r.family for r in tier_recipes("tiny") if r.name == recipe.parent)) \
        if recipe.parent else None
    images = np.stack([natural_like(32, 32, seed) for seed in range(8)])
    return FAMILIES.get(family)(recipe, parent).fit(images)


@pytest.mark.parametrize("family", FAMILIES.names())
def test_zoo_family_contract(family: str) -> None:
    model = _one_step(family)
    samples = model.sample(2, seed=0)
    assert samples.shape == (2, 32, 32, 3) and samples.dtype == np.uint8 and np.isfinite(model.final_loss)
    np.testing.assert_array_equal(_one_step(family).sample(2, seed=0), samples)
    assert not np.array_equal(model.sample(2, seed=1), samples)
    assert not np.array_equal(_one_step(family, FAMILY_CHANGES[family]).sample(2, seed=0), samples)


# ------------------------------------------------------------------------------------------------ membership attacks

#: A parameter change that changes the measurements, per attack.
ATTACK_CHANGES = {"naive-loss": {"seed": 1}, "secmi": {"k": 20}, "pia": {"timesteps": (5, 50)},
                  "pian": {"timesteps": (5, 50)}, "sima": {"timesteps": (1, 60)}, "gsa1": {"seed": 1},
                  "gsa2": {"seed": 1}, "trajectory": {"seed": 1}}


@pytest.mark.parametrize("name", ATTACKS.names())
def test_membership_attack_contract(name: str, candidate: CallableCandidate) -> None:
    attack = ATTACKS.create(name)
    before = candidate.n_forward
    x = attack.measure(candidate, PROBE_IMAGES)
    assert candidate.n_forward - before == 6 * attack.calls_per_image(candidate)
    assert x.ndim == 2 and len(x) == 6 and x.dtype == np.float64 and np.isfinite(x).all()
    np.testing.assert_array_equal(type(attack)(**attack.get_params()).measure(candidate, PROBE_IMAGES), x)
    changed = clone(attack).set_params(**ATTACK_CHANGES[name]).measure(candidate, PROBE_IMAGES)
    assert changed.shape != x.shape or not np.allclose(changed, x)
    with pytest.raises(NotFittedError):
        attack.decision_function(x)
    member = np.arange(6) % 2 == 0
    scores_ = attack.fit(x, member).decision_function(x)
    assert scores_.shape == (6,) and np.isfinite(scores_).all()
    if not attack.learned:
        assert attack.chosen_ in attack.settings()


# ------------------------------------------------------------------------------------------------ scikit-learn's checks

_CANDIDATES = ("X holds one block of loss features per candidate ('a', 'b') and y names candidates; the generic "
               "data has neither (test_candidate_rules_on_their_own_data checks what these would)")
_SIMILARITIES = "decision_function is the cosine similarity to every class prototype: (n, 2) for two classes"
_MEMBERS = "y marks members (true) and non-members (false); this check's y has no false value"
_UNCERTAIN = "predict answers 'uncertain', not a class of y, below the confidence chosen on validation rows"
_CANDIDATE_CHECKS = (
    "check_classifier_data_not_an_array", "check_classifiers_classes", "check_classifiers_one_label",
    "check_classifiers_train", "check_dict_unchanged", "check_dont_overwrite_parameters", "check_dtype_object",
    "check_estimators_dtypes", "check_estimators_fit_returns_self", "check_estimators_nan_inf",
    "check_estimators_overwrite_params", "check_estimators_pickle", "check_f_contiguous_array_estimator",
    "check_fit2d_1feature", "check_fit2d_1sample", "check_fit2d_predict1d", "check_fit_check_is_fitted",
    "check_fit_idempotent", "check_fit_score_takes_y", "check_methods_sample_order_invariance",
    "check_methods_subset_invariance", "check_n_features_in", "check_n_features_in_after_fitting",
    "check_pipeline_consistency", "check_positive_only_tag_during_fit", "check_readonly_memmap_input",
    "check_supervised_y_2d")
_UNCERTAIN_CHECKS = (
    "check_classifier_data_not_an_array", "check_classifiers_train", "check_estimators_pickle",
    "check_fit_idempotent", "check_fit_score_takes_y", "check_methods_sample_order_invariance",
    "check_methods_subset_invariance", "check_pipeline_consistency", "check_supervised_y_2d")


def expected_failed_checks(estimator: object) -> dict[str, str]:
    """The scikit-learn checks that knowingly do not apply to ``estimator``, with why."""
    if isinstance(estimator, (LowestLoss, RejectAttributor)):
        return dict.fromkeys(_CANDIDATE_CHECKS, _CANDIDATES)
    if isinstance(estimator, NearestPrototype):
        return dict.fromkeys(("check_classifiers_train", "check_classifiers_classes"), _SIMILARITIES)
    if isinstance(estimator, ProvenanceClassifier) and estimator.target_accuracy is not None:
        return dict.fromkeys(_UNCERTAIN_CHECKS, _UNCERTAIN)
    if isinstance(estimator, (NaiveLoss, GSA, TrajectoryAttack)):
        return dict.fromkeys(("check_estimators_dtypes", "check_fit2d_1feature"), _MEMBERS)
    return {}


@parametrize_with_checks([NearestPrototype(), CandidatePrototypeSimilarity(), LowestLoss(candidates=("a", "b")),
                          RejectAttributor(candidates=("a", "b")), NaiveLoss(), GSA(classifier="linear")],
                         expected_failed_checks=expected_failed_checks)
def test_scikit_learn_checks(estimator: object, check) -> None:  # noqa: ANN001
    check(estimator)


@pytest.mark.slow
@parametrize_with_checks([ProvenanceClassifier(target_accuracy=None, cv=2), ProvenanceClassifier(cv=2),
                          TrajectoryAttack()], expected_failed_checks=expected_failed_checks)
def test_scikit_learn_checks_of_calibrated_estimators(estimator: object, check) -> None:  # noqa: ANN001
    check(estimator)


@pytest.mark.parametrize("make", [lambda: LowestLoss(candidates=("a", "b")),
                                  lambda: RejectAttributor(candidates=("a", "b"), accept=0.9)])
def test_candidate_rules_on_their_own_data(make) -> None:  # noqa: ANN001
    """What the generic checks would verify, on data with one block per candidate and candidate labels."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 2, 3)).reshape(20, 6), np.repeat(["a", "b"], 10)
    model = make()
    params = model.get_params()
    with pytest.raises(NotFittedError, match="not fitted yet"):
        model.decision_function(x)
    model.fit(x, y)
    assert model.get_params() == params and model.n_features_in_ == 6
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(model)).predict(x), model.predict(x))
    np.testing.assert_array_equal(clone(model).fit(x, y).decision_function(x), model.decision_function(x))
    np.testing.assert_array_equal(model.decision_function(x[::-1]), model.decision_function(x)[::-1])
    for bad, match in ((np.where(x > 1, np.nan, x), "NaN"), (np.full_like(x, np.inf), "infinity"),
                       (x[:0], "0 sample")):
        with pytest.raises(ProbeError, match=match):
            make().fit(bad, y[: len(bad)])
    with pytest.raises(ProbeError, match="X has 4 features, but"):
        model.predict(x[:, :4])
    with pytest.raises(ProbeError, match="do not split into 2 candidates"):
        make().fit(x[:, :5], y)
    with pytest.raises(ProbeError, match=r"classes \['c'\] are not candidates"):
        make().fit(x, np.where(y == "a", "a", "c"))

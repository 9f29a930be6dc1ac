"""Causal decoupling: pairs redrawn by tiny zoo models, the decoupler on planted content, the invariance study,
the ``decoupled`` method and its file's checks."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from modelprint.causal import (
    CausalDecoupler,
    DecoupledMethod,
    PairSet,
    build_pairs,
    content_leakage,
    decoupling_study,
    distances,
    split_contents,
)
from modelprint.causal.workflow import train_decoupler
from modelprint.errors import CheckpointError, ModelprintError
from modelprint.methods import load_method
from modelprint.zoo.build import build_zoo

torch.set_num_threads(1)
DATA = Path(__file__).parent / "data"
FAST = {"dim": 16, "hidden": 64, "adversary_hidden": 32, "epochs": 40, "eval_every": 5}


def planted(n_models: int = 4, n_contents: int = 48, d: int = 32, seed: int = 0,
            content_scale: float = 3.0) -> tuple[np.ndarray, ...]:
    """Features = model vector (8 dims) + a strong content vector in a planted 2-dim subspace + noise."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(d, d)))[0]
    content = rng.normal(size=(n_contents, 2)) @ basis[:, :2].T * content_scale
    model = rng.normal(size=(n_models, 8)) @ basis[:, 2:10].T
    m, c = np.meshgrid(np.arange(n_models), np.arange(n_contents), indexing="ij")
    x = model[m.ravel()] + content[c.ravel()] + 0.5 * rng.normal(size=(m.size, d))
    return x.astype(np.float32), np.array([f"m{i}" for i in m.ravel()]), c.ravel()


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stored tiny zoo (its GAN) plus a tiny DDPM and VAE trained here."""
    root = Path(shutil.copytree(DATA / "zoo-v1", tmp_path_factory.mktemp("zoo") / "zoo"))
    build_zoo(root, tier="tiny", only=["tiny-ddpm", "tiny-vae"], n_samples=2)
    return root


PAIRS = {"n_photos": 3, "n_faces": 2, "gan_steps": 20}


@pytest.mark.slow
def test_pairs_are_a_full_deterministic_grid_and_cached(zoo: Path, tmp_path: Path) -> None:
    models = ["tiny-gan", "tiny-vae", "tiny-ddpm"]
    a = build_pairs(zoo, models, seed=3, cache=tmp_path / "p.npz", **PAIRS)
    assert a.cells() == {(m, c) for m in ["real", *models] for c in range(5)}
    assert a.images.shape == (20, 32, 32, 3) and a.content_sources == ["photo"] * 3 + ["face"] * 2
    real, ddpm = (a.images[a.models == m].astype(int) for m in ("real", "tiny-ddpm"))
    assert 0 < np.abs(real - ddpm).mean() < 100  # redrawn, not copied and not unrelated
    again = build_pairs(zoo, models, seed=3, **PAIRS)
    np.testing.assert_array_equal(a.images, again.images)
    np.testing.assert_array_equal(a.contents, again.contents)
    cached = PairSet.load(tmp_path / "p.npz")
    np.testing.assert_array_equal(cached.images, a.images)
    assert cached.meta["settings"] == a.meta["settings"]
    other = build_pairs(zoo, models, seed=4, cache=tmp_path / "p.npz", **PAIRS)  # other settings: rebuilt
    assert not np.array_equal(other.images, a.images)
    with pytest.raises(ModelprintError, match="flow"):
        build_pairs(zoo, ["tiny-gan", "tiny-flow"], **PAIRS)


def test_decoupler_drops_planted_content_and_keeps_the_model() -> None:
    x, models, contents = planted()
    study = decoupling_study(x, models, contents, CausalDecoupler(seed=0, **FAST), test_fraction=0.25, n_boot=50)
    before, after = study["before"], study["after"]
    chance = after["leakage"]["chance"]
    assert before["leakage"]["accuracy"]["mean"] > chance + 0.25  # the planted content is readable before
    assert after["leakage"]["accuracy"]["mean"] < chance + 0.15, after["leakage"]
    assert after["identification"]["prototype"]["mean"] > 0.9
    assert after["distances"]["ratio"]["mean"] < before["distances"]["ratio"]["mean"]


def test_removal_form_keeps_the_size_and_the_model_and_drops_planted_content() -> None:
    x, models, contents = planted(n_models=5)
    seen = models != "m4"  # one model never seen by the fit
    test = np.isin(contents, split_contents(contents, 0.25, 0))
    fitted = CausalDecoupler(seed=0, rank=2, compactness_weight=0.0, **FAST).fit(
        x[seen & ~test], models[seen & ~test], contents[seen & ~test])
    z = fitted.transform(x)
    assert z.shape == x.shape and fitted.output_dim_ == x.shape[1]
    before = content_leakage(x[test], models[test], contents[test], n_boot=0)["accuracy"]["mean"]
    after = content_leakage(z[test], models[test], contents[test], n_boot=0)
    assert before > after["chance"] + 0.25 and after["accuracy"]["mean"] < after["chance"] + 0.1, (before, after)
    ref, query = ~test, test  # the unseen model too: prototypes from other contents
    classes = np.unique(models)
    protos = np.stack([z[ref & (models == m)].mean(0) for m in classes])
    assert np.mean(classes[np.argmax(z[query] @ protos.T, 1)] == models[query]) > 0.9
    with pytest.raises(ModelprintError, match="bad parameters"):
        CausalDecoupler(rank=x.shape[1]).fit(x, models, contents)


def test_attribution_alone_leaves_more_content_than_with_the_adversary() -> None:
    x, models, contents = planted(seed=1)
    test = np.isin(contents, split_contents(contents, 0.25, 0))
    leak = {}
    for weight in (0.0, 1.0):
        fitted = CausalDecoupler(seed=0, adversary_weight=weight, **FAST).fit(x[~test], models[~test],
                                                                             contents[~test])
        z = fitted.transform(x[test])
        leak[weight] = content_leakage(z, models[test], contents[test], n_boot=0)["accuracy"]["mean"]
    assert leak[1.0] < leak[0.0], leak


def test_fit_reads_no_held_out_row_and_is_seeded() -> None:
    x, models, contents = planted(n_contents=16)
    test = np.isin(contents, split_contents(contents, 0.25, 0))
    params = {**FAST, "epochs": 10}
    a = CausalDecoupler(seed=0, **params).fit(x[~test], models[~test], contents[~test])
    poisoned = x.copy()
    poisoned[test] = 1e6
    b = CausalDecoupler(seed=0, **params).fit(poisoned[~test], models[~test], contents[~test])
    np.testing.assert_array_equal(a.transform(x), b.transform(x))
    assert not set(a.val_contents_) & set(contents[test])
    c = CausalDecoupler(seed=1, **params).fit(x[~test], models[~test], contents[~test])
    assert not np.allclose(a.transform(x), c.transform(x))


def test_study_fits_on_its_own_part_only() -> None:
    x, models, contents = planted(n_contents=16)
    test = np.isin(contents, split_contents(contents, 0.5, 0))
    params = {**FAST, "epochs": 10}
    poisoned = x.copy()
    poisoned[test] += np.random.default_rng(0).normal(size=poisoned[test].shape).astype(np.float32)
    a = decoupling_study(x, models, contents, CausalDecoupler(seed=0, **params), n_boot=0)
    b = decoupling_study(poisoned, models, contents, CausalDecoupler(seed=0, **params), n_boot=0)
    assert a["test_contents"] == sorted(set(contents[test].tolist()))
    assert a["before"] != b["before"]  # the test rows changed ...
    fit = CausalDecoupler(seed=0, **params).fit(x[~test], models[~test], contents[~test])
    np.testing.assert_allclose(fit.transform(x[test]), CausalDecoupler(seed=0, **params).fit(
        poisoned[~test], models[~test], contents[~test]).transform(x[test]))  # ... the fit did not


def test_distances_follow_what_the_features_carry() -> None:
    d = distances(*planted(n_contents=12, content_scale=6.0), n_boot=20)
    assert d["ratio"]["mean"] > 1  # the strong planted content dominates
    lo, hi = d["ratio"]["ci95"]
    assert lo <= d["ratio"]["mean"] <= hi
    assert distances(*planted(n_contents=12, content_scale=0.0), n_boot=0)["ratio"]["mean"] < 1


def test_save_load_round_trip_and_damage_is_one_line(tmp_path: Path) -> None:
    x, models, contents = planted(n_contents=12)
    fitted = CausalDecoupler(seed=0, **{**FAST, "epochs": 5}).fit(x, models, contents)
    path = tmp_path / "dec.safetensors"
    sha = fitted.save(path, {"note": "t"})
    loaded = CausalDecoupler.load(path)
    np.testing.assert_array_equal(loaded.transform(x), fitted.transform(x))
    assert loaded.sha256_ == sha and loaded.info_ == {"note": "t"} and loaded.get_params() == fitted.get_params()
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256 mismatch") as err:
        CausalDecoupler.load(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    path.write_bytes(b"not a decoupler")
    (tmp_path / "dec.json").write_text('{"format": "other"}')
    with pytest.raises(CheckpointError, match="format") as err:
        CausalDecoupler.load(path)
    assert "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match="not found"):
        CausalDecoupler.load(tmp_path / "missing.safetensors")
    removal = CausalDecoupler(seed=0, rank=3, **{**FAST, "epochs": 5}).fit(x, models, contents)
    removal.save(path)
    np.testing.assert_array_equal(CausalDecoupler.load(path).transform(x), removal.transform(x))
    assert CausalDecoupler.load(path).output_dim_ == x.shape[1]


@pytest.mark.slow
def test_trained_decoupler_is_a_method(zoo: Path, tmp_path: Path) -> None:
    out = tmp_path / "dec.safetensors"
    result = train_decoupler(zoo, ["tiny-gan", "tiny-ddpm"], out, base="spectral", holdout=0.4, n_boot=20,
                             decoupler=CausalDecoupler(seed=0, **{**FAST, "epochs": 10}),
                             pair_settings={"n_photos": 4, "n_faces": 1, "gan_steps": 20})
    assert result["images"] == 15 and result["study"]["after"]["dim"] == 16
    method = load_method("decoupled", weights=str(out))
    assert isinstance(method, DecoupledMethod) and method.base.name == "spectral"
    images = [np.random.default_rng(i).random((40, 48, 3)).astype(np.float32) for i in range(2)]
    z = method.embed(images)
    assert z.shape == (2, 16) and z.dtype == np.float32 and method.embed([]).shape == (0, 16)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1, atol=1e-5)
    assert type(method)(**method.get_params()).tag == method.tag and result["sha256"][:16] in method.version

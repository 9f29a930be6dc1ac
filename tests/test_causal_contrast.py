"""Counterfactual contrast (issue 14): reference redraws keep the image's size and the contrast removes what the
redraws share with the image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import natural_like
from modelprint.causal.contrast import ReferenceRedrawers, contrast
from modelprint.causal.invariance import content_leakage
from modelprint.errors import CheckpointError, ModelprintError
from modelprint.synthesis.pool import SynthesisSettings, read_manifest, synthesize_pool


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    photos = tmp_path_factory.mktemp("photos")
    for i in range(12):
        Image.fromarray(natural_like(64, 64, seed=200 + i)).save(photos / f"photo_{i:02d}.png")
    settings = SynthesisSettings(crop=16, max_steps=30, batch_size=4, check_every=10, train_crops=64, val_crops=8,
                                 pool_folders=(str(photos),), include_packages=False)
    out = tmp_path_factory.mktemp("refs") / "pool"
    synthesize_pool(out, ["b1-c1-pre-up_transposed-act_none-norm_batch", "b2-c2-pre-up_bilinear-act_tanh-norm_none"],
                    1, crop=16, max_steps=30, settings=settings)
    return out


def test_redraws_keep_any_size_and_are_deterministic(pool: Path) -> None:
    refs = ReferenceRedrawers(pool, sorted(read_manifest(pool)))
    assert len(refs) == 2
    images = [natural_like(33, 47, seed=1), natural_like(32, 32, seed=2), natural_like(61, 40, seed=3)]
    for k in range(len(refs)):
        out = refs.redraw(k, images)
        assert [o.shape for o in out] == [x.shape for x in images] and all(o.dtype == np.uint8 for o in out)
        assert all(np.array_equal(a, b) for a, b in zip(out, refs.redraw(k, images), strict=True))
        assert any(not np.array_equal(o, x) for o, x in zip(out, images, strict=True))


def test_bad_references_and_inputs_are_named(pool: Path) -> None:
    with pytest.raises(ModelprintError, match="no reference generators"):
        ReferenceRedrawers(pool, [])
    with pytest.raises(CheckpointError, match="no synthetic model 'nope-s0'"):
        ReferenceRedrawers(pool, ["nope-s0"])
    refs = ReferenceRedrawers(pool, sorted(read_manifest(pool))[:1])
    with pytest.raises(ModelprintError, match="uint8 RGB"):
        refs.redraw(0, [np.zeros((32, 32), np.uint8)])
    with pytest.raises(ModelprintError, match="do not match"):
        contrast(np.zeros((3, 4)), [np.zeros((3, 5))])


def test_contrast_cancels_shared_content_and_keeps_the_model() -> None:
    """Embeddings f_model + a(content) + noise, redraws f_ref + a(content) + noise: content leaks from the raw
    embeddings and not from the contrast, which still tells the models apart."""
    rng = np.random.default_rng(0)
    n_models, n_contents, d = 4, 12, 16
    f_model, a = rng.normal(size=(n_models, d)), 3 * rng.normal(size=(n_contents, d))
    models = np.repeat(np.arange(n_models), n_contents)
    contents = np.tile(np.arange(n_contents), n_models)
    raw = f_model[models] + a[contents] + 0.3 * rng.normal(size=(len(models), d))
    redrawn = [rng.normal(size=d) + a[contents] + 0.3 * rng.normal(size=(len(models), d)) for _ in range(3)]
    z = contrast(raw, redrawn)
    chance = 1 / n_contents
    assert content_leakage(raw, models, contents, n_boot=0)["accuracy"]["mean"] > 0.9
    assert content_leakage(z, models, contents, n_boot=0)["accuracy"]["mean"] < chance + 0.15
    centroids = np.stack([z[models == m].mean(0) for m in range(n_models)])
    assert np.mean(np.argmin(((z[:, None] - centroids[None]) ** 2).sum(-1), 1) == models) > 0.95


def test_contrast_method_is_fused_view_contrasts_of_the_shipped_references() -> None:
    from modelprint.causal.contrast import SHIPPED_REFERENCES, ContrastMethod
    from modelprint.methods import load_method

    method = load_method("contrast", views=[("spectral", 1.0), ("learned", 3.0)])
    assert isinstance(method, ContrastMethod) and len(method._refs) == len(read_manifest(SHIPPED_REFERENCES)) >= 2
    images = [natural_like(40, 52, seed=7).astype(np.float32) / 255, natural_like(64, 64, seed=8).astype(np.float32)
              / 255]
    z = method.embed(images)
    pixels = [np.rint(x * 255).astype(np.uint8) for x in images]
    expected = []
    for (name, _w), scale in zip(method.views, (0.5, np.sqrt(0.75)), strict=True):
        view = load_method(name)
        red = [view.embed([r.astype(np.float32) / 255 for r in method._refs.redraw(k, pixels)])
               for k in range(len(method._refs))]
        c = contrast(view.embed(images), red)
        expected.append(scale * c / np.linalg.norm(c, axis=1, keepdims=True))
    np.testing.assert_allclose(z, np.concatenate(expected, axis=1), atol=1e-5)
    assert method.version != load_method("contrast", views=[("spectral", 1.0), ("learned", 3.0)],
                                         ids=sorted(read_manifest(SHIPPED_REFERENCES))[:1]).version
